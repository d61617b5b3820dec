"""The server API (``/api/*`` of PROTOCOL.md): who may call it, and what each call does.

Callers authenticate either with an admin access token (``Authorization: Bearer``,
claim ``role: admin``, checked like a WebSocket handshake: signature, expiry,
revocation, ban) or with an HMAC-signed request (:mod:`core.signing`). Every
operation goes through the :class:`~core.backend.base.Backend`, so it acts on the
whole cluster, not only this node.

Guarantees:

* :meth:`ApiGuard.authenticate` fails closed: a locked-out IP gets 429 before any
  check, every failed authentication is counted against the IP (``auth.lockout``),
  a valid non-admin token gets 403, an unreachable backend 503. Without
  ``api.secret`` a signed call gets 401 ``signatures_disabled`` saying so (not
  counted: nothing could have succeeded); admin bearer tokens keep working.
* Every operation validates its parameters before touching the backend and raises
  :class:`ApiError` 400 naming the parameter (room names by
  :func:`core.protocol.validate_room`, user ids 1 to 256 bytes of UTF-8).
* ``kick`` closes every connection of the user on every node with 4010; ``ban``
  first records the ban (new handshakes of the user get 403 from then on) and then
  closes live connections on every node with 4003, until ``ttl_s`` passes or
  ``unban`` lifts it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.backend.base import BackendUnavailable, DirectMessage, NodeCommand, NodeOp
from core.errors import Refusal
from core.namespaces import rules_for
from core.node import Node
from core.protocol import (
    MAX_UID_BYTES,
    CloseCode,
    RequestError,
    data_from_json,
    validate_room,
)
from core.session import deliver_dm
from core.signing import RequestVerifier, SignatureError
from core.stats import totals

__all__ = [
    "MAX_BAN_TTL_S",
    "OPERATIONS",
    "SIGNATURES_DISABLED",
    "ApiError",
    "ApiGuard",
    "Caller",
    "ServerApi",
]

#: What a signed call gets (and what the log says at start) without ``api.secret``.
SIGNATURES_DISABLED = "signed server API calls disabled: set SQUALL_API_SECRET"

#: The longest ban: ten years (a ban without ttl_s lasts until lifted).
MAX_BAN_TTL_S = 10 * 365 * 86400


class ApiError(Refusal):
    """A refused API call: HTTP ``status`` and PROTOCOL.md's JSON error fields."""


def _from_reject(reject: Refusal) -> ApiError:
    return ApiError(reject.status, reject.error, reject.message, reject.retry_after)


