"""Frame handling for one connection: what each client frame does.

``handle`` is awaited by the I/O layer for every inbound message, one at a time per
connection, so a connection's requests are handled in order. ``pub`` is pipelined:
``handle`` queues it for the connection's publisher and returns, and the publisher
sends all queued pubs in one :meth:`Backend.publish_many` (published in arrival order).
Every request gets exactly one ``ok`` or ``err`` (``ping`` gets ``pong``).
"""

from __future__ import annotations

import secrets
from functools import partial

from core.auth import Claims, room_allowed
from core.backend.base import (
    Backend,
    BackendUnavailable,
    DirectMessage,
    InboxQuotaExceeded,
    Membership,
    NodeCommand,
    NodeOp,
    Publication,
    PublishRequest,
    RateLimited,
    RateSpec,
)
from core.config import Settings
from core.connection import Connection
from core.errors import Refusal
from core.inbox_delivery import QUOTA_REASON, acks_owed, check_recipient, inbox_acked
from core.node import Node
from core.outbound import Outbound
from core.protocol import (
    AckFrame,
    AuthFrame,
    ClientFrame,
    CloseCode,
    ErrCode,
    JoinFrame,
    LeaveFrame,
    PingFrame,
    PresenceFrame,
    ProtocolError,
    PubFrame,
    RefreshFrame,
    RequestError,
    SendFrame,
    decode,
    encode_msg,
    error_frame,
    ok,
    pong,
)
from core.room_access import leave_disallowed

__all__ = ["MAX_PUBS_IN_FLIGHT", "Session"]

#: pubs of one connection queued or in the backend; more are answered 429
MAX_PUBS_IN_FLIGHT = 1024


