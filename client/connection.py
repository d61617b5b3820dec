"""The Squall Python client: one logical session over successive WebSocket connections.

:class:`SquallClient` speaks PROTOCOL.md v1 over Tornado's ``websocket_connect``
(msgpack subprotocol by default, JSON optional) and hides reconnects:

* Every request (``join``, ``pub``, ...) resolves with its ``ok`` or raises
  :class:`RequestFailed` for its ``err``; exactly one outcome per call.
* After a close with a reconnectable code (every code except 4001, 4003, 4009,
  4010, 4029; 1012 included) or a network drop, the client waits per its
  :class:`~client.backoff.Backoff` (capped exponential, jitter; after a 1012/1001
  restart or drain close a short jittered delay, the attempt count started over),
  asks the token provider for a fresh token, reconnects, and rejoins every joined room with
  ``since`` = the last ``seq`` seen there and the room's ``epoch``. The server
  replays what was missed before the rejoin's ``ok``; the client drops any ``msg``
  whose ``seq`` is not above the last one seen, so each room's messages reach the
  application in ``seq`` order, without duplicates. When the server reports
  ``recovered: false`` (history too short, or the room's epoch changed), the gap
  cannot be filled: :attr:`RoomState.recovered` says so and a warning is logged.
* Requests made while reconnecting wait (up to ``request_timeout``) for the new
  connection and its rejoins. Requests in flight when a connection drops raise
  :class:`ConnectionLost`: their outcome is unknown and they are not resent.
* Every state change (connecting, open, retry N in X s, recovered, gave up, closed)
  is passed to ``on_status`` as a :class:`~client.events.StatusEvent`, in order.
  After ``Backoff.max_attempts`` consecutive failed tries the client gives up: it
  ends with :class:`GaveUp` (a :class:`Closed`).
* A non-reconnectable close ends the client: :meth:`SquallClient.messages` raises
  :class:`Closed` after yielding what was already received, as do pending and later
  requests. A handshake refused with 401/403 (or 429 for the per-user limit) while
  reconnecting ends it with :class:`AuthRefused`.
* ``dm`` frames are acknowledged after the application took them (the next step of
  :meth:`messages`, or the return of ``on_message``): at-least-once delivery. A dm
  redelivered after a reconnect is not yielded twice.

The client owns no global state; several can run in one event loop. Its parts live in
:mod:`client.errors`, :mod:`client.frames`, :mod:`client.handshake` (one connection
attempt), :mod:`client.pending` (requests in flight) and :mod:`client.rooms`; the
public names are re-exported here and from :mod:`client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Final, Literal

from tornado.httpclient import HTTPClientError
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError

from client.backoff import DEFAULT, Attempts, Backoff
from client.errors import (
    AuthRefused,
    Closed,
    ConnectionLost,
    GaveUp,
    RequestFailed,
    SquallError,
    refusal_is_transient,
)
from client.events import State, StatusEvent
from client.frames import NO_RECONNECT, RESTART, SUBPROTOCOLS, Frame, encode_frame
from client.handshake import Bye, Dropped, close_info, open_connection, read_frame
from client.pending import PendingRequests
from client.rooms import RoomState

__all__ = [
    "NO_RECONNECT",
    "AuthRefused",
    "Closed",
    "ConnectionLost",
    "Frame",
    "GaveUp",
    "OnStatus",
    "RequestFailed",
    "RoomState",
    "SquallClient",
    "SquallError",
    "TokenSource",
]

log = logging.getLogger("squall.client")

TokenSource = str | Callable[[], Awaitable[str]]
OnMessage = Callable[[Frame], Awaitable[None] | None]
OnStatus = Callable[[StatusEvent], None]

DEFAULT_BACKOFF: Final = DEFAULT

#: How many dm ids are remembered to drop redeliveries of already taken dms.
_SEEN_DMS = 4096


class _End:
    """Marks the end of the message stream."""


_END: Final = _End()


class SquallClient:
    """A reconnecting Squall client. ``await connect()``, then use the requests.

    ``token``: an access token, or an async callable returning one; the callable is
    called before every connection attempt, so it can renew an expired token.
    ``on_message``: when given, every ``msg``/``dm``/``presence`` frame is passed to
    it (awaited when it returns an awaitable) instead of :meth:`messages`.
    ``max_queue``: frames buffered for :meth:`messages`; when it is full the client
    stops reading the socket (backpressure) until the application catches up.
    ``rng``: random source in ``[0, 1)`` for the backoff jitter (tests).
    ``on_status``: called with every :class:`~client.events.StatusEvent` (sync; an
    exception it raises is logged and ignored).
    """

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        encoding: Literal["msgpack", "json"] = "msgpack",
        backoff: Backoff = DEFAULT_BACKOFF,
        on_message: OnMessage | None = None,
        auto_ack: bool = True,
        request_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        max_queue: int = 1000,
        headers: Mapping[str, str] | None = None,
        rng: Callable[[], float] | None = None,
        on_status: OnStatus | None = None,
    ) -> None:
        if encoding not in SUBPROTOCOLS:
            raise ValueError(f"encoding must be one of {sorted(SUBPROTOCOLS)}")
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.url = url
        self.encoding = encoding
        self.backoff = backoff
        self.auto_ack = auto_ack
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self._token_source: TokenSource = token
        self._on_message = on_message
        self._on_status = on_status
        self._status: StatusEvent | None = None
        self._tries = 0  # tries of the current outage
        self._headers = dict(headers or {})
        self._attempts = Attempts(backoff, rng)
        self._ws: WebSocketClientConnection | None = None
        self._bye: Bye | None = None
        self._welcome: Frame | None = None
        self._connections = 0
        self._requests = PendingRequests()
        self._rooms: dict[str, RoomState] = {}
        self._queue: asyncio.Queue[Frame | _End] = asyncio.Queue()
        self._slots = asyncio.Semaphore(max_queue)
        self._taken_dms: OrderedDict[str, bool] = OrderedDict()  # mid -> acked
        self._ready = asyncio.Event()
        self._done = asyncio.Event()
        self._wake = asyncio.Event()
        self._closing = False
        self._final: SquallError | None = None
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- public state ----------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a connection is up and every room was rejoined."""
        return self._ready.is_set()

    @property
    def closed(self) -> bool:
        """True once the client ended (see :attr:`error` for why)."""
        return self._done.is_set()

    @property
    def error(self) -> SquallError | None:
        """What ended the client, or ``None`` (still running, or closed by :meth:`close`)."""
        return self._final

    @property
    def welcome(self) -> Frame | None:
        """The ``welcome`` frame of the current (or last) connection."""
        return self._welcome

    @property
    def connections(self) -> int:
        """How many connections were established so far (1 + successful reconnects)."""
        return self._connections

    @property
    def status(self) -> StatusEvent | None:
        """The last :class:`~client.events.StatusEvent` (``None`` before :meth:`connect`)."""
        return self._status

    @property
    def rooms(self) -> Mapping[str, RoomState]:
        """Rooms joined (or being joined), by name. Read-only view."""
        return dict(self._rooms)

    # -- life cycle ------------------------------------------------------------

    async def connect(self) -> Frame:
        """Open the first connection and return its ``welcome``.

        Raises :class:`AuthRefused` on an HTTP refusal, :class:`Closed` when the server
        closes before ``welcome``, ``OSError``/``TimeoutError`` when it is unreachable.
        Later connections are made automatically.
        """
        if self._task is not None or self._done.is_set():
            raise RuntimeError("connect() may be called once per client")
        self._emit("connecting")
        try:
            ws, welcome = await self._open()
        except Dropped as e:
            self._emit("closed", code=e.code, reason=e.reason)
            raise ConnectionLost(e.code, e.reason) from None
        except AuthRefused as e:
            self._emit("closed", code=e.status, reason=str(e.body.get("message", "refused")))
            raise
        except Closed as e:
            self._emit("closed", code=e.code, reason=e.reason)
            raise
        except (OSError, HTTPClientError, StreamClosedError, TimeoutError) as e:
            self._emit("closed", reason=f"unreachable: {e}")
            raise
        self._attach(ws, welcome)
        self._ready.set()
        self._emit("open")
        self._task = asyncio.create_task(self._run(ws))
        return welcome

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection and stop reconnecting. Idempotent.

        :meth:`messages` ends normally after the frames already received; pending
        requests raise :class:`Closed`.
        """
        self._closing = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            ws.close(code, reason)
        task = self._task
        # The supervisor may be blocked on a full message queue or a connection attempt:
        # stop it rather than wait. Called from on_message (inside it), it ends by itself
        # once it reads the close.
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._finish(None)

    async def __aenter__(self) -> SquallClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- requests --------------------------------------------------------------

    async def join(self, room: str, token: str | None = None) -> Frame:
        """Join ``room``; returns the ``ok`` (``room``, ``seq``, ``epoch``, ``recovered``).

        ``token`` is a room token, for rooms whose namespace requires one. The room is
        rejoined automatically after every reconnect until :meth:`leave`.
        """
        if room in self._rooms:
            raise RequestFailed(409, "already joined")
        state = RoomState(room, token=token)
        self._rooms[room] = state
        frame: Frame = {"t": "join", "room": room}
        if token is not None:
            frame["token"] = token
        try:
            return await self._request(frame, state.joined_ok)
        except BaseException:
            if not state.joined and self._rooms.get(room) is state:
                del self._rooms[room]
            raise

    async def leave(self, room: str) -> Frame:
        """Leave ``room``; returns the ``ok``. Its messages stop being delivered."""

        def forget(_ok: Frame) -> None:
            self._rooms.pop(room, None)

        return await self._request({"t": "leave", "room": room}, forget)

    async def publish(self, room: str, data: Any) -> int:
        """Publish ``data`` to a joined room; returns the ``seq`` assigned to it."""
        ok = await self._request({"t": "pub", "room": room, "data": data})
        return int(ok["seq"])

    async def send(self, to: str, data: Any) -> Frame:
        """Private message to user ``to``; returns the ``ok`` (``mid``, ``online``, ``queued``)."""
        return await self._request({"t": "send", "to": to, "data": data})

    async def rpc(self, method: str, data: Any = None) -> Any:
        """Call ``method`` of the application (its rpc hook); returns the result ``data``.

        Raises :class:`RequestFailed` with the application's code and message when it
        refuses, 503 when it is unavailable, 404 when no rpc hook is configured.
        """
        ok = await self._request({"t": "rpc", "method": method, "data": data})
        return ok.get("data")

    async def presence(self, room: str) -> list[str]:
        """User ids currently in ``room``, across all nodes."""
        ok = await self._request({"t": "presence", "room": room})
        return [str(u) for u in ok["users"]]

    async def ping(self) -> float:
        """Round-trip time of a ``ping``/``pong`` in seconds."""
        loop = asyncio.get_running_loop()
        await self._ready_or_raise()
        start = loop.time()
        await self._request({"t": "ping"})
        return loop.time() - start

    async def refresh(self, token: str) -> Frame:
        """Hand the server a new access token for the same user; returns the ``ok`` (``exp``).

        When the client was built with a token string, later reconnects use ``token``.
        """

        def keep(_ok: Frame) -> None:
            if isinstance(self._token_source, str):
                self._token_source = token

        return await self._request({"t": "refresh", "token": token}, keep)

    def ack(self, mid: str | list[str]) -> None:
        """Acknowledge private messages (only needed with ``auto_ack=False``).

        Best effort: when disconnected, the server redelivers the dm on the next
        connection and the client acknowledges it again without yielding it.
        """
        mids = [mid] if isinstance(mid, str) else list(mid)
        for m in mids:
            self._remember_dm(m, acked=True)
        self._send_ack(mids)

    async def messages(self) -> AsyncIterator[Frame]:
        """Room ``msg``, ``dm`` and ``presence`` frames, in arrival order.

        Ends after the client was closed with :meth:`close`; raises the error that ended
        it otherwise (e.g. :class:`Closed` for 4009), after yielding every frame
        received before. With ``auto_ack`` a ``dm`` is acknowledged when the next frame
        is requested, i.e. after the application handled it.
        """
        if self._on_message is not None:
            raise RuntimeError("messages() is not available with on_message")
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                self._queue.put_nowait(item)  # other iterators end too
                if self._final is not None:
                    raise self._final
                return
            self._slots.release()
            yield item
            if item.get("t") == "dm" and self.auto_ack:
                self.ack(str(item["mid"]))

    # -- request machinery -----------------------------------------------------

    async def _ready_or_raise(self) -> None:
        """Wait for a usable connection; raise what ended the client."""
        if not self._ready.is_set() and not self._done.is_set():
            ready = asyncio.ensure_future(self._ready.wait())
            done = asyncio.ensure_future(self._done.wait())
            try:
                await asyncio.wait(
                    {ready, done},
                    timeout=self.request_timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                ready.cancel()
                done.cancel()
        if self._done.is_set():
            raise self._final or Closed(1000, "closed by the client")
        if not self._ready.is_set():
            raise TimeoutError("not connected")

    async def _request(
        self,
        frame: Frame,
        on_ok: Callable[[Frame], None] | None = None,
        ws: WebSocketClientConnection | None = None,
    ) -> Frame:
        """Send ``frame`` with a fresh id; return its ``ok``/``pong`` or raise for ``err``.

        ``on_ok`` runs in the reader, before any later frame is handled (room state
        must be current when the messages following a join's ``ok`` arrive). ``ws``:
        send on that connection without waiting for readiness (rejoins).
        """
        if ws is None:
            await self._ready_or_raise()
            ws = self._ws
            assert ws is not None
        rid, fut = self._requests.open(on_ok)
        try:
            self._write(ws, {**frame, "id": rid})
            return await asyncio.wait_for(fut, self.request_timeout)
        finally:
            self._requests.discard(rid)

    def _write(self, ws: WebSocketClientConnection, frame: Frame) -> None:
        payload = encode_frame(frame, self.encoding)
        try:
            sent = ws.write_message(payload, binary=self.encoding == "msgpack")
        except WebSocketClosedError:
            raise ConnectionLost(ws.close_code, "connection closed") from None
        # a failed write shows up as a close on the reader side
        sent.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _send_ack(self, mids: list[str]) -> None:
        ws = self._ws
        if ws is None or not mids:
            return
        with contextlib.suppress(ConnectionLost):
            self._write(ws, {"t": "ack", "mid": mids[0] if len(mids) == 1 else mids})

    def _remember_dm(self, mid: str, acked: bool) -> None:
        self._taken_dms[mid] = acked or self._taken_dms.get(mid, False)
        self._taken_dms.move_to_end(mid)
        while len(self._taken_dms) > _SEEN_DMS:
            self._taken_dms.popitem(last=False)

    # -- connections -----------------------------------------------------------

    async def _token(self) -> str:
        source = self._token_source
        return source if isinstance(source, str) else await source()

    async def _open(self) -> tuple[WebSocketClientConnection, Frame]:
        """One connection attempt up to ``welcome``."""
        token = await self._token()
        ws, welcome, self._bye = await open_connection(
            self.url,
            token,
            headers=self._headers,
            encoding=self.encoding,
            connect_timeout=self.connect_timeout,
            ping_interval=self.ping_interval,
        )
        return ws, welcome

    def _attach(self, ws: WebSocketClientConnection, welcome: Frame) -> None:
        self._ws = ws
        self._welcome = welcome
        self._connections += 1
        self._attempts.connected(asyncio.get_running_loop().time())

    async def _run(self, ws: WebSocketClientConnection) -> None:
        """Supervisor: read the connection; on a drop, back off, reconnect, rejoin."""
        current: WebSocketClientConnection | None = ws
        try:
            while current is not None:
                await self._pump(current)
                code, reason = close_info(current, self._bye)
                current.close()  # releases tornado's protocol object (no-op on the wire)
                self._ready.clear()
                self._ws = None
                self._attempts.disconnected(asyncio.get_running_loop().time())
                if self._closing:
                    break
                if code in NO_RECONNECT:
                    self._finish(Closed(code, reason))
                    return
                log.info("connection closed (%s %s); reconnecting", code, reason)
                self._requests.fail_all(ConnectionLost(code, reason))
                for name, state in list(self._rooms.items()):
                    if not state.joined:
                        del self._rooms[name]
                current = await self._reconnect(code, reason)
        except Exception as e:  # a bug must not leave callers hanging
            log.exception("client supervisor failed")
            self._finish(Closed(None, f"client failure: {e!r}"))
            return
        self._finish(None)

    async def _pump(self, ws: WebSocketClientConnection) -> None:
        while True:
            frame = await read_frame(ws)
            if frame is None:
                return
            await self._dispatch(frame)

    async def _reconnect(self, code: int | None, reason: str) -> WebSocketClientConnection | None:
        """Connect again with backoff; ``None`` when the client ended meanwhile.

        ``code``/``reason``: why the connection ended. A restart/drain close (1012,
        1001) waits a short jittered delay and starts the attempt count over."""
        retry_after = 0.0
        restart = code in RESTART
        self._tries = 0
        while not self._closing:
            if restart:
                delay: float | None = self._attempts.restart()
                restart = False
            else:
                delay = self._attempts.next_delay()
            if delay is None:
                tries = self._attempts.attempt
                self._emit("gave_up", attempt=tries, code=code, reason=reason)
                self._finish(GaveUp(tries, code, reason))
                return None
            delay = max(delay, retry_after)
            retry_after = 0.0
            self._tries += 1
            self._emit("retry", attempt=self._tries, delay=delay, code=code, reason=reason)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            if self._closing:
                return None
            self._emit("connecting", attempt=self._tries)
            try:
                ws, welcome = await self._open()
            except AuthRefused as e:
                if not refusal_is_transient(e):
                    self._finish(e)
                    return None
                retry_after = e.retry_after or 0.0
                code, reason = e.status, str(e.body.get("message", "refused"))
                log.info("reconnect refused (%s); retrying", e.status)
                continue
            except Closed as e:
                self._finish(e)
                return None
            except Dropped as e:
                code, reason = e.code, e.reason
                log.info("reconnect failed: %r", e)
                continue
            except (OSError, StreamClosedError, HTTPClientError, TimeoutError) as e:
                code, reason = None, f"unreachable: {e!r}"
                log.info("reconnect failed: %r", e)
                continue
            except Exception as e:
                code, reason = None, f"failed: {e!r}"
                log.exception("reconnect attempt failed (token provider?)")
                continue
            if self._closing:
                ws.close()
                return None
            # server-side rooms are joined again by the server (listed in the welcome)
            for name in [n for n, s in self._rooms.items() if s.server_side]:
                del self._rooms[name]
            self._attach(ws, welcome)
            self._spawn(self._rejoin(ws))
            return ws
        return None

    async def _rejoin(self, ws: WebSocketClientConnection) -> None:
        """Rejoin every room with ``since``/``epoch``; mark the client ready."""
        # rooms still being joined by the application are joined by its own request
        states = [s for s in self._rooms.values() if s.joined and not s.server_side]
        results = await asyncio.gather(
            *(self._rejoin_one(ws, state) for state in states), return_exceptions=True
        )
        retry = False
        for state, result in zip(states, results, strict=True):
            if isinstance(result, RequestFailed):
                if result.code in (429, 503):
                    retry = True
                else:
                    log.warning("rejoin of %r refused: %s; room dropped", state.name, result)
                    if self._rooms.get(state.name) is state:
                        del self._rooms[state.name]
            elif isinstance(result, TimeoutError):
                retry = True
            elif isinstance(result, BaseException) and not isinstance(result, SquallError):
                log.error("rejoin of %r failed", state.name, exc_info=result)
        if ws is not self._ws:
            return  # that connection is already gone
        if retry:
            ws.close(1000, "rejoin failed")  # the supervisor backs off and reconnects
            return
        self._ready.set()
        self._emit("recovered", attempt=self._tries)

    async def _rejoin_one(self, ws: WebSocketClientConnection, state: RoomState) -> Frame:
        return await self._request(
            state.rejoin_frame(), lambda ok: state.joined_ok(ok, rejoin=True), ws
        )

    def _emit(
        self,
        state: State,
        *,
        attempt: int = 0,
        delay: float | None = None,
        code: int | None = None,
        reason: str = "",
    ) -> None:
        event = StatusEvent(state, attempt, delay, code, reason)
        self._status = event
        callback = self._on_status
        if callback is None:
            return
        try:
            callback(event)
        except Exception:
            log.exception("on_status callback failed")

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- inbound frames --------------------------------------------------------

    async def _dispatch(self, frame: Frame) -> None:
        t = frame.get("t")
        if t in ("ok", "err", "pong"):
            self._requests.answer(frame)
        elif t == "msg":
            state = self._rooms.get(str(frame.get("room")))
            # None: a room we left (or never joined)
            if state is not None and state.take(frame):
                await self._deliver(frame)
        elif t == "joined":
            # a server-side room (rooms_auto claim, connect hook): listed in welcome
            name = str(frame.get("room"))
            if name not in self._rooms:
                self._rooms[name] = RoomState(name, server_side=True)
            self._rooms[name].joined_ok(frame)
        elif t == "presence":
            if str(frame.get("room")) in self._rooms:
                await self._deliver(frame)
        elif t == "dm":
            mid = str(frame.get("mid"))
            if mid in self._taken_dms:
                if self._taken_dms[mid]:
                    self._send_ack([mid])  # the earlier ack was lost with its connection
                return
            self._remember_dm(mid, acked=False)
            await self._deliver(frame)
        elif t == "left":
            # The server left the room for us (a refreshed token no longer allows it):
            # forget it, so a reconnect does not try to rejoin.
            if self._rooms.pop(str(frame.get("room")), None) is not None:
                await self._deliver(frame)
        elif t == "bye":
            self._bye = (frame.get("code"), str(frame.get("reason", "")))

    async def _deliver(self, frame: Frame) -> None:
        callback = self._on_message
        if callback is None:
            await self._slots.acquire()
            self._queue.put_nowait(frame)
            return
        try:
            result = callback(frame)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("on_message callback failed")
            return  # an unhandled dm is not acked: it comes back on the next connection
        if frame.get("t") == "dm" and self.auto_ack:
            self.ack(str(frame["mid"]))

    # -- ending ----------------------------------------------------------------

    def _finish(self, error: SquallError | None) -> None:
        """End the client once: fail what waits, end :meth:`messages`."""
        if self._done.is_set():
            return
        self._final = error
        self._ready.clear()
        if isinstance(error, AuthRefused):
            self._emit("closed", code=error.status, reason=str(error.body.get("message", "")))
        elif isinstance(error, Closed | ConnectionLost):
            self._emit("closed", code=error.code, reason=error.reason)
        else:
            self._emit("closed", code=1000, reason="closed by the client")
        self._requests.fail_all(error or Closed(1000, "closed by the client"))
        self._done.set()
        self._queue.put_nowait(_END)
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()
        for task in list(self._tasks):
            task.cancel()
