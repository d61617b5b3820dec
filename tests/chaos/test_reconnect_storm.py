"""A node restarts under thousands of clients: the drain spreads, the storm is absorbed.

One node on Redis holds ``CLIENTS`` clients (spread over several client processes).
SIGTERM: the node must spread its 1012 closes over the drain window. The clients
reconnect with jitter, honouring ``Retry-After``; the node comes back on the same
port (a restart: the storm hits the new process) and must readmit every one of them
within 30 s of coming back, without declaring Redis down (no false outage) and
without a wall of 503s. Readmission counted from each client's close is reported
too (it includes the restart itself).
"""

from __future__ import annotations

import time

import pytest

from tests.chaos.conftest import Cluster, report, scaled

CLIENTS = scaled(600, 5000)
PROCS = scaled(2, 5)
DRAIN_S = scaled(4.0, 10.0)
READMIT_S = 30.0


def _spread(times: list[float]) -> tuple[float, float]:
    """Seconds between the 5th and 95th percentile close, and the whole span."""
    if len(times) < 2:
        return 0.0, 0.0
    t = sorted(times)
    return t[int(0.95 * (len(t) - 1))] - t[int(0.05 * (len(t) - 1))], t[-1] - t[0]


@pytest.mark.timeout(scaled(120, 300))
def test_drain_then_reconnect_storm(cluster: Cluster) -> None:
    cluster.start_redis()
    config = {"server.drain_s": DRAIN_S, "limits.max_connections_per_user": 1}
    node = cluster.node("storm", config)
    per = CLIENTS // PROCS
    swarms = [
        cluster.swarm({"port": node.port, "mode": "hold", "count": per, "first": i * per,
                       "prefix": "s", "reconnect": True, "jitter_s": 1.0, "max_s": 200})
        for i in range(PROCS)
    ]  # fmt: skip
    for sw in swarms:
        assert sw.wait_ready(120) == per
    node.term()
    termed = time.monotonic()
    node.wait(DRAIN_S + 20)
    exited = time.monotonic() - termed
    node.start()
    restarted = time.monotonic() - termed
    back_wall = time.time()  # the storm on the new process starts here
    # every client back (bounded): the node's gauge says how many are connected
    deadline = time.monotonic() + READMIT_S + 10
    while node.metric("squall_connections") < CLIENTS and time.monotonic() < deadline:
        time.sleep(0.5)
    results = [sw.stop(60) for sw in swarms]
    closes = [t for r in results for t in r["close_times"]]
    outages = sorted(o for r in results for o in r["outages"])
    refusals: dict[str, int] = {}
    for r in results:
        for k, v in r["refusals"].items():
            refusals[k] = refusals.get(k, 0) + v
    p90, span = _spread(closes)
    second_start = node.log_text().split("listening on")[-1]
    figures = {
        "clients": CLIENTS,
        "drain_s": DRAIN_S,
        "closes_1012": sum(r["closes"].get("1012", 0) for r in results),
        "close_spread_p5_p95_s": round(p90, 2),
        "close_span_s": round(span, 2),
        "exit_after_term_s": round(exited, 2),
        "restart_after_term_s": round(restarted, 2),
        "readmitted": len(outages),
        "readmitted_within_30s_of_close": sum(1 for o in outages if o <= READMIT_S),
        "readmitted_within_30s_of_restart": sum(
            1 for r in results for t in r["readmit_times"] if t - back_wall <= READMIT_S
        ),
        "last_readmit_after_restart_s": round(
            max((t for r in results for t in r["readmit_times"]), default=back_wall) - back_wall, 2
        ),
        "outage_p50_s": round(outages[len(outages) // 2], 2) if outages else None,
        "outage_max_s": round(outages[-1], 2) if outages else None,
        "handshake_p99_s": max(r["handshake_p99"] for r in results),
        "refusals": refusals,
        "connect_errors": sum(r["errors"].get("connect", 0) for r in results),
        "false_outage": second_start.count("redis unavailable"),
    }
    report("reconnect_storm", figures)
    assert figures["closes_1012"] == CLIENTS
    assert figures["close_spread_p5_p95_s"] >= 0.5 * (DRAIN_S / 2) * 0.9
    assert figures["readmitted_within_30s_of_restart"] == CLIENTS
    assert figures["false_outage"] == 0
    assert refusals.get("503", 0) <= CLIENTS // 2
