"""Load generator: raw-socket WebSocket clients that count frames, one process per role.

    python -m bench.loadgen members   --port N --count C [--first I] --messages M [--auth]
    python -m bench.loadgen publisher --port N --user-index I --messages M --window W [--auth]

Each process is driven by the orchestrator (:mod:`bench.fanout`) through JSON lines:
it prints ``{"event": "ready"}`` once all its connections are upgraded (and, with
``--auth``, welcomed and joined to the room), then obeys commands read from stdin:

* members: print ``{"event": "report", ...}`` as soon as every connection counted
  ``--messages`` ``msg`` frames, or at once on ``{"cmd": "report"}`` (a timeout);
* publisher: ``{"cmd": "go"}`` starts publishing, ``{"event": "published", ...}`` is
  printed when its own echo of the last message arrived;
* both: ``{"cmd": "exit"}`` (or EOF) closes every connection and exits.

Why not a WebSocket library: every byte a member receives costs this process CPU on
the core it shares with the other load generators, and the point is that the server,
not the client, is the bottleneck. So each connection is an ``asyncio.Protocol`` that
does the HTTP upgrade itself and a frame scanner that recognises a ``msg`` frame by
its first bytes (``{"t": "msg", ...`` packs as ``8X A1 74 A3 6D 73 67``) without
decoding it; only other frames, and the frames of one member in ``--sample-every``
(for the latency timestamp in ``data``), are decoded with msgpack. uvloop is used when
installed (bench/requirements.txt).

Client frames are masked with the all-zero key, which RFC 6455 allows (section 5.3:
the key is any 32-bit value) and which leaves the payload unchanged.

Payload: ``data`` is ``--payload`` bytes (bin): 8 bytes of the publisher's
``time.time_ns()`` (big-endian), then zeros. Latency is receive time minus that stamp,
taken once per read, so it includes the time the member waited for this process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import sys
import time
from functools import partial
from typing import Any, cast

import jwt
import msgpack

from bench.wire import CLOSE_FRAME, client_frame, scan

__all__ = ["main"]

ROOM = "bench"
SUBPROTOCOL = "squall.v1.msgpack"
#: bytes 1..6 of a msgpack map whose first entry is "t": "msg"
MSG_TAG = b"\xa1t\xa3msg"
_TS = struct.Struct(">Q")


#: a Socket.IO event packet ``42["msg",...`` (text frame)
SIO_MSG_TAG = b'42["msg'


def make_token(secret: str, sub: str, ttl: int = 3600) -> str:
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + ttl, "jti": f"bench-{sub}-{os.urandom(6).hex()}"}
    return jwt.encode(claims, secret, algorithm="HS256")


class Stats:
    """What one process counted; shared by its connections."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.delivered = 0
        self.complete = 0
        self.last_ns = 0
        self.latencies_us: list[int] = []
        self.other_frames: dict[str, int] = {}
        self.pings = 0
        self.closed = 0
        self.all_done = asyncio.Event()
        self.target_complete = 0
        #: deferred readers (phased members): called once every sampled member is complete
        self.sampled_complete = 0
        self.sampled_target = 0
        self.on_sampled_done: Any = None


