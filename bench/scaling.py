"""Scenario ``scaling``: Redis cost per published message as nodes are added (docs/scaling.md).

    python -m bench.run scaling [--nodes 1,2,4,8] [--messages 4000] [--rooms 50]
        [--redis redis,cluster] [--placement one,each] [--no-hot]

K real :class:`~core.backend.redis.RedisBackend` nodes (each with its own pub/sub
connection, as K Squall processes would have) share one Redis topology
(:mod:`bench.scaling_redis`): ``redis``, one redis-server, or ``cluster``, a 3-master
Redis Cluster without replicas (sharded pub/sub: ``SSUBSCRIBE``/``SPUBLISH``, one hash
tag per room, so the rooms spread over the masters by slot). Every redis-server is
pinned to CPU 1; the nodes run on CPU 0, either all in this process (placement
``one``) or each in its own OS process (``each``, :mod:`bench.scaling_node`). Every
node subscribes to the same ``rooms`` rooms (every room has members on every node: the
worst case of fan-in). Node 0 publishes ``messages`` 64-byte messages round-robin over
the rooms, ``window`` in flight, each one the production publish script (after
``warmup`` unmeasured ones and an idle half second, measured as Redis's idle cost); the
run ends when every node received every message. Measured per published message:

* Redis CPU (on-CPU time of every redis-server from ``/proc``), in µs, summed over the
  masters and per master, with the rooms each master holds;
* Redis bytes out and in (``INFO stats`` ``total_net_output_bytes`` / ``input``);
* node CPU: of the one process (publisher + K receivers), or of each node process
  (the publisher's, and each pure receiver's: one node's receive cost per message).

With ``--hot`` (default) a last run per topology publishes to ONE room (K = the largest
``--nodes``): a hot room lives on one master. Then, with one node per topology: Redis
µs per handshake (access state, admission, inbox: the batched calls, ``concurrency``
in flight) and per refreshed session record (the heartbeat's liveness pipeline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import Child, bench_lock, cpu_busy, cpu_seconds
from bench.results import envelope, save, update_docs
from bench.scaling_node import publish_all, rooms, start_node
from bench.scaling_redis import KINDS, Sample, Topology
from core.backend.base import InboxPage, Membership, SessionRecord

__all__ = ["main", "markdown"]

#: node placements: all K nodes in one process, or each node in its own process
PLACEMENTS = ("one", "each")
NODE_CPU, REDIS_CPU = 0, 1
SETTLE_S = 0.5  # idle window after subscribing, measured as Redis's idle cost
DONE_TIMEOUT_S = 120.0


class Clock:
    """Readings taken together at the start and at the end of a measured phase."""

    def __init__(self, topo: Topology, node_pids: list[int]) -> None:
        self.topo, self.node_pids = topo, node_pids
        self.redis = topo.sample()
        self.nodes = [cpu_seconds(pid).sched for pid in node_pids]
        self.me = cpu_seconds(os.getpid()).sched
        self.busy = cpu_busy()
        self.t = time.monotonic()


def _others(c0: Clock, c1: Clock, redis: Sample, nodes: list[float]) -> dict[str, float]:
    """Share of each CPU used by processes other than ours during the phase (approx.:
    softirq time of the loopback traffic may count as either)."""
    wall = c1.t - c0.t
    parent = 0.0 if c0.node_pids == [os.getpid()] else c1.me - c0.me
    mine = {REDIS_CPU: sum(redis.cpu), NODE_CPU: sum(nodes) + parent}
    return {
        str(cpu): max(0.0, (c1.busy[cpu] - c0.busy[cpu] - mine.get(cpu, 0.0)) / wall)
        for cpu in c0.busy
    }


def _result(
    topo: Topology, k: int, placement: str, room_count: int, m: int,
    idle: tuple[Clock, Clock], run: tuple[Clock, Clock],
) -> dict[str, Any]:  # fmt: skip
    (i0, i1), (c0, c1) = idle, run
    redis = c1.redis.since(c0.redis)
    nodes = [b - a for a, b in zip(c0.nodes, c1.nodes, strict=True)]
    by_master = [0] * len(topo.ports)
    for room in rooms(room_count):
        by_master[topo.master_of(f"x{{r:{room}}}")] += 1
    out: dict[str, Any] = {
        "redis": topo.kind,
        "nodes": k,
        "placement": placement,
        "rooms": room_count,
        "messages": m,
        "rooms_by_master": by_master,
        "redis_us_per_msg": sum(redis.cpu) / m * 1e6,
        "redis_us_per_msg_by_master": [c / m * 1e6 for c in redis.cpu],
        "redis_bytes_out_per_msg": sum(redis.out) / m,
        "redis_bytes_out_per_msg_by_master": [b / m for b in redis.out],
        "redis_bytes_in_per_msg": sum(redis.inp) / m,
        "redis_idle_us_per_s": sum(i1.redis.since(i0.redis).cpu) / (i1.t - i0.t) * 1e6,
        "node_us_per_msg": sum(nodes) / m * 1e6,
        "node_us_per_msg_by_process": [n / m * 1e6 for n in nodes],
        "msgs_per_s": m / (c1.t - c0.t),
        "other_cpu_share": _others(c0, c1, redis, nodes),
    }
    return out


async def measure(
    topo: Topology, pids: list[int], phase: Callable[[int], Awaitable[None]],
    k: int, placement: str, room_count: int, a: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    """Warm up, then ``repeat`` measured phases (each after an idle window); the result
    is the phase with the median Redis µs per message, with every phase's figures."""
    await phase(a.warmup)
    runs = []
    for _ in range(a.repeat):
        i0 = Clock(topo, pids)
        await asyncio.sleep(SETTLE_S)
        c0 = Clock(topo, pids)
        await phase(a.messages)
        c1 = Clock(topo, pids)
        runs.append(_result(topo, k, placement, room_count, a.messages, (i0, c0), (c0, c1)))
    ranked = sorted(runs, key=lambda r: r["redis_us_per_msg"])
    return {
        **ranked[len(ranked) // 2],
        "repeats": {
            key: [r[key] for r in runs]
            for key in ("redis_us_per_msg", "node_us_per_msg", "msgs_per_s")
        },
    }


async def fanin_one(topo: Topology, k: int, room_count: int, a: argparse.Namespace) -> Any:
    """K nodes in this process; node 0 publishes."""
    prefix = f"s-{topo.kind}-one-{k}-{room_count}:"
    nodes = []
    try:
        for i in range(k):
            nodes.append(await start_node(topo.url, f"n{i}", prefix, room_count))
        pids = [os.getpid()]

        async def phase(m: int) -> None:
            for _, listener in nodes:
                listener.arm(m)
            await publish_all(nodes[0][0], room_count, m, a.window)
            waits = (lis.done.wait() for _, lis in nodes)
            await asyncio.wait_for(asyncio.gather(*waits), DONE_TIMEOUT_S)

        return await measure(topo, pids, phase, k, "one", room_count, a)
    finally:
        for backend, _ in nodes:
            await backend.close()


def _send(child: Child, **msg: Any) -> None:
    assert child.proc.stdin is not None
    child.proc.stdin.write(json.dumps(msg).encode() + b"\n")


async def fanin_each(
    topo: Topology, k: int, room_count: int, a: argparse.Namespace, workdir: Path
) -> Any:
    """K node processes (inheriting this process's CPU affinity); node 0 publishes."""
    prefix = f"s-{topo.kind}-each-{k}-{room_count}:"
    argv = [sys.executable, "-m", "bench.scaling_node", "--url", topo.url]
    argv += ["--prefix", prefix, "--rooms", str(room_count)]
    children: list[Child] = []
    try:
        for i in range(k):
            log = workdir / f"{topo.kind}-{k}-n{i}.log"
            children.append(await Child.start(f"node{i}", [*argv, "--node", f"n{i}"], log))
        for child in children:
            await child.expect("ready", 60)
        pids = [c.pid for c in children]

        async def phase(m: int) -> None:
            for child in children:
                _send(child, cmd="arm", messages=m)
                await child.expect("armed", 10)
            _send(children[0], cmd="publish", messages=m, window=a.window)
            for child in children:
                await child.expect("done", DONE_TIMEOUT_S)

        return await measure(topo, pids, phase, k, "each", room_count, a)
    finally:
        await asyncio.gather(*(c.stop() for c in children))


async def handshakes(topo: Topology, a: argparse.Namespace) -> Any:
    backend, _ = await start_node(topo.url, "n0", f"s-{topo.kind}-hs:", 0)
    n, sem = a.handshakes, asyncio.Semaphore(a.concurrency)

    def redis_cpu() -> float:
        return sum(topo.sample().cpu)

    async def one(i: int) -> None:
        async with sem:
            uid = f"u{i}"
            await backend.access_state("10.0.0.1", uid, f"jti{i}")
            rec = SessionRecord(
                conn_id=f"c{i}", uid=uid, node_id="n0", ip="10.0.0.1", connected_at=0
            )
            # As the gate does: the first inbox page in the admission's step where the
            # backend can (one Redis), else read after it (a cluster).
            admission = await backend.admit(rec, 3, "reject", InboxPage(64 * 1024))
            if admission.inbox is None:
                await backend.inbox_list(uid)

    try:
        r0 = redis_cpu()
        await asyncio.gather(*(one(i) for i in range(n)))
        r1 = redis_cpu()
        records = [
            SessionRecord(conn_id=f"c{i}", uid=f"u{i}", node_id="n0", ip="10.0.0.1", connected_at=0)
            for i in range(n)
        ]
        members = [Membership(f"room{i % 50}", f"u{i}", f"c{i}") for i in range(n)]
        for m in members:
            await backend.presence_join(m, announce=False)
        r2 = redis_cpu()
        await backend.refresh(records, members)
        r3 = redis_cpu()
        trips = backend.batch_counts()
    finally:
        await backend.close()
    return {
        "redis": topo.kind,
        "handshakes": n,
        "concurrency": a.concurrency,
        "redis_us_per_handshake": (r1 - r0) / n * 1e6,
        "round_trips": {kind: v[0] for kind, v in trips.items()},
        "redis_us_per_refreshed_session": (r3 - r2) / n * 1e6,
    }


async def run(a: argparse.Namespace) -> dict[str, Any]:
    cpu = REDIS_CPU if (os.cpu_count() or 1) > 1 else None
    report = envelope(
        "scaling", a.mode or "custom", "python -m bench.run scaling " + " ".join(a.argv)
    )
    report["params"] = {k: v for k, v in vars(a).items() if k != "argv"}
    report["pinning"] = {"redis": f"CPU {cpu}", "nodes": f"CPU {NODE_CPU}"}
    report["fanin"], report["handshakes"] = [], []
    ks = [int(k) for k in a.nodes.split(",")]
    with tempfile.TemporaryDirectory(prefix="squall-scaling-") as tmp:
        for kind in a.redis.split(","):
            topo = Topology(kind, cpu)
            try:
                for placement in a.placement.split(","):
                    for k in ks:
                        if placement == "one":
                            r = await fanin_one(topo, k, a.rooms, a)
                        else:
                            r = await fanin_each(topo, k, a.rooms, a, Path(tmp))
                        report["fanin"].append(r)
                        print(_row(r), file=sys.stderr)
                if a.hot:
                    r = await fanin_one(topo, max(ks), 1, a)
                    report["fanin"].append(r)
                    print(_row(r), file=sys.stderr)
                report["handshakes"].append(await handshakes(topo, a))
            finally:
                topo.stop()
    return report


# -- the report --------------------------------------------------------------------


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares ``a + b x`` through ``points``."""
    if len(points) < 2:
        return (points[0][1] if points else 0.0), 0.0
    slope, intercept = statistics.linear_regression(*zip(*points, strict=True))
    return intercept, slope


def _receivers(r: dict[str, Any]) -> str:
    per = r["node_us_per_msg_by_process"][1:]
    if r["placement"] != "each" or not per:
        return "-"
    if len(per) == 1:
        return f"{per[0]:.1f}"
    return f"{statistics.mean(per):.1f} ({min(per):.1f} to {max(per):.1f})"


def _row(r: dict[str, Any]) -> str:
    masters = r["redis_us_per_msg_by_master"]
    split = f" ({' / '.join(f'{c:.1f}' for c in masters)})" if len(masters) > 1 else ""
    seen = r.get("repeats", {}).get("redis_us_per_msg", [])
    spread = f" [{min(seen):.0f} to {max(seen):.0f}]" if len(seen) > 1 else ""
    processes = "1" if r["placement"] == "one" else str(r["nodes"])
    others = r["other_cpu_share"]  # keyed by CPU number as a string (JSON keys)
    publisher = r["node_us_per_msg_by_process"][0]
    return (
        f"| {r['redis']} | {r['rooms']} | {r['nodes']} | {processes} | "
        f"{r['redis_us_per_msg']:.1f}{spread}{split} | {r['redis_bytes_out_per_msg']:,.0f} / "
        f"{r['redis_bytes_in_per_msg']:,.0f} | {r['node_us_per_msg']:.0f} | "
        f"{publisher:.0f} | {_receivers(r)} | {r['msgs_per_s']:,.0f} | "
        f"{others.get(str(NODE_CPU), 0) * 100:.0f} / "
        f"{others.get(str(REDIS_CPU), 0) * 100:.0f} % |"
    )


def _fits(report: dict[str, Any]) -> list[str]:
    out = []
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    rooms_max = max(r["rooms"] for r in report["fanin"])
    for r in report["fanin"]:
        if r["rooms"] == rooms_max:
            series.setdefault((r["redis"], r["placement"]), []).append(r)
    for (kind, placement), rs in series.items():
        ra, rb = _fit([(r["nodes"], r["redis_us_per_msg"]) for r in rs])
        ba, bb = _fit([(r["nodes"], r["redis_bytes_out_per_msg"]) for r in rs])
        na, nb = _fit([(r["nodes"], r["node_us_per_msg"]) for r in rs])
        where = "one process" if placement == "one" else "one process per node"
        out.append(
            f"* {kind}, {where}: Redis µs per message = **{ra:.1f} + {rb:.2f} x K**, "
            f"bytes out = {ba:.0f} + {bb:.0f} x K, node CPU (all processes) = "
            f"{na:.0f} + {nb:.1f} x K µs (least squares over K = "
            f"{', '.join(str(r['nodes']) for r in rs)})."
        )
    return out


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Command: `{report['command']}` ({report['started_utc']}, git {m['git_commit']}"
        f"{', uncommitted changes' if m['git_dirty'] == 'yes' else ''}); every redis-server "
        f"pinned to CPU {REDIS_CPU} (the cluster: 3 masters, no replicas, on that one CPU), "
        f"every node process on CPU {NODE_CPU}. Node 0 publishes; every node subscribes "
        "to every room. Each row: the median of "
        f"{report['params']['repeat']} measured phases (by Redis µs).",
        "",
        "| Redis | rooms | nodes | node processes | Redis µs per message: sum [range of the "
        "repeats] (per master) | "
        "Redis bytes out / in per message | node CPU µs per message, all processes | "
        "publisher process | per receiving process: mean (min to max) | messages/s | "
        "others' CPU 0 / 1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(r) for r in report["fanin"]]
    lines += ["", *_fits(report), ""]
    for r in report["fanin"]:
        if r["redis"] == "cluster":
            lines.append(
                f"Cluster: {r['rooms']} rooms per master {r['rooms_by_master']} "
                "(slot of each room's hash tag)."
            )
            break
    for h in report["handshakes"]:
        lines += [
            "",
            f"Handshakes on {h['redis']} ({h['handshakes']:,}, {h['concurrency']} in flight, "
            f"one node): Redis **{h['redis_us_per_handshake']:.1f} µs** per handshake "
            f"(access state, admission, inbox; round trips: {h['round_trips']}); heartbeat "
            f"refresh: Redis **{h['redis_us_per_refreshed_session']:.2f} µs** per session "
            "record and membership.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.run scaling")
    p.add_argument("--nodes", default="1,2,4,8")
    p.add_argument("--messages", type=int, default=4000)
    p.add_argument("--warmup", type=int, default=500, help="messages before measuring")
    p.add_argument("--rooms", type=int, default=50)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3, help="measured phases per point (median)")
    p.add_argument("--redis", default=",".join(KINDS), help="topologies: redis,cluster")
    p.add_argument(
        "--placement", default=",".join(PLACEMENTS), help="one (process), each (own process)"
    )
    p.add_argument("--hot", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--handshakes", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--mode", default="", help="results name suffix (default: custom)")
    a = p.parse_args(raw)
    a.argv = raw
    for value, allowed in ((a.redis, KINDS), (a.placement, PLACEMENTS)):
        if not set(value.split(",")) <= set(allowed):
            p.error(f"{value!r}: choose from {','.join(allowed)}")
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {NODE_CPU})
    with bench_lock():  # never measured at the same time as another benchmark
        report = asyncio.run(run(a))
    text = markdown(report)
    print(text)
    _path, committed = save(f"scaling-{a.mode or 'custom'}", report)
    if committed:
        update_docs(f"scaling-{a.mode}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
