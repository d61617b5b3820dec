"""Charts for docs/benchmarks.md, drawn from the result files in bench/results/.

    python -m bench.charts [--sweep] [--members 500,2000,5000] [--runs 1]

``--sweep`` first measures (bench.fanout_cluster matrix, one room, phases ``sat-64``
and ``half-64``, each size written to ``bench/results/matrix-sweep<M>.json``); then,
with or without it, draws every chart into ``docs/img/`` (``python -m bench.run docs``
draws them too):

* ``fanout-throughput.png``, ``fanout-latency.png``: deliveries/s at saturation, p50
  and p99 at half of it, against room size (``matrix-sweep<M>.json``);
* ``memory-per-conn.png``: KiB RSS per authenticated, joined connection, Squall and
  plain Tornado (the newest committed conn result with the ``heartbeat`` scenario),
  and across workers (the newest committed one with ``idle``, when there is one);
* ``handshake-storm.png``: the handshake latency distribution of every run of the
  reconnect storm (``conn-full-storm.json``, else the newest committed conn result
  whose ``storm`` runs kept ``percentiles_ms``);
* ``p99-workers.png``: p99 against room size, one process and 2 workers
  (``matrix-workers*.json``, ``matrix-sweep<M>.json``).

Guarantees: only reads result files (never measures without ``--sweep``); a chart
whose inputs are missing is skipped with a note on stderr, never drawn empty; every
chart names its result files and their git commits (a ``*`` marks a file that is not
a schema-2 committed result: older layout or a modified tree). matplotlib, Agg backend.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import textwrap
from typing import Any

from bench import REPO
from bench.results import SCHEMA, committable

__all__ = ["draw_all", "main"]

IMG = REPO / "docs" / "img"
RESULTS = REPO / "bench" / "results"

#: the goals of issue 13 drawn as reference lines
GOAL_KIB_PER_CONN = 14.0
GOAL_STORM_P99_MS = 2000.0
GOAL_P99_MS = 50.0

Report = dict[str, Any]


def note(msg: str) -> None:
    print(f"bench.charts: {msg}", file=sys.stderr)


def read(name: str) -> Report | None:
    path = RESULTS / name
    if not path.exists():
        return None
    report: Report = json.loads(path.read_text())
    report["_file"] = name
    return report


def committed(report: Report) -> bool:
    return report.get("schema") == SCHEMA and committable(report)


def source(report: Report) -> str:
    """``file @ commit``, with ``*`` when the file is not a schema-2 committed result."""
    commit = report.get("machine", {}).get("git_commit") or "?"
    return f"{report['_file']} @ {commit}" + ("" if committed(report) else "*")


def newest(pred: Any) -> Report | None:
    """The newest (``started_utc``) committed result file for which ``pred`` holds."""
    found = []
    for path in sorted(RESULTS.glob("*.json")):
        if path.stem.endswith("-custom"):
            continue
        report = read(path.name)
        if report is not None and committed(report) and pred(report):
            found.append(report)
    return max(found, key=lambda r: str(r.get("started_utc", "")), default=None)


def runs_of(report: Report, scenario: str) -> list[dict[str, Any]]:
    if report.get("scenario") != "conn":
        return []
    return [r for r in report.get("scenarios", {}).get(scenario, {}).get("runs", []) if r]


def plt_module() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, name: str, sources: list[Report]) -> str:
    text = "from bench/results/: " + ", ".join(source(r) for r in sources)
    if not all(committed(r) for r in sources):
        text += "   (* older layout or modified tree)"
    width = int(fig.get_figwidth() * 19)  # characters of 7.5 pt per line, about
    lines = textwrap.wrap(text, width, break_on_hyphens=False)
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=7.5, color="0.35", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.035 * len(lines) * 4.5 / fig.get_figheight(), 1, 1))
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / name
    fig.savefig(path, dpi=100)
    plt_module().close(fig)
    return str(path.relative_to(REPO))


# -- fan-out against room size (the matrix sweep) --------------------------------------


def load_sweep(sizes: list[int]) -> dict[int, Report]:
    out: dict[int, Report] = {}
    for m in sizes:
        report = read(f"matrix-sweep{m}.json")
        if report is not None:
            out[m] = report
    return out


def layout(report: Report) -> dict[str, Any]:
    """The one layout of a one-layout matrix result: {target: {phase: summary}}."""
    return dict(next(iter(report["summary"].values())))


def draw_fanout(reports: dict[int, Report]) -> list[str]:
    if not reports:
        note("skipped fanout-*.png: no bench/results/matrix-sweep<M>.json")
        return []
    plt = plt_module()
    data = {m: layout(r) for m, r in reports.items()}
    sizes = sorted(data)
    srcs = [reports[m] for m in sizes]
    targets = sorted({t for d in data.values() for t in d})
    written = []
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for t in targets:
        ys = [(data[m].get(t, {}).get("sat-64", {}).get("deliveries_per_s") or 0) for m in sizes]
        ax.plot(sizes, ys, marker="o", label=t)
    ax.set_xlabel("members in the room")
    ax.set_ylabel("deliveries / s (saturation, 64 B)")
    ax.set_title("Fan-out throughput, one server core")
    ax.grid(True, alpha=0.3)
    ax.legend()
    written.append(save(fig, "fanout-throughput.png", srcs))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, t in enumerate(targets):
        for q, style in (("latency_p50_ms", "-"), ("latency_p99_ms", "--")):
            ys = [(data[m].get(t, {}).get("half-64", {}).get(q) or 0) for m in sizes]
            ax.plot(sizes, ys, style, marker="o", color=f"C{i}", label=f"{t} {q.split('_')[1]}")
    ax.set_xlabel("members in the room")
    ax.set_ylabel("delivery latency, ms")
    ax.set_title("Latency at half of the saturation rate (64 B)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    written.append(save(fig, "fanout-latency.png", srcs))
    return written


# -- memory per connection ---------------------------------------------------------------


def _median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in runs if isinstance(r.get(key), (int, float))]
    return statistics.median(values) if values else None


def draw_memory() -> list[str]:
    hb = newest(lambda r: bool(runs_of(r, "heartbeat")))
    if hb is None:
        note("skipped memory-per-conn.png: no committed conn result with `heartbeat`")
        return []
    idle = newest(lambda r: bool(runs_of(r, "idle")))
    n = hb["scenarios"]["heartbeat"].get("params", {}).get("n")
    count = f"{n:,} connections" if isinstance(n, int) else "connections"
    bars: list[tuple[str, float, str]] = []
    for variant, label, colour in (
        ("squall", f"Squall\n(1 process, {count})", "tab:blue"),
        ("tornado", f"plain Tornado\n(with its ping coroutine,\n{count})", "tab:gray"),
    ):
        mine = [r for r in runs_of(hb, "heartbeat") if r.get("variant") == variant]
        value = _median_of(mine, "kb_per_conn_rss")
        if value is not None:
            bars.append((label, value, colour))
    sources = [hb]
    if idle is None:
        note("memory-per-conn.png: no committed conn result with `idle` (100k across workers)")
    else:
        run = runs_of(idle, "idle")[0]
        value = run.get("kb_per_conn_rss")
        if isinstance(value, (int, float)):
            held, workers = run.get("connections"), run.get("workers")
            bars.append((f"Squall\n({held:,} across {workers} workers)", float(value), "tab:cyan"))
            sources.append(idle)
    if not bars:
        note("skipped memory-per-conn.png: no `kb_per_conn_rss` in the heartbeat runs")
        return []
    plt = plt_module()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    xs = range(len(bars))
    rects = ax.bar(xs, [b[1] for b in bars], color=[b[2] for b in bars], width=0.55)
    ax.bar_label(rects, labels=[f"{b[1]:.1f} KiB" for b in bars], padding=3)
    ax.set_xticks(list(xs), [b[0] for b in bars], fontsize=9)
    ax.axhline(
        GOAL_KIB_PER_CONN,
        color="tab:red",
        linestyle="--",
        linewidth=1,
        label=f"goal: <= {GOAL_KIB_PER_CONN:g} KiB",
    )
    ax.legend(loc="upper left", fontsize=9)
    ax.set_ylabel("KiB RSS per connection")
    ax.set_ylim(0, max(max(b[1] for b in bars), GOAL_KIB_PER_CONN) * 1.3)
    ax.set_title("Memory per authenticated, joined connection (RSS after - before) / N")
    ax.grid(True, axis="y", alpha=0.3)
    return [save(fig, "memory-per-conn.png", sources)]


# -- handshake storm -----------------------------------------------------------------------


def _storm_runs(report: Report) -> list[dict[str, Any]]:
    return [r for r in runs_of(report, "storm") if len(r.get("percentiles_ms") or []) == 101]


def draw_storm() -> list[str]:
    report = read("conn-full-storm.json")
    if report is None or not _storm_runs(report):
        report = newest(lambda r: bool(_storm_runs(r)))
    if report is None:
        note(
            "skipped handshake-storm.png: no conn-full-storm.json nor other committed "
            "conn result whose `storm` runs have `percentiles_ms`"
        )
        return []
    runs = _storm_runs(report)
    params = report["scenarios"]["storm"].get("params", {})
    plt = plt_module()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colours = {
        "squall-redis": "tab:blue",
        "squall": "tab:orange",
        "tornado": "tab:gray",
        "squall-redis-2w": "tab:green",
    }
    names = {
        "squall-redis": "Squall, Redis backend",
        "squall": "Squall, memory backend",
        "tornado": "plain Tornado, its listen queue of 128 (to 101)",
        "squall-redis-2w": "Squall, Redis, server.py --workers 2 (both cores)",
    }
    seen: set[str] = set()
    for run in runs:
        t = str(run.get("target"))
        label = None
        if t not in seen:
            seen.add(t)
            k = sum(1 for r in runs if r.get("target") == t)
            label = f"{names.get(t, t)} ({k} run{'s' if k != 1 else ''})"
        ax.plot(
            run["percentiles_ms"],
            range(101),
            color=colours.get(t),
            alpha=0.8,
            linewidth=1.5,
            label=label,
        )
    ax.axvline(GOAL_STORM_P99_MS, color="tab:red", linestyle="--", linewidth=1)
    ax.text(
        GOAL_STORM_P99_MS,
        3,
        f" goal: p99 < {GOAL_STORM_P99_MS / 1000:g} s",
        color="tab:red",
        fontsize=9,
    )
    ax.axhline(99, color="0.5", linestyle=":", linewidth=1)
    ax.text(0, 99, "99 % ", color="0.4", fontsize=8, ha="right", va="center")
    ax.set_xlabel("handshake latency, connect to welcome (ms)")
    ax.set_ylabel("% of connections admitted")
    ax.set_ylim(0, 101)
    slowest = max(max(r["percentiles_ms"]) for r in runs)
    ax.set_xlim(0, max(slowest, GOAL_STORM_P99_MS) * 1.15)
    n, procs, warm = params.get("n"), params.get("procs"), params.get("warm")
    ax.set_title(
        f"Reconnect storm: {n:,} connections at once from {procs} processes ({warm} already held)"
        if isinstance(n, int)
        else "Reconnect storm"
    )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return [save(fig, "handshake-storm.png", [report])]


# -- p99 against members and workers ---------------------------------------------------------

#: (file, target, line label) for the ``p99-workers.png`` lines, both phases
WORKER_LINES = (
    (("matrix-workers2000.json", "matrix-workers.json"), "squall", "1 process"),
    (("matrix-workers2000.json", "matrix-workers.json"), "squall_workers", "2 workers"),
    (("matrix-workers-deferred.json",), "squall", "1 process, deferred readers"),
    (("matrix-workers-deferred.json",), "squall_workers", "2 workers, deferred readers"),
)
STYLE = {
    "1 process": ("tab:orange", "-", "o"),
    "2 workers": ("tab:blue", "-", "o"),
    "1 process, deferred readers": ("tab:orange", "none", "s"),
    "2 workers, deferred readers": ("tab:blue", "none", "s"),
}
PHASES = (
    ("fixed70k-64", "fixed70k-64: 70,000 deliveries/s for every target"),
    ("half-64", "half-64: half of each target's own saturation rate"),
)


def _points(report: Report, target: str, phase: str) -> list[tuple[int, float, float]]:
    """(members, p99 ms, deliveries/s) of ``target`` in ``phase``, one-room layouts."""
    out = []
    for lay, targets in report.get("summary", {}).items():
        rooms, _, members = lay.partition("x")
        summary = targets.get(target, {}).get(phase, {})
        p99 = summary.get("latency_p99_ms")
        if rooms == "1" and members.isdigit() and isinstance(p99, (int, float)):
            out.append((int(members), float(p99), float(summary.get("deliveries_per_s") or 0)))
    return out


def draw_workers(sweep: dict[int, Report]) -> list[str]:
    used: dict[str, Report] = {}
    series: dict[str, list[tuple[str, list[tuple[int, float, float]]]]] = {}
    for phase, _title in PHASES:
        lines = []
        for files, target, label in WORKER_LINES:
            pts: list[tuple[int, float, float]] = []
            for name in files:
                report = read(name)
                if report is None:
                    continue
                mine = _points(report, target, phase)
                if mine:
                    used[name] = report
                    pts += mine
            if pts:
                lines.append((label, sorted(pts)))
        series[phase] = lines
    if not any(series.values()):
        note("skipped p99-workers.png: no bench/results/matrix-workers*.json")
        return []
    # the older one-process sweep, half-64 only: a different code and a lower half rate
    sizes = {pt[0] for lines in series.values() for _, pts in lines for pt in pts}
    sweep_pts = []
    for m, report in sorted(sweep.items()):
        if m in sizes:
            sweep_pts += _points(report, "squall", "half-64")
            used[report["_file"]] = report
    if sweep_pts:
        commit = sweep[sweep_pts[0][0]].get("machine", {}).get("git_commit") or "?"
        series["half-64"].append((f"1 process, older sweep (git {commit})", sweep_pts))
    plt = plt_module()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
    members = sorted({pt[0] for lines in series.values() for _, pts in lines for pt in pts})
    for ax, (phase, _t) in zip(axes, PHASES, strict=True):
        for label, pts in series[phase]:
            colour, style, marker = STYLE.get(label, ("0.4", ":", "^"))
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.plot(
                xs,
                ys,
                linestyle=style,
                marker=marker,
                markersize=7,
                color=colour,
                label=label,
                markerfacecolor=colour if style != "none" else "white",
            )
        ax.axhline(GOAL_P99_MS, color="tab:red", linestyle="--", linewidth=1, label="goal: < 50 ms")
    top = max(pt[1] for lines in series.values() for _, pts in lines for pt in pts) * 1.08
    for ax, (phase, title) in zip(axes, PHASES, strict=True):
        # value labels beside the points, spread apart where the points are close
        for m in members:
            here = sorted(
                (y, rate, STYLE.get(label, ("0.4",))[0])
                for label, pts in series[phase]
                for x, y, rate in pts
                if x == m
            )
            floor = -1e9
            for y, rate, colour in here:
                ty = max(y, floor + top * 0.045)
                floor = ty
                text = f"{y:.0f}" if phase != "half-64" else f"{y:.0f} ({rate / 1000:.0f}k/s)"
                left = m == members[0] and len(members) > 1  # the lines leave it rightwards
                x, ha = (m - 150, "right") if left else (m + 150, "left")
                ax.text(x, ty, text, fontsize=8, color=colour, va="center", ha=ha)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("members in the one room")
        ax.set_xticks(members, [f"{m:,}" for m in members])
        ax.set_xlim(members[0] - 1300, members[-1] + 1300)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("delivery latency p99, ms (64 B)")
    axes[0].set_ylim(0, top)
    fig.suptitle("p99 latency against room size: one process vs server.py --workers 2")
    order = [n for n in sorted(used) if not n.startswith("matrix-sweep")]
    order += [n for n in sorted(used, key=lambda n: len(n)) if n.startswith("matrix-sweep")]
    return [save(fig, "p99-workers.png", [used[n] for n in order])]


def draw_all(sizes: tuple[int, ...] = (500, 2000, 5000)) -> list[str]:
    """Draw every chart that has its inputs; returns the written paths (repo-relative)."""
    sweep = load_sweep(list(sizes))
    return [*draw_fanout(sweep), *draw_memory(), *draw_storm(), *draw_workers(sweep)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.charts")
    p.add_argument("--sweep", action="store_true", help="measure first (a few minutes)")
    p.add_argument("--members", default="500,2000,5000")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--messages", type=int, default=30)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    sizes = [int(x) for x in args.members.split(",")]
    if args.sweep:
        from bench import fanout_cluster

        for m in sizes:
            fanout_cluster.main(
                [
                    *("matrix", "--members", str(m), "--rooms", "1", "--runs", str(args.runs)),
                    *("--messages", str(max(args.messages, 60000 // m))),
                    *("--phases", "sat-64,half-64", "--mode", f"sweep{m}", "--no-docs"),
                ]
            )
    for path in draw_all(tuple(sizes)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
