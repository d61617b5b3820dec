"""The Squall node: handshake decisions, connection life cycle, backend events.

The I/O layer asks the node what to do and writes what it is told; the node keeps
the business rules. Frame handling lives in :mod:`core.session`.

Guarantees:

* Every security check (lockout, revocation, ban) fails closed: when the backend
  cannot answer, the handshake is refused with 503 and nothing is skipped.
* A connection is in the session registry from its admission until :meth:`closed`
  (or until its record expires when the node dies).
* Closes initiated by the node are preceded by a ``bye`` frame with the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from core.admission import AdmissionGate
from core.auth import AuthError, Claims, TokenVerifier
from core.backend.base import (
    Backend,
    BackendUnavailable,
    Membership,
    NodeCommand,
    NodeOp,
    Policy,
    PresenceEvent,
    Publication,
    SessionRecord,
)
from core.catchup import RoomCatchup
from core.clock import Clock
from core.config import Settings
from core.connection import Connection, Transport
from core.hub import Hub
from core.metrics import Metrics
from core.netaddr import origin_allowed
from core.outbound import Outbound
from core.protocol import (
    CloseCode,
    Encoding,
    encode,
    encode_dm,
    encode_msg,
    presence_event,
    welcome,
)
from core.refusal import count_auth_failure
from core.subscriptions import Subscriptions

__all__ = ["UNAVAILABLE", "Node", "Reject"]

log = logging.getLogger("squall.node")


@dataclass(frozen=True, slots=True)
class Reject:
    """A refused handshake: HTTP status before the upgrade, close code after it."""

    status: int
    close_code: CloseCode
    error: str
    message: str
    retry_after: float | None = None


UNAVAILABLE = Reject(503, CloseCode.INTERNAL, "unavailable", "backend unavailable", 5)


def _locked_out(remaining_s: float) -> Reject:
    return Reject(
        429,
        CloseCode.TOO_MANY_CONNECTIONS,
        "locked_out",
        "too many authentication failures",
        remaining_s,
    )


class Node:
    """One Squall node. Create it, ``await start()``, hand it to the handlers."""

    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        verifier: TokenVerifier,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.node_id = backend.node_id
        self.verifier = verifier
        self.clock = clock
        self.metrics = metrics
        self.hub = Hub()
        self.catchup = RoomCatchup(backend, self.hub, self._deliver, self._ack_origin, self.spawn)
        self.subs = Subscriptions(backend, self.hub, on_unsubscribed=self.catchup.forget)
        self.draining = False
        self.pending_handshakes = 0
        #: handshakes queue here (bounded) rather than failing at once in a storm
        self.gate = AdmissionGate(lambda: backend.available)
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        # Admitted (or being admitted) but not yet open: a kick_oldest eviction can
        # reach a connection in this window, and must not be lost.
        self._admitting: dict[str, Connection] = {}
        self._backend_lost = False
        self._count_close = self._closed_with

    # -- life cycle ------------------------------------------------------------

    async def start(self) -> None:
        await self.backend.start(self)
        self.metrics.backend_available.set(1 if self.backend.available else 0)

    async def stop(self) -> None:
        """Deregister from the backend (after the connections were closed).

        Background work still running (cleanup of closed connections) gets a short
        grace period, so sessions are released rather than left to expire.
        """
        for handle in self._expiry.values():
            handle.cancel()
        self._expiry.clear()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        try:
            await self.backend.close()
        except BackendUnavailable:
            log.warning("backend unavailable while deregistering")

    def spawn(self, coro: asyncio.Future[None] | object) -> None:
        """Run a coroutine in the background, keeping a reference until it ends."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    def now_ms(self) -> int:
        return int(self.clock.wall() * 1000)

    # -- handshake -------------------------------------------------------------

    def capacity_check(self) -> Reject | None:
        """503 while draining, at ``max_connections``, or while the backend is down."""
        if self.draining:
            return Reject(503, CloseCode.RESTART, "draining", "node is draining", 5)
        if len(self.hub) + self.pending_handshakes >= self.settings.limits.max_connections:
            return Reject(503, CloseCode.INTERNAL, "server_full", "too many connections", 5)
        if not self.backend.available:
            return UNAVAILABLE
        return None

    def origin_check(self, origin: str | None, host: str | None) -> Reject | None:
        if origin_allowed(origin, host, self.settings.security.allowed_origins):
            return None
        return Reject(403, CloseCode.FORBIDDEN, "origin_not_allowed", "origin not allowed")

    async def lockout_check(self, ip: str) -> Reject | None:
        try:
            remaining = await self.backend.lockout_remaining(ip)
        except BackendUnavailable:
            return UNAVAILABLE
        return _locked_out(remaining) if remaining > 0 else None

    async def authenticate(self, token: str, ip: str) -> Claims | Reject:
        """Check the ip's lockout, verify ``token``, check revocation and bans.

        A locked-out ip is refused (429) whatever the token; other failures count
        toward its lockout. A valid token costs one backend round trip in all
        (:meth:`Backend.access_state`); an invalid one, the lockout read and the count.
        """
        try:
            claims = self.verifier.verify(token, "access")
        except AuthError as e:
            locked = await self.lockout_check(ip)
            return locked if locked is not None else await self._auth_failed(ip, e.reason)
        try:
            state = await self.backend.access_state(ip, claims.sub, claims.jti)
        except BackendUnavailable:
            self.metrics.backend_errors.inc()
            return UNAVAILABLE
        if state.lockout_s > 0:
            return _locked_out(state.lockout_s)
        if state.revoked:
            return await self._auth_failed(ip, "revoked")
        if state.banned:
            self.metrics.auth_failures.labels("banned").inc()
            return Reject(403, CloseCode.FORBIDDEN, "banned", "user is banned")
        return claims

    async def count_auth_failure(self, ip: str, reason: str) -> None:
        """Count a failure of ``ip`` toward its lockout (see :func:`count_auth_failure`)."""
        await count_auth_failure(self.backend, self.metrics, self.settings.auth.lockout, ip, reason)

    async def _auth_failed(self, ip: str, reason: str) -> Reject:
        await self.count_auth_failure(ip, reason)
        return Reject(401, CloseCode.UNAUTHORIZED, "unauthorized", f"invalid token: {reason}")

    def new_connection(self, ip: str, encoding: Encoding, transport: Transport) -> Connection:
        conn = Connection(
            conn_id=secrets.token_urlsafe(12),
            ip=ip,
            encoding=encoding,
            transport=transport,
            outbound_limit=self.settings.limits.outbound_buffer_bytes,
            now=self.clock.monotonic(),
            connected_at=self.now_ms(),
        )
        conn.on_closed = self._count_close  # one shared callable, not one per connection
        return conn

    def _closed_with(self, code: int) -> None:
        self.metrics.closes.labels(str(code)).inc()

    async def admit(self, conn: Connection, claims: Claims) -> Reject | None:
        """Register the session under the per-user cap; kick the oldest when told to."""
        limits = self.settings.limits
        record = SessionRecord(
            conn_id=conn.conn_id,
            uid=claims.sub,
            node_id=self.node_id,
            ip=conn.ip,
            connected_at=conn.connected_at,
            jti=claims.jti,
        )
        policy: Policy = "reject" if limits.on_new_login == "reject" else "kick_oldest"
        self._admitting[conn.conn_id] = conn
        try:
            result = await self.backend.admit(record, limits.max_connections_per_user, policy)
        except asyncio.CancelledError:
            self._admitting.pop(conn.conn_id, None)  # the connection went away meanwhile
            raise
        except BackendUnavailable:
            self.metrics.backend_errors.inc()
            self._admitting.pop(conn.conn_id, None)
            # The script may have run before the reply was lost: undo it if we can.
            with contextlib.suppress(BackendUnavailable):
                await self.backend.release(record)
            return UNAVAILABLE
        if not result.admitted:
            self._admitting.pop(conn.conn_id, None)
            return Reject(
                429,
                CloseCode.TOO_MANY_CONNECTIONS,
                "too_many_connections",
                "connection limit for this user reached",
                1,
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
            if old.node_id == self.node_id:
                self.on_command(cmd)
            else:
                try:
                    await self.backend.send_command(old.node_id, cmd)
                except BackendUnavailable:
                    self.metrics.backend_errors.inc()
        if conn.kicked is not None:
            # A newer login evicted this one while it was being admitted.
            await self.release(conn)
            return Reject(429, CloseCode.REPLACED, "replaced", "replaced by a newer login", 1)
        # Fetched here, inside the admission's await, rather than in a task of its own
        # after the upgrade: one Task less per handshake.
        try:
            conn.inbox = await self.backend.inbox_list(claims.sub)
        except BackendUnavailable:
            self.metrics.backend_errors.inc()  # delivered on the next connection instead
        return None

    async def release(self, conn: Connection) -> None:
        """Undo an admission whose upgrade never completed."""
        self._admitting.pop(conn.conn_id, None)
        if conn.record is not None:
            try:
                await self.backend.release(conn.record)
            except BackendUnavailable:
                self.metrics.backend_errors.inc()
            conn.record = None

    # -- open / close ----------------------------------------------------------

    def opened(self, conn: Connection, on_auth_timeout: Callable[[], None]) -> None:
        """The upgrade completed: greet an authenticated connection or wait for ``auth``."""
        self._admitting.pop(conn.conn_id, None)
        self.hub.add(conn)
        self._empty.clear()
        self.metrics.connections.set(len(self.hub))
        if conn.kicked is not None:  # evicted between admission and upgrade
            conn.close(*conn.kicked)
            return
        if conn.uid is None:
            handle = asyncio.get_running_loop().call_later(
                self.settings.auth.timeout_s, on_auth_timeout
            )
            self._expiry[conn.conn_id] = handle
            return
        self.greet(conn)

    def greet(self, conn: Connection) -> None:
        """Send ``welcome``, arm the token-expiry timer, redeliver the offline inbox."""
        assert conn.uid is not None and conn.claims is not None
        self.hub.bind_user(conn)
        self.metrics.users.set(self.hub.user_count())
        self.rearm_expiry(conn)
        conn.send_frame(
            welcome(
                conn.conn_id,
                conn.uid,
                self.node_id,
                self.settings.heartbeat.interval_s,
                conn.claims.exp * 1000,
            )
        )
        self.metrics.frames_out.labels("welcome").inc()
        pending, conn.inbox = conn.inbox, None
        if pending:
            for dm in pending:
                conn.send(Outbound(partial(encode_dm, dm, True)))
            self.metrics.frames_out.labels("dm").inc(len(pending))

    def rearm_expiry(self, conn: Connection) -> None:
        assert conn.claims is not None
        old = self._expiry.pop(conn.conn_id, None)
        if old is not None:
            old.cancel()
        delay = conn.claims.exp + self.settings.auth.leeway_s - self.clock.wall()
        self._expiry[conn.conn_id] = asyncio.get_running_loop().call_later(
            max(delay, 0.0), self._expire, conn
        )

    def _expire(self, conn: Connection) -> None:
        self._expiry.pop(conn.conn_id, None)
        conn.close(CloseCode.TOKEN_EXPIRED, "token expired")

    async def closed(self, conn: Connection) -> None:
        """The connection is gone: leave its rooms, release its session."""
        handle = self._expiry.pop(conn.conn_id, None)
        if handle is not None:
            handle.cancel()
        conn.closed = True
        rooms = self.hub.remove(conn)
        if not len(self.hub):
            self._empty.set()
        self.metrics.connections.set(len(self.hub))
        self.metrics.users.set(self.hub.user_count())
        self.metrics.rooms.set(self.hub.room_count())
        if conn.uid is None:
            return
        announce = self.settings.rooms.presence_events
        try:
            for room in rooms:
                await self.backend.presence_leave(
                    Membership(room, conn.uid, conn.conn_id), announce
                )
            await self.release(conn)
        except BackendUnavailable:
            self.metrics.backend_errors.inc()
        for room in rooms:
            await self.subs.sync(room)

    # -- backend listener ------------------------------------------------------

    def on_publication(self, pub: Publication) -> None:
        # In order and once per room; gaps are caught up from history (core.catchup).
        self.catchup.publication(pub)

    def _ack_origin(self, pub: Publication) -> None:
        if pub.origin is not None:
            # The publisher's ``ok`` must precede the ``msg`` on its connection.
            conn_id, _, rid = pub.origin.rpartition(":")
            origin = self.hub.get(conn_id)
            if origin is not None and rid.isdigit() and int(rid) in origin.pending_pubs:
                origin.pending_pubs.pop(int(rid), None)
                origin.send_frame({"t": "ok", "id": int(rid), "seq": pub.seq})

    def _deliver(self, pub: Publication) -> None:
        start = self.clock.monotonic()
        self._ack_origin(pub)
        out = Outbound(lambda enc: encode_msg(pub, enc))
        sent = self.hub.fanout(pub, out)
        if sent:
            self.metrics.frames_out.labels("msg").inc(sent)
        self.metrics.fanout_seconds.observe(self.clock.monotonic() - start)

    def on_presence(self, event: PresenceEvent) -> None:
        frame = presence_event(event.room, event.uid, event.event)
        out = Outbound(partial(encode, frame))
        n = 0
        for conn in self.hub.members(event.room):
            if conn.conn_id != event.origin and conn.send(out):
                n += 1
        if n:
            self.metrics.frames_out.labels("presence").inc(n)

    def on_command(self, command: NodeCommand) -> None:
        code, reason = command.code, command.reason
        if command.op is NodeOp.CLOSE_CONN and command.conn_id is not None:
            conn = self.hub.get(command.conn_id)
            if conn is not None and conn.uid is not None:
                conn.close(code, reason)
            else:
                pending = conn or self._admitting.get(command.conn_id)
                if pending is not None:
                    pending.kicked = (code, reason)
        elif command.op is NodeOp.CLOSE_USER and command.uid is not None:
            for conn in self.hub.of_user(command.uid):
                conn.close(code, reason)
        elif command.op is NodeOp.CLOSE_JTI and command.jti is not None:
            for conn in self.hub:
                if conn.claims is not None and conn.claims.jti == command.jti:
                    conn.close(code, reason)
        elif command.op is NodeOp.DELIVER_DM and command.dm is not None:
            dm = command.dm
            out = Outbound(lambda enc: encode_dm(dm, False, enc))
            n = sum(1 for conn in self.hub.of_user(dm.to_uid) if conn.send(out))
            if n:
                self.metrics.frames_out.labels("dm").inc(n)

    def on_availability(self, available: bool) -> None:
        self.metrics.backend_available.set(1 if available else 0)
        if available:
            log.info("backend available")
            # resubscribed: what the rooms missed meanwhile comes from history
            self.catchup.resume_all()
            if self._backend_lost:
                self._backend_lost = False
                self.spawn(self.reregister())
        else:
            self._backend_lost = True
            log.error("backend unavailable")

    async def reregister(self) -> None:
        """Write this node's sessions and memberships again after an outage.

        A restarted or flushed Redis lost them, and the heartbeat refresh only
        extends records that exist. Re-admitting an existing record is harmless
        (admission of a known conn id replaces it). Memberships are re-added without
        presence events: nobody left or joined.
        """
        conns = [c for c in self.hub if c.record is not None and not c.closed]
        limit = self.settings.limits.max_connections_per_user
        for start in range(0, len(conns), 100):
            chunk = conns[start : start + 100]
            results = await asyncio.gather(
                *(self._reregister_one(c, limit) for c in chunk), return_exceptions=True
            )
            if any(isinstance(r, BackendUnavailable) for r in results):
                self.metrics.backend_errors.inc()
                return  # down again: the next recovery starts over
        log.info("re-registered %d sessions after a backend outage", len(conns))

    async def _reregister_one(self, conn: Connection, limit: int) -> None:
        assert conn.record is not None
        await self.backend.admit(conn.record, limit, "reject")
        for room in list(conn.rooms):
            await self.backend.presence_join(
                Membership(room, conn.record.uid, conn.conn_id), announce=False
            )

    async def wait_empty(self) -> None:
        """Return once the node holds no connection."""
        await self._empty.wait()

    # -- operator actions ------------------------------------------------------

    def close_all(self, code: CloseCode, reason: str) -> None:
        for conn in self.hub:
            conn.close(code, reason)
