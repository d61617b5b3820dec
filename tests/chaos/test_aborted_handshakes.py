"""A flood of handshakes aborted (TCP reset) at every step never leaves anything counted.

Steps: reset right after connect; after half the request head; after the whole
upgrade request (the node is awaiting Redis for the token checks and admission);
after the 101 (before ``welcome`` is read); after a first-frame ``auth``. The node
runs with a small ``limits.max_connections``: afterwards it must hold no connection,
no session in Redis, and admit ``max_connections`` clients at once.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import subprocess
import time

import msgpack
import pytest

from core.wsframe import OP_BINARY, client_frame
from tests.chaos.conftest import Cluster, report, scaled
from tests.chaos.swarm import Refused, Ws
from tests.redis_server import RedisServer
from tests.tokens import good_claims, make_token

ABORTS = scaled(100, 1000)
MAX_CONN = scaled(40, 200)
STEPS = ("connect", "half_head", "full_head", "after_101", "after_auth")


def _rst(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def _abort(port: int, step: str, i: int) -> None:
    loop = asyncio.get_running_loop()
    s = socket.socket()
    s.setblocking(False)
    await loop.sock_connect(s, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    auth = (
        ""
        if step == "after_auth"
        else (f"Authorization: Bearer {make_token(good_claims(f'x{i}', ttl=600))}\r\n")
    )
    head = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
    ).encode()
    if step == "half_head":
        await loop.sock_sendall(s, head[: len(head) // 2])
        await asyncio.sleep(0.01)
    elif step != "connect":
        await loop.sock_sendall(s, head)
        if step in ("after_101", "after_auth"):
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = await asyncio.wait_for(loop.sock_recv(s, 4096), 10)
                if not chunk:
                    break
                buf += chunk
        if step == "after_auth":
            token = make_token(good_claims(f"x{i}", ttl=600))
            frame = msgpack.packb({"t": "auth", "token": token})
            await loop.sock_sendall(s, client_frame(OP_BINARY, frame))
    _rst(s)


async def _flood(port: int) -> None:
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> None:
        async with sem:
            await _abort(port, STEPS[i % len(STEPS)], i)

    await asyncio.gather(*(one(i) for i in range(ABORTS)))


async def _fill(port: int, n: int) -> tuple[int, dict[int, int]]:
    async def one(i: int) -> Ws | int:
        try:
            ws = await Ws.connect(port, make_token(good_claims(f"f{i}", ttl=600)), 10)
        except Refused as r:
            return r.status
        first = await ws.recv(10)
        return ws if first is not None and first["t"] == "welcome" else 0

    got = await asyncio.gather(*(one(i) for i in range(n)))
    refused: dict[int, int] = {}
    for g in got:
        if isinstance(g, Ws):
            g.close()
        else:
            refused[g] = refused.get(g, 0) + 1
    return sum(isinstance(g, Ws) for g in got), refused


def _redis_sessions(redis: RedisServer, key: str) -> int:
    out = subprocess.run(["redis-cli", "-p", str(redis.port), "zcard", key],
                         capture_output=True, text=True, timeout=5).stdout  # fmt: skip
    return int(out.strip() or 0)


@pytest.mark.timeout(scaled(60, 180))
def test_aborted_handshake_flood_leaves_nothing_counted(cluster: Cluster) -> None:
    redis = cluster.start_redis()
    node = cluster.node("n", {"limits.max_connections": MAX_CONN, "heartbeat.interval_s": 1})
    asyncio.run(_flood(node.port))
    start = time.monotonic()
    while node.metric("squall_connections") > 0 and time.monotonic() - start < 10:
        time.sleep(0.1)
    settled = time.monotonic() - start
    connections = node.metric("squall_connections")
    admitted, refused = asyncio.run(_fill(node.port, MAX_CONN))
    time.sleep(0.5)
    key = f"{cluster.prefix}{{n:n}}:sess"
    deadline = time.monotonic() + 5
    while _redis_sessions(redis, key) and time.monotonic() < deadline:
        time.sleep(0.1)
    sessions_left = _redis_sessions(redis, key)
    figures = {
        "aborted": ABORTS,
        "connections_after": connections,
        "settled_s": round(settled, 2),
        "admitted_after": admitted,
        "max_connections": MAX_CONN,
        "refused_after": refused,
        "redis_sessions_after": sessions_left,
    }
    report("aborted_handshakes", figures)
    assert connections == 0
    assert admitted == MAX_CONN, refused
    assert sessions_left == 0
