"""Redis goes away under load, then comes back: no acknowledged message is lost silently.

Two nodes on one Redis, members of one room on both, a publisher at a steady rate.
Redis is stopped for a few seconds (a restart loses everything: no persistence), or
blackholed by the TCP fault proxy (the network eats nothing, it just stops). Every
pub the publisher saw acknowledged must reach every member, in order and once, or
the member must have been told (``resync``); pubs are refused with 503 while the
publisher's node is not subscribed; the nodes are ready again within a bound.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.chaos.audit import audit
from tests.chaos.conftest import Cluster, report, scaled
from tests.chaos.procs import NodeProc
from tests.chaos.proxy import FaultProxy
from tests.chaos.publisher import connect_member, publish
from tests.chaos.swarm import settle

MEMBERS = scaled(20, 100)
RATE = scaled(100, 200)
CONFIG = {"ratelimit.messages": 100000, "rooms.history_size": 5000}


def _ready(node: NodeProc) -> bool:
    return node.get("/readyz", timeout=2)[0] == 200


async def _publish_through(
    port: int, fault: float, down_s: float, start_fault: object, end_fault: object
) -> tuple[object, dict[str, float]]:
    ws = await connect_member(port, "publisher", "r")
    loop = asyncio.get_running_loop()
    timings: dict[str, float] = {}
    total = fault + down_s + scaled(3, 5)

    async def faults() -> None:
        await asyncio.sleep(fault)
        await loop.run_in_executor(None, start_fault)
        timings["down_at"] = time.monotonic()
        await asyncio.sleep(down_s)
        await loop.run_in_executor(None, end_fault)
        timings["up_at"] = time.monotonic()

    f = asyncio.ensure_future(faults())
    log = await publish(ws, "r", RATE, total)
    await f
    ws.close()
    return log, timings


def _scenario(cluster: Cluster, name: str, url: str, start_fault: object, end_fault: object,
              down_s: float) -> None:  # fmt: skip
    a = cluster.node("a", CONFIG, url=url)
    b = cluster.node("b", CONFIG, url=url)
    half = MEMBERS // 2
    swarms = [
        cluster.swarm({"port": n.port, "mode": "member", "room": "r", "count": half,
                       "first": i * half, "prefix": "m", "reconnect": True, "max_s": 120})
        for i, n in enumerate((a, b))
    ]  # fmt: skip
    for sw in swarms:
        assert sw.wait_ready(30) == half
    log, timings = asyncio.run(_publish_through(a.port, 2.0, down_s, start_fault, end_fault))
    # readiness comes back by itself
    deadline = time.monotonic() + 20
    while not (_ready(a) and _ready(b)):
        assert time.monotonic() < deadline, "nodes not ready again"
        time.sleep(0.05)
    ready_after = time.monotonic() - timings["up_at"]
    settle(swarms)  # the members read everything the nodes sent them
    results = [sw.stop() for sw in swarms]
    figures = audit(set(log.acked), results, MEMBERS)  # type: ignore[attr-defined]
    figures.update(
        sent=log.sent,  # type: ignore[attr-defined]
        refused_503=log.errs.get(503, 0),  # type: ignore[attr-defined]
        other_errs=sum(v for k, v in log.errs.items() if k != 503),  # type: ignore[attr-defined]
        unanswered=log.unanswered,  # type: ignore[attr-defined]
        publisher_closed=log.close_code,  # type: ignore[attr-defined]
        ready_after_s=round(ready_after, 2),
        member_closes=sum(sum(r["closes"].values()) for r in results),
    )
    report(name, figures)
    assert figures["silent_lost"] == 0
    assert figures["duplicates"] == 0 and figures["order_violations"] == 0
    assert figures["publisher_closed"] is None
    assert figures["unanswered"] == 0
    assert ready_after < 8.0  # reconnect backoff is capped at 2 s; loaded machine
    assert figures["acked"] > 0


@pytest.mark.timeout(scaled(90, 240))
def test_redis_restart_under_load(cluster: Cluster) -> None:
    redis = cluster.start_redis()
    down = scaled(2.0, 3.0)
    _scenario(cluster, "redis_restart", redis.url, redis.stop, redis.start, down)


@pytest.mark.timeout(scaled(90, 240))
def test_redis_blackholed_by_proxy(cluster: Cluster) -> None:
    redis = cluster.start_redis()
    proxy = FaultProxy(redis.port).start()
    try:
        down = scaled(4.0, 10.0)
        _scenario(cluster, "redis_blackhole", proxy.url, lambda: proxy.set_mode("blackhole"),
                  lambda: proxy.set_mode("pass"), down)  # fmt: skip
    finally:
        proxy.stop()
