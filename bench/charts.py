"""Charts: throughput and latency against room size, Squall and its peers.

    python -m bench.charts [--sweep] [--members 500,2000,5000] [--runs 1]

``--sweep`` first measures (bench.fanout_cluster matrix, one room, phases ``sat-64``
and ``half-64``, each size written to ``bench/results/matrix-sweep<M>.json``); then,
with or without it, draws ``docs/img/fanout-throughput.png`` (deliveries/s at
saturation) and ``docs/img/fanout-latency.png`` (p50 and p99 at half the saturation
rate) from those files. matplotlib, Agg backend (no display needed).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bench import REPO

__all__ = ["main"]

IMG = REPO / "docs" / "img"
RESULTS = REPO / "bench" / "results"


def load(sizes: list[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for m in sizes:
        path = RESULTS / f"matrix-sweep{m}.json"
        if path.exists():
            summary = json.loads(path.read_text())["summary"]
            out[m] = next(iter(summary.values()))  # the one layout: {target: {phase: ...}}
    return out


def draw(data: dict[int, dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    sizes = sorted(data)
    targets = sorted({t for d in data.values() for t in d})
    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in targets:
        ys = [(data[m].get(t, {}).get("sat-64", {}).get("deliveries_per_s") or 0) for m in sizes]
        ax.plot(sizes, ys, marker="o", label=t)
    ax.set_xlabel("members in the room")
    ax.set_ylabel("deliveries / s (saturation, 64 B)")
    ax.set_title("Fan-out throughput, one server core")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = IMG / "fanout-throughput.png"
    fig.savefig(path, dpi=100)
    written.append(str(path.relative_to(REPO)))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in targets:
        for q, style in (("latency_p50_ms", "-"), ("latency_p99_ms", "--")):
            ys = [(data[m].get(t, {}).get("half-64", {}).get(q) or 0) for m in sizes]
            ax.plot(sizes, ys, style, marker="o", label=f"{t} {q.split('_')[1]}")
    ax.set_xlabel("members in the room")
    ax.set_ylabel("delivery latency, ms")
    ax.set_title("Latency at half of the saturation rate (64 B)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = IMG / "fanout-latency.png"
    fig.savefig(path, dpi=100)
    written.append(str(path.relative_to(REPO)))
    plt.close(fig)
    return written


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
    for path in draw(load(sizes)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