class WsClient(asyncio.Protocol):
    """One WebSocket connection: upgrade, optional welcome + join, then count ``msg``."""

    def __init__(
        self,
        port: int,
        stats: Stats,
        token: str | None,
        join: bool,
        sample: bool,
        room: str = ROOM,
        proto: str = "squall",
    ) -> None:
        self.port = port
        self.stats = stats
        self.token = token
        self.join = join
        self.sample = sample
        self.room = room
        #: "squall" (join frame), "peer" (room in the query string), "sio" (Socket.IO)
        self.proto = proto
        self.stopped = False  # a laggard: stopped reading
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.count = 0
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        if self.proto == "sio":
            path = "/socket.io/?EIO=4&transport=websocket"
        elif self.proto == "peer":
            path = f"/ws?room={self.room}"
        else:
            path = "/ws"
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if self.proto != "sio":
            lines.append(f"Sec-WebSocket-Protocol: {SUBPROTOCOL}")
        if self.token is not None:
            lines.append(f"Authorization: Bearer {self.token}")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            status = data[: data.find(b"\r\n")].split(b" ", 2)
            if len(status) < 2 or status[1] != b"101":
                self._fail(f"upgrade refused: {data[:end].decode(errors='replace')!r}")
                return
            self.upgraded = True
            data = data[end + 4 :]
            if self.ready_at_upgrade():
                self.ready.set_result(None)
        now = 0
        frames, pos = scan(data)
        for opcode, start, end in frames:
            if opcode == 2 and data[start + 1 : start + 7] == MSG_TAG:
                if self.sample:
                    if not now:
                        now = time.time_ns()
                    self._sample(data[start:end], now)
                self._count()
            elif opcode == 1 and data[start : start + 7] == SIO_MSG_TAG:
                if self.sample:
                    if not now:
                        now = time.time_ns()
                    self._sample_sio(data[start:end], now)
                self._count()
            elif opcode == 1 and self.proto == "sio":
                self._sio_frame(data[start:end])
            elif opcode in (1, 2):
                self._frame(data[start:end])
            elif opcode == 9 and self.transport is not None:
                self.stats.pings += 1
                self.transport.write(client_frame(data[start:end], opcode=0xA))
            elif opcode == 8:
                code = int.from_bytes(data[start : start + 2], "big") if end - start >= 2 else 1005
                key = f"close {code}"
                self.stats.other_frames[key] = self.stats.other_frames.get(key, 0) + 1
                self._fail("server sent close")
        if pos < len(data):
            self.buf = data[pos:]

    def ready_at_upgrade(self) -> bool:
        """Whether the connection is ready once upgraded (no welcome or join awaited)."""
        return not self.join and self.proto != "sio"

    # -- frames ----------------------------------------------------------------

    def _count(self) -> None:
        self.count += 1
        stats = self.stats
        stats.delivered += 1
        if self.count == stats.expected:
            stats.complete += 1
            if stats.complete == stats.target_complete:
                stats.last_ns = time.time_ns()
                stats.all_done.set()
            if self.sample:
                stats.sampled_complete += 1
                if stats.sampled_complete == stats.sampled_target and stats.on_sampled_done:
                    stats.on_sampled_done()

    def _sample(self, payload: bytes, now: int) -> None:
        frame = msgpack.unpackb(payload)
        data = frame.get("data")
        if isinstance(data, bytes) and len(data) >= 8:
            self.stats.latencies_us.append((now - _TS.unpack_from(data)[0]) // 1000)

    def _sample_sio(self, payload: bytes, now: int) -> None:
        _event, body = json.loads(payload[2:])
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, str) and len(data) >= 16:
            self.stats.latencies_us.append((now - int(data[:16], 16)) // 1000)

    def _sio_frame(self, payload: bytes) -> None:
        """Engine.IO v4 / Socket.IO v5 text packets (no binary attachments)."""
        if payload == b"2":  # Engine.IO ping
            self.send_text(b"3")
            return
        kind = payload[:2].decode(errors="replace")
        self.stats.other_frames["sio" + kind] = self.stats.other_frames.get("sio" + kind, 0) + 1
        if payload[:1] == b"0":  # Engine.IO open: connect the default namespace
            self.send_text(b"40")
        elif payload[:2] == b"40":  # namespace connected: join the room
            self.send_text(b'42["join",' + json.dumps(self.room).encode() + b"]")
        elif payload.startswith(b'42["joined"') and not self.ready.done():
            self.ready.set_result(None)
        elif payload[:2] == b"44":
            self._fail(f"refused: {payload!r}")

    def send_text(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(payload, opcode=0x1))

    def stop_reading(self) -> None:
        """Become a laggard: the kernel buffers fill, then the server's."""
        self.stopped = True
        if self.transport is not None:
            self.transport.pause_reading()

    def _frame(self, payload: bytes) -> None:
        try:
            frame = msgpack.unpackb(payload)
        except ValueError:
            frame = None
        kind = frame.get("t") if isinstance(frame, dict) else None
        if kind == "msg":  # a msg map packed in another key order
            assert isinstance(frame, dict)
            if self.sample:
                self._sample(payload, time.time_ns())
            self._count()
            return
        key = str(kind)
        self.stats.other_frames[key] = self.stats.other_frames.get(key, 0) + 1
        self.on_frame(kind, frame)

    def on_frame(self, kind: Any, frame: Any) -> None:
        if self.ready.done():
            return
        if kind == "welcome" and self.join:
            self.send({"t": "join", "id": 1, "room": self.room})
        elif kind == "ok" and frame.get("id") == 1:
            self.ready.set_result(None)
        elif kind in ("err", "bye"):
            self._fail(f"refused: {frame!r}")

    def _fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def send(self, frame: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(msgpack.packb(frame)))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(CLOSE_FRAME)
            self.transport.close()


class Publisher(WsClient):
    """A member that also publishes: at most ``window`` messages not yet echoed back."""

    def __init__(
        self,
        port: int,
        stats: Stats,
        token: str | None,
        join: bool,
        messages: int,
        window: int,
        payload_size: int,
    ) -> None:
        super().__init__(port, stats, token, join, sample=True)
        self.messages = messages
        self.window = window
        self.padding = b"\x00" * (payload_size - _TS.size)
        self.sent = 0
        self.acked = 0
        self.errors: list[Any] = []
        self.first_ns = 0
        self.last_ns = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start(self) -> None:
        self.first_ns = time.time_ns()
        self.pump()

    def pump(self) -> None:
        assert self.transport is not None
        write = self.transport.write
        while self.sent - self.acked < self.window and self.sent < self.messages:
            self.sent += 1
            data = _TS.pack(time.time_ns()) + self.padding
            frame = {"t": "pub", "id": self.sent + 1, "room": ROOM, "data": data}
            write(client_frame(msgpack.packb(frame)))

    def _count(self) -> None:
        super()._count()
        self._echo()

    def _echo(self) -> None:
        self.acked += 1
        if self.acked >= self.messages:
            self.last_ns = time.time_ns()
            if not self.done.done():
                self.done.set_result(None)
        elif self.sent:
            self.pump()

    def on_frame(self, kind: Any, frame: Any) -> None:
        if kind == "err" and self.ready.done():
            # A refused pub will never be echoed: free its window slot.
            self.errors.append(frame)
            self._echo()
            return
        super().on_frame(kind, frame)


# -- processes -----------------------------------------------------------------


_TASKS: set[asyncio.Task[None]] = set()


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def commands() -> asyncio.Queue[dict[str, Any]]:
    """A queue fed with the JSON commands read from stdin (``exit`` at EOF)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def pump() -> None:
        while True:
            line = await reader.readline()
            if not line:
                await queue.put({"cmd": "exit"})
                return
            await queue.put(json.loads(line))

    # keep a reference: the loop holds tasks weakly, a collected task stops reading
    _TASKS.add(asyncio.get_running_loop().create_task(pump()))
    return queue


async def connect_all(
    port: int, factories: list[Any], concurrency: int, timeout: float
) -> list[WsClient]:
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)

    async def one(factory: Any) -> WsClient:
        async with sem:
            _t, proto = await loop.create_connection(factory, "127.0.0.1", port)
            assert isinstance(proto, WsClient)
            await asyncio.wait_for(proto.ready, timeout)
            return proto

    return list(await asyncio.gather(*(one(f) for f in factories)))


def token_for(args: argparse.Namespace, index: int) -> str | None:
    if not args.auth:
        return None
    secret = os.environ.get("SQUALL_JWT_SECRET", "")
    if not secret:
        raise SystemExit("--auth needs SQUALL_JWT_SECRET")
    return make_token(secret, f"u{index}")


async def run_members(args: argparse.Namespace) -> None:
    stats = Stats(args.messages)
    stats.target_complete = args.count
    queue = await commands()
    factories = []
    for i in range(args.first, args.first + args.count):
        sample = args.sample_every > 0 and i % args.sample_every == 0
        token = token_for(args, i)
        factories.append(partial(WsClient, args.port, stats, token, args.auth, sample))
    clients = await connect_all(args.port, factories, args.concurrency, args.timeout)
    emit({"event": "ready", "connections": len(clients), "pid": os.getpid()})
    # Report when every member has all messages, or earlier when told to (a timeout).
    done = asyncio.ensure_future(stats.all_done.wait())
    get = asyncio.ensure_future(queue.get())
    waits: list[asyncio.Future[Any]] = [get, done]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    done.cancel()
    emit(
        {
            "event": "report",
            "delivered": stats.delivered,
            "complete": stats.complete,
            "connections": len(clients),
            "last_ns": stats.last_ns,
            "closed": stats.closed,
            "other_frames": stats.other_frames,
            "latencies_us": stats.latencies_us,
        }
    )
    while (await get)["cmd"] != "exit":
        get = asyncio.ensure_future(queue.get())
    for c in clients:
        c.close()
    await asyncio.sleep(0.2)


async def run_publisher(args: argparse.Namespace) -> None:
    stats = Stats(args.messages)
    stats.target_complete = 1
    queue = await commands()
    token = token_for(args, args.user_index)

    def factory() -> Publisher:
        return Publisher(
            args.port, stats, token, args.auth, args.messages, args.window, args.payload
        )

    (pub,) = await connect_all(args.port, [factory], 1, args.timeout)
    assert isinstance(pub, Publisher)
    emit({"event": "ready", "connections": 1, "pid": os.getpid()})
    while (await queue.get())["cmd"] != "go":
        pass
    pub.start()
    get = asyncio.ensure_future(queue.get())
    waits: list[asyncio.Future[Any]] = [get, pub.done]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    emit(
        {
            "event": "published",
            "sent": pub.sent,
            "echoed": pub.count,
            "first_ns": pub.first_ns,
            "last_ns": pub.last_ns,
            "errors": pub.errors[:5],
            "error_count": len(pub.errors),
            "other_frames": stats.other_frames,
            "latencies_us": stats.latencies_us,
        }
    )
    while (await get)["cmd"] != "exit":
        get = asyncio.ensure_future(queue.get())
    pub.close()
    await asyncio.sleep(0.1)


# -- phased runs (bench.fanout matrix, bench.fanout_cluster, bench.laggards) ----------


def room_name(index: int, rooms: int) -> str:
    return ROOM if rooms == 1 else f"{ROOM}-{index % rooms}"


def _ports(args: argparse.Namespace) -> list[int]:
    return [int(x) for x in args.ports.split(",")] if args.ports else [args.port]


def report_of(stats: Stats, clients: list[WsClient]) -> dict[str, Any]:
    return {
        "event": "report",
        "delivered": stats.delivered,
        "complete": stats.complete,
        "connections": len(clients),
        "last_ns": stats.last_ns,
        "closed": stats.closed,
        "other_frames": stats.other_frames,
        "latencies_us": stats.latencies_us,
    }


async def run_phased_members(args: argparse.Namespace) -> None:
    """Members that count one phase at a time: ``{"cmd": "phase", "messages": N}``.

    With ``"defer": true`` only the sampled members (the latency probes, one in
    ``--sample-every``) read during the phase; the others stop reading until every
    sampled member has its N frames, then read what the kernel kept for them (64 B
    messages: a few KiB per connection, far below the socket buffers). The server
    writes to all of them alike, but the load generator's CPU during the fan-out is
    the probes' only: what remote clients would cost the machine.

    Every connection expects N ``msg`` frames in the phase; ``report`` comes when all
    healthy connections have them (laggards excluded), or at once on ``report``.
    ``{"cmd": "lag"}`` makes every ``--lag-every``-th connection stop reading;
    ``{"cmd": "resume"}`` lets them read again (they then see their close frames).
    """
    stats = Stats(args.messages)
    queue = await commands()
    ports = _ports(args)
    factories = []
    for i in range(args.first, args.first + args.count):
        sample = args.sample_every > 0 and i % args.sample_every == 0
        token = token_for(args, i)
        factories.append(
            partial(
                WsClient,
                ports[i % len(ports)],
                stats,
                token,
                args.auth,
                sample,
                room_name(i, args.rooms),
                args.proto,
            )
        )
    clients = await connect_all_ports(factories, args.concurrency, args.timeout)
    emit({"event": "ready", "connections": len(clients), "pid": os.getpid()})
    waiter: asyncio.Task[None] | None = None

    async def when_done() -> None:
        await stats.all_done.wait()
        emit(report_of(stats, clients))

    while True:
        cmd = await queue.get()
        name = cmd["cmd"]
        if name == "exit":
            break
        if name == "phase":
            if waiter is not None:
                waiter.cancel()
            stats.expected = int(cmd["messages"])
            stats.delivered = stats.complete = stats.last_ns = 0
            stats.latencies_us = []
            stats.other_frames = {}
            stats.all_done = asyncio.Event()
            for c in clients:
                c.count = 0
            stats.target_complete = sum(1 for c in clients if not c.stopped)
            stats.sampled_complete = 0
            stats.on_sampled_done = None
            if cmd.get("defer"):
                deferred = [c for c in clients if not c.sample and not c.stopped]
                probes = [c for c in clients if c.sample and not c.stopped]
                stats.sampled_target = len(probes)
                for c in deferred:
                    assert c.transport is not None
                    c.transport.pause_reading()

                def read_all(deferred: list[WsClient] = deferred) -> None:
                    for c in deferred:
                        if c.transport is not None and not c.transport.is_closing():
                            c.transport.resume_reading()

                stats.on_sampled_done = read_all
                if not probes:
                    read_all()
            waiter = asyncio.ensure_future(when_done())
        elif name == "report":
            if waiter is not None:
                waiter.cancel()
                waiter = None
            emit(report_of(stats, clients))
        elif name == "lag":
            lagging = [c for i, c in enumerate(clients) if (args.first + i) % args.lag_every == 0]
            for c in lagging:
                c.stop_reading()
            emit({"event": "lagging", "count": len(lagging)})
        elif name == "resume":
            for c in clients:
                if c.stopped and c.transport is not None and not c.transport.is_closing():
                    c.transport.resume_reading()
            await asyncio.sleep(float(cmd.get("wait", 1.0)))
            emit({"event": "resumed", "other_frames": stats.other_frames, "closed": stats.closed})
    for c in clients:
        c.close()
    await asyncio.sleep(0.2)


async def connect_all_ports(
    factories: list[Any], concurrency: int, timeout: float
) -> list[WsClient]:
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)

    async def one(factory: Any) -> WsClient:
        async with sem:
            port = factory.args[0]
            _t, proto = await loop.create_connection(factory, "127.0.0.1", port)
            assert isinstance(proto, WsClient)
            await asyncio.wait_for(proto.ready, timeout)
            return proto

    return list(await asyncio.gather(*(one(f) for f in factories)))


class RoomPublisher(WsClient):
    """The last member of one room, which also publishes to it (see :func:`run_pubs`)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.sent = 0
        self.acked = 0
        self.target = 0  # messages to publish in this phase
        self.window = 4
        self.burst = 1
        self.padding = b""
        self.errors = 0
        self.on_done: Any = None
        self.paced = False

    def frame(self) -> bytes:
        self.sent += 1
        stamp = time.time_ns()
        if self.proto == "sio":
            data = f"{stamp:016x}" + "0" * len(self.padding)
            body = json.dumps(["pub", {"room": self.room, "data": data}], separators=(",", ":"))
            return client_frame(("42" + body).encode(), opcode=0x1)
        msg = {"t": "pub", "id": self.sent + 1, "room": self.room}
        msg["data"] = _TS.pack(stamp) + self.padding
        return client_frame(msgpack.packb(msg))

    def pump(self) -> None:
        """Closed loop: send ``burst`` pubs in one write while the window allows."""
        assert self.transport is not None
        while self.sent - self.acked + self.burst <= self.window and self.sent < self.target:
            n = min(self.burst, self.target - self.sent)
            self.transport.write(b"".join(self.frame() for _ in range(n)))

    def _count(self) -> None:
        super()._count()
        self._echo()

    def _echo(self) -> None:
        self.acked += 1
        if self.acked == self.target and self.on_done is not None:
            self.on_done(self)
        elif not self.paced:
            self.pump()

    def on_frame(self, kind: Any, frame: Any) -> None:
        if kind == "err" and self.ready.done():
            self.errors += 1
            self._echo()
            return
        super().on_frame(kind, frame)


async def run_pubs(args: argparse.Namespace) -> None:
    """One publisher connection per room, joined last; phases driven by ``go`` commands.

    ``{"cmd": "go", "messages": N, "window": W, "burst": B, "payload": P, "rate": R}``:
    every room gets N messages. Without ``rate``: closed loop, at most W not yet
    echoed per room, sent B per write. With ``rate`` (messages/s over all rooms):
    open loop, paced by a 2 ms timer, round-robin over the rooms.
    """
    stats = Stats(0)
    queue = await commands()
    ports = _ports(args)
    factories = []
    for r in range(args.rooms):
        token = token_for(args, args.user_index + r)
        factories.append(
            partial(
                RoomPublisher,
                ports[0],
                stats,
                token,
                args.auth,
                True,
                room_name(r, args.rooms),
                args.proto,
            )
        )
    pubs = await connect_all_ports(factories, args.concurrency, args.timeout)
    emit({"event": "ready", "connections": len(pubs), "pid": os.getpid()})
    loop = asyncio.get_running_loop()
    while True:
        cmd = await queue.get()
        if cmd["cmd"] == "exit":
            break
        if cmd["cmd"] != "go":
            continue
        n = int(cmd["messages"])
        rate = float(cmd.get("rate") or 0)
        stats.latencies_us = []
        stats.other_frames = {}
        done: asyncio.Future[None] = loop.create_future()
        remaining = [len(pubs)]

        def finished(_p: WsClient, remaining: list[int] = remaining, done: Any = done) -> None:
            remaining[0] -= 1
            if remaining[0] == 0 and not done.done():
                done.set_result(None)

        for pub in pubs:
            assert isinstance(pub, RoomPublisher)
            pub.sent = pub.acked = pub.errors = pub.count = 0
            pub.target = n
            pub.window = int(cmd.get("window", 4))
            pub.burst = int(cmd.get("burst", 1))
            pub.padding = b"\x00" * (int(cmd.get("payload", 64)) - _TS.size)
            pub.paced = rate > 0
            pub.on_done = finished
        first_ns = time.time_ns()
        if rate > 0:
            pacer = asyncio.ensure_future(pace(pubs, n, rate))
        else:
            for pub in pubs:
                assert isinstance(pub, RoomPublisher)
                pub.pump()
        get = asyncio.ensure_future(queue.get())
        pending: list[asyncio.Future[Any]] = [get, done]
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if rate > 0:
            pacer.cancel()
        last_ns = time.time_ns()
        emit(
            {
                "event": "published",
                "sent": sum(p.sent for p in pubs if isinstance(p, RoomPublisher)),
                "echoed": sum(p.count for p in pubs),
                "first_ns": first_ns,
                "last_ns": last_ns if done.done() else 0,
                "error_count": sum(p.errors for p in pubs if isinstance(p, RoomPublisher)),
                "other_frames": stats.other_frames,
                "latencies_us": stats.latencies_us,
            }
        )
        if not done.done():
            get.cancel()
            continue
        get.cancel()
    for p in pubs:
        p.close()
    await asyncio.sleep(0.1)


async def pace(pubs: list[WsClient], n: int, rate: float) -> None:
    """Open-loop publishing at ``rate`` messages/s in all, round-robin over the rooms."""
    total = n * len(pubs)
    sent = 0
    start = time.monotonic()
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            pub = pubs[sent % len(pubs)]
            assert isinstance(pub, RoomPublisher) and pub.transport is not None
            pub.transport.write(pub.frame())
            sent += 1
        await asyncio.sleep(0.002)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen")
    sub = p.add_subparsers(dest="role", required=True)
    for name in ("members", "publisher", "phased", "pubs"):
        s = sub.add_parser(name)
        s.add_argument("--port", type=int, default=0)
        s.add_argument("--ports", default="", help="comma-separated; member i uses i %% len")
        s.add_argument("--rooms", type=int, default=1, help="member i joins room i %% rooms")
        s.add_argument("--proto", default="squall", choices=("squall", "peer", "sio"))
        s.add_argument("--concurrency", type=int, default=64, help="handshakes in flight")
        s.add_argument("--messages", type=int, default=0, help="msg frames to expect")
        s.add_argument("--auth", action="store_true", help="JWT bearer header, then join")
        s.add_argument("--timeout", type=float, default=30.0, help="per-connection setup")
    for name in ("members", "phased"):
        m = sub.choices[name]
        m.add_argument("--count", type=int, required=True)
        m.add_argument("--first", type=int, default=0, help="index of the first member (u<I>)")
        m.add_argument("--sample-every", type=int, default=20, help="latency of 1 member in K")
        m.add_argument("--lag-every", type=int, default=100, help="laggards: 1 member in K")
    for name in ("publisher", "pubs"):
        sub.choices[name].add_argument("--user-index", type=int, default=0)
    pb = sub.choices["publisher"]
    pb.add_argument("--window", type=int, default=4, help="messages not yet echoed")
    pb.add_argument("--payload", type=int, default=64, help="data bytes (>= 8)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    roles = {
        "members": run_members,
        "publisher": run_publisher,
        "phased": run_phased_members,
        "pubs": run_pubs,
    }
    runner(roles[args.role](args))


if __name__ == "__main__":
    main()
