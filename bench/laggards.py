"""Scenario 7, laggards: 1 % of the members stop reading during a fan-out.

    python -m bench.laggards [--members 1000] [--messages 600] [--payload 1024] [--mode M]

Squall (memory backend) with ``limits.outbound_buffer_bytes: 262144`` (256 KiB, not the
bench default of 64 MiB) so that a member that stops reading is cut (close 4011) once
its server-side queue passes 256 KiB, plus whatever the kernel's socket buffers hold.
Phases, one server start (bench.fanout.run_phases): ``before`` (everyone reads), then
``lagging``: every 100th member pauses reading (``transport.pause_reading()``) just
before it. Reported: healthy members' deliveries/s in both phases, server RSS before,
peak and after, and the time from the start of ``lagging`` until the server's open
file descriptors dropped by the number of laggards (the laggards were cut); then the
laggards read again and count the close codes they find.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bench_lock, machine_info
from bench.fanout import Layout, Phase, run_phases
from bench.peers import SQUALL_YAML, TARGETS, SquallTarget
from bench.results import envelope, save, update_docs

__all__ = ["main"]

LIMIT = 262144


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    base = TARGETS["squall"]
    assert isinstance(base, SquallTarget)
    yaml = SQUALL_YAML.replace("outbound_buffer_bytes: 67108864", f"outbound_buffer_bytes: {LIMIT}")
    target = dataclasses.replace(base, name="squall_256k", yaml=yaml)
    layout = Layout(members=args.members, rooms=1, lag_every=100)
    phases = [
        Phase("before", args.messages // 3, payload=args.payload),
        Phase("lagging", args.messages, payload=args.payload, lag=True),
    ]
    with bench_lock():
        r = await run_phases(target, layout, phases, workdir)
    lag = r["phases"].get("lagging", {})
    samples = lag.get("samples") or []
    laggards = args.members // 100
    cut_s = None
    if samples:
        fd0 = samples[0][2]
        for t, _rss, fds in samples:
            if fds <= fd0 - laggards:
                cut_s = t
                break
    r["laggards"] = laggards
    r["cut_after_s"] = cut_s
    r["rss_peak_kib"] = max((s[1] for s in samples), default=None)
    return r


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.laggards")
    p.add_argument("--members", type=int, default=1000)
    p.add_argument("--messages", type=int, default=600)
    p.add_argument("--payload", type=int, default=1024)
    p.add_argument("--mode", default="")
    args = p.parse_args(raw)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="squall-bench-lag-") as tmp:
        r = asyncio.run(run(args, Path(tmp)))
    m = machine_info()
    b, lag = r["phases"].get("before", {}), r["phases"].get("lagging", {})
    text = (
        f"Command: `python -m bench.laggards {' '.join(raw)}` "
        f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}, git {m['git_commit']}, "
        f"{time.monotonic() - started:.0f} s). Squall with `limits.outbound_buffer_bytes: "
        f"{LIMIT}` (256 KiB); {args.members:,} members, {r['laggards']} laggards (1 in 100), "
        f"{args.payload} B payloads.\n\n"
        "| | before (all read) | lagging |\n|---|---|---|\n"
        f"| messages per member | {b.get('phase', {}).get('messages')} | "
        f"{lag.get('phase', {}).get('messages')} |\n"
        f"| deliveries / s (healthy members) | {b.get('deliveries_per_s') or 0:,.0f} | "
        f"{lag.get('deliveries_per_s') or 0:,.0f} |\n"
        f"| µs server CPU per delivery | {b.get('us_per_delivery') or 0:.2f} | "
        f"{lag.get('us_per_delivery') or 0:.2f} |\n"
        f"| latency p99, ms | {b.get('latency_p99_ms')} | {lag.get('latency_p99_ms')} |\n"
        f"| server RSS, MiB (start of phase / end) | {b.get('rss_kib_before', 0) / 1024:.1f} / "
        f"{b.get('rss_kib_after', 0) / 1024:.1f} | {lag.get('rss_kib_before', 0) / 1024:.1f} / "
        f"{lag.get('rss_kib_after', 0) / 1024:.1f} (peak {(r['rss_peak_kib'] or 0) / 1024:.1f}) |\n"
        f"| laggards cut after (s from phase start; fd count, 100 ms sampling) | | "
        f"{r['cut_after_s']} |\n"
        f"| healthy members complete | {b.get('complete')} | {lag.get('complete')} |\n"
    )
    report = {
        **envelope("laggards", args.mode or "custom", f"python -m bench.laggards {' '.join(raw)}"),
        **r,
        "markdown": text,
    }
    _path, committed = save(f"laggards-{args.mode or 'custom'}", report)
    print(text)
    if committed:
        update_docs(f"laggards-{args.mode}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
