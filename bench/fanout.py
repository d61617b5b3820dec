"""Scenario ``fanout``: one room of M members, one publisher, N messages.

Procedure of one run (``run_once``), for one target:

1. start the server pinned to CPU 0, wait until its port accepts;
2. start ``client_procs`` member processes pinned to CPU 1, holding M - 1 members
   between them, each upgraded (and for Squall: authenticated, welcomed, joined);
3. start the publisher process (CPU 1): the M-th member, joined last, so its own
   copy of a message is written after every other member's;
4. read the server's CPU time, tell the publisher to go: it keeps ``window``
   messages in flight (sends the next one each time its own ``msg`` echo arrives)
   until N were echoed; this keeps the server busy without an unbounded queue and
   needs no pace tuned to the machine;
5. when every member counted N ``msg`` frames (or after a timeout), read the server's
   CPU time again. Server CPU per delivered message = CPU delta / deliveries.

The load generator's CPU over the same interval is read too: it must stay below
one core (``client_cpu_util`` < ~0.9), or the clients, not the server, set the pace.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import Child, can_pin, cpu_busy, cpu_seconds, free_port, pinned, wait_port
from bench.peers import Target

__all__ = ["FanoutParams", "run_once", "summarize"]

NAME = "fanout"


@dataclass(frozen=True)
class FanoutParams:
    members: int = 2000  # room size, the publisher included
    messages: int = 200  # N
    payload: int = 64  # bytes of data (8-byte send timestamp + zeros)
    window: int = 4  # messages published and not yet echoed to the publisher
    client_procs: int = 2  # member processes (plus one publisher process)
    sample_every: int = 20  # latency is read on one member in this many

    def deliveries(self) -> int:
        return self.members * self.messages


def _timeout(p: FanoutParams) -> float:
    # Generous: 50 us per delivery would be ten times slower than expected.
    return 30.0 + p.deliveries() * 50e-6


def _pct(sorted_values: list[int], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return float(sorted_values[i])


async def run_once(target: Target, p: FanoutParams, workdir: Path) -> dict[str, Any]:
    """One measured run of ``target``; always stops every process it started."""
    workdir.mkdir(parents=True, exist_ok=True)
    pin = can_pin()
    server_cpu, client_cpu = (0, 1) if pin else (None, None)
    port = free_port()
    env = target.env()
    children: list[Child] = []
    server = await Child.start(
        f"{target.name} server",
        pinned(server_cpu, target.command(port, workdir)),
        workdir / f"{target.name}-server.log",
        env=env,
        json_io=False,
    )
    try:
        await wait_port(port, 20.0, server.proc)
        common = ["--port", str(port), "--messages", str(p.messages)]
        if target.auth:
            common.append("--auth")
        loadgen = [sys.executable, "-m", "bench.loadgen"]
        members = p.members - 1
        per = -(-members // p.client_procs)
        setup_start = time.monotonic()
        for i in range(p.client_procs):
            first = i * per
            count = min(per, members - first)
            argv = [*loadgen, "members", *common, "--count", str(count), "--first", str(first)]
            argv += ["--sample-every", str(p.sample_every)]
            children.append(
                await Child.start(
                    f"members-{i}", pinned(client_cpu, argv), workdir / f"members-{i}.log", env
                )
            )
        for c in children:
            await c.expect("ready", 120.0)
        argv = [*loadgen, "publisher", *common, "--user-index", str(members)]
        argv += ["--window", str(p.window), "--payload", str(p.payload)]
        publisher = await Child.start(
            "publisher", pinned(client_cpu, argv), workdir / "publisher.log", env
        )
        children.append(publisher)
        await publisher.expect("ready", 30.0)
        setup_s = time.monotonic() - setup_start
        await asyncio.sleep(0.5)  # let the join phase's stragglers settle

        clients = [c.pid for c in children]
        s0 = cpu_seconds(server.pid)
        c0 = [cpu_seconds(pid).sched for pid in clients]
        host0 = cpu_busy()
        t0 = time.monotonic()
        publisher.send("go")
        timeout = _timeout(p)
        waits = [c.expect("report", timeout) for c in children[:-1]]
        waits.append(publisher.expect("published", timeout))
        results = await asyncio.gather(*waits, return_exceptions=True)
        t1 = time.monotonic()
        s1 = cpu_seconds(server.pid)
        c1 = [cpu_seconds(pid).sched for pid in clients]
        host1 = cpu_busy()
        timed_out = False
        for i, r in enumerate(results):
            if isinstance(r, TimeoutError):
                timed_out = True
                children[i].send("report")
                event = "published" if children[i] is publisher else "report"
                results[i] = await children[i].expect(event, 30.0)
            elif isinstance(r, BaseException):
                raise r
        reports: list[dict[str, Any]] = [r for r in results if isinstance(r, dict)]
    finally:
        for c in children:
            await c.stop()
        await server.stop()

    pub = reports[-1]
    delivered: int = sum(r["delivered"] for r in reports[:-1]) + pub["echoed"]
    last_ns = max([r["last_ns"] for r in reports[:-1]] + [pub["last_ns"]])
    latencies: list[int] = sorted(lat for r in reports for lat in r["latencies_us"])
    cpu = s1.since(s0)
    scale = 1e6 / delivered if delivered else 0.0  # s of CPU -> us per delivery
    wall = t1 - t0
    span_s = (last_ns - pub["first_ns"]) / 1e9 if last_ns and pub["first_ns"] else wall
    other: dict[str, int] = {}
    for r in reports:
        for k, v in r["other_frames"].items():
            other[k] = other.get(k, 0) + v
    return {
        "target": target.name,
        "expected": p.deliveries(),
        "delivered": delivered,
        "complete": delivered == p.deliveries() and not timed_out,
        "publish_errors": pub["error_count"],
        "server_cpu_s": cpu.total,
        "server_user_s": cpu.user,
        "server_sys_s": cpu.system,
        "server_sched_s": cpu.sched,
        "us_per_delivery": cpu.total * scale or None,
        "us_per_delivery_user": cpu.user * scale or None,
        "us_per_delivery_sys": cpu.system * scale or None,
        "us_per_delivery_sched": cpu.sched * scale or None,
        "wall_s": wall,
        "span_s": span_s,
        "deliveries_per_s": delivered / span_s if span_s > 0 else None,
        "server_busy": cpu.sched / wall if wall > 0 else None,
        # runnable but not running: another process held the server's CPU
        "server_waited": cpu.waited / wall if wall > 0 else None,
        "client_cpu_util": (sum(c1) - sum(c0)) / wall if wall > 0 else None,
        # busy time of the server's CPU not spent by the server (others' processes)
        "foreign_cpu0": _foreign(host0, host1, server_cpu, cpu.sched, wall),
        "latency_p50_ms": _ms(_pct(latencies, 0.50)),
        "latency_p99_ms": _ms(_pct(latencies, 0.99)),
        "latency_samples": len(latencies),
        "setup_s": setup_s,
        "pinned": pin,
        "other_frames": other,
    }


def _foreign(
    before: dict[int, float], after: dict[int, float], cpu: int | None, ours: float, wall: float
) -> float | None:
    if cpu is None or cpu not in before or wall <= 0:
        return None
    return max(0.0, (after[cpu] - before[cpu] - ours) / wall)


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000.0


_MEDIAN_KEYS = (
    "us_per_delivery",
    "us_per_delivery_user",
    "us_per_delivery_sys",
    "us_per_delivery_sched",
    "deliveries_per_s",
    "server_busy",
    "server_waited",
    "foreign_cpu0",
    "client_cpu_util",
    "latency_p50_ms",
    "latency_p99_ms",
    "setup_s",
)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each metric over the complete runs of one target."""
    ok = [r for r in runs if r["complete"]]
    out: dict[str, Any] = {"runs": len(runs), "complete_runs": len(ok)}
    for key in _MEDIAN_KEYS:
        values = [r[key] for r in ok if r.get(key) is not None]
        out[key] = statistics.median(values) if values else None
        if key == "us_per_delivery" and values:
            out["us_per_delivery_min"] = min(values)
            out["us_per_delivery_max"] = max(values)
    return out


def params_dict(p: FanoutParams) -> dict[str, Any]:
    return asdict(p)
