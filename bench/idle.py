"""Scenario ``idle`` (issue 5, scenario 2, multi-worker part): N connections held
across several workers of one Squall (``--workers W``, Redis backend).

The single-node figure (about 19,000 connections on one process, with the plain
Tornado peer for comparison) comes from the ``heartbeat`` runs (:mod:`bench.heartbeat`).

One run: Redis and ``python server.py --workers W`` start unpinned (setting up 100k
authenticated sessions is CPU-bound on both cores); ``warm`` connections are opened,
RSS and PSS of every worker are read and summed; ``procs`` client processes, each
bound to its own 127.0.0.x (an address gives ~28k ephemeral ports, a process at most
20,000 files), open N connections, each authenticated as its own user and joined to
one room (10 users per room); after 3 s, memory again; then server CPU (all workers)
over one heartbeat interval of idle (the default 25 s: each connection pinged once,
each worker refreshes its sessions in Redis once).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import cpu_busy, cpu_seconds
from bench.conn import Redis, Server, connect, start_clients, start_server, stop_all

__all__ = ["IdleParams", "run_once", "scenario"]


@dataclass(frozen=True)
class IdleParams:
    n: int = 100_000
    workers: int = 6
    procs: int = 6
    warm: int = 600
    interval: float = 25.0
    group: int = 10


def _fds(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return 0


async def run_once(p: IdleParams, workdir: Path) -> dict[str, Any]:
    server: Server | None = None
    redis: Redis | None = None
    warm: list[Any] = []
    main: list[Any] = []
    try:
        redis = Redis(None)
        redis_mem0 = redis.used_memory()
        server = await start_server(
            "squall",
            workdir,
            None,
            interval=p.interval,
            redis_url=redis.url,
            workers=p.workers,
            max_conn=19_500,
        )
        warm = await start_clients(
            workdir,
            None,
            server.port,
            p.warm,
            1,
            auth=True,
            group=p.group,
            tag="warm",
            first_source=20,
        )
        main = await start_clients(
            workdir,
            None,
            server.port,
            p.n,
            p.procs,
            auth=True,
            group=p.group,
            first_source=2,
            first_user=p.warm,
        )
        await connect(warm, 60.0)
        await asyncio.sleep(1.0)
        mem0 = server.memory()
        fds0 = [_fds(w) for w in server.pids]
        t_setup = time.monotonic()
        ready = await connect(main, 120.0 + p.n * 0.005)
        setup_s = time.monotonic() - t_setup
        connected = sum(r["connections"] for r in ready)
        failed = sum(r["failed"] for r in ready)
        errors = [e for r in ready for e in r["errors"]][:5]
        await asyncio.sleep(3.0)
        mem1 = server.memory()
        per_worker = [_fds(w) - f for w, f in zip(server.pids, fds0, strict=True)]
        redis_mem1 = redis.used_memory()
        pids = server.pids
        s0 = [cpu_seconds(w) for w in pids]
        r0 = cpu_seconds(redis.pid)
        h0, t0 = cpu_busy(), time.monotonic()
        await asyncio.sleep(p.interval)
        s1 = [cpu_seconds(w) for w in pids]
        r1 = cpu_seconds(redis.pid)
        h1, t1 = cpu_busy(), time.monotonic()
        for c in main:
            c.send("report")
        reps = await asyncio.gather(*(c.expect("report", 60.0) for c in main))
        mem2 = server.memory()
    finally:
        await stop_all(main, warm, server)
        if redis is not None:
            with contextlib.suppress(Exception):
                redis.stop()
    wall = t1 - t0
    cpu = sum(b.sched - a.sched for a, b in zip(s0, s1, strict=True))
    n = connected or 1
    host = sum(h1[c] - h0[c] for c in h0)
    return {
        "connections": connected,
        "failed": failed,
        "errors": errors,
        "closed": sum(r["closed"] for r in reps),
        "pings_total": sum(r["pings"] for r in reps),  # since the clients connected
        "complete": failed == 0 and connected == p.n,
        "workers": len(pids),
        "connections_per_worker": per_worker,
        "setup_s": setup_s,
        "setup_conn_per_s": connected / setup_s if setup_s else None,
        "rss_before_kb": mem0["rss_kb"],
        "rss_after_kb": mem1["rss_kb"],
        "pss_after_kb": mem1["pss_kb"],
        "kb_per_conn_rss": (mem1["rss_kb"] - mem0["rss_kb"]) / n,
        "kb_per_conn_pss": (mem1["pss_kb"] - mem0["pss_kb"]) / n,
        "kb_per_conn_rss_after_window": (mem2["rss_kb"] - mem0["rss_kb"]) / n,
        "redis_bytes_per_conn": (redis_mem1 - redis_mem0) / n,
        "idle_window_s": wall,
        "idle_cpu_ms_per_s": cpu / wall * 1e3,
        "idle_cpu_us_per_conn_per_interval": cpu / n * 1e6,
        "redis_idle_cpu_ms_per_s": (r1.sched - r0.sched) / wall * 1e3,
        # everything not ours on both CPUs (clients included: they answer the pings)
        "host_busy_ms_per_s": host / wall * 1e3,
        "foreign_cpu0": None,
    }


async def scenario(short: bool, workdir: Path, guarded: Any) -> dict[str, Any]:
    p = IdleParams(n=12_000, workers=3, procs=3, warm=300, interval=5.0) if short else IdleParams()
    r = await guarded(
        f"idle {p.n} connections / {p.workers} workers",
        lambda: run_once(p, workdir),
        300.0 + p.n * 0.004,
    )
    return {"params": asdict(p), "runs": [r]}
