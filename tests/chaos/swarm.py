"""A client worker process of the chaos suite: many raw WebSocket clients on one loop.

``python -m tests.chaos.swarm '<json spec>'`` runs ``spec["count"]`` clients of one
``mode`` against ``spec["port"]`` on 127.0.0.1 and talks to its parent on stdio:
it prints ``ready <n>`` once every client completed its first handshake (or gave
up), and on ``stop`` (a line on stdin) or after ``spec["max_s"]`` it prints one JSON
line of results and exits. Spreading clients over several such processes keeps
each under the 20,000 open-files limit.

Modes:

* ``hold``: connect and stay; with ``reconnect``, a closed client reconnects with
  full jitter (``jitter_s``), honouring ``Retry-After`` on a refusal, and records
  how long it was out (close to ``welcome``) and every refusal status.
* ``member``: ``hold`` plus ``join`` of ``room``; records every ``msg`` (epoch, seq,
  data) and every ``resync`` frame, and rejoins with ``since``/``epoch`` after a
  reconnect.
* ``stall``: join ``room``, then never read again (tiny receive buffer).
* ``churn``: ``total`` connect / ``welcome`` / close cycles at ``rate`` per second.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import socket
import sys
import time
from typing import Any

import msgpack

from core.wsframe import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    client_frame,
    parse_close,
    parse_frames,
)
from tests.tokens import good_claims, make_token


class Refused(Exception):
    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(status)
        self.status = status
        self.retry_after = retry_after


class Ws:
    """One raw client connection (msgpack subprotocol)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.frames: list[tuple[int, bool, bytes]] = []
        self.close_code: int | None = None

    @classmethod
    async def connect(cls, port: int, token: str, timeout: float, rcvbuf: int | None = None) -> Ws:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.setblocking(False)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port)), timeout
            )
            reader, writer = await asyncio.open_connection(sock=s)
        except BaseException:
            s.close()
            raise
        ws = cls(reader, writer)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except BaseException:
            ws.abort()
            raise
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            retry = None
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"retry-after:"):
                    retry = float(line.split(b":", 1)[1])
            ws.abort()
            raise Refused(status, retry)
        return ws

    def send(self, frame: dict[str, Any]) -> None:
        self.writer.write(client_frame(OP_BINARY, msgpack.packb(frame, use_bin_type=True)))

    async def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        """Next data frame (pings answered), or None once closed."""
        while True:
            while self.frames:
                op, _fin, payload = self.frames.pop(0)
                if op == OP_BINARY:
                    out: dict[str, Any] = msgpack.unpackb(payload, raw=False)
                    return out
                if op == OP_PING:
                    self.writer.write(client_frame(OP_PONG, payload))
                elif op == OP_CLOSE:
                    self.close_code = parse_close(payload)[0]
                    self.abort()
                    return None
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
            except (ConnectionError, OSError):
                chunk = b""
            if not chunk:
                self.abort()
                return None
            self.buf += chunk
            self.frames.extend(parse_frames(self.buf))

    def abort(self) -> None:
        self.writer.transport.abort()

    def close(self) -> None:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            self.writer.write(client_frame(OP_CLOSE, b"\x03\xe8"))
        self.writer.close()


