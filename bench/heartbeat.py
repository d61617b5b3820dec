"""Scenario ``heartbeat`` (issue 5, scenario 6), which also gives single-node idle memory.

One run, for one server:

1. the server starts pinned to CPU 0: Squall (memory backend, ``heartbeat.interval_s``
   = ``interval``: ONE ``PeriodicCallback`` sweeping every connection) or the plain
   Tornado peer (``bench/peers/conn_tornado.py``, ``websocket_ping_interval`` =
   ``interval``: one ping coroutine per connection);
2. ``warm`` connections are opened first (first-use allocations), then RSS/PSS is read;
3. ``n`` more connections, from ``procs`` client processes pinned to CPU 1, each bound
   to its own 127.0.0.x; for Squall each one authenticated (bearer JWT, own user) and
   joined to one room (10 users per room, presence events on); every client answers
   pings with pongs;
4. after 2 s, RSS/PSS again: (after - before) / n = memory per connection;
5. server CPU is read over an idle window of exactly ``windows`` x ``interval``
   seconds (so each connection is pinged exactly ``windows`` times whatever the
   phase of the timers): CPU per second = CPU / window.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import cpu_busy, cpu_seconds
from bench.conn import Server, connect, host_cpus, start_clients, start_server, stop_all

__all__ = ["HeartbeatParams", "run_once"]


@dataclass(frozen=True)
class HeartbeatParams:
    n: int = 19000
    warm: int = 200
    interval: float = 5.0
    windows: int = 4  # idle window = windows x interval
    procs: int = 2
    group: int = 10  # users per room


@dataclass(frozen=True)
class Variant:
    label: str
    kind: str  # squall | tornado
    pings: bool  # False: a baseline without pings during the window (interval 300 / none)


VARIANTS = {
    "squall": Variant("squall", "squall", True),
    "tornado": Variant("tornado", "tornado", True),
    "squall-nohb": Variant("squall-nohb", "squall", False),
    "tornado-noping": Variant("tornado-noping", "tornado", False),
}


async def run_once(v: Variant, p: HeartbeatParams, workdir: Path) -> dict[str, Any]:
    server_cpu, client_cpu = host_cpus()
    interval = p.interval if v.pings else 300.0
    server: Server | None = None
    warm: list[Any] = []
    main: list[Any] = []
    try:
        server = await start_server(
            v.kind,
            workdir,
            server_cpu,
            interval=interval,
            ping_interval=p.interval if v.pings else 0.0,
            max_conn=p.n + p.warm + 100,
        )
        auth = v.kind == "squall"
        warm = await start_clients(
            workdir, client_cpu, server.port, p.warm, 1, auth=auth, group=p.group, tag="warm"
        )
        main = await start_clients(
            workdir,
            client_cpu,
            server.port,
            p.n,
            p.procs,
            auth=auth,
            group=p.group,
            first_source=3,
            first_user=p.warm,
        )
        await connect(warm, 60.0)
        await asyncio.sleep(1.0)
        mem0 = server.memory()
        c_setup0 = cpu_seconds(server.child.pid)
        t_setup = time.monotonic()
        ready = await connect(main, 60.0 + p.n * 0.005)
        setup_s = time.monotonic() - t_setup
        setup_cpu = cpu_seconds(server.child.pid).since(c_setup0)
        connected = sum(r["connections"] for r in ready)
        failed = sum(r["failed"] for r in ready)
        await asyncio.sleep(2.0)
        mem1 = server.memory()
        for c in main:
            c.send("report")
        rep0 = await asyncio.gather(*(c.expect("report", 30.0) for c in main))
        window = p.windows * p.interval
        s0, h0, t0 = cpu_seconds(server.child.pid), cpu_busy(), time.monotonic()
        await asyncio.sleep(window)
        s1, h1, t1 = cpu_seconds(server.child.pid), cpu_busy(), time.monotonic()
        for c in main:
            c.send("report")
        rep1 = await asyncio.gather(*(c.expect("report", 30.0) for c in main))
        mem2 = server.memory()
    finally:
        await stop_all(main, warm, server)
    cpu = s1.since(s0)
    wall = t1 - t0
    pings = sum(r["pings"] for r in rep1) - sum(r["pings"] for r in rep0)
    closed = sum(r["closed"] for r in rep1)
    foreign = None
    if server_cpu is not None:
        foreign = max(0.0, (h1[server_cpu] - h0[server_cpu] - cpu.sched) / wall)
    n = connected or 1
    return {
        "variant": v.label,
        "kind": v.kind,
        "connections": connected,
        "failed": failed,
        "closed_during_window": closed,
        "complete": failed == 0 and closed == 0 and connected == p.n,
        "setup_s": setup_s,
        "setup_conn_per_s": connected / setup_s if setup_s else None,
        "setup_cpu_us_per_conn": setup_cpu.total / n * 1e6,
        "rss_before_kb": mem0["rss_kb"],
        "rss_after_kb": mem1["rss_kb"],
        "rss_after_window_kb": mem2["rss_kb"],
        "kb_per_conn_rss": (mem1["rss_kb"] - mem0["rss_kb"]) / n,
        "kb_per_conn_pss": (mem1["pss_kb"] - mem0["pss_kb"]) / n,
        "kb_per_conn_rss_after_window": (mem2["rss_kb"] - mem0["rss_kb"]) / n,
        "window_s": wall,
        "cpu_ms_per_s": cpu.total / wall * 1e3,
        "cpu_ms_per_s_sched": cpu.sched / wall * 1e3,
        "cpu_user_ms_per_s": cpu.user / wall * 1e3,
        "cpu_sys_ms_per_s": cpu.system / wall * 1e3,
        "pings_in_window": pings,
        "pings_per_conn_per_interval": pings / n / p.windows if v.pings else pings / n,
        "us_per_ping_sched": cpu.sched / pings * 1e6 if pings else None,
        "foreign_cpu0": foreign,
        "server_waited": cpu.waited / wall,
    }


def params_dict(p: HeartbeatParams) -> dict[str, Any]:
    return asdict(p)


async def scenario(short: bool, workdir: Path, guarded: Any) -> dict[str, Any]:
    """Interleaved runs: squall, tornado (and in full mode the no-ping baselines)."""
    p = HeartbeatParams(n=4000, windows=2) if short else HeartbeatParams()
    order = (
        ["squall", "tornado"] if short else ["squall", "tornado", "tornado-noping", "squall-nohb"]
    )
    runs: list[dict[str, Any]] = []
    for i, name in enumerate(order):
        v = VARIANTS[name]
        runs.append(
            await guarded(
                f"heartbeat {name}",
                lambda v=v, i=i: run_once(v, p, workdir / f"run{i}-{v.label}"),
                240.0 + p.n * 0.01 + p.windows * p.interval,
            )
        )
        runs[-1].setdefault("variant", name)
    return {"params": params_dict(p), "runs": runs}
