"""Scenario ``storm`` (issue 13, goal 2): a reconnect storm against one node.

    python -m bench.run storm [--short]

After a deploy every client comes back at once. One run, for one target: the server
starts pinned to CPU 0 (Redis, when used, and the client processes on CPU 1);
``warm`` connections are opened and kept; then ``procs`` client processes open their
share of ``n`` connections **all at once** (no client-side concurrency limit: every
connect is started in the same instant, as clients whose connection just dropped
would). Measured, per run:

* handshake latency of each connection, from its connect to its ``welcome`` (bearer
  JWT verified, revocation and ban checked, admitted under the per-user cap,
  registered): p50, p99 and max over all ``n``;
* how many were admitted and how many refused or failed (the goal: all admitted);
* wall time until the last ``welcome``, node CPU and Redis CPU per connection.

Targets: ``squall-redis`` (the goal's subject), ``squall`` (memory backend, for
the ratio) and ``tornado`` (plain Tornado WebSocket upgrades, no token, no admission:
bench/peers/conn_tornado.py; ready at ``101``: the floor of a Tornado server under
the same storm), and ``squall-redis-2w`` (``server.py --workers 2`` on Redis,
nothing pinned: the storm spread over a dyno's two cores by ``SO_REUSEPORT``; CPU
summed over the workers), interleaved, ``runs`` each; medians of the per-run figures.
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
    pct,
    start_clients,
    start_server,
    stop_all,
)

__all__ = ["StormParams", "render_section", "run_once", "scenario"]

#: one ``server.py --workers 2`` on Redis: a dyno's two cores under the same storm
WORKERS = "squall-redis-2w"
TARGETS = ("squall-redis", "squall", "tornado", WORKERS)

#: the goal: p99 handshake latency of the storm, ms
GOAL_P99_MS = 2000.0


@dataclass(frozen=True)
class StormParams:
    n: int = 5000
    procs: int = 4
    warm: int = 100
    runs: int = 3


async def run_once(target: str, p: StormParams, workdir: Path) -> dict[str, Any]:
    workers = 2 if target == WORKERS else 1
    # one process: server on CPU 0, the rest on CPU 1; two workers: a dyno's cores,
    # nothing pinned (workers, clients and Redis share both)
    server_cpu, client_cpu = host_cpus() if workers == 1 else (None, None)
    server: Server | None = None
    redis: Redis | None = None
    clients: list[Any] = []
    warm: list[Any] = []
    try:
        if target in ("squall-redis", WORKERS):
            redis = Redis(client_cpu)
        kind = "tornado" if target == "tornado" else "squall"
        auth = kind == "squall"
        server = await start_server(
            kind,
            workdir,
            server_cpu,
            redis_url=redis.url if redis else None,
            max_conn=p.n + p.warm + 100,
            workers=workers,
        )
        warm = await start_clients(workdir, client_cpu, server.port, p.warm, 1, auth=auth, tag="w")
        per = -(-p.n // p.procs)
        clients = await start_clients(
            workdir,
            client_cpu,
            server.port,
            p.n,
            p.procs,
            auth=auth,
            first_source=3,
            first_user=p.warm,
            concurrency=per,  # all at once
        )
        await connect(warm, 60.0)
        s0, h0 = server.cpu_sched(), cpu_busy()
        r0 = cpu_seconds(redis.pid) if redis else None
        t0 = time.monotonic()
        ready = await connect(clients, 120.0)
        t1 = time.monotonic()
        s1, h1 = server.cpu_sched(), cpu_busy()
        r1 = cpu_seconds(redis.pid) if redis else None
    finally:
        await stop_all(clients, warm, server)
        if redis is not None:
            with contextlib.suppress(Exception):
                redis.stop()
    latencies = sorted(x for r in ready for x in r.get("handshake_ms", []))
    admitted = sum(r["connections"] for r in ready)
    failed = sum(r["failed"] for r in ready)
    errors = [e for r in ready for e in r["errors"]][:5]
    sched = s1 - s0
    wall = t1 - t0
    n = admitted or 1
    foreign = None
    if server_cpu is not None:
        foreign = max(0.0, (h1[server_cpu] - h0[server_cpu] - sched) / wall)
    return {
        "target": target,
        "workers": workers,
        "admitted": admitted,
        "failed": failed,
        "errors": errors,
        "complete": failed == 0 and admitted == p.n,
        "p50_ms": pct(latencies, 0.5),
        "p99_ms": pct(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else None,
        # the latency distribution for charts: the 0th, 1st, ..., 100th percentile
        "percentiles_ms": [pct(latencies, q / 100) for q in range(101)] if latencies else [],
        "wall_s": wall,
        "conn_per_s": admitted / wall,
        "us_per_conn_sched": sched / n * 1e6,
        "redis_us_per_conn": (r1.sched - r0.sched) / n * 1e6 if r0 and r1 else None,
        "server_busy": sched / wall / workers,
        "foreign_cpu0": foreign,
    }


_KEYS = (
    "p50_ms",
    "p99_ms",
    "max_ms",
    "wall_s",
    "conn_per_s",
    "us_per_conn_sched",
    "redis_us_per_conn",
    "server_busy",
    "foreign_cpu0",
)


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for t in TARGETS:
        mine = [r for r in runs if r.get("target") == t and "error" not in r]
        out[t] = {
            "runs": len(mine),
            "complete_runs": sum(1 for r in mine if r.get("complete")),
            "admitted_min": min((r["admitted"] for r in mine), default=None),
            "failed_total": sum(r["failed"] for r in mine),
            "p99_ms_max": max((r["p99_ms"] or 0.0 for r in mine), default=None),
            **medians(mine, _KEYS),
        }
    return out


async def scenario(short: bool, workdir: Path, guarded: Any) -> dict[str, Any]:
    p = StormParams(runs=1) if short else StormParams()
    runs: list[dict[str, Any]] = []
    for i in range(p.runs):
        order = TARGETS[i % len(TARGETS) :] + TARGETS[: i % len(TARGETS)]
        for t in order:
            r = await guarded(
                f"storm {t} #{i + 1}",
                lambda t=t, i=i: run_once(t, p, workdir / f"run{i}-{t}"),
                240.0,
            )
            r.setdefault("target", t)
            runs.append(r)
    return {"params": asdict(p), "runs": runs, "summary": summarize(runs)}


def _f(v: Any, nd: int = 0) -> str:
    return "n/a" if v is None else f"{v:,.{nd}f}"


def render_section(st: dict[str, Any]) -> list[str]:
    """The markdown lines of the storm scenario in a ``conn`` results section."""
    p, s = st["params"], st["summary"]
    lines = [
        f"**Reconnect storm**: {p['n']:,} clients in {p['procs']} processes connect at the "
        f"same instant to one node (after {p['warm']} warm-up connections), server on CPU 0, "
        f"clients and Redis on CPU 1 (`{WORKERS}`: two workers, nothing pinned), "
        f"{p['runs']} run(s) per target, medians; latency = "
        "connect to `welcome` (plain Tornado: to its `101`). Goal: all admitted, p99 < 2 s "
        "on Redis.",
        "",
        "| | admitted (min of runs) | failed (all runs) | p50 ms | **p99 ms** (worst run) | "
        "max ms | last welcome after, s | µs node CPU per connection | Redis µs per "
        "connection |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in TARGETS:
        x = s.get(t)
        if x is None:
            continue
        lines.append(
            f"| {t} | {_f(x['admitted_min'])} of {p['n']:,} | {x['failed_total']} | "
            f"{_f(x['p50_ms'])} | **{_f(x['p99_ms'])}** ({_f(x['p99_ms_max'])}) | "
            f"{_f(x['max_ms'])} | {_f(x['wall_s'], 2)} | {_f(x['us_per_conn_sched'])} | "
            f"{_f(x['redis_us_per_conn'])} |"
        )
    lines.append("")
    for t, what in (("squall-redis", "one node"), (WORKERS, "two workers (a 2-core dyno)")):
        x = s.get(t)
        if not x or not x["runs"]:
            continue
        met = (
            x["complete_runs"] == x["runs"]
            and x["p99_ms_max"] is not None
            and x["p99_ms_max"] < GOAL_P99_MS
        )
        state = "met in every run" if met else "**missed**"
        lines.append(
            f"* {what} on Redis: goal {state} (worst p99 {_f(x['p99_ms_max'])} ms, "
            f"{x['failed_total']} failed)."
        )
    lines.append("")
    return lines