class Swarm:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.port: int = spec["port"]
        self.mode: str = spec["mode"]
        self.room: str | None = spec.get("room")
        self.timeout: float = spec.get("timeout_s", 15.0)
        self.stopping = False
        self.ready = 0
        self.failed_first = 0
        self.refusals: dict[str, int] = {}
        self.closes: dict[str, int] = {}
        self.close_times: list[float] = []
        self.outages: list[float] = []  # close -> welcome again, seconds
        self.readmit_times: list[float] = []  # wall time of each welcome after a close
        self.unreadmitted = 0
        self.handshake_s: list[float] = []
        self.connects = 0
        self.errors: dict[str, int] = {}
        self.msgs: dict[int, list[list[Any]]] = {}
        self.resyncs: dict[int, list[dict[str, Any]]] = {}
        self.live: set[Ws] = set()

    def _err(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    async def handshake(self, uid: str, rcvbuf: int | None = None) -> Ws:
        """Connect until welcomed (with jittered backoff between refusals)."""
        attempt = 0
        while True:
            start = time.monotonic()
            try:
                ws = await Ws.connect(self.port, make_token(good_claims(uid, ttl=3600)),
                                      self.timeout, rcvbuf)  # fmt: skip
                first = await ws.recv(self.timeout)
                if first is None or first.get("t") != "welcome":
                    raise ConnectionError(f"no welcome: {first} {ws.close_code}")
                self.handshake_s.append(time.monotonic() - start)
                self.connects += 1
                return ws
            except Refused as r:
                self.refusals[str(r.status)] = self.refusals.get(str(r.status), 0) + 1
                wait = r.retry_after if r.retry_after is not None else 1.0
                delay = random.uniform(0.5 * wait, 1.5 * wait)
            except (TimeoutError, OSError, ConnectionError, asyncio.IncompleteReadError):
                self._err("connect")
                attempt += 1
                delay = random.uniform(0, min(5.0, 0.2 * 2**attempt))
            if self.stopping:
                raise ConnectionError("stopping")
            await asyncio.sleep(delay)

    async def client(self, i: int) -> None:
        uid = f"{self.spec.get('prefix', 'u')}{i}"
        rcvbuf = 4096 if self.mode == "stall" else None
        epoch, since = None, None
        first = True
        closed_at: float | None = None
        while not self.stopping:
            try:
                ws = await self.handshake(uid, rcvbuf)
            except ConnectionError:
                if first:
                    self.failed_first += 1
                    self.ready += 1
                if closed_at is not None:
                    self.unreadmitted += 1
                return
            if closed_at is not None:
                self.outages.append(time.monotonic() - closed_at)
                self.readmit_times.append(time.time())
                closed_at = None
            self.live.add(ws)
            try:
                if self.room is not None:
                    join: dict[str, Any] = {"t": "join", "id": 1, "room": self.room}
                    if since is not None:
                        join.update(since=since, epoch=epoch)
                    ws.send(join)
                if first and self.room is None:
                    first = False
                    self.ready += 1
                if self.mode == "stall":
                    while True:
                        frame = await ws.recv(self.timeout)
                        if frame is None or frame.get("id") == 1:
                            break
                    first = False
                    self.ready += 1
                    while not self.stopping:  # never read again
                        await asyncio.sleep(0.2)
                    return
                while True:
                    frame = await ws.recv()
                    if frame is None:
                        break
                    t = frame.get("t")
                    if t == "msg":
                        self.msgs.setdefault(i, []).append([frame["epoch"], frame["seq"],
                                                            frame["data"]])  # fmt: skip
                        epoch, since = frame["epoch"], frame["seq"]
                    elif t == "resync":
                        self.resyncs.setdefault(i, []).append(frame)
                        epoch, since = frame["epoch"], frame["seq"]
                    elif t == "ok" and frame.get("id") == 1 and "epoch" in frame:
                        if since is None or epoch != frame["epoch"]:
                            epoch, since = frame["epoch"], frame["seq"]
                        if first:
                            first = False
                            self.ready += 1
                    elif t == "err" and frame.get("id") == 1:
                        self._err(f"join {frame.get('code')}")
                        if first:
                            first = False
                            self.ready += 1
            finally:
                self.live.discard(ws)
            if self.stopping:
                return
            code = ws.close_code
            self.closes[str(code)] = self.closes.get(str(code), 0) + 1
            self.close_times.append(time.time())
            if not self.spec.get("reconnect", False):
                return
            closed_at = time.monotonic()
            await asyncio.sleep(random.uniform(0, self.spec.get("jitter_s", 1.0)))
        if closed_at is not None:
            self.unreadmitted += 1

    async def churn(self) -> None:
        total, rate = self.spec["total"], self.spec["rate"]
        sem = asyncio.Semaphore(self.spec.get("concurrency", 50))
        start = time.monotonic()

        async def one(i: int) -> None:
            async with sem:
                try:
                    ws = await self.handshake(f"{self.spec.get('prefix', 'c')}{i % 500}")
                except ConnectionError:
                    return
                ws.close()

        tasks = []
        for i in range(total):
            if self.stopping:
                break
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.gather(*tasks)

    def result(self) -> dict[str, Any]:
        hs = sorted(self.handshake_s)

        def pct(p: float) -> float:
            return round(hs[min(len(hs) - 1, int(p * len(hs)))], 3) if hs else 0.0

        return {
            "ready": self.ready,
            "failed_first": self.failed_first,
            "connects": self.connects,
            "refusals": self.refusals,
            "closes": self.closes,
            "close_times": self.close_times,
            "outages": self.outages,
            "readmit_times": self.readmit_times,
            "unreadmitted": self.unreadmitted,
            "handshake_p50": pct(0.5),
            "handshake_p99": pct(0.99),
            "errors": self.errors,
            "msgs": self.msgs,
            "resyncs": self.resyncs,
        }


async def main(spec: dict[str, Any]) -> None:
    swarm = Swarm(spec)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def control() -> None:
        while True:
            line = await reader.readline()
            if not line or line.strip() == b"stop":
                stop.set()
                return
            if line.strip() == b"count":
                total = sum(len(m) for m in swarm.msgs.values())
                print(f"count {total}", flush=True)

    ctl = asyncio.ensure_future(control())
    if swarm.mode == "churn":
        work = [asyncio.ensure_future(swarm.churn())]
    else:
        ids = range(spec["first"], spec["first"] + spec["count"])
        work = [asyncio.ensure_future(swarm.client(i)) for i in ids]

    async def announce() -> None:
        while swarm.ready < spec.get("count", 0):
            await asyncio.sleep(0.05)
        print(f"ready {swarm.ready}", flush=True)

    ann = asyncio.ensure_future(announce())
    everything = asyncio.ensure_future(asyncio.gather(*work))
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait(
        [everything, stopped], timeout=spec.get("max_s", 300), return_when="FIRST_COMPLETED"
    )
    swarm.stopping = True
    for ws in list(swarm.live):
        ws.close()
    await asyncio.wait([everything], timeout=5)
    for t in (ann, ctl, everything, stopped):
        t.cancel()
    print(json.dumps(swarm.result()), flush=True)


def settle(swarms: list[SwarmProc], quiet_s: float = 1.0, timeout: float = 60.0) -> float:
    """Wait until the swarms' received-message counts stop growing for ``quiet_s``
    (members are separate processes: no event says they read everything). Bounded."""
    start = time.monotonic()
    last, since = -1, time.monotonic()
    while time.monotonic() - start < timeout:
        total = sum(sw.received() for sw in swarms)
        if total != last:
            last, since = total, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.2)
    return time.monotonic() - start


