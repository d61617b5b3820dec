"""An in-process publisher for the chaos scenarios: paced ``pub`` requests, every
reply recorded (``ok`` with its ``seq``, ``err`` by code, the close code if any)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.swarm import Ws
from tests.tokens import good_claims, make_token


@dataclass
class PubLog:
    acked: dict[int, int] = field(default_factory=dict)  # data id -> seq
    errs: dict[int, int] = field(default_factory=dict)  # code -> count
    err_before_close: list[int] = field(default_factory=list)
    sent: int = 0
    close_code: int | None = None
    first_429_at: float | None = None
    closed_at: float | None = None
    own_msgs: list[Any] = field(default_factory=list)

    @property
    def unanswered(self) -> int:
        return self.sent - len(self.acked) - sum(self.errs.values())


async def connect_member(port: int, uid: str, room: str) -> Ws:
    ws = await Ws.connect(port, make_token(good_claims(uid, ttl=3600)), 10)
    first = await ws.recv(10)
    assert first is not None and first["t"] == "welcome", first
    ws.send({"t": "join", "id": 1, "room": room})
    while True:
        f = await ws.recv(10)
        assert f is not None, ws.close_code
        if f.get("id") == 1:
            assert f["t"] == "ok", f
            return ws


async def publish(
    ws: Ws, room: str, rate: float, duration: float, size: int = 0, log: PubLog | None = None
) -> PubLog:
    """Send ``rate`` pubs/s for ``duration`` s (data: the pub's number, padded to
    ``size`` bytes when asked), read replies meanwhile; return once every pub was
    answered or the connection closed (bounded: 10 s after the last send)."""
    log = log or PubLog()
    pad = "x" * size

    async def reader() -> None:
        while True:
            f = await ws.recv()
            if f is None:
                log.close_code = ws.close_code
                log.closed_at = time.monotonic()
                return
            t = f.get("t")
            rid = f.get("id")
            if t == "ok" and isinstance(rid, int) and rid >= 1000:
                log.acked[rid - 1000] = f["seq"]
            elif t == "err" and isinstance(rid, int) and rid >= 1000:
                code = f["code"]
                log.errs[code] = log.errs.get(code, 0) + 1
                if code == 429 and log.first_429_at is None:
                    log.first_429_at = time.monotonic()
            elif t == "msg":
                log.own_msgs.append(f["data"])

    task = asyncio.ensure_future(reader())
    start = time.monotonic()
    n = int(rate * duration)
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if task.done():
            break
        data: Any = {"i": i, "p": pad} if size else i
        ws.send({"t": "pub", "id": 1000 + i, "room": room, "data": data})
        log.sent += 1
    deadline = time.monotonic() + 10
    while log.unanswered > 0 and not task.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    task.cancel()
    return log
