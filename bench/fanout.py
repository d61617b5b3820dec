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
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import Child, can_pin, cpu_busy, cpu_seconds, free_port, pinned, wait_port
from bench.peers import Target

__all__ = ["FanoutParams", "Layout", "Phase", "Redis", "run_once", "run_phases", "summarize"]

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


async def wait_quiet(threshold: float, limit_s: float, window_s: float = 1.0) -> float:
    """Until the machine's busy time over ``window_s`` is below ``threshold`` cores
    (call it while the benchmark's own processes idle: it counts them too), at most
    ``limit_s``; returns the seconds waited."""
    started = time.monotonic()
    while True:
        b0 = cpu_busy()
        await asyncio.sleep(window_s)
        b1 = cpu_busy()
        busy = sum(b1[c] - b0.get(c, b1[c]) for c in b1) / window_s
        waited = time.monotonic() - started
        if busy < threshold or waited >= limit_s:
            return waited


def _foreign_cores(
    before: dict[int, float], after: dict[int, float], ours: float, wall: float
) -> float | None:
    if wall <= 0:
        return None
    busy = sum(after[c] - before.get(c, after[c]) for c in after)
    return max(0.0, (busy - ours) / wall)


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


# -- phased runs: several rooms, several nodes, several phases per server start -------
#
# Used by the fan-out matrix (``python -m bench.run --matrix``), the cross-node scenario
# (bench/fanout_cluster.py) and the laggards (bench/laggards.py). One run starts the
# server(s) of one target once, connects every member once, then measures phase after
# phase (saturation, bursts, paced), each phase with its own CPU readings.


@dataclass(frozen=True)
class Layout:
    members: int = 5000  # in all, the per-room publishers included
    rooms: int = 1
    client_procs: int = 2
    sample_every: int = 20
    lag_every: int = 0  # laggards: 1 member in K stops reading on "lag" (0: none)
    #: only the latency probes (1 in ``sample_every``) read during a phase, the other
    #: members once the probes are complete (``bench.loadgen.run_phased_members``)
    defer_unsampled: bool = False

    def per_room(self) -> int:
        return self.members // self.rooms


@dataclass(frozen=True)
class Phase:
    name: str
    messages: int  # per room
    payload: int = 64
    window: int = 4  # per room, closed loop
    burst: int = 1  # pubs per write (one publisher frame batch)
    rate_from: str = ""  # paced: a fraction of this earlier phase's message rate
    rate_factor: float = 0.5
    #: paced at this fixed number of deliveries/s (messages/s = this / members per room),
    #: the same load for every target, unlike ``rate_from`` (0: not used)
    rate_deliveries: float = 0.0
    lag: bool = False  # laggards stop reading before this phase


