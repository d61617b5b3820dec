"""Run the benchmarks: ``python -m bench.run [--short]``, or one scenario:
``python -m bench.run {cluster,matrix,laggards,scaling,conn,heartbeat,handshake,idle,dm} ...``.

Every scenario goes through this command line and saves its report through
:mod:`bench.results` (one envelope, committed only from a clean tree).

Today one scenario, ``fanout`` (bench/fanout.py): µs of server CPU per delivered room
message at 2,000 members, Squall against a plain Tornado ``write_message`` loop.
Targets are interleaved (A B, B A, A B, ...) so drift on the machine hits both, and
each metric is the median over the runs of a target.

Writes ``bench/results/fanout-<mode>.json`` (every run, machine, parameters) and
prints a markdown table, which also replaces the matching results section of
``docs/benchmarks.md`` (unless ``--no-docs``).

Modes: ``--short`` = 3 runs x 200 messages per target (about 1.5 to 2 minutes);
default = 3 runs x 1,000 messages (about 5 to 8 minutes). Every option overrides.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import REPO, bench_lock, can_pin, fanout_cluster, machine_info, source_hashes
from bench.fanout import FanoutParams, params_dict, run_once, summarize
from bench.peers import TARGETS
from bench.results import DOCS, RESULTS, SCHEMA, committable, envelope, save, update_docs

__all__ = ["main"]

#: a run during which other processes used more than this share of CPU 0 is redone
NOISY = 0.3


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--short", action="store_true", help="3 runs x 200 messages per target")
    p.add_argument("--runs", type=int, help="runs per target (default 3)")
    p.add_argument("--messages", type=int, help="messages per run (default 1000, short 200)")
    p.add_argument("--members", type=int, default=2000, help="room size, publisher included")
    p.add_argument("--window", type=int, default=4, help="published, not yet echoed")
    p.add_argument("--payload", type=int, default=64, help="bytes of data per message")
    p.add_argument("--client-procs", type=int, default=2, help="member processes")
    p.add_argument(
        "--targets",
        default="squall,tornado_plain",
        help=f"comma-separated, first is compared with the others; known: {', '.join(TARGETS)}",
    )
    p.add_argument(
        "--retries",
        type=int,
        help=f"redo up to N runs during which others used > {round(NOISY * 100)} %% of CPU 0 "
        "(default 1 short, 3 full)",
    )
    p.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    p.add_argument(
        "--only-fanout",
        action="store_true",
        help="skip the cross-node and matrix scenarios (bench/fanout_cluster.py)",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep server/client logs in /tmp")
    args = p.parse_args(argv)
    unknown = [t for t in args.targets.split(",") if t not in TARGETS]
    if unknown:
        p.error(f"unknown target(s) {unknown}; known: {list(TARGETS)}")
    if args.members < 2 or args.client_procs < 1 or args.members - 1 < args.client_procs:
        p.error("need at least 2 members and one member per client process")
    if args.payload < 8:
        p.error("--payload must be at least 8 (the timestamp)")
    return args


def mode_of(args: argparse.Namespace) -> str:
    custom = (
        args.runs is not None
        or args.messages is not None
        or args.members != 2000
        or args.window != 4
        or args.payload != 64
        or args.client_procs != 2
        or args.targets != "squall,tornado_plain"
    )
    if custom:
        return "custom"
    return "short" if args.short else "full"


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.0f} %"


def markdown(report: dict[str, Any]) -> str:
    targets: list[str] = report["targets"]
    s = report["summary"]
    subject = targets[0]
    m = report["machine"]
    p = report["params"]
    head = "| | " + " | ".join(TARGETS[t].name for t in targets)
    head += "".join(f" | {subject} / {t}" for t in targets[1:]) + " |"
    sep = "|---" * (1 + len(targets) + len(targets) - 1) + "|"

    def row(label: str, key: str, fmt: Any = _fmt, ratio: bool = False) -> str:
        cells = [fmt(s[t].get(key)) for t in targets]
        for t in targets[1:]:
            a, b = s[subject].get(key), s[t].get(key)
            cells.append(f"{a / b:.2f}" if ratio and a and b else "")
        return f"| {label} | " + " | ".join(cells) + " |"

    def spread(t: str) -> str:
        lo, hi = s[t].get("us_per_delivery_min"), s[t].get("us_per_delivery_max")
        return f"{_fmt(s[t].get('us_per_delivery'))} ({_fmt(lo)} to {_fmt(hi)})"

    cpu_row = "| **µs server CPU per delivered message**, median (min to max) | "
    cpu_row += " | ".join(spread(t) for t in targets)
    cpu_row += "".join(
        f" | **{s[subject]['us_per_delivery'] / s[t]['us_per_delivery']:.2f}**"
        if s[subject].get("us_per_delivery") and s[t].get("us_per_delivery")
        else " | "
        for t in targets[1:]
    )
    cpu_row += " |"
    lines = [
        f"Command: `{report['command']}` ({report['date']}, git {m['git_commit']}"
        f"{', uncommitted changes' if m['git_dirty'] == 'yes' else ''}, "
        f"sources {m['source_digest']}, "
        f"{report['elapsed_s']:.0f} s)",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, Linux {m['kernel']}, "
        f"Python {m['python']}, Tornado {m['tornado']}, msgpack {m['msgpack']}, "
        f"load generator on uvloop {m['uvloop (load generator)']}.",
        "",
        f"Scenario: 1 room, {p['members']:,} members (the publisher is one of them), "
        f"{p['messages']:,} messages of {p['payload']} B, at most {p['window']} in flight; "
        f"{report['runs_per_target']} interleaved runs per target; server on CPU 0, "
        f"{p['client_procs']} member processes + 1 publisher process on CPU 1"
        f"{'' if report['pinned'] else ' (NOT pinned: taskset or a second CPU missing)'}.",
        "",
        head,
        sep,
        cpu_row,
        row("of which user (Python)", "us_per_delivery_user", ratio=True),
        row("of which system (kernel)", "us_per_delivery_sys", ratio=True),
        row("deliveries / s (first publish to last delivery)", "deliveries_per_s", ratio=True),
        row("server core busy during the phase", "server_busy", _pct),
        row("server runnable but waiting for its CPU", "server_waited", _pct),
        row("CPU 0 busy with other processes", "foreign_cpu0", _pct),
        row("load generator CPU (share of its one core)", "client_cpu_util", _pct),
        row("delivery latency p50, ms", "latency_p50_ms", ratio=True),
        row("delivery latency p99, ms", "latency_p99_ms", ratio=True),
        row("complete runs", "complete_runs"),
    ]
    if report["discarded_runs"]:
        lines += [
            "",
            f"{len(report['discarded_runs'])} run(s) redone because other processes used "
            f"more than {NOISY:.0%} of CPU 0 (kept in the JSON under discarded_runs).",
        ]
    if report["warnings"]:
        lines += ["", *(f"* Warning: {w}" for w in report["warnings"])]
    return "\n".join(lines) + "\n"


def warnings_for(runs: list[dict[str, Any]], sources: dict[str, str]) -> list[str]:
    out = []
    now = source_hashes()
    changed = sorted(k for k in sources.keys() | now.keys() if sources.get(k) != now.get(k))
    if changed:
        out.append(f"server sources changed while the benchmark ran ({', '.join(changed)})")
    for r in runs:
        tag = f"run {r['index']} ({r['target']})"
        if "error" in r:
            out.append(f"{tag} failed: {r['error'].splitlines()[-1]}")
            continue
        if not r["complete"]:
            out.append(f"{tag} incomplete: {r['delivered']:,} of {r['expected']:,} delivered")
        if r["publish_errors"]:
            out.append(f"{tag}: {r['publish_errors']} publish errors")
        if (r.get("client_cpu_util") or 0) > 0.9:
            out.append(f"{tag}: load generator near saturation ({_pct(r['client_cpu_util'])})")
        if (r.get("server_busy") or 1) < 0.8:
            out.append(f"{tag}: server core only {_pct(r['server_busy'])} busy")
        if (r.get("foreign_cpu0") or 0) > 0.1:
            out.append(f"{tag}: other processes used {_pct(r['foreign_cpu0'])} of CPU 0")
    if not can_pin():
        out.append("processes not pinned (taskset missing or a single CPU)")
    return out


async def one_run(
    name: str, params: FanoutParams, workroot: Path, index: int, label: str
) -> dict[str, Any]:
    workdir = workroot / f"run{index:02d}-{name}"
    # setup (2,000 handshakes) + publish timeout + teardown, with room to spare
    guard = 240.0 + params.deliveries() * 60e-6
    try:
        # server start -> numbers under the machine-wide lock (another benchmark may run)
        with bench_lock():
            r = await asyncio.wait_for(run_once(TARGETS[name], params, workdir), guard)
    except Exception:
        r = {"target": name, "complete": False, "error": traceback.format_exc()}
        print(f"[{label}] {name}: FAILED\n{r['error']}", file=sys.stderr)
    else:
        print(
            f"[{label}] {name}: {_fmt(r['us_per_delivery'], 2)} µs/delivery "
            f"(user {_fmt(r['us_per_delivery_user'])}, sys {_fmt(r['us_per_delivery_sys'])}), "
            f"{_fmt(r['deliveries_per_s'], 0)} deliveries/s, server busy "
            f"{_pct(r['server_busy'])} (others on CPU 0: {_pct(r['foreign_cpu0'])}), "
            f"clients {_pct(r['client_cpu_util'])}, "
            f"{r['delivered']:,}/{r['expected']:,} delivered",
            file=sys.stderr,
        )
    r["index"] = index
    return r


async def run_all(args: argparse.Namespace, workroot: Path) -> dict[str, Any]:
    targets = args.targets.split(",")
    runs_per_target = args.runs or 3
    messages = args.messages or (200 if args.short else 1000)
    params = FanoutParams(
        members=args.members,
        messages=messages,
        payload=args.payload,
        window=args.window,
        client_procs=args.client_procs,
    )
    started = time.monotonic()
    machine = machine_info()
    sources = source_hashes()
    runs: list[dict[str, Any]] = []
    total = runs_per_target * len(targets)
    retries = args.retries if args.retries is not None else (1 if args.short else 3)
    discarded: list[dict[str, Any]] = []
    for round_ in range(runs_per_target):
        order = targets if round_ % 2 == 0 else targets[::-1]
        for name in order:
            retried = False
            while True:
                label = f"{len(runs) + 1}/{total}" + (" retry" if retried else "")
                r = await one_run(name, params, workroot, len(runs) + len(discarded) + 1, label)
                noisy = (r.get("foreign_cpu0") or 0) > NOISY
                if not noisy or retries <= 0:
                    break
                retries -= 1
                retried = True
                r["discarded"] = f"other processes used {_pct(r['foreign_cpu0'])} of CPU 0"
                print(f"  discarded ({r['discarded']}), running it again", file=sys.stderr)
                discarded.append(r)
            runs.append(r)
    summary = {
        t: summarize([r for r in runs if r["target"] == t and "error" not in r]) for t in targets
    }
    changed = sorted(k for k, v in source_hashes().items() if sources.get(k) != v)
    return {
        **envelope(
            "fanout", mode_of(args), "python -m bench.run" + "".join(f" {a}" for a in args.argv)
        ),
        "sources_changed": changed,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": time.monotonic() - started,
        "machine": machine,
        "pinned": can_pin(),
        "params": params_dict(params),
        "targets": targets,
        "runs_per_target": runs_per_target,
        "summary": summary,
        "warnings": warnings_for(runs, sources),
        "runs": runs,
        "discarded_runs": discarded,
    }


#: every other scenario, run through this one command line:
#: ``python -m bench.run <scenario> [its options]``
OTHER_SCENARIOS = (
    *("cluster", "matrix", "laggards", "scaling"),
    *("conn", "heartbeat", "handshake", "idle", "dm", "storm"),
)


def _scaling_markdown(report: dict[str, Any]) -> str:
    from bench import scaling

    return scaling.markdown(report)


def regenerate_docs() -> int:
    """``python -m bench.run docs``: rewrite every results section of docs/benchmarks.md
    from the committed result files (schema 2), e.g. after editing a renderer, and redraw
    every chart in docs/img/ (bench/charts.py)."""
    from bench import conn

    renderers = {
        "fanout": markdown,
        "cluster": fanout_cluster.markdown,
        "matrix": fanout_cluster.markdown,
        "conn": conn.render,
        "laggards": lambda r: str(r["markdown"]),
        "scaling": _scaling_markdown,
    }
    for path in sorted(RESULTS.glob("*.json")):
        report = json.loads(path.read_text())
        if path.stem.endswith("-custom") or not committable(report):
            continue
        render = renderers.get(report.get("scenario", ""))
        if render is not None and report.get("schema") == SCHEMA:
            update_docs(path.stem, render(report))
            print(f"{DOCS.relative_to(REPO)}: section {path.stem}", file=sys.stderr)
    from bench import charts

    for img in charts.draw_all():  # each chart skips itself (with a note) without inputs
        print(f"{img}: redrawn", file=sys.stderr)
    return 0


def delegate(raw: list[str]) -> int:
    """``python -m bench.run <scenario> ...``: the scenario's own runner."""
    name, rest = raw[0], raw[1:]
    if name in ("cluster", "matrix"):
        return fanout_cluster.main([name, *rest])
    if name == "laggards":
        from bench import laggards

        return laggards.main(rest)
    if name == "scaling":
        from bench import scaling

        return scaling.main(rest)
    from bench import conn

    conn.main(rest if name == "conn" else ["--only", name, *rest])
    return 0


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    if raw and raw[0] in OTHER_SCENARIOS:
        return delegate(raw)
    if raw == ["docs"]:
        return regenerate_docs()
    args = parse_args(raw)
    args.argv = raw
    with tempfile.TemporaryDirectory(prefix="squall-bench-") as tmp:
        workroot = (
            Path(tempfile.mkdtemp(prefix="squall-bench-logs-")) if args.keep_logs else Path(tmp)
        )
        report = asyncio.run(run_all(args, workroot))
    if args.keep_logs:
        print(f"logs kept in {workroot}", file=sys.stderr)
    section = f"fanout-{report['mode']}"
    out, committed = save(section, report)
    table = markdown(report)
    print(table)
    print(f"results: {out.relative_to(REPO)}", file=sys.stderr)
    if not args.no_docs and committed:
        update_docs(section, table)
        print(f"updated {DOCS.relative_to(REPO)} (section {section})", file=sys.stderr)
    ok = all(r.get("complete") for r in report["runs"])
    if report["mode"] != "custom" and not args.only_fanout:
        # the phased scenarios (bench/fanout_cluster.py), smaller in --short
        if args.short:
            fanout_cluster.main(["cluster", "--runs", "1", "--messages", "150", "--mode", "short"])
            fanout_cluster.main(
                [
                    *("matrix", "--runs", "1", "--members", "2000", "--messages", "20"),
                    *("--rooms", "1", "--phases", "sat-64,burst10-64,half-64", "--mode", "short"),
                ]
            )
        else:
            fanout_cluster.main(["cluster", "--runs", "3", "--mode", "full"])
            fanout_cluster.main(["matrix", "--runs", "3", "--mode", "full"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
