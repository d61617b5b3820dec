"""Frame handling for one connection: what each client frame does.

``handle`` is awaited by the I/O layer for every inbound message, one at a time per
connection (Tornado does not deliver the next message before the coroutine
returns), so a connection's requests are answered in order. Every request gets
exactly one ``ok`` or ``err`` (``ping`` gets ``pong``).
"""

from __future__ import annotations

import secrets
from functools import partial

from core.auth import Claims, room_allowed
from core.backend.base import (
    BackendUnavailable,
    DirectMessage,
    Membership,
    NodeCommand,
    NodeOp,
    RateLimited,
    RateSpec,
)
from core.connection import Connection
from core.node import Node, Reject
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

__all__ = ["Session"]


class Session:
    """Dispatches decoded frames of any connection of one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._metrics = node.metrics

    async def handle(self, conn: Connection, message: bytes | str) -> None:
        """Process one inbound WebSocket message of ``conn``."""
        if conn.closed:
            return
        node = self.node
        conn.last_seen = node.clock.monotonic()
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
        if not charged_by_publish and not await self._rate_ok(conn, getattr(frame, "id", None)):
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
            retry = await self.node.backend.rate_hit(spec.key, spec.limit, spec.window_s)
        except BackendUnavailable:
            self._metrics.backend_errors.inc()
            retry = 0.0  # the rate limit is not a security check: serve, don't stall
        if retry <= 0:
            return True
        self._rate_limited(conn, request_id, retry)
        return False

    def _rate_spec(self, conn: Connection) -> RateSpec:
        rl = self.node.settings.ratelimit
        return RateSpec(f"rl:{conn.uid}", rl.messages, rl.window_s)

    def _rate_limited(self, conn: Connection, request_id: int | None, retry: float) -> None:
        """Answer 429 with ``retry_after``; close 4008 after ``strikes`` of them."""
        rl = self.node.settings.ratelimit
        now = self.node.clock.monotonic()
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
        node = self.node
        result = await node.authenticate(frame.token, conn.ip)
        if isinstance(result, Reject):
            conn.close(result.close_code, result.message)
            return
        rejected = await node.admit(conn, result)
        if rejected is not None:
            conn.close(rejected.close_code, rejected.message)
            return
        if conn.closed:  # the client went away while we were admitting it
            await node.release(conn)
            return
        node.greet(conn)

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
            assert conn.uid is not None
            await self.node.backend.inbox_ack(conn.uid, frame.mids)
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
        node = self.node
        if not room_allowed(self._claims(conn), f.room):
            raise RequestError(ErrCode.FORBIDDEN, "room not allowed", f.id)
        if f.room in conn.rooms:
            raise RequestError(ErrCode.CONFLICT, "already joined", f.id)
        if len(conn.rooms) >= node.settings.limits.max_rooms_per_connection:
            raise RequestError(ErrCode.FORBIDDEN, "too many rooms for this connection", f.id)
        assert conn.uid is not None
        # Join locally first with a buffer, so live messages arriving while history
        # is fetched are neither lost nor sent out of order.
        conn.joining[f.room] = []
        node.hub.add_member(f.room, conn)
        node.metrics.rooms.set(node.hub.room_count())
        membership = Membership(f.room, conn.uid, conn.conn_id)
        try:
            await node.subs.sync(f.room)
            if f.since is not None:
                rec = await node.backend.recover(f.room, f.since, f.epoch)
                history, position, recovered = rec.publications, rec.position, rec.recovered
            else:
                history, position, recovered = [], await node.backend.position(f.room), False
            await node.backend.presence_join(membership, node.settings.rooms.presence_events)
            if f.room in conn.rooms:
                conn.memberships[f.room] = membership
        except BackendUnavailable:
            node.hub.remove_member(f.room, conn)
            node.metrics.rooms.set(node.hub.room_count())
            node.spawn(self._quiet_sync(f.room))
            raise
        if conn.closed:
            # closed() already ran for this connection's rooms; undo our membership.
            await node.backend.presence_leave(membership, node.settings.rooms.presence_events)
            return
        node.catchup.seen(f.room, position.epoch, position.seq)
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
        node.catchup.joined(f.room, conn.conn_id, position.epoch, last)

    async def _quiet_sync(self, room: str) -> None:
        try:
            await self.node.subs.sync(room)
        except BackendUnavailable:
            self._metrics.backend_errors.inc()

    async def _leave(self, conn: Connection, f: LeaveFrame) -> None:
        node = self.node
        if f.room not in conn.rooms:
            raise RequestError(ErrCode.NOT_FOUND, "not a member of this room", f.id)
        assert conn.uid is not None
        node.hub.remove_member(f.room, conn)
        node.metrics.rooms.set(node.hub.room_count())
        self._reply(conn, ok(f.id, room=f.room))
        await node.backend.presence_leave(
            Membership(f.room, conn.uid, conn.conn_id), node.settings.rooms.presence_events
        )
        await node.subs.sync(f.room)

    async def _pub(self, conn: Connection, f: PubFrame) -> None:
        if f.room not in conn.rooms:
            raise RequestError(ErrCode.FORBIDDEN, "join the room before publishing", f.id)
        node = self.node
        if not node.backend.available:
            # Not subscribed: an ok now could not promise delivery to this node's members.
            raise RequestError(ErrCode.UNAVAILABLE, "not subscribed: backend unavailable", f.id)
        conn.pending_pubs[f.id] = None
        try:
            pub = await node.backend.publish(
                f.room,
                f.data,
                conn.uid,
                node.now_ms(),
                origin=f"{conn.conn_id}:{f.id}",
                rate=self._rate_spec(conn),
            )
        except RateLimited as e:
            conn.pending_pubs.pop(f.id, None)
            self._rate_limited(conn, f.id, e.retry_after)
            return
        except BackendUnavailable:
            conn.pending_pubs.pop(f.id, None)
            raise
        # on_publication may already have answered (ok must precede the msg).
        if f.id in conn.pending_pubs:
            conn.pending_pubs.pop(f.id, None)
            self._reply(conn, ok(f.id, seq=pub.seq))

    async def _presence(self, conn: Connection, f: PresenceFrame) -> None:
        if not room_allowed(self._claims(conn), f.room):
            raise RequestError(ErrCode.FORBIDDEN, "room not allowed", f.id)
        users = await self.node.backend.presence_members(f.room)
        self._reply(conn, ok(f.id, users=users))

    # -- private messages ------------------------------------------------------

    async def _send(self, conn: Connection, f: SendFrame) -> None:
        node = self.node
        dm = DirectMessage(
            mid=secrets.token_urlsafe(12),
            to_uid=f.to,
            from_uid=conn.uid,
            data=f.data,
            ts=node.now_ms(),
        )
        result = await deliver_dm(node, dm)
        self._reply(conn, ok(f.id, mid=dm.mid, online=result[0], queued=result[1]))

    # -- tokens ----------------------------------------------------------------

    async def _refresh(self, conn: Connection, f: RefreshFrame) -> None:
        node = self.node
        result = await node.authenticate(f.token, conn.ip)
        if isinstance(result, Reject):
            code = ErrCode.UNAVAILABLE if result.status == 503 else ErrCode.FORBIDDEN
            raise RequestError(code, result.message, f.id)
        if result.sub != conn.uid:
            raise RequestError(ErrCode.FORBIDDEN, "token is for another user", f.id)
        conn.claims = result
        node.rearm_expiry(conn)
        self._reply(conn, ok(f.id, exp=result.exp * 1000))


async def deliver_dm(node: Node, dm: DirectMessage) -> tuple[bool, bool]:
    """Store ``dm`` in the inbox and push it to every node holding the recipient.

    Returns ``(online, queued)``. The message stays in the inbox until acked, so a
    recipient that misses the live copy gets it on its next connection.
    """
    queued = False
    if node.settings.offline.max_messages > 0:
        queued = await node.backend.inbox_put(dm)
    online = await node.backend.command_user(
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
