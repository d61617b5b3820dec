"""Slow consumers on Redis: a fast publisher is never closed for their sake.

One node on Redis; ``MEMBERS`` members of a room, ``STALLED`` of which stop reading;
one publisher within its rate limit sends ``RATE`` pubs/s of 1 KiB. The stalled
members must be cut (4011) without slowing the others; the publisher must not be
closed (and if a queue limit is hit, a 429 must come before any close); every other
member receives every acknowledged message.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.chaos.audit import audit
from tests.chaos.conftest import Cluster, report, scaled
from tests.chaos.publisher import connect_member, publish
from tests.chaos.swarm import settle

MEMBERS = scaled(100, 500)
STALLED = 5
RATE = scaled(300, 500)
SECONDS = scaled(3.0, 10.0)
PROCS = scaled(1, 2)


async def _publish(port: int) -> object:
    ws = await connect_member(port, "publisher", "r")
    log = await publish(ws, "r", RATE, SECONDS, size=1024)
    ws.close()
    return log


@pytest.mark.timeout(scaled(90, 240))
def test_slow_consumers_do_not_close_the_publisher(cluster: Cluster) -> None:
    cluster.start_redis()
    node = cluster.node("slow", {"ratelimit.messages": 2 * RATE, "rooms.history_size": 10000})
    healthy = MEMBERS - STALLED
    per = healthy // PROCS
    members = [
        cluster.swarm({"port": node.port, "mode": "member", "room": "r", "count": per,
                       "first": i * per, "prefix": "m", "max_s": 120})
        for i in range(PROCS)
    ]  # fmt: skip
    stalled = cluster.swarm({"port": node.port, "mode": "stall", "room": "r", "count": STALLED,
                             "first": 0, "prefix": "z", "max_s": 120})  # fmt: skip
    for sw in members:
        assert sw.wait_ready(60) == per
    assert stalled.wait_ready(30) == STALLED
    started = time.monotonic()
    log = asyncio.run(_publish(node.port))
    took = time.monotonic() - started
    settled_s = settle(members)  # the members read everything the node sent them
    results = [sw.stop() for sw in members]
    stalled.stop()
    closes_4011 = node.metric('squall_closes_total{code="4011"}')
    figures = audit(set(log.acked), results, per * PROCS)  # type: ignore[attr-defined]
    figures.update(
        members=MEMBERS,
        stalled=STALLED,
        rate=RATE,
        sent=log.sent,  # type: ignore[attr-defined]
        achieved_pubs_per_s=round(len(log.acked) / took, 1),  # type: ignore[attr-defined]
        errs=log.errs,  # type: ignore[attr-defined]
        unanswered=log.unanswered,  # type: ignore[attr-defined]
        publisher_closed=log.close_code,  # type: ignore[attr-defined]
        first_429_before_close=(
            log.close_code is None  # type: ignore[attr-defined]
            or (log.first_429_at is not None and log.first_429_at <= log.closed_at)  # type: ignore[attr-defined]
        ),
        stalled_cut_4011=closes_4011,
        members_settled_s=round(settled_s, 1),
    )
    report("slow_consumers", figures)
    assert figures["publisher_closed"] is None
    assert figures["first_429_before_close"]
    assert figures["silent_lost"] == 0 and figures["duplicates"] == 0
    assert figures["unanswered"] == 0
