"""The admission gate: every decision on who may connect, and the code of each refusal.

Used by the handshake (``handlers/ws.py``), first-frame ``auth`` and in-band
``refresh`` (:mod:`core.session`) and the server API (:mod:`core.admin`), so a refusal
is decided, counted and coded in one place.

Guarantees:

* Every security check (lockout, revocation, ban) fails closed: when the backend
  cannot answer, the answer is 503 and nothing is skipped.
* A valid token costs one backend round trip (:meth:`Backend.access_state`) before
  admission, and the admission one more on one Redis or in memory (registry write,
  node index, revocation and ban re-read, inbox page: one atomic step); an invalid
  token, the lockout read and the failure count.
* The per-user cap is exact cluster-wide (one atomic backend admission). A connection
  being admitted is visible to kicks (:meth:`Hub.admitting`): an eviction that reaches
  it before it opens is kept and applied, never lost.
* No admission race (:mod:`core.admission_watch`): revocation and ban are read again
  after the session record is written, and logout / ban / kick commands mark
  connections being admitted, so a token revoked or a user banned or kicked at any
  moment before the connection is visible never gets an open connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from core.admission_watch import access_refusal, recheck, refusal_for_kick
from core.auth import Claims, TokenVerifier
from core.backend.base import Backend, NodeCommand, NodeOp, Policy, SessionRecord
from core.codes import CloseCode
from core.config import Settings
from core.connection import Connection
from core.errors import AuthError, BackendUnavailable, Refusal, RequestError
from core.hooks.ask import ask
from core.hooks.contract import (
    ConnectAnswer,
    ConnectRequest,
    HookFailed,
    RefreshAnswer,
    RefreshRequest,
    Refuse,
)
from core.hooks.runner import Hooks
from core.hub import Hub
from core.inbox_delivery import admission_inbox, admission_page
from core.lifecycle import Lifecycle
from core.metrics import Metrics
from core.netaddr import lockout_key, origin_allowed
from core.protocol import validate_room
from core.refusal import count_auth_failure, origin_refusal, token_refusal

__all__ = ["UNAVAILABLE", "Gate"]

UNAVAILABLE = Refusal(
    503,
    "unavailable",
    "backend unavailable: retry after Retry-After seconds (GET /readyz says when it is back)",
    5,
)


def _locked_out(remaining_s: float) -> Refusal:
    return Refusal(
        429,
        "locked_out",
        "too many authentication failures",
        remaining_s,
        CloseCode.TOO_MANY_CONNECTIONS,
    )


class Gate:
    """Admission decisions of one node."""

    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        verifier: TokenVerifier,
        metrics: Metrics,
        hub: Hub,
        life: Lifecycle,
        local_command: Callable[[NodeCommand], None],
    ) -> None:
        self._settings = settings
        self._backend = backend
        self._verifier = verifier
        self._metrics = metrics
        self._hub = hub
        self._life = life
        self._local_command = local_command
        self._node_id = backend.node_id
        #: handshakes between their first check and the upgrade (count toward the cap)
        self.pending_handshakes = 0
        #: the application's hooks (set by the node); the connect hook runs in admit()
        self.hooks: Hooks | None = None
        #: what every admission asks of the inbox (fixed by the settings)
        self._inbox_page = admission_inbox(settings)

    # -- before the token ----------------------------------------------------------

    def capacity_check(self) -> Refusal | None:
        """503 while draining, at ``max_connections``, or while the backend is down."""
        if self._life.draining:
            return Refusal(
                503, "draining", "node is draining: reconnect to another", 5, CloseCode.RESTART
            )
        if len(self._hub) + self.pending_handshakes >= self._settings.limits.max_connections:
            return Refusal(
                503, "server_full", "too many connections on this node (limits.max_connections)", 5
            )
        if not self._backend.available:
            return UNAVAILABLE
        return None

    def origin_check(self, origin: str | None, host: str | None) -> Refusal | None:
        allowed = self._settings.security.allowed_origins
        if origin_allowed(origin, host, allowed):
            return None
        return Refusal(403, "origin_not_allowed", origin_refusal(origin, host, allowed))

    def lockout_key(self, ip: str) -> str:
        """What the lockout counts for ``ip`` (:func:`core.netaddr.lockout_key`)."""
        return lockout_key(ip, self._settings.auth.lockout.ipv6_prefix)

    async def lockout_check(self, ip: str) -> Refusal | None:
        try:
            remaining = await self._backend.lockout_remaining(self.lockout_key(ip))
        except BackendUnavailable:
            return UNAVAILABLE
        return _locked_out(remaining) if remaining > 0 else None

    # -- the token -----------------------------------------------------------------

    async def authenticate(self, token: str, ip: str) -> Claims | Refusal:
        """Check the ip's lockout, verify ``token``, check revocation and bans.

        A locked-out ip is refused (429) whatever the token; other failures count
        toward its lockout.
        """
        try:
            claims = self._verifier.verify(token, "access")
        except AuthError as e:
            locked = await self.lockout_check(ip)
            return locked if locked is not None else await self._auth_failed(ip, e.reason)
        try:
            state = await self._backend.access_state(self.lockout_key(ip), claims.sub, claims.jti)
        except BackendUnavailable:
            self._metrics.backend_errors.inc()
            return UNAVAILABLE
        if state.lockout_s > 0:
            return _locked_out(state.lockout_s)
        if state.revoked:
            return await self._auth_failed(ip, "revoked")
        if state.banned:
            self._metrics.auth_failures.labels("banned").inc()
            return Refusal(403, "banned", "user is banned")
        return claims

    async def count_auth_failure(self, ip: str, reason: str) -> None:
        """Count a failure of ``ip`` toward its lockout (see :func:`count_auth_failure`)."""
        await count_auth_failure(
            self._backend, self._metrics, self._settings.auth.lockout, ip, reason
        )

    async def _auth_failed(self, ip: str, reason: str) -> Refusal:
        await self.count_auth_failure(ip, reason)
        return Refusal(401, "unauthorized", token_refusal(reason))

    # -- admission -----------------------------------------------------------------

    async def admit(self, conn: Connection, claims: Claims) -> Refusal | None:
        """Ask the connect hook (when configured: its refusal, or its failure when
        fail-closed, refuses before anything is registered), then register the session
        under the per-user cap; kick the oldest when told to."""
        refused = await self._connect_hook(conn, claims)
        if refused is not None:
            return refused
        limits = self._settings.limits
        record = SessionRecord(
            conn_id=conn.conn_id,
            uid=claims.sub,
            node_id=self._node_id,
            ip=conn.ip,
            connected_at=conn.connected_at,
            jti=claims.jti,
        )
        policy: Policy = "reject" if limits.on_new_login == "reject" else "kick_oldest"
        hub = self._hub
        conn.claims = claims  # known while admitting: commands can aim at it
        hub.admitting[conn.conn_id] = conn
        try:
            result = await self._backend.admit(
                record, limits.max_connections_per_user, policy, self._inbox_page
            )
        except asyncio.CancelledError:
            hub.admitting.pop(conn.conn_id, None)  # the connection went away meanwhile
            raise
        except BackendUnavailable:
            self._metrics.backend_errors.inc()
            hub.admitting.pop(conn.conn_id, None)
            # The script may have run before the reply was lost: undo it if we can.
            with contextlib.suppress(BackendUnavailable):
                await self._backend.release(record)
            return UNAVAILABLE
        if not result.admitted:
            hub.admitting.pop(conn.conn_id, None)
            return Refusal(
                429,
                "too_many_connections",
                "connection limit for this user reached (limits.max_connections_per_user "
                "with limits.on_new_login: reject)",
                1,
                CloseCode.TOO_MANY_CONNECTIONS,
            )
        conn.uid = claims.sub
        conn.claims = claims
        conn.record = record
        for old in result.evicted:
            cmd = NodeCommand(
                NodeOp.CLOSE_CONN,
                int(CloseCode.REPLACED),
                "replaced by a newer login",
                conn_id=old.conn_id,
            )
            if old.node_id == self._node_id:
                self._local_command(cmd)
            else:
                try:
                    await self._backend.send_command(old.node_id, cmd)
                except BackendUnavailable:
                    self._metrics.backend_errors.inc()
        # Revoked, banned or kicked meanwhile? (core/admission_watch.py) Read by the
        # admission's own atomic step where the backend can; else read again here.
        if result.access is not None:
            refusal = access_refusal(result.access)
        else:
            try:
                refusal = await recheck(self._backend, self.lockout_key(conn.ip), claims)
            except BackendUnavailable:
                self._metrics.backend_errors.inc()
                refusal = UNAVAILABLE
        if refusal is None:
            if result.inbox is not None:
                conn.inbox = result.inbox
            else:
                # Fetched here, inside the admission's await, rather than in a task of
                # its own after the upgrade: one Task less per handshake.
                try:
                    conn.inbox = await admission_page(self._backend, self._inbox_page, claims.sub)
                except BackendUnavailable:
                    self._metrics.backend_errors.inc()  # delivered on the next connection
            if conn.kicked is not None:
                # A newer login evicted it, or a logout / ban / kick aimed at it.
                refusal = refusal_for_kick(conn.kicked)
        if refusal is not None:
            await self._life.release(conn)
        return refusal

    async def refresh_hook(self, conn: Connection, claims: Claims, request_id: int) -> None:
        """Ask the refresh hook (when configured) about a valid token for the same user;
        its refusal or fail-closed failure raises :class:`RequestError` (the ``err``
        answering the ``refresh``); its ``meta``, when given, replaces the connection's."""
        hooks = self.hooks
        if hooks is None or not hooks.enabled("refresh"):
            return
        request = RefreshRequest(claims.sub, conn.conn_id, claims.exp, conn.meta or {})
        answer = await ask(hooks, "refresh", request, request_id)
        assert isinstance(answer, RefreshAnswer)
        if answer.meta is not None:
            conn.meta = answer.meta

    async def _connect_hook(self, conn: Connection, claims: Claims) -> Refusal | None:
        """Ask the connect hook (when configured); set the server-side rooms and meta."""
        conn.auto_rooms = _rooms(claims.rooms_auto)
        hooks = self.hooks
        if hooks is None or not hooks.enabled("connect"):
            return None
        request = ConnectRequest(
            claims.sub, conn.conn_id, conn.ip, self._node_id, claims.role, claims.rooms_auto
        )
        try:
            answer = await hooks.call("connect", request)
        except HookFailed:
            return Refusal(503, "hook_unavailable", "the application is unavailable", 1)
        if isinstance(answer, Refuse):
            return Refusal(answer.code, "refused", answer.message, None, CloseCode.FORBIDDEN)
        assert isinstance(answer, ConnectAnswer)
        conn.meta = answer.meta
        conn.auto_rooms = _rooms((*conn.auto_rooms, *answer.rooms))
        return None


def _rooms(names: tuple[str, ...]) -> tuple[str, ...]:
    """Valid room names of ``names``, first occurrence kept, in order."""
    out: dict[str, None] = {}
    for name in names:
        try:
            out[validate_room(name, None)] = None
        except RequestError:
            continue
    return tuple(out)