class Redis:
    """A throw-away ``redis-server`` (no persistence) on a free port, pinned if asked."""

    def __init__(self, child: Child, port: int) -> None:
        self.child = child
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"

    @classmethod
    async def start(cls, workdir: Path, cpu: int | None) -> Redis:
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(workdir), "--maxclients", "10000"]
        child = await Child.start("redis", pinned(cpu, argv), workdir / "redis.log", json_io=False)
        await wait_port(port, 10.0, child.proc)
        return cls(child, port)

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def commandstats(self) -> dict[str, int]:
        info = self.client().info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}

    def reset(self) -> None:
        self.client().config_resetstat()

    async def stop(self) -> None:
        await self.child.stop()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (a ``server.py --workers N`` parent's workers)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def server_pids(servers: list[Child]) -> list[int]:
    """Every server process: each node's pid and its workers (forked children), if any."""
    out: list[int] = []
    for s in servers:
        out += [s.pid, *_children(s.pid)]
    return out


def connections_per_pid(pids: list[int], ports: list[int]) -> dict[int, int]:
    """Established TCP connections on ``ports`` (IPv4 loopback) held by each of ``pids``.

    Matches each process's socket inodes against ``/proc/net/tcp``: with SO_REUSEPORT
    workers it tells how the kernel spread the members over them.
    """
    wanted = {f"{p:04X}" for p in ports}
    inodes: set[str] = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "01" and local.rsplit(":", 1)[1] in wanted:
                inodes.add(inode)
    out: dict[int, int] = {}
    for pid in pids:
        n = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    n += 1
        except OSError:
            continue
        out[pid] = n
    return out


def placement_cpus(placement: str) -> tuple[int | None, int | None]:
    """(server CPU, load generator and Redis CPU) for a target's ``placement``."""
    if not can_pin():
        return None, None
    return {"split": (0, 1), "clients": (None, 1), "none": (None, None)}[placement]


async def run_phases(
    target: Target,
    layout: Layout,
    phases: list[Phase],
    workdir: Path,
    redis: Redis | None = None,
    retries: int = 1,
    noisy: float = 0.3,
    quiet_wait_s: float = 0.0,
) -> dict[str, Any]:
    """Start ``target``, connect ``layout``, measure every phase; stops all it started.

    Server(s) on CPU 0, load generators (and Redis) on CPU 1, unless the target's
    ``placement`` says otherwise (see :class:`bench.peers.Target`). Results per phase:
    server CPU (sum over nodes and their workers), deliveries, latency, Redis commands;
    a phase during which other processes used more than ``noisy`` of CPU 0 (server
    pinned) or ``noisy`` cores of the machine (server not pinned) is measured again
    (``retries``). With ``quiet_wait_s``, each phase first waits (at most that long)
    until other processes use less than half of ``noisy`` cores (:func:`wait_quiet`).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    server_cpu, client_cpu = placement_cpus(target.placement)
    env = target.env()
    ports = [free_port() for _ in range(target.nodes)]
    servers: list[Child] = []
    children: list[Child] = []
    out: dict[str, Any] = {"target": target.name, "layout": asdict(layout), "phases": {}}
    try:
        for node, port in enumerate(ports):
            argv = target.command(port, workdir, redis.url if redis else None, node)
            servers.append(
                await Child.start(
                    f"{target.name} node {node}",
                    pinned(server_cpu, argv),
                    workdir / f"{target.name}-server-{node}.log",
                    env=env,
                    json_io=False,
                )
            )
        for s, port in zip(servers, ports, strict=True):
            await wait_port(port, 30.0, s.proc)
        common = ["--ports", ",".join(map(str, ports)), "--rooms", str(layout.rooms)]
        common += ["--proto", target.proto, "--timeout", "60"]
        if target.auth:
            common.append("--auth")
        loadgen = [sys.executable, "-m", "bench.loadgen"]
        members = layout.members - layout.rooms
        per = -(-members // layout.client_procs)
        t_setup = time.monotonic()
        for i in range(layout.client_procs):
            first = i * per
            count = min(per, members - first)
            argv = [*loadgen, "phased", *common, "--count", str(count), "--first", str(first)]
            argv += ["--sample-every", str(layout.sample_every)]
            argv += ["--lag-every", str(layout.lag_every or 10**9)]
            children.append(
                await Child.start(
                    f"members-{i}", pinned(client_cpu, argv), workdir / f"members-{i}.log", env
                )
            )
        for c in children:
            await c.expect("ready", 180.0)
        argv = [*loadgen, "pubs", *common, "--user-index", str(members)]
        pubs = await Child.start("pubs", pinned(client_cpu, argv), workdir / "pubs.log", env)
        children.append(pubs)
        await pubs.expect("ready", 120.0)
        out["setup_s"] = time.monotonic() - t_setup
        out["placement"] = target.placement
        pids = server_pids(servers)
        out["server_pids"] = pids
        # members (and publishers) per server process: with SO_REUSEPORT workers, the
        # kernel's spread of the connections over them
        out["connections_per_process"] = list(connections_per_pid(pids, ports).values())
        out["rss_kib_start"] = sum(_rss_kib(pid) for pid in pids)
        await asyncio.sleep(0.5)
        for ph in phases:
            rate = 0.0
            if ph.rate_from:
                ref = out["phases"].get(ph.rate_from) or {}
                rate = ph.rate_factor * (ref.get("messages_per_s") or 0.0)
                if rate <= 0:
                    continue
            elif ph.rate_deliveries:
                rate = ph.rate_deliveries / layout.per_room()
            if ph.lag:
                for c in children[:-1]:
                    c.proc.stdin.write(b'{"cmd": "lag"}\n')  # type: ignore[union-attr]
                    await c.expect("lagging", 10.0)
            for attempt in range(retries + 1):
                if quiet_wait_s > 0:
                    waited = await wait_quiet(noisy / 2, quiet_wait_s)
                    out.setdefault("quiet_waits_s", []).append(round(waited, 1))
                r = await _one_phase(ph, rate, layout, servers, children, redis, server_cpu)
                r["attempt"] = attempt
                noise = r.get("foreign_cpu0") if server_cpu is not None else r["foreign_cores"]
                if (noise or 0) <= noisy or attempt == retries:
                    break
                out.setdefault("discarded", []).append(r)
            out["phases"][ph.name] = r
            print(
                f"    {target.name} {ph.name}: {r['us_per_delivery'] or 0:.2f} µs/delivery, "
                f"{r['deliveries_per_s'] or 0:,.0f}/s, p50 {r['latency_p50_ms']} ms, "
                f"p99 {r['latency_p99_ms']} ms, {r['delivered']:,}/{r['expected']:,}"
                f", others on CPU 0 {100 * (r['foreign_cpu0'] or 0):.0f} %"
                f", others on the machine {r['foreign_cores'] or 0:.2f} cores"
                f", server CPU per process {[round(x, 2) for x in r['server_cpu_per_node_s']]} s",
                file=sys.stderr,
            )
    finally:
        for c in children:
            await c.stop()
        for s in servers:
            await s.stop()
    return out


async def _one_phase(
    ph: Phase,
    rate: float,
    layout: Layout,
    servers: list[Child],
    children: list[Child],
    redis: Redis | None,
    server_cpu: int | None,
) -> dict[str, Any]:
    import json

    pubs = children[-1]
    members = children[:-1]
    for c in members:
        assert c.proc.stdin is not None
        cmd = {"cmd": "phase", "messages": ph.messages, "defer": layout.defer_unsampled}
        c.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
    await asyncio.sleep(0.2)
    if redis is not None:
        redis.reset()
    go = {"cmd": "go", "messages": ph.messages, "window": ph.window, "burst": ph.burst}
    go |= {"payload": ph.payload, "rate": rate}
    pids = server_pids(servers)
    rss0 = sum(_rss_kib(pid) for pid in pids)
    s0 = [cpu_seconds(pid) for pid in pids]
    me0 = cpu_seconds(os.getpid()).sched
    r0 = cpu_seconds(redis.child.pid) if redis else None
    c0 = [cpu_seconds(c.pid).sched for c in children]
    host0 = cpu_busy()
    t0 = time.monotonic()
    assert pubs.proc.stdin is not None
    pubs.proc.stdin.write(json.dumps(go).encode() + b"\n")
    deliveries = ph.messages * layout.members
    timeout = 60.0 + deliveries * 200e-6 + (ph.messages * layout.rooms / rate if rate else 0)
    waits = [c.expect("report", timeout) for c in members]
    waits.append(pubs.expect("published", timeout))
    # servers' memory and connection count while the phase runs (laggards)
    samples: list[tuple[float, int, int]] = []
    sampler = asyncio.ensure_future(_sample(pids, samples, t0))
    results = await asyncio.gather(*waits, return_exceptions=True)
    t1 = time.monotonic()
    sampler.cancel()
    s1 = [cpu_seconds(pid) for pid in pids]
    r1 = cpu_seconds(redis.child.pid) if redis else None
    c1 = [cpu_seconds(c.pid).sched for c in children]
    host1 = cpu_busy()
    me1 = cpu_seconds(os.getpid()).sched
    rss1 = sum(_rss_kib(pid) for pid in pids)
    commands = redis.commandstats() if redis else {}
    timed_out = False
    for i, r in enumerate(results):
        if isinstance(r, TimeoutError):
            timed_out = True
            children[i].send("report")
            event = "published" if children[i] is pubs else "report"
            results[i] = await children[i].expect(event, 30.0)
        elif isinstance(r, BaseException):
            raise r
    reports: list[dict[str, Any]] = [r for r in results if isinstance(r, dict)]
    pub = reports[-1]
    delivered = sum(r["delivered"] for r in reports[:-1]) + pub["echoed"]
    healthy_expected = ph.messages * (
        layout.members - (layout.members // layout.lag_every if layout.lag_every else 0)
    )
    last_ns = max([r["last_ns"] for r in reports[:-1]] + [pub["last_ns"]])
    latencies = sorted(lat for r in reports for lat in r["latencies_us"])
    cpus = [b.since(a) for a, b in zip(s0, s1, strict=True)]
    total = sum(c.total for c in cpus)
    sched = sum(c.sched for c in cpus)
    wall = t1 - t0
    span = (last_ns - pub["first_ns"]) / 1e9 if last_ns and pub["first_ns"] else wall
    scale = 1e6 / delivered if delivered else 0.0
    published = pub["sent"]
    other: dict[str, int] = {}
    for r in reports:
        for k, v in r["other_frames"].items():
            other[k] = other.get(k, 0) + v
    return {
        "phase": asdict(ph),
        "rate_msgs_per_s": rate or None,
        "expected": deliveries,
        "delivered": delivered,
        "complete": delivered >= (healthy_expected if layout.lag_every else deliveries)
        and not timed_out,
        "published": published,
        "publish_errors": pub["error_count"],
        "server_cpu_s": total,
        # per server process (a node, or a workers' parent then its workers)
        "server_cpu_per_node_s": [c.total for c in cpus],
        "server_sched_per_process_s": [c.sched for c in cpus],
        "us_per_delivery": total * scale or None,
        "us_per_delivery_user": sum(c.user for c in cpus) * scale or None,
        "us_per_delivery_sys": sum(c.system for c in cpus) * scale or None,
        "us_per_delivery_sched": sched * scale or None,
        "redis_cpu_s": r1.since(r0).total if r0 and r1 else None,
        "wall_s": wall,
        "span_s": span,
        "deliveries_per_s": delivered / span if span > 0 else None,
        "messages_per_s": published / span if span > 0 else None,
        "server_busy": sched / wall if wall > 0 else None,
        "client_cpu_util": (sum(c1) - sum(c0)) / wall if wall > 0 else None,
        "foreign_cpu0": _foreign(host0, host1, server_cpu, sched, wall),
        # cores used by processes not of this benchmark, over the whole machine: busy
        # CPU time minus the servers', load generators', Redis's and this runner's
        "foreign_cores": _foreign_cores(
            host0,
            host1,
            sched + (sum(c1) - sum(c0)) + (r1.since(r0).sched if r0 and r1 else 0.0) + me1 - me0,
            wall,
        ),
        "latency_p50_ms": _ms(_pct(latencies, 0.50)),
        "latency_p99_ms": _ms(_pct(latencies, 0.99)),
        "latency_samples": len(latencies),
        "redis_commands": commands,
        "rss_kib_before": rss0,
        "rss_kib_after": rss1,
        "samples": samples,
        "other_frames": other,
    }


async def _sample(pids: list[int], out: list[tuple[float, int, int]], t0: float) -> None:
    while True:
        try:
            rss = sum(_rss_kib(pid) for pid in pids)
            fds = sum(_fds(pid) for pid in pids)
        except OSError:
            return
        out.append((round(time.monotonic() - t0, 3), rss, fds))
        await asyncio.sleep(0.1)
