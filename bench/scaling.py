"""Scenario ``scaling``: Redis cost per published message as nodes are added (docs/scaling.md).

    python -m bench.run scaling [--nodes 1,2,4,8] [--messages 2000] [--rooms 50]

K real :class:`~core.backend.redis.RedisBackend` nodes (each with its own pub/sub
connection, as K Squall processes would have) share one redis-server pinned to CPU 1;
every node subscribes to the same ``rooms`` rooms (every room has members on every
node: the worst case of fan-in). Node 0 publishes ``messages`` 64-byte messages
spread over the rooms, ``window`` in flight, each one the production publish script;
the run ends when every node received every message. Measured per published message:

* Redis CPU (``utime + stime`` of redis-server from ``/proc``), in µs;
* Redis bytes out and in (``INFO stats`` ``total_net_output_bytes`` / ``input``);
* CPU of this process (publisher + K receivers) per message and per delivery to a node.

Then, with one node: Redis µs per handshake (access state, admission, inbox: the
batched calls, ``concurrency`` in flight) and per refreshed session record (the
heartbeat's liveness pipeline). The nodes run in one process on CPU 0, so the Redis
figures are exact and the node figures are per-process, not per-dyno.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import redis

from bench import bench_lock, cpu_seconds
from bench.conn import Redis
from bench.results import envelope, save, update_docs
from core.backend.base import (
    BackendOptions,
    Membership,
    NodeCommand,
    PresenceEvent,
    Publication,
    SessionRecord,
)
from core.backend.redis import RedisBackend
from core.clock import SystemClock

__all__ = ["main"]


class Counter:
    """A listener that counts publications and wakes a waiter at a target."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = asyncio.Event()

    def on_publication(self, pub: Publication) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()

    def on_presence(self, event: PresenceEvent) -> None:
        pass

    def on_command(self, command: NodeCommand) -> None:
        pass

    def on_availability(self, available: bool) -> None:
        pass


def _net(client: redis.Redis) -> tuple[int, int]:
    stats = client.info("stats")
    return int(stats["total_net_output_bytes"]), int(stats["total_net_input_bytes"])


async def _nodes(url: str, k: int, prefix: str) -> list[tuple[RedisBackend, Counter]]:
    out = []
    for i in range(k):
        backend = RedisBackend(f"n{i}", BackendOptions(key_prefix=prefix), SystemClock(), url)
        listener = Counter()
        await backend.start(listener)
        out.append((backend, listener))
    return out


async def fanin(url: str, admin: redis.Redis, rpid: int, k: int, a: argparse.Namespace) -> Any:
    nodes = await _nodes(url, k, f"scale{k}:")
    rooms = [f"room{i}" for i in range(a.rooms)]
    try:
        for backend, _ in nodes:
            for room in rooms:
                await backend.subscribe_room(room)
        publisher = nodes[0][0]
        for _, listener in nodes:
            listener.target = listener.count + a.messages
            listener.done.clear()
        sent = 0

        async def pump() -> None:
            nonlocal sent
            while sent < a.messages:
                i = sent
                sent += 1
                await publisher.publish(rooms[i % len(rooms)], b"\0" * 64, "u", 0)

        await asyncio.sleep(0.5)  # subscriptions settled
        r0, me0, (o0, i0), t0 = (
            cpu_seconds(rpid),
            cpu_seconds(os.getpid()),
            _net(admin),
            time.monotonic(),
        )
        await asyncio.gather(*(pump() for _ in range(a.window)))
        await asyncio.wait_for(asyncio.gather(*(lis.done.wait() for _, lis in nodes)), 120)
        r1, me1, (o1, i1), t1 = (
            cpu_seconds(rpid),
            cpu_seconds(os.getpid()),
            _net(admin),
            time.monotonic(),
        )
    finally:
        for backend, _ in nodes:
            await backend.close()
    m = a.messages
    return {
        "nodes": k,
        "messages": m,
        "redis_us_per_msg": (r1.sched - r0.sched) / m * 1e6,
        "redis_bytes_out_per_msg": (o1 - o0) / m,
        "redis_bytes_in_per_msg": (i1 - i0) / m,
        "process_us_per_msg": (me1.sched - me0.sched) / m * 1e6,
        "process_us_per_node_delivery": (me1.sched - me0.sched) / (m * k) * 1e6,
        "msgs_per_s": m / (t1 - t0),
    }


