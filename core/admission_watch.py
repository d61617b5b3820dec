"""Closing the admission race: logout, ban and kick reach connections mid-handshake.

The access checks of a handshake (revoked ``jti``, banned user) run before the
session is admitted, and a logout, ban or kick reaches only the nodes whose
sessions it can see in the registry. A connection admitted in between would
survive. Two rules close the window, whatever the interleaving:

* **Re-check after admission** (:func:`recheck`): once the session record is
  written, revocation and ban are read again (by the admission's own atomic step
  where the backend can, :func:`access_refusal` of ``Admission.access``: on one
  Redis and in memory; a separate read on a Redis Cluster). A logout or ban whose registry read
  (``command_user``) missed the new record ran that read before the record was
  written, so its revocation or ban was written before this re-check reads it.
* **Commands mark connections being admitted** (:func:`mark_admitting`): a
  ``close_user`` or ``close_jti`` command that did see the record may arrive while
  the connection is still between admission and visibility (not yet in the hub,
  or not yet greeted). It is then marked (``Connection.kicked``), or closed at
  once when already open, and the admission ends with the command's code.

So no connection whose token was revoked, or whose user was banned or kicked, at
any moment before it became visible stays open. A kick leaves no state behind, so
a connection whose registry write lands after the kick's registry read is a new
login, not a survivor, and stays.
"""

from __future__ import annotations

from collections.abc import Mapping

from core.auth import Claims
from core.backend.base import AccessState, Backend, NodeCommand, NodeOp
from core.codes import CloseCode
from core.connection import Connection
from core.errors import Refusal
from core.hub import Hub

__all__ = ["access_refusal", "mark_admitting", "recheck", "refusal_for_kick"]


async def recheck(backend: Backend, lockout_key: str, claims: Claims) -> Refusal | None:
    """Revocation and ban read again after the session record was written.

    Raises ``BackendUnavailable`` (the caller refuses: fails closed).
    """
    return access_refusal(await backend.access_state(lockout_key, claims.sub, claims.jti))


def access_refusal(state: AccessState) -> Refusal | None:
    """The refusal the re-check gives for ``state`` (revoked: 401/4003-kicked; banned:
    403), or None. Also used on the state an admission read in its own atomic step
    (``Admission.access``), which makes :func:`recheck` unnecessary."""
    if state.revoked:
        return Refusal(401, "unauthorized", "invalid token: revoked", None, CloseCode.KICKED)
    if state.banned:
        return Refusal(403, "banned", "user is banned")
    return None


def refusal_for_kick(kicked: tuple[int, str]) -> Refusal:
    """The refusal of a connection marked by a command while it was being admitted."""
    code, reason = kicked
    if code == CloseCode.REPLACED:
        return Refusal(429, "replaced", reason, 1, CloseCode.REPLACED)
    if code == CloseCode.FORBIDDEN:
        return Refusal(403, "forbidden", reason)
    return Refusal(401, "unauthorized", reason, None, CloseCode(code))


def mark_admitting(hub: Hub, admitting: Mapping[str, Connection], command: NodeCommand) -> None:
    """Apply a ``close_user`` / ``close_jti`` command to connections being admitted.

    Their claims are known from the start of the admission (``Connection.claims``).
    One already open (first-frame authentication) is closed now; one not yet
    upgraded is marked, and the admission or the upgrade closes it.
    """
    for conn in list(admitting.values()):
        claims = conn.claims
        if claims is None or conn.closed:
            continue
        if command.op is NodeOp.CLOSE_USER:
            hit = claims.sub == command.uid
        elif command.op is NodeOp.CLOSE_JTI:
            hit = claims.jti == command.jti
        else:
            hit = False
        if not hit:
            continue
        if hub.get(conn.conn_id) is conn:
            conn.close(command.code, command.reason)
        elif conn.kicked is None:
            conn.kicked = (command.code, command.reason)