class SwarmProc:
    """The parent's handle on one worker process."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import subprocess

        from tests.chaos.procs import ROOT

        self.spec = spec
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.swarm", json.dumps(spec)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    def wait_ready(self, timeout: float) -> int:
        """Block until ``ready <n>`` (every client's first handshake done); returns n."""
        import select

        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                line = self.proc.stdout.readline().decode()
                if line.startswith("ready "):
                    return int(line.split()[1])
                if not line:
                    break
        raise TimeoutError(f"swarm not ready within {timeout} s: {self._stderr()}")

    def received(self, timeout: float = 10.0) -> int:
        """How many room messages its clients have received so far."""
        import select

        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"count\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                line = self.proc.stdout.readline().decode()
                if line.startswith("count "):
                    return int(line.split()[1])
        raise TimeoutError("swarm did not answer count")

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")[-3000:]

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """Tell it to stop; returns its results."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(b"stop\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        return self.result(timeout)

    def result(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except Exception:
            self.proc.kill()
            out, err = self.proc.communicate()
        for line in reversed(out.decode().splitlines()):
            if line.startswith("{"):
                parsed: dict[str, Any] = json.loads(line)
                return parsed
        raise RuntimeError(f"swarm gave no result: {err.decode(errors='replace')[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(json.loads(sys.argv[1])))