async def handshakes(url: str, rpid: int, a: argparse.Namespace) -> Any:
    ((backend, _),) = await _nodes(url, 1, "scalehs:")
    n, sem = a.handshakes, asyncio.Semaphore(a.concurrency)

    async def one(i: int) -> None:
        async with sem:
            uid = f"u{i}"
            await backend.access_state("10.0.0.1", uid, f"jti{i}")
            rec = SessionRecord(
                conn_id=f"c{i}", uid=uid, node_id="n0", ip="10.0.0.1", connected_at=0
            )
            await backend.admit(rec, 3, "reject")
            await backend.inbox_list(uid)

    try:
        r0 = cpu_seconds(rpid)
        await asyncio.gather(*(one(i) for i in range(n)))
        r1 = cpu_seconds(rpid)
        records = [
            SessionRecord(conn_id=f"c{i}", uid=f"u{i}", node_id="n0", ip="10.0.0.1", connected_at=0)
            for i in range(n)
        ]
        members = [Membership(f"room{i % 50}", f"u{i}", f"c{i}") for i in range(n)]
        for m in members[:n]:
            await backend.presence_join(m, announce=False)
        r2 = cpu_seconds(rpid)
        await backend.refresh(records, members)
        r3 = cpu_seconds(rpid)
        trips = backend.batch_counts()
    finally:
        await backend.close()
    return {
        "handshakes": n,
        "concurrency": a.concurrency,
        "redis_us_per_handshake": (r1.sched - r0.sched) / n * 1e6,
        "round_trips": {kind: v[0] for kind, v in trips.items()},
        "redis_us_per_refreshed_session": (r3.sched - r2.sched) / n * 1e6,
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Command: `{report['command']}` ({report['started_utc']}, git {m['git_commit']}"
        f"{', uncommitted changes' if m['git_dirty'] == 'yes' else ''}); one redis-server "
        "pinned to CPU 1, the nodes in one process on CPU 0.",
        "",
        "| nodes subscribed | Redis µs per message | Redis bytes out / in per message | "
        "process µs per message | per delivery to a node | messages/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["fanin"]:
        lines.append(
            f"| {r['nodes']} | {r['redis_us_per_msg']:.1f} | {r['redis_bytes_out_per_msg']:.0f}"
            f" / {r['redis_bytes_in_per_msg']:.0f} | {r['process_us_per_msg']:.0f} | "
            f"{r['process_us_per_node_delivery']:.0f} | {r['msgs_per_s']:,.0f} |"
        )
    h = report["handshake"]
    lines += [
        "",
        f"Handshakes ({h['handshakes']:,}, {h['concurrency']} in flight): Redis "
        f"**{h['redis_us_per_handshake']:.1f} µs** per handshake (access state, admission, "
        f"inbox; round trips: {h['round_trips']}); heartbeat refresh: Redis "
        f"**{h['redis_us_per_refreshed_session']:.2f} µs** per session record and membership.",
        "",
    ]
    return "\n".join(lines)


async def run(a: argparse.Namespace) -> dict[str, Any]:
    server = Redis(1 if (os.cpu_count() or 1) > 1 else None)
    admin = redis.Redis(port=server.server.port)
    try:
        report = envelope(
            "scaling", a.mode or "custom", "python -m bench.run scaling " + " ".join(a.argv)
        )
        report["params"] = {k: v for k, v in vars(a).items() if k != "argv"}
        report["fanin"] = [
            await fanin(server.url, admin, server.pid, int(k), a) for k in a.nodes.split(",")
        ]
        report["handshake"] = await handshakes(server.url, server.pid, a)
    finally:
        admin.close()
        server.stop()
    return report


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.run scaling")
    p.add_argument("--nodes", default="1,2,4,8")
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--rooms", type=int, default=50)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--handshakes", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--mode", default="", help="results name suffix (default: custom)")
    a = p.parse_args(raw)
    a.argv = raw
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
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
