"""Scenario ``dm`` (issue 5, scenario 5): private messages between random pairs of users.

Two Squall nodes (two ``server.py`` processes, both pinned to CPU 0) share one Redis
(CPU 1). ``users`` users, one connection each: the first half on node A, the second
half on node B (client processes on CPU 1, each bound to its own 127.0.0.x). One
connection in ``sender_every`` is a sender: it keeps ``window`` ``send`` requests in
flight (the next one goes when the ``ok`` arrives) to a uniformly random other user,
so about half of the recipients are on the other node. ``data`` is 32 bytes: the
sender's ``time.time_ns()`` then zeros. Every recipient acks each ``dm`` (``ack``
frame), as a client must, or the message would stay in its inbox.

After ``warmup`` seconds of sending, the deliveries counted by the clients and the
CPU of both nodes and Redis are read over ``duration`` seconds. CPU per delivered dm =
(node A + node B CPU) / dm frames received in the window; Redis's CPU per dm is given
separately. Latency is receive time minus the send stamp (same clock), at saturation:
with ``users / sender_every x window`` requests in flight it includes queueing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import cpu_busy, cpu_seconds
from bench.conn import Redis, Server, connect, host_cpus, pct, start_clients, start_server, stop_all

__all__ = ["DmParams", "run_once", "scenario"]


@dataclass(frozen=True)
class DmParams:
    users: int = 2000
    sender_every: int = 4
    window: int = 1
    warmup: float = 2.0
    duration: float = 10.0
    runs: int = 3


async def _mark(clients: list[Any]) -> list[dict[str, Any]]:
    for c in clients:
        c.send("mark")
    return list(await asyncio.gather(*(c.expect("mark", 30.0) for c in clients)))


async def run_once(p: DmParams, workdir: Path) -> dict[str, Any]:
    server_cpu, client_cpu = host_cpus()
    nodes: list[Server] = []
    redis: Redis | None = None
    clients: list[Any] = []
    try:
        redis = Redis(client_cpu)
        for _ in range(2):
            nodes.append(
                await start_server(
                    "squall", workdir, server_cpu, interval=25.0, redis_url=redis.url
                )
            )
        extra = ["--dm-users", str(p.users), "--dm-window", str(p.window)]
        extra += ["--dm-sender-every", str(p.sender_every)]
        clients = await start_clients(
            workdir,
            client_cpu,
            [n.port for n in nodes],
            p.users,
            2,
            auth=True,
            extra=extra,
        )
        ready = await connect(clients, 120.0)
        for c in clients:
            c.send("dm-start")
        await asyncio.sleep(p.warmup)
        m0 = await _mark(clients)
        s0 = [cpu_seconds(n.child.pid) for n in nodes]
        r0, h0, t0 = cpu_seconds(redis.pid), cpu_busy(), time.monotonic()
        await asyncio.sleep(p.duration)
        m1 = await _mark(clients)
        s1 = [cpu_seconds(n.child.pid) for n in nodes]
        r1, h1, t1 = cpu_seconds(redis.pid), cpu_busy(), time.monotonic()
        for c in clients:
            c.send("dm-stop")
    finally:
        await stop_all(clients, *nodes)
        if redis is not None:
            with contextlib.suppress(Exception):
                redis.stop()
    wall = t1 - t0
    delivered = sum(b["dm"] - a["dm"] for a, b in zip(m0, m1, strict=True))
    acked = sum(b["sent_ok"] - a["sent_ok"] for a, b in zip(m0, m1, strict=True))
    errors = sum(b["send_err"] for b in m1)
    cpu = [b.since(a) for a, b in zip(s0, s1, strict=True)]
    total = sum(c.total for c in cpu)
    sched = sum(c.sched for c in cpu)
    lat = [x for m in m1 for x in m["lat_us"]]
    d = delivered or 1
    foreign = None
    if server_cpu is not None:
        foreign = max(0.0, (h1[server_cpu] - h0[server_cpu] - sched) / wall)
    return {
        "connections": sum(r["connections"] for r in ready),
        "complete": errors == 0 and delivered > 0 and sum(r["failed"] for r in ready) == 0,
        "delivered": delivered,
        "send_ok": acked,
        "send_errors": errors,
        "error_samples": [e for m in m1 for e in m["errors"]][:3],
        "dm_per_s": delivered / wall,
        "us_per_dm": total / d * 1e6,
        "us_per_dm_sched": sched / d * 1e6,
        "us_per_dm_user": sum(c.user for c in cpu) / d * 1e6,
        "us_per_dm_sys": sum(c.system for c in cpu) / d * 1e6,
        "redis_us_per_dm": (r1.sched - r0.sched) / d * 1e6,
        "latency_p50_ms": (pct(lat, 0.5) or 0) / 1e3,
        "latency_p99_ms": (pct(lat, 0.99) or 0) / 1e3,
        "latency_samples": len(lat),
        "server_busy": sched / wall,
        "foreign_cpu0": foreign,
        "wall_s": wall,
    }


_KEYS = (
    "dm_per_s",
    "us_per_dm",
    "us_per_dm_sched",
    "us_per_dm_user",
    "us_per_dm_sys",
    "redis_us_per_dm",
    "latency_p50_ms",
    "latency_p99_ms",
    "server_busy",
    "foreign_cpu0",
)


async def scenario(short: bool, workdir: Path, guarded: Any) -> dict[str, Any]:
    from bench.conn import median

    p = DmParams(users=600, duration=4.0, warmup=1.0, runs=1) if short else DmParams()
    runs: list[dict[str, Any]] = []
    for i in range(p.runs):
        runs.append(
            await guarded(f"dm #{i + 1}", lambda i=i: run_once(p, workdir / f"run{i}"), 180.0)
        )
    ok = [r for r in runs if r.get("complete")]
    summary = {k: median([r.get(k) for r in ok]) for k in _KEYS}
    summary["complete_runs"] = len(ok)
    return {"params": asdict(p), "runs": runs, "summary": summary}
