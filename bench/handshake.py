"""Scenario ``handshake`` (issue 5, scenario 1): server CPU per new connection.

One run, for one target: the server starts pinned to CPU 0 (Redis, when used, and
the client processes on CPU 1); ``warm`` connections are opened and kept (first-use
costs), then server CPU is read, ``procs`` client processes (each on its own source
address: the kernel's search for a free local port slows down as one address holds
thousands of sockets, which made a single client the bottleneck) open ``n``
connections with ``concurrency`` handshakes in flight in all, and server CPU is read
again when the last one is ready. Ready means: for Squall, ``welcome`` received
(bearer JWT verified, revocation and ban checked, session registered, per-user cap
admitted); for the plain Tornado peer, ``101`` received. Connections stay open
(closing is not measured).

Targets: ``squall`` (memory backend), ``squall-redis`` (Redis backend, the Redis
server's CPU is reported separately) and ``tornado`` (bench/peers/conn_tornado.py).
Runs are interleaved (A B C, B C A, C A B) and medians taken.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import cpu_busy, cpu_seconds
from bench.conn import (
    Redis,
    Server,
    connect,
    host_cpus,
    medians,
    start_clients,
    start_server,
    stop_all,
)

__all__ = ["HandshakeParams", "run_once", "scenario"]

TARGETS = ("squall", "squall-redis", "tornado")


@dataclass(frozen=True)
class HandshakeParams:
    n: int = 5000
    warm: int = 200
    concurrency: int = 32
    procs: int = 4
    runs: int = 3


async def run_once(target: str, p: HandshakeParams, workdir: Path) -> dict[str, Any]:
    server_cpu, client_cpu = host_cpus()
    server: Server | None = None
    redis: Redis | None = None
    clients: list[Any] = []
    warm: list[Any] = []
    try:
        if target == "squall-redis":
            redis = Redis(client_cpu)
        kind = "tornado" if target == "tornado" else "squall"
        server = await start_server(
            kind,
            workdir,
            server_cpu,
            redis_url=redis.url if redis else None,
            max_conn=p.n + p.warm + 100,
        )
        auth = kind == "squall"
        warm = await start_clients(workdir, client_cpu, server.port, p.warm, 1, auth=auth, tag="w")
        clients = await start_clients(
            workdir,
            client_cpu,
            server.port,
            p.n,
            p.procs,
            auth=auth,
            first_source=3,
            first_user=p.warm,
            concurrency=max(1, p.concurrency // p.procs),
        )
        await connect(warm, 60.0)
        pid = server.child.pid
        s0, h0 = cpu_seconds(pid), cpu_busy()
        r0 = cpu_seconds(redis.pid) if redis else None
        k0 = sum(cpu_seconds(c.pid).sched for c in clients)
        t0 = time.monotonic()
        ready_all = await connect(clients, 60.0 + p.n * 0.01)
        t1 = time.monotonic()
        s1, h1 = cpu_seconds(pid), cpu_busy()
        r1 = cpu_seconds(redis.pid) if redis else None
        k1 = sum(cpu_seconds(c.pid).sched for c in clients)
    finally:
        await stop_all(clients, warm, server)
        if redis is not None:
            with contextlib.suppress(Exception):
                redis.stop()
    cpu = s1.since(s0)
    wall = t1 - t0
    ready = {
        "connections": sum(r["connections"] for r in ready_all),
        "failed": sum(r["failed"] for r in ready_all),
        "errors": [e for r in ready_all for e in r["errors"]][:5],
    }
    n = ready["connections"] or 1
    foreign = None
    if server_cpu is not None:
        foreign = max(0.0, (h1[server_cpu] - h0[server_cpu] - cpu.sched) / wall)
    return {
        "target": target,
        "connections": ready["connections"],
        "failed": ready["failed"],
        "errors": ready["errors"],
        "complete": ready["failed"] == 0,
        "us_per_conn": cpu.total / n * 1e6,
        "us_per_conn_sched": cpu.sched / n * 1e6,
        "us_per_conn_user": cpu.user / n * 1e6,
        "us_per_conn_sys": cpu.system / n * 1e6,
        "conn_per_s": n / wall,
        "redis_us_per_conn": (r1.sched - r0.sched) / n * 1e6 if r0 and r1 else None,
        "client_cpu_util": (k1 - k0) / wall,
        "server_busy": cpu.sched / wall,
        "foreign_cpu0": foreign,
        "wall_s": wall,
    }


_KEYS = (
    "us_per_conn",
    "us_per_conn_sched",
    "us_per_conn_user",
    "us_per_conn_sys",
    "conn_per_s",
    "redis_us_per_conn",
    "client_cpu_util",
    "server_busy",
    "foreign_cpu0",
)


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for t in TARGETS:
        ok = [r for r in runs if r.get("target") == t and r.get("complete")]
        out[t] = {"complete_runs": len(ok), **medians(ok, _KEYS)}
        vals = [r["us_per_conn_sched"] for r in ok]
        out[t]["us_per_conn_sched_min"] = min(vals) if vals else None
        out[t]["us_per_conn_sched_max"] = max(vals) if vals else None
    return out


async def scenario(short: bool, workdir: Path, guarded: Any) -> dict[str, Any]:
    p = HandshakeParams(n=1500, warm=100) if short else HandshakeParams()
    runs: list[dict[str, Any]] = []
    for i in range(p.runs):
        order = TARGETS[i % 3 :] + TARGETS[: i % 3]
        for t in order:
            r = await guarded(
                f"handshake {t} #{i + 1}",
                lambda t=t, i=i: run_once(t, p, workdir / f"run{i}-{t}"),
                120.0 + p.n * 0.02,
            )
            r.setdefault("target", t)
            runs.append(r)
    return {"params": asdict(p), "runs": runs, "summary": summarize(runs)}
