"""Scenarios built on :func:`bench.fanout.run_phases`: cross-node fan-out, the matrix.

    python -m bench.fanout_cluster cluster [--runs 3] [--members 2000] [--messages 300]
    python -m bench.fanout_cluster matrix  [--runs 3] [--members 5000] [--messages 40]

``cluster`` (issue 3): one room, members spread over two Squall nodes sharing one
redis-server (``squall_redis_2nodes``), against the same members on one node with
Redis (``squall_redis``) and on the memory backend (``squall``), interleaved in one
invocation; with ``--socketio``, python-socketio + AsyncRedisManager on two nodes.
Every node on CPU 0 (both nodes of the two-node case share it, so the core does the
same total work as one node), the load generators and redis-server on CPU 1.
Redis commands per room message: ``CONFIG RESETSTAT`` before, ``INFO commandstats``
after each publish phase (commands run inside Lua scripts are counted too).

``matrix`` (issue 5): Squall, ``websockets.broadcast`` and the raw-send floor; layouts
1 room x M and 100 rooms x M/100; per layout one server start and these phases:
saturation 64 B and 1 KiB (4 in flight per room), burst (10 pubs per publisher write,
20 in flight per room), and paced at half of the saturation message rate (latency).

Each (target, layout) run holds the machine-wide benchmark lock (bench.bench_lock)
from server start to numbers. Results: bench/results/<scenario>-<mode>.json and the
``<!-- results:<scenario>-<mode> -->`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import bench_lock, machine_info, source_hashes
from bench.fanout import Layout, Phase, Redis, placement_cpus, run_phases
from bench.peers import TARGETS
from bench.results import envelope, save, update_docs

__all__ = ["compare", "main", "summarize_phases"]

#: commands the benchmark itself sends (not Squall's)
OWN_COMMANDS = {"config|resetstat", "info", "hello", "client|setinfo"}
KEYS = (
    "us_per_delivery",
    "us_per_delivery_user",
    "us_per_delivery_sys",
    "us_per_delivery_sched",
    "deliveries_per_s",
    "messages_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "server_busy",
    "foreign_cpu0",
    "foreign_cores",
    "client_cpu_util",
    "redis_cpu_s",
)


async def compare(
    targets: list[str],
    layouts: list[Layout],
    phases: list[Phase],
    runs: int,
    workroot: Path,
    phase_retries: int = 1,
    quiet_wait_s: float = 0.0,
) -> list[dict[str, Any]]:
    """Every (layout, target) ``runs`` times, targets alternating A B C, C B A, ..."""
    out: list[dict[str, Any]] = []
    need_redis = any(TARGETS[t].redis for t in targets)
    for layout in layouts:
        for round_ in range(runs):
            order = targets if round_ % 2 == 0 else targets[::-1]
            for name in order:
                target = TARGETS[name]
                workdir = workroot / f"r{len(out):03d}-{name}"
                print(f"[{len(out) + 1}] {name} {layout}", file=sys.stderr)
                with bench_lock() as waited:
                    redis = None
                    try:
                        if target.redis and need_redis:
                            _server_cpu, redis_cpu = placement_cpus(target.placement)
                            redis = await Redis.start(workdir / "redis", redis_cpu)
                        r = await asyncio.wait_for(
                            run_phases(
                                target,
                                layout,
                                phases,
                                workdir,
                                redis,
                                retries=phase_retries,
                                quiet_wait_s=quiet_wait_s,
                            ),
                            900.0 + 2 * len(phases) * (phase_retries + 1) * quiet_wait_s,
                        )
                    except Exception:
                        r = {"target": name, "layout": layout.__dict__, "phases": {}}
                        r["error"] = traceback.format_exc()
                        print(r["error"], file=sys.stderr)
                    finally:
                        if redis is not None:
                            await redis.stop()
                r["lock_wait_s"] = waited
                r["round"] = round_
                out.append(r)
    return out


def per_message_commands(r: dict[str, Any]) -> dict[str, float]:
    n = r.get("published") or 0
    cmds = r.get("redis_commands") or {}
    return {k: v / n for k, v in sorted(cmds.items()) if n and k not in OWN_COMMANDS}


def summarize_phases(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """{layout key: {target: {phase: medians}}} over complete phases."""
    out: dict[str, Any] = {}
    for run in runs:
        lk = f"{run['layout']['rooms']}x{run['layout']['members'] // run['layout']['rooms']}"
        for name, ph in run.get("phases", {}).items():
            slot = out.setdefault(lk, {}).setdefault(run["target"], {}).setdefault(name, [])
            if ph.get("complete"):
                slot.append(ph)
    for lk, per_target in out.items():
        for t, per_phase in per_target.items():
            for name, phs in per_phase.items():
                m: dict[str, Any] = {"complete_runs": len(phs)}
                for k in KEYS:
                    vals = [p[k] for p in phs if p.get(k) is not None]
                    m[k] = statistics.median(vals) if vals else None
                    if k == "us_per_delivery" and vals:
                        m["us_min"], m["us_max"] = min(vals), max(vals)
                cmds: dict[str, list[float]] = {}
                for p in phs:
                    for c, v in per_message_commands(p).items():
                        cmds.setdefault(c, []).append(v)
                m["redis_per_message"] = {c: statistics.median(v) for c, v in cmds.items()}
                out[lk][t][name] = m
    return out


def fixed_phase(name: str, messages: int) -> Phase:
    """``fixed<N>k-64`` / ``fixed<N>k-1k``: open loop at N,000 deliveries/s for every
    target (the same load for all, unlike ``half``); raises ValueError otherwise."""
    m = re.fullmatch(r"fixed(\d+)k-(64|1k)", name)
    if m is None:
        raise ValueError(f"unknown phase {name!r}")
    payload = 64 if m.group(2) == "64" else 1024
    return Phase(name, messages, payload=payload, rate_deliveries=int(m.group(1)) * 1000.0)


def _f(v: Any, d: int = 1) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.{d}f}" if isinstance(v, float) else str(v)


def table(
    summary: dict[str, Any], lk: str, targets: list[str], phase: str, ref: str | None
) -> list[str]:
    s = summary.get(lk, {})
    head = "| " + phase + " | " + " | ".join(targets)
    head += "".join(f" | {t} / {ref}" for t in targets if ref and t != ref) + " |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]

    def row(label: str, key: str, d: int = 1, ratio: bool = True) -> str:
        vals = [s.get(t, {}).get(phase, {}).get(key) for t in targets]
        cells = [_f(v, d) for v in vals]
        if ref:
            rv = s.get(ref, {}).get(phase, {}).get(key)
            for t, v in zip(targets, vals, strict=True):
                if t != ref:
                    cells.append(f"**{v / rv:.2f}**" if ratio and v and rv else "")
        return f"| {label} | " + " | ".join(cells) + " |"

    spread = []
    for t in targets:
        m = s.get(t, {}).get(phase, {})
        spread.append(f"{_f(m.get('us_min'), 2)} to {_f(m.get('us_max'), 2)}")
    lines += [
        row("µs server CPU per delivery (median)", "us_per_delivery", 2),
        "| (min to max) | " + " | ".join(spread) + " |" + " |" * (len(lines[1]) and 0),
        row("of which user", "us_per_delivery_user", 2),
        row("of which system", "us_per_delivery_sys", 2),
        row("µs on-CPU (schedstat) per delivery", "us_per_delivery_sched", 2),
        row("deliveries / s", "deliveries_per_s", 0),
        row("latency p50, ms", "latency_p50_ms", 1),
        row("latency p99, ms", "latency_p99_ms", 1),
        row("server core(s) busy", "server_busy", 2, ratio=False),
        row("CPU 0 busy with other processes", "foreign_cpu0", 2, ratio=False),
        row("cores used by other processes (machine)", "foreign_cores", 2, ratio=False),
        row("load generator CPU (share of 1 core)", "client_cpu_util", 2, ratio=False),
        row("complete runs", "complete_runs", 0, ratio=False),
    ]
    # a figure older results did not record: no row of n/a
    lines = [ln for ln in lines if not ln.startswith("| cores used by other") or "n/a |" not in ln]
    # pad the spread row to the header width
    n = head.count("|")
    lines[3] = lines[3] + " |" * max(0, n - lines[3].count("|"))
    return lines


async def main_async(args: argparse.Namespace, workroot: Path) -> dict[str, Any]:
    started = time.monotonic()
    sources = source_hashes()
    machine = machine_info()
    if args.scenario == "cluster":
        targets = ["squall", "squall_redis", "squall_redis_2nodes"]
        if args.socketio:
            targets.append("socketio_2nodes")
        layouts = [Layout(members=args.members, rooms=1)]
        phases = [Phase("sat-64", args.messages)]
        extra: list[Phase] = []
    else:
        targets = ["squall", "websockets", "raw_floor"]
        layouts = [
            Layout(members=args.members, rooms=int(k), defer_unsampled=args.defer_unsampled)
            for k in args.rooms.split(",")
        ]
        n = args.messages
        phases = [
            Phase("sat-64", n),
            Phase("sat-1k", n, payload=1024),
            Phase("burst10-64", n * 2, window=20, burst=10),
            Phase("burst10-1k", n * 2, payload=1024, window=20, burst=10),
            Phase("half-64", n, rate_from="sat-64"),
            Phase("half-1k", n, payload=1024, rate_from="sat-1k"),
        ]
        # opt-in (--phases): paced at one fixed load for every target, so that latency
        # is compared at the same deliveries/s (``half`` is half of each target's own
        # saturation rate, which coalescing raises for Squall)
        extra = [Phase("fixed50k-64", n, rate_deliveries=50_000.0)]
    if args.targets:
        targets = args.targets.split(",")
    if args.phases:
        wanted = args.phases.split(",")
        known = {ph.name: ph for ph in phases + extra}
        phases = [known.get(w) or fixed_phase(w, args.messages) for w in wanted]
    runs = await compare(
        targets, layouts, phases, args.runs, workroot, args.phase_retries, args.quiet_wait
    )
    changed = sorted(k for k, v in source_hashes().items() if sources.get(k) != v)
    return {
        **envelope(
            args.scenario,
            args.mode or "custom",
            "python -m bench.fanout_cluster " + " ".join(args.argv),
        ),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": time.monotonic() - started,
        "machine": machine,
        "targets": targets,
        "phases": [p.__dict__ for p in phases],
        "layouts": [layout.__dict__ for layout in layouts],
        "placements": {t: TARGETS[t].placement for t in targets},
        "phase_retries": args.phase_retries,
        "ref": args.ref,
        "quiet_wait_s": args.quiet_wait,
        "summary": summarize_phases(runs),
        "sources_changed": changed,
        "runs": runs,
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Command: `{report['command']}` ({report['date']}, git {m['git_commit']}"
        f"{', uncommitted changes' if m['git_dirty'] == 'yes' else ''}, "
        f"sources {m['source_digest']}, {report['elapsed_s']:.0f} s)",
        "",
    ]
    targets = report["targets"]
    for lk, _per in report["summary"].items():
        phases = list(next(iter(report["summary"][lk].values())).keys())
        for ph in phases:
            ref = "squall" if report["scenario"] == "cluster" else None
            cols = targets
            if report["scenario"] == "matrix":
                cols = ["squall", *[t for t in targets if t != "squall"]]
            lines += [f"Layout {lk} (rooms x members), phase `{ph}`:", ""]
            ref = ref or report.get("ref") or cols[-1]
            lines += table(report["summary"], lk, cols, ph, ref)
            lines.append("")
            if report["scenario"] == "matrix":
                s = report["summary"][lk]
                sq = s.get("squall", {}).get(ph, {}).get("us_per_delivery")
                for peer in cols[1:]:
                    pv = s.get(peer, {}).get(ph, {}).get("us_per_delivery")
                    if sq and pv:
                        lines.append(f"* squall / {peer}: **{sq / pv:.2f}**")
                lines.append("")
        if report["scenario"] == "cluster":
            lines += ["Redis commands per published room message (median over runs):", ""]
            for t in targets:
                per = report["summary"][lk].get(t, {}).get(phases[0], {})
                cmds = per.get("redis_per_message") or {}
                if cmds:
                    txt = ", ".join(f"{c} {v:.2f}" for c, v in cmds.items())
                    lines.append(f"* {t}: {txt}")
            lines.append("")
    lines += _placement_notes(report)
    if report["sources_changed"]:
        lines.append(f"* Warning: server sources changed: {', '.join(report['sources_changed'])}")
    return "\n".join(lines) + "\n"


_PLACEMENT = {
    "split": "server on CPU 0, load generators and Redis on CPU 1",
    "clients": "server processes free on both CPUs, load generators and Redis on CPU 1",
    "none": "nothing pinned: server processes, load generators and Redis share both CPUs",
}


def _placement_notes(report: dict[str, Any]) -> list[str]:
    """Where each target ran, and how its server processes shared the members."""
    placements = report.get("placements")
    if not placements:
        return []
    lines = ["Placement and members per server process (each run):", ""]
    for t, where in placements.items():
        spread = [
            "/".join(str(n) for n in run.get("connections_per_process", []) if n)
            for run in report["runs"]
            if run["target"] == t and run.get("connections_per_process")
        ]
        lines.append(
            f"* {t}: {_PLACEMENT.get(where, where)}"
            + (f"; connections per server process: {', '.join(spread)}" if spread else "")
        )
    if any(lay.get("defer_unsampled") for lay in report.get("layouts", [])):
        lines.append(
            "* deferred readers: only the latency probes (1 member in 20) read during a "
            "phase, the other members once the probes are complete; deliveries / s then "
            "include that catch-up and are not a throughput figure"
        )
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.fanout_cluster")
    p.add_argument("scenario", choices=("cluster", "matrix"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--members", type=int, default=0, help="default 2000 cluster, 5000 matrix")
    p.add_argument("--messages", type=int, default=0, help="per room and phase")
    p.add_argument("--targets", default="")
    p.add_argument("--rooms", default="1,100", help="matrix: room counts (layouts)")
    p.add_argument(
        "--phases",
        default="",
        help="only these phases (comma-separated names); fixed<N>k-64 or fixed<N>k-1k: "
        "paced at N,000 deliveries/s for every target",
    )
    p.add_argument("--socketio", action="store_true", help="cluster: add socketio_2nodes")
    p.add_argument(
        "--phase-retries",
        type=int,
        default=1,
        help="measure a phase again up to N times while other processes used more than "
        "30 %% of CPU 0 (server pinned) or 0.3 cores (server not pinned)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each phase, wait up to this many s for other processes to use "
        "less than 0.15 cores (0: do not wait)",
    )
    p.add_argument(
        "--defer-unsampled",
        action="store_true",
        help="matrix: only the latency probes (1 member in 20) read during a phase, the "
        "others after it: the load generator's CPU no longer competes with the server",
    )
    p.add_argument(
        "--ref",
        default="",
        help="matrix: the target the ratio columns divide by (default: the last column)",
    )
    p.add_argument("--mode", default="", help="results name suffix (default: custom)")
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args(raw)
    args.argv = raw
    if not args.members:
        args.members = 2000 if args.scenario == "cluster" else 5000
    if not args.messages:
        args.messages = 300 if args.scenario == "cluster" else 40
    with tempfile.TemporaryDirectory(prefix="squall-bench-") as tmp:
        report = asyncio.run(main_async(args, Path(tmp)))
    name = f"{args.scenario}-{args.mode or 'custom'}"
    _path, committed = save(name, report)
    text = markdown(report)
    print(text)
    if not args.no_docs and committed:
        update_docs(name, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
