"""The cost of a ``pub`` hook per message: ``python -m bench.hook_cost [--n 2000]``.

One Squall node (``server.py``, memory backend) and the example application
(``examples/hooks_app.py``) run as subprocesses on loopback; one WebSocket client
joins a room and publishes. Variants:

* ``none``: no hook (the baseline);
* ``module``: in-process hooks (``hooks.module: examples.squall_hooks``);
* ``http``: HTTP pub hook to the example application (signed, keep-alive);
* ``http-serial``: the same with ``hooks.max_concurrency: 1`` (no pipelining);
* ``http-batch``: the same with ``hooks.pub.batch: true`` (one request per batch).

Two measurements each: *sequential* (send one pub, wait for its ``ok``: the latency
a hook adds to one message) and *pipelined* (``n`` pubs sent at once, the
connection's publisher asks the hook about each batch concurrently: throughput).
The machine is shared; run it small and quote the numbers as indications.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import msgpack
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

REPO = Path(__file__).resolve().parents[1]
JWT_SECRET = secrets.token_hex(32)
API_SECRET = secrets.token_hex(32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("a process did not start") from None
            await asyncio.sleep(0.05)


def start_squall(port: int, extra_env: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SQUALL_JWT_SECRET": JWT_SECRET,
        "SQUALL_API_SECRET": API_SECRET,
        "SQUALL_SERVER__HOST": "127.0.0.1",
        "SQUALL_LOG__LEVEL": "WARNING",
        "SQUALL_RATELIMIT__MESSAGES": "1000000",
        "PYTHONPATH": str(REPO),
        **extra_env,
    }
    for key in ("REDIS_URL", "WEB_CONCURRENCY", "PORT"):
        env.pop(key, None)
    return subprocess.Popen([sys.executable, "server.py", "--port", str(port)], cwd=REPO, env=env)


async def measure(port: int, n: int, sequential: int) -> dict[str, float]:
    now = int(time.time())
    tok = jwt.encode(
        {"sub": "bench", "iat": now, "exp": now + 600, "jti": secrets.token_hex(8)},
        JWT_SECRET,
        algorithm="HS256",
    )
    request = HTTPRequest(f"ws://127.0.0.1:{port}/ws", headers={"Authorization": f"Bearer {tok}"})
    ws = await websocket_connect(request, subprotocols=["squall.v1.msgpack"])

    async def frame() -> dict[str, Any]:
        msg = await ws.read_message()
        assert msg is not None, "connection closed"
        out: dict[str, Any] = msgpack.unpackb(msg)
        return out

    async def until_ok(rid: int) -> None:
        while True:
            f = await frame()
            if f.get("t") == "err":
                raise RuntimeError(f"err: {f}")
            if f.get("t") == "ok" and f.get("id") == rid:
                return

    def send(obj: dict[str, Any]) -> None:
        ws.write_message(msgpack.packb(obj), binary=True)

    assert (await frame())["t"] == "welcome"
    send({"t": "join", "id": 1, "room": "bench"})
    await until_ok(1)
    rid = 10
    latencies = []
    for _ in range(sequential):
        rid += 1
        start = time.perf_counter()
        send({"t": "pub", "id": rid, "room": "bench", "data": {"text": "hello"}})
        await until_ok(rid)
        latencies.append(time.perf_counter() - start)
    start = time.perf_counter()
    first = rid + 1
    for i in range(n):
        send({"t": "pub", "id": first + i, "room": "bench", "data": {"text": "hello"}})
    oks = 0
    while oks < n:
        f = await frame()
        if f.get("t") == "err":
            raise RuntimeError(f"err: {f}")
        oks += f.get("t") == "ok"
    elapsed = time.perf_counter() - start
    ws.close()
    return {
        "sequential_ms_median": round(statistics.median(latencies) * 1000, 3),
        "pipelined_msgs_per_s": round(n / elapsed),
        "pipelined_us_per_msg": round(elapsed / n * 1e6, 1),
    }


VARIANTS: dict[str, dict[str, str]] = {
    "none": {},
    "module": {"SQUALL_HOOKS__MODULE": "examples.squall_hooks"},
    "http": {},  # filled with the application's URL
    "http-serial": {"SQUALL_HOOKS__MAX_CONCURRENCY": "1"},
    "http-batch": {"SQUALL_HOOKS__PUB__BATCH": "true"},
}


async def main() -> None:
    parser = argparse.ArgumentParser(description="cost of a pub hook per message")
    parser.add_argument("--n", type=int, default=2000, help="pipelined pubs per variant")
    parser.add_argument("--sequential", type=int, default=200, help="one-at-a-time pubs")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "hooks-short.json"))
    args = parser.parse_args()
    app_port = free_port()
    app = subprocess.Popen(
        [sys.executable, "examples/hooks_app.py", "--port", str(app_port)],
        cwd=REPO,
        env={**os.environ, "SQUALL_API_SECRET": API_SECRET},
        stdout=subprocess.DEVNULL,
    )
    results: dict[str, Any] = {}
    try:
        await wait_port(app_port, app)
        url = f"http://127.0.0.1:{app_port}/squall/pub"
        for name, env in VARIANTS.items():
            if name.startswith("http"):
                env = {**env, "SQUALL_HOOKS__PUB__URL": url}
            port = free_port()
            node = start_squall(port, env)
            try:
                await wait_port(port, node)
                results[name] = await measure(port, args.n, args.sequential)
            finally:
                node.terminate()
                node.wait(20)
            print(name, results[name], flush=True)
    finally:
        app.terminate()
        app.wait(20)
    base = results["none"]
    for r in results.values():
        r["added_us_per_msg_pipelined"] = round(
            r["pipelined_us_per_msg"] - base["pipelined_us_per_msg"], 1
        )
        r["added_ms_sequential"] = round(
            r["sequential_ms_median"] - base["sequential_ms_median"], 3
        )
    report = {
        "n": args.n,
        "sequential": args.sequential,
        "cpus": os.cpu_count(),
        "results": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| variant | sequential ms/pub (median) | pipelined msgs/s | µs/msg | added µs/msg |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['sequential_ms_median']} | {r['pipelined_msgs_per_s']} | "
            f"{r['pipelined_us_per_msg']} | {r['added_us_per_msg_pipelined']} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