def _unavailable() -> ApiError:
    return ApiError(503, "unavailable", "backend unavailable", 5)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made an authenticated API call: ``uid`` of the admin token, or ``None``
    for a signed request (a backend)."""

    uid: str | None


class ApiGuard:
    """Authenticates server-API requests for one node."""

    def __init__(self, node: Node, signatures: RequestVerifier) -> None:
        self._node = node
        self._signatures = signatures

    async def authenticate(
        self,
        *,
        method: str,
        path: str,
        bearer: str | None,
        headers: Mapping[str, str],
        body: bytes,
        ip: str,
    ) -> Caller:
        """The caller of a request, or :class:`ApiError` 401 / 403 / 429 / 503.

        With ``bearer`` (an ``Authorization: Bearer`` token) only the token counts;
        otherwise the request must be signed.
        """
        node = self._node
        reject = await node.gate.lockout_check(ip)
        if reject is not None:
            raise _from_reject(reject)
        if bearer is not None:
            result = await node.gate.authenticate(bearer, ip)
            if isinstance(result, Refusal):
                raise _from_reject(result)
            if result.role != "admin":
                raise ApiError(403, "forbidden", "the server API needs a token with role admin")
            return Caller(result.sub)
        if not self._signatures.enabled:
            # Not a guess (nothing could succeed): said plainly, and not counted.
            raise ApiError(401, "signatures_disabled", SIGNATURES_DISABLED)
        try:
            await self._signatures.verify(method, path, headers, body)
        except SignatureError as e:
            await self._count_failure(ip, f"api_{e.reason}")
            raise ApiError(401, "unauthorized", f"request signature refused: {e}") from None
        except BackendUnavailable:
            node.metrics.backend_errors.inc()
            raise _unavailable() from None
        return Caller(None)

    async def _count_failure(self, ip: str, reason: str) -> None:
        await self._node.gate.count_auth_failure(ip, reason)


class ServerApi:
    """The operations of the server API, each over the backend (cluster-wide).

    ``params`` is the decoded JSON body of a ``POST``, or the query arguments of a
    ``GET``. Results are JSON-ready dicts.
    """

    def __init__(self, node: Node) -> None:
        self._node = node

    async def call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Run ``operation`` (``publish`` ... ``stats``); 503 when the backend is down."""
        handler = getattr(self, f"_op_{operation}", None)
        if operation not in OPERATIONS or handler is None:
            raise ApiError(404, "not_found", "unknown server API operation")
        try:
            result: dict[str, Any] = await handler(params)
        except BackendUnavailable:
            self._node.metrics.backend_errors.inc()
            raise _unavailable() from None
        return result

    async def _op_publish(self, params: Mapping[str, Any]) -> dict[str, Any]:
        room = _room(params)
        data = _data(params, self._node.settings.limits.max_frame_bytes)
        node = self._node
        if rules_for(node.settings.rooms).of(room).publish == "nobody":
            raise ApiError(403, "forbidden", "nobody publishes in this room (rooms.namespaces)")
        pub = await node.backend.publish(room, data, None, node.now_ms())
        return {"room": room, "seq": pub.seq}

    async def _op_send(self, params: Mapping[str, Any]) -> dict[str, Any]:
        to = _uid(params, "to")
        data = _data(params, self._node.settings.limits.max_frame_bytes)
        node = self._node
        dm = DirectMessage(
            mid=secrets.token_urlsafe(12), to_uid=to, from_uid=None, data=data, ts=node.now_ms()
        )
        online, queued = await deliver_dm(node.backend, node.settings, dm)
        return {"mid": dm.mid, "online": online, "queued": queued}

    async def _op_kick(self, params: Mapping[str, Any]) -> dict[str, Any]:
        uid = _uid(params, "uid")
        nodes = await self._close_user(uid, CloseCode.KICKED, "kicked by an operator")
        return {"uid": uid, "nodes": nodes}

    async def _op_ban(self, params: Mapping[str, Any]) -> dict[str, Any]:
        uid = _uid(params, "uid")
        ttl_s = _ttl(params)
        # Ban first: a connection racing in after the close sweep is refused.
        await self._node.backend.ban(uid, ttl_s)
        nodes = await self._close_user(uid, CloseCode.FORBIDDEN, "banned")
        return {"uid": uid, "ttl_s": ttl_s, "nodes": nodes}

    async def _op_unban(self, params: Mapping[str, Any]) -> dict[str, Any]:
        uid = _uid(params, "uid")
        await self._node.backend.unban(uid)
        return {"uid": uid}

    async def _op_presence(self, params: Mapping[str, Any]) -> dict[str, Any]:
        room = _room(params)
        return {"room": room, "users": await self._node.backend.presence_members(room)}

    async def _op_stats(self, params: Mapping[str, Any]) -> dict[str, Any]:
        node = self._node
        counts = await node.backend.cluster_counts()
        nodes = await node.backend.node_stats()
        return {
            "node": {
                "id": node.node_id,
                "connections": len(node.hub),
                "users": node.hub.user_count(),
                "rooms": node.hub.room_count(),
                "draining": node.draining,
            },
            "cluster": {"connections": sum(counts.values()), "nodes": counts},
            "nodes": nodes,
            "totals": totals(nodes),
            "interval_s": node.stats.interval_s,
        }

    async def _close_user(self, uid: str, code: CloseCode, reason: str) -> int:
        command = NodeCommand(NodeOp.CLOSE_USER, int(code), reason, uid=uid)
        return await self._node.backend.command_user(uid, command)


#: operation name -> HTTP method it answers to
OPERATIONS: Mapping[str, str] = {
    "publish": "POST",
    "send": "POST",
    "kick": "POST",
    "ban": "POST",
    "unban": "POST",
    "presence": "GET",
    "stats": "GET",
}


# -- parameter validation --------------------------------------------------------------


def _bad(name: str, what: str) -> ApiError:
    return ApiError(400, "bad_request", f"{name}: {what}")


def _room(params: Mapping[str, Any]) -> str:
    if "room" not in params:
        raise _bad("room", "required")
    try:
        return validate_room(params["room"], None)
    except RequestError:
        raise _bad("room", "must be 1 to 128 bytes of UTF-8 without control characters") from None


def _uid(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    if value is None:
        raise _bad(name, "required")
    try:
        size = len(value.encode("utf-8")) if isinstance(value, str) else 0
    except UnicodeEncodeError:
        size = 0
    if not 0 < size <= MAX_UID_BYTES:
        raise _bad(name, "must be a user id of 1 to 256 bytes of UTF-8")
    return str(value)


def _data(params: Mapping[str, Any], max_bytes: int) -> bytes:
    if "data" not in params:
        raise _bad("data", "required")
    try:
        packed = data_from_json(params["data"])
    except ValueError:
        raise _bad("data", "cannot be encoded as MessagePack") from None
    if len(packed) > max_bytes:
        raise ApiError(413, "too_large", f"data: over limits.max_frame_bytes ({max_bytes})")
    return packed


def _ttl(params: Mapping[str, Any]) -> int | None:
    value = params.get("ttl_s")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_BAN_TTL_S:
        raise _bad("ttl_s", f"must be an integer from 1 to {MAX_BAN_TTL_S}, or null")
    return value
