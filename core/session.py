"""Frame handling for one connection: what each client frame does.

``handle`` is awaited by the I/O layer for every inbound message, one at a time per
connection, so a connection's requests are handled in order. ``pub`` is pipelined:
``handle`` queues it for the connection's publisher and returns, and the publisher
sends all queued pubs in one :meth:`Backend.publish_many` (published in arrival order).
Every request gets exactly one ``ok`` or ``err`` (``ping`` gets ``pong``).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace
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
from core.errors import AuthError, Refusal
from core.hooks.ask import ask, refusal_error, rewritten, unavailable_error
from core.hooks.contract import (
    HookFailed,
    JoinRequest,
    PubAnswer,
    PubRequest,
    Refuse,
    RpcAnswer,
    RpcRequest,
    SendAnswer,
    SendRequest,
)
from core.inbox_delivery import QUOTA_REASON, acks_owed, check_recipient, inbox_acked
from core.namespaces import RoomPolicy, rules_for
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
    RpcFrame,
    SendFrame,
    decode,
    encode_msg,
    error_frame,
    msgpack_to_json_value,
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
        self._hooks = node.hooks
        self._verifier = node.verifier
        self._rules = rules_for(node.settings.rooms)
        self._life.on_greeted = self._greeted

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
        # (with a pub hook, the publisher charges a batch before asking the hook)
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
        elif isinstance(frame, RpcFrame):
            await self._rpc(conn, frame)
        elif isinstance(frame, AuthFrame):
            raise RequestError(ErrCode.CONFLICT, "already authenticated", None)

    # -- rooms -----------------------------------------------------------------

    def _claims(self, conn: Connection) -> Claims:
        assert conn.claims is not None
        return conn.claims

    async def _join(self, conn: Connection, f: JoinFrame) -> None:
        policy = self._rules.of(f.room)
        if policy.join == "token":
            self._check_room_token(conn, f)
        elif not room_allowed(self._claims(conn), f.room):
            raise RequestError(ErrCode.FORBIDDEN, "room not allowed", f.id)
        if f.room in conn.rooms:
            raise RequestError(ErrCode.CONFLICT, "already joined", f.id)
        if len(conn.rooms) >= self._settings.limits.max_rooms_per_connection:
            raise RequestError(ErrCode.FORBIDDEN, "too many rooms for this connection", f.id)
        assert conn.uid is not None
        if self._hooks.enabled("join"):
            request = JoinRequest(conn.uid, conn.conn_id, f.room, conn.meta or {})
            await ask(self._hooks, "join", request, f.id)
            if conn.closed:
                return
            if f.room in conn.rooms:  # a server-side join of the same room meanwhile
                raise RequestError(ErrCode.CONFLICT, "already joined", f.id)
        since = f.since if policy.recovery else None
        await self._join_room(conn, f.room, policy, since, f.epoch, f.id)

    def _check_room_token(self, conn: Connection, f: JoinFrame) -> None:
        if f.token is None:
            raise RequestError(ErrCode.FORBIDDEN, "this room needs a room token", f.id)
        assert conn.uid is not None
        try:
            self._verifier.verify_room(f.token, f.room, conn.uid)
        except AuthError as e:
            raise RequestError(ErrCode.FORBIDDEN, f"invalid room token: {e.reason}", f.id) from None

    async def _join_room(
        self,
        conn: Connection,
        room: str,
        policy: RoomPolicy,
        since: int | None,
        epoch: str | None,
        request_id: int | None,
    ) -> None:
        """Make ``conn`` a member of ``room``; answer ``ok`` (a client's ``join``) or
        ``joined`` (a server-side room, ``request_id`` None)."""
        assert conn.uid is not None
        # Join locally first with a buffer, so live messages arriving while history
        # is fetched are neither lost nor sent out of order.
        conn.joining[room] = []
        self._hub.add_member(room, conn)
        self._metrics.rooms.set(self._hub.room_count())
        membership = Membership(room, conn.uid, conn.conn_id)
        announce = policy.presence_events
        try:
            await self._subs.sync(room)
            if since is not None:
                rec = await self._backend.recover(room, since, epoch)
                history, position, recovered = rec.publications, rec.position, rec.recovered
            else:
                history, position, recovered = [], await self._backend.position(room), False
            await self._backend.presence_join(membership, announce)
            if room in conn.rooms:
                conn.memberships[room] = membership
        except BackendUnavailable:
            conn.joining.pop(room, None)
            self._hub.remove_member(room, conn)
            self._metrics.rooms.set(self._hub.room_count())
            self._life.spawn(self._quiet_sync(room))
            raise
        if conn.closed:
            # closed() already ran for this connection's rooms; undo our membership.
            await self._backend.presence_leave(membership, announce)
            return
        self._catchup.seen(room, position.epoch, position.seq)
        last = since if since is not None else position.seq
        for pub in history:
            if pub.seq > last:
                conn.send(Outbound(partial(encode_msg, pub)))
                last = pub.seq
        last = max(last, position.seq)
        if request_id is None:
            self._reply(
                conn, {"t": "joined", "room": room, "seq": position.seq, "epoch": position.epoch}
            )
        else:
            self._reply(
                conn,
                ok(
                    request_id,
                    room=room,
                    seq=position.seq,
                    epoch=position.epoch,
                    recovered=recovered,
                ),
            )
        buffered = conn.joining.pop(room, [])
        for pub in buffered:
            if pub.seq > last and pub.epoch == position.epoch:
                conn.send(Outbound(partial(encode_msg, pub)))
                last = pub.seq
        self._catchup.joined(room, conn.conn_id, position.epoch, last)

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
            Membership(f.room, conn.uid, conn.conn_id), self._rules.of(f.room).presence_events
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
        rule = self._rules.of(f.room).publish
        if rule != "members":
            who = "only the server publishes" if rule == "server" else "nobody publishes"
            raise RequestError(ErrCode.FORBIDDEN, f"{who} in this room", f.id)
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
            rate=None if self._hooks.enabled("pub") else self._rate_spec(conn),
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
                if self._hooks.enabled("pub"):
                    batch = await self._pub_hooks(conn, await self._charge(conn, batch))
                    if not batch:
                        continue
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

    async def _charge(
        self, conn: Connection, batch: list[tuple[int, PublishRequest]]
    ) -> list[tuple[int, PublishRequest]]:
        """Charge a batch of pubs to the rate limit before the pub hook sees them (the
        charges run concurrently): a pub the application refuses still counts, and a
        flood is answered 429 without reaching the application. The ones within the
        limit, in order."""
        spec = self._rate_spec(conn)
        retries = await asyncio.gather(
            *(self._backend.rate_hit(spec.key, spec.limit, spec.window_s) for _ in batch),
            return_exceptions=True,
        )
        kept: list[tuple[int, PublishRequest]] = []
        for (rid, request), retry in zip(batch, retries, strict=True):
            if isinstance(retry, BackendUnavailable):
                self._metrics.backend_errors.inc()
                retry = 0.0  # as _rate_ok: the rate limit is not a security check
            elif isinstance(retry, BaseException):
                raise retry
            if retry > 0:
                conn.pending_pubs.pop(rid, None)
                self._rate_limited(conn, rid, retry)
            else:
                kept.append((rid, request))
        return kept

    async def _pub_hooks(
        self, conn: Connection, batch: list[tuple[int, PublishRequest]]
    ) -> list[tuple[int, PublishRequest]]:
        """Ask the pub hook about every pub of ``batch`` at once (pipelined: the calls
        overlap, bounded by ``hooks.max_concurrency``); the allowed ones, rewritten,
        in their order. Refused and failed ones are answered ``err`` here."""
        assert conn.uid is not None
        uid, cid, meta = conn.uid, conn.conn_id, conn.meta or {}
        answers = await self._hooks.call_many(
            "pub",
            [PubRequest(uid, cid, r.room, msgpack_to_json_value(r.data), meta) for _, r in batch],
        )
        allowed: list[tuple[int, PublishRequest]] = []
        for (rid, request), answer in zip(batch, answers, strict=True):
            error: RequestError | None = None
            if isinstance(answer, PubAnswer):
                try:
                    data = rewritten(request.data, answer.data, rid)
                except RequestError as e:
                    error = e
                else:
                    allowed.append((rid, replace(request, data=data)))
                    continue
            elif isinstance(answer, Refuse):
                error = refusal_error(answer, rid)
            elif isinstance(answer, HookFailed):
                error = unavailable_error(rid)
            else:
                raise RuntimeError("pub hook answered with an unexpected type")
            conn.pending_pubs.pop(rid, None)
            self._reply_err(conn, error)
        return allowed

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
        policy = self._rules.of(f.room)
        # members may ask (a token room or a server-side room is outside the claim)
        if f.room not in conn.rooms and (
            policy.join == "token" or not room_allowed(self._claims(conn), f.room)
        ):
            raise RequestError(ErrCode.FORBIDDEN, "room not allowed", f.id)
        if not policy.presence:
            raise RequestError(ErrCode.FORBIDDEN, "presence is off in this room", f.id)
        users = await self._backend.presence_members(f.room)
        self._reply(conn, ok(f.id, users=users))

    # -- private messages ------------------------------------------------------

    async def _send(self, conn: Connection, f: SendFrame) -> None:
        assert conn.uid is not None
        await check_recipient(self._backend, self._settings, conn.uid, f.to, f.id)
        data = f.data
        if self._hooks.enabled("send"):
            request = SendRequest(
                conn.uid, conn.conn_id, f.to, msgpack_to_json_value(f.data), conn.meta or {}
            )
            answer = await ask(self._hooks, "send", request, f.id)
            assert isinstance(answer, SendAnswer)
            data = rewritten(f.data, answer.data, f.id)
        dm = DirectMessage(
            mid=secrets.token_urlsafe(12),
            to_uid=f.to,
            from_uid=conn.uid,
            data=data,
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
        await self._gate.refresh_hook(conn, result, f.id)
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

    # -- rpc and server-side rooms -----------------------------------------------

    async def _rpc(self, conn: Connection, f: RpcFrame) -> None:
        """``rpc``: the application's rpc hook answers; ``ok`` carries its ``data``."""
        if not self._hooks.enabled("rpc"):
            raise RequestError(ErrCode.NOT_FOUND, "no rpc handler", f.id)
        assert conn.uid is not None
        request = RpcRequest(
            conn.uid, conn.conn_id, f.method, msgpack_to_json_value(f.data), conn.meta or {}
        )
        answer = await ask(self._hooks, "rpc", request, f.id)
        assert isinstance(answer, RpcAnswer)
        self._reply(conn, ok(f.id, data=answer.data))

    def _greeted(self, conn: Connection) -> None:
        if conn.auto_rooms:
            self._life.spawn(self._auto_join(conn))

    async def _auto_join(self, conn: Connection) -> None:
        """Join the server-side rooms listed in ``welcome``, each answered ``joined``.

        No ``rooms`` claim, namespace join rule or join hook applies: the application
        granted these rooms (a signed token, or its connect hook). A room that cannot
        be joined (backend down, over the per-connection limit) is skipped and logged.
        """
        limit = self._settings.limits.max_rooms_per_connection
        for room in conn.auto_rooms:
            if conn.closed:
                return
            if room in conn.rooms or len(conn.rooms) >= limit:
                continue
            try:
                await self._join_room(conn, room, self._rules.of(room), None, None, None)
            except BackendUnavailable:
                self._metrics.backend_errors.inc()


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
    RpcFrame: "rpc",
}