class Session:
    """Dispatches decoded frames of any connection of one node."""

    def __init__(self, node: Node) -> None:
        self._gate = node.gate
        self._life = node.life
        self._router = node.router
        self._catchup = node.catchup
        self._hub = node.hub
        self._subs = node.subs
        self._backend = node.backend
        self._settings = node.settings
        self._clock = node.clock
        self._metrics = node.metrics

    async def handle(self, conn: Connection, message: bytes | str) -> None:
        """Process one inbound WebSocket message of ``conn``."""
        if conn.closed:
            return
        conn.last_seen = self._clock.monotonic()
        try:
            frame = decode(message, conn.encoding)
        except ProtocolError as e:
            self._metrics.frames_in.labels("invalid").inc()
            conn.close(e.close_code, e.reason)
            return
        except RequestError as e:
            self._metrics.frames_in.labels("invalid").inc()
            if conn.uid is None:
                conn.close(CloseCode.UNAUTHORIZED, "authenticate first")
                return
            if await self._rate_ok(conn, e.request_id):
                self._reply_err(conn, e)
            return
        ftype = _FRAME_TYPES.get(type(frame), "unknown")
        self._metrics.frames_in.labels(ftype).inc()
        if conn.uid is None:
            if isinstance(frame, AuthFrame):
                await self._first_frame_auth(conn, frame)
            else:
                conn.close(CloseCode.UNAUTHORIZED, "authenticate first")
            return
        # A pub to a joined room is charged inside the publish (one backend round trip
        # for both); every other frame is charged here.
        charged_by_publish = isinstance(frame, PubFrame) and frame.room in conn.rooms
        # Acks of the inbox pages this node sent are free (core/inbox_delivery.py).
        free = charged_by_publish or (isinstance(frame, AckFrame) and acks_owed(conn, frame.mids))
        if not free and not await self._rate_ok(conn, getattr(frame, "id", None)):
            return
        try:
            await self._dispatch(conn, frame)
        except RequestError as e:
            self._reply_err(conn, e)
        except BackendUnavailable:
            self._metrics.backend_errors.inc()
            rid = getattr(frame, "id", None)
            self._reply_err(conn, RequestError(ErrCode.UNAVAILABLE, "backend unavailable", rid))

    # -- helpers ---------------------------------------------------------------

    def _reply_err(self, conn: Connection, e: RequestError) -> None:
        self._metrics.errors.labels(str(int(e.code))).inc()
        self._metrics.frames_out.labels("err").inc()
        conn.send_frame(error_frame(e))

    def _reply(self, conn: Connection, frame: dict[str, object]) -> None:
        self._metrics.frames_out.labels(str(frame["t"])).inc()
        conn.send_frame(frame)

    async def _rate_ok(self, conn: Connection, request_id: int | None) -> bool:
        """Sliding-window limit per user, cluster-wide; 429s, then 4008 after strikes."""
        spec = self._rate_spec(conn)
        try:
            retry = await self._backend.rate_hit(spec.key, spec.limit, spec.window_s)
        except BackendUnavailable:
            self._metrics.backend_errors.inc()
            retry = 0.0  # the rate limit is not a security check: serve, don't stall
        if retry <= 0:
            return True
        self._rate_limited(conn, request_id, retry)
        return False

    def _rate_spec(self, conn: Connection) -> RateSpec:
        rl = self._settings.ratelimit
        return RateSpec(f"rl:{conn.uid}", rl.messages, rl.window_s)

    def _rate_limited(self, conn: Connection, request_id: int | None, retry: float) -> None:
        """Answer 429 with ``retry_after``; close 4008 after ``strikes`` of them."""
        rl = self._settings.ratelimit
        now = self._clock.monotonic()
        if now > conn.strike_window_end:
            conn.strikes = 0
        conn.strikes += 1
        conn.strike_window_end = now + rl.window_s
        if conn.strikes > rl.strikes:
            conn.close(CloseCode.RATE_LIMIT, "rate limit exceeded")
            return
        self._reply_err(
            conn, RequestError(ErrCode.RATE_LIMITED, "rate limited", request_id, round(retry, 3))
        )

    async def _first_frame_auth(self, conn: Connection, frame: AuthFrame) -> None:
        result = await self._gate.authenticate(frame.token, conn.ip)
        if isinstance(result, Refusal):
            conn.close(result.close_code, result.message)
            return
        rejected = await self._gate.admit(conn, result)
        if rejected is not None:
            conn.close(rejected.close_code, rejected.message)
            return
        if conn.closed:  # the client went away while we were admitting it
            await self._life.release(conn)
            return
        self._life.greet(conn)

    async def _dispatch(self, conn: Connection, frame: ClientFrame) -> None:
        if isinstance(frame, PubFrame):
            await self._pub(conn, frame)
        elif isinstance(frame, PingFrame):
            self._reply(conn, pong(frame.id))
        elif isinstance(frame, JoinFrame):
            await self._join(conn, frame)
        elif isinstance(frame, LeaveFrame):
            await self._leave(conn, frame)
        elif isinstance(frame, SendFrame):
            await self._send(conn, frame)
        elif isinstance(frame, AckFrame):
            await inbox_acked(self._backend, self._settings, self._metrics, conn, frame.mids)
        elif isinstance(frame, PresenceFrame):
            await self._presence(conn, frame)
        elif isinstance(frame, RefreshFrame):
            await self._refresh(conn, frame)
        elif isinstance(frame, AuthFrame):
            raise RequestError(ErrCode.CONFLICT, "already authenticated", None)

    # -- rooms -----------------------------------------------------------------

    def _claims(self, conn: Connection) -> Claims:
        assert conn.claims is not None
        return conn.claims

    async def _join(self, conn: Connection, f: JoinFrame) -> None:
        if not room_allowed(self._claims(conn), f.room):
            raise RequestError(ErrCode.FORBIDDEN, "room not allowed", f.id)
        if f.room in conn.rooms:
            raise RequestError(ErrCode.CONFLICT, "already joined", f.id)
        if len(conn.rooms) >= self._settings.limits.max_rooms_per_connection:
            raise RequestError(ErrCode.FORBIDDEN, "too many rooms for this connection", f.id)
        assert conn.uid is not None
        # Join locally first with a buffer, so live messages arriving while history
        # is fetched are neither lost nor sent out of order.
        conn.joining[f.room] = []
        self._hub.add_member(f.room, conn)
        self._metrics.rooms.set(self._hub.room_count())
        membership = Membership(f.room, conn.uid, conn.conn_id)
        try:
            await self._subs.sync(f.room)
            if f.since is not None:
                rec = await self._backend.recover(f.room, f.since, f.epoch)
                history, position, recovered = rec.publications, rec.position, rec.recovered
            else:
                history, position, recovered = [], await self._backend.position(f.room), False
            await self._backend.presence_join(membership, self._settings.rooms.presence_events)
            if f.room in conn.rooms:
                conn.memberships[f.room] = membership
        except BackendUnavailable:
            self._hub.remove_member(f.room, conn)
            self._metrics.rooms.set(self._hub.room_count())
            self._life.spawn(self._quiet_sync(f.room))
            raise
        if conn.closed:
            # closed() already ran for this connection's rooms; undo our membership.
            await self._backend.presence_leave(membership, self._settings.rooms.presence_events)
            return
        self._catchup.seen(f.room, position.epoch, position.seq)
        last = f.since if f.since is not None else position.seq
        for pub in history:
            if pub.seq > last:
                conn.send(Outbound(partial(encode_msg, pub)))
                last = pub.seq
        last = max(last, position.seq)
        self._reply(
            conn,
            ok(f.id, room=f.room, seq=position.seq, epoch=position.epoch, recovered=recovered),
        )
        buffered = conn.joining.pop(f.room, [])
        for pub in buffered:
            if pub.seq > last and pub.epoch == position.epoch:
                conn.send(Outbound(partial(encode_msg, pub)))
                last = pub.seq
        self._catchup.joined(f.room, conn.conn_id, position.epoch, last)

    async def _quiet_sync(self, room: str) -> None:
        try:
            await self._subs.sync(room)
        except BackendUnavailable:
            self._metrics.backend_errors.inc()

    async def _leave(self, conn: Connection, f: LeaveFrame) -> None:
        if f.room not in conn.rooms:
            raise RequestError(ErrCode.NOT_FOUND, "not a member of this room", f.id)
        assert conn.uid is not None
        self._hub.remove_member(f.room, conn)
        self._metrics.rooms.set(self._hub.room_count())
        self._reply(conn, ok(f.id, room=f.room))
        await self._backend.presence_leave(
            Membership(f.room, conn.uid, conn.conn_id), self._settings.rooms.presence_events
        )
        await self._subs.sync(f.room)

    async def _pub(self, conn: Connection, f: PubFrame) -> None:
        """Queue the pub for this connection's publisher and return at once.

        Pipelining: the consumer goes on with the next frame while the backend
        publishes; the publisher sends every pub queued meanwhile in one
        :meth:`Backend.publish_many` (one round trip on Redis), so a connection's pubs
        are published in the order they arrived and answered ``ok`` / ``err`` each.
        The token's ``rooms`` claim is checked first, not only membership.
        """
        if not room_allowed(self._claims(conn), f.room):
            raise RequestError(ErrCode.FORBIDDEN, "room not allowed", f.id)
        if f.room not in conn.rooms:
            raise RequestError(ErrCode.FORBIDDEN, "join the room before publishing", f.id)
        if not self._backend.available:
            # Not subscribed: an ok now could not promise delivery to this node's members.
            raise RequestError(
                ErrCode.UNAVAILABLE, "not subscribed: backend unavailable", f.id, 1.0
            )
        if len(conn.pending_pubs) >= MAX_PUBS_IN_FLIGHT:
            raise RequestError(ErrCode.RATE_LIMITED, "too many pubs in flight", f.id, 1.0)
        conn.pending_pubs[f.id] = None
        request = PublishRequest(
            f.room,
            f.data,
            conn.uid,
            self._life.now_ms(),
            origin=f"{conn.conn_id}:{f.id}",
            rate=self._rate_spec(conn),
        )
        queue = conn.pubq
        if queue is None:
            conn.pubq = [(f.id, request)]
            self._life.spawn(self._publisher(conn))
        else:
            queue.append((f.id, request))

    async def _publisher(self, conn: Connection) -> None:
        """Publish ``conn``'s queued pubs, batch after batch, until none is left."""
        try:
            while conn.pubq:
                batch, conn.pubq = conn.pubq, []
                outcomes = await self._backend.publish_many([r for _, r in batch])
                for (rid, _), outcome in zip(batch, outcomes, strict=True):
                    if isinstance(outcome, Publication):
                        # the router answers, unless the publication already made it
                        self._router.published(conn, rid, outcome.seq)
                        continue
                    conn.pending_pubs.pop(rid, None)
                    if isinstance(outcome, RateLimited):
                        self._rate_limited(conn, rid, outcome.retry_after)
                    else:
                        self._metrics.backend_errors.inc()
                        self._reply_err(
                            conn, RequestError(ErrCode.UNAVAILABLE, "backend unavailable", rid, 1.0)
                        )
        finally:
            conn.pubq = None

    def overloaded(self, conn: Connection, message: bytes | str) -> None:
        """Answer a frame that arrived while too many wait for the consumer: 429.

        The frame is not handled. Each such answer counts as a rate-limit strike, so a
        client that keeps sending regardless is closed with 4008, after the 429s.
        """
        try:
            rid = getattr(decode(message, conn.encoding), "id", None)
        except (ProtocolError, RequestError):
            rid = None
        self._metrics.frames_in.labels("overloaded").inc()
        self._rate_limited(conn, rid, 1.0)

    async def _presence(self, conn: Connection, f: PresenceFrame) -> None:
        if not room_allowed(self._claims(conn), f.room):
            raise RequestError(ErrCode.FORBIDDEN, "room not allowed", f.id)
        users = await self._backend.presence_members(f.room)
        self._reply(conn, ok(f.id, users=users))

    # -- private messages ------------------------------------------------------

    async def _send(self, conn: Connection, f: SendFrame) -> None:
        assert conn.uid is not None
        await check_recipient(self._backend, self._settings, conn.uid, f.to, f.id)
        dm = DirectMessage(
            mid=secrets.token_urlsafe(12),
            to_uid=f.to,
            from_uid=conn.uid,
            data=f.data,
            ts=self._life.now_ms(),
        )
        try:
            result = await deliver_dm(self._backend, self._settings, dm)
        except InboxQuotaExceeded:
            raise RequestError(ErrCode.RATE_LIMITED, QUOTA_REASON, f.id) from None
        self._reply(conn, ok(f.id, mid=dm.mid, online=result[0], queued=result[1]))

    # -- tokens ----------------------------------------------------------------

    async def _refresh(self, conn: Connection, f: RefreshFrame) -> None:
        result = await self._gate.authenticate(f.token, conn.ip)
        if isinstance(result, Refusal):
            code = ErrCode.UNAVAILABLE if result.status == 503 else ErrCode.FORBIDDEN
            raise RequestError(code, result.message, f.id)
        if result.sub != conn.uid:
            raise RequestError(ErrCode.FORBIDDEN, "token is for another user", f.id)
        conn.claims = result
        await leave_disallowed(
            conn,
            result,
            hub=self._hub,
            backend=self._backend,
            subs=self._subs,
            metrics=self._metrics,
            announce=self._settings.rooms.presence_events,
        )
        self._life.rearm_expiry(conn)
        self._reply(conn, ok(f.id, exp=result.exp * 1000))


async def deliver_dm(backend: Backend, settings: Settings, dm: DirectMessage) -> tuple[bool, bool]:
    """Store ``dm`` in the inbox and push it to every node holding the recipient.

    Returns ``(online, queued)``. The message stays in the inbox until acked, so a
    recipient that misses the live copy gets it on its next connection.
    """
    queued = False
    if settings.offline.max_messages > 0:
        queued = await backend.inbox_put(dm)
    online = await backend.command_user(
        dm.to_uid, NodeCommand(NodeOp.DELIVER_DM, uid=dm.to_uid, dm=dm)
    )
    return online > 0, queued


_FRAME_TYPES: dict[type, str] = {
    AuthFrame: "auth",
    RefreshFrame: "refresh",
    JoinFrame: "join",
    LeaveFrame: "leave",
    PubFrame: "pub",
    SendFrame: "send",
    AckFrame: "ack",
    PresenceFrame: "presence",
    PingFrame: "ping",
}
