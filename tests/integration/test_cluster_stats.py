"""``GET /api/stats`` across a cluster: every node's stats record, and the totals.

Three nodes on one real redis-server (one key prefix per test) write their records
every 0.2 s; any node's ``/api/stats`` lists all of them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from core import __version__
from tests.conftest import NodeFactory
from tests.harness import RunningNode, connect, token
from tests.redis_server import shared_server
from tests.security import Response, http

Start = Callable[[str], Awaitable[RunningNode]]

INTERVAL = {"server.stats_interval_s": 0.2}


@pytest.fixture
def start(nodes: NodeFactory) -> Start:
    url = shared_server().url
    prefix = f"squall-stats:{uuid.uuid4().hex}:"

    async def run(node_id: str) -> RunningNode:
        conf = {"backend.url": url, "backend.key_prefix": prefix, **INTERVAL}
        return await nodes(conf, node_id=node_id)

    return run


async def stats(node: RunningNode) -> Response:
    headers = {"Authorization": f"Bearer {token('ops', role='admin')}"}
    return await http(node, "GET", "/api/stats", headers=headers)


async def stats_until(
    node: RunningNode, pred: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> dict[str, Any]:
    """The first /api/stats body for which ``pred`` holds (polled every 0.1 s, bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        r = await stats(node)
        assert r.status == 200, r.body
        if pred(r.body):
            return r.body
        assert loop.time() < deadline, f"never reached: {r.body}"
        await asyncio.sleep(0.1)


@pytest.mark.gen_test(timeout=40)
async def test_stats_list_every_node_of_a_three_node_cluster(start: Start) -> None:
    a, b, c = [await start(n) for n in ("a", "b", "c")]
    clients = [await connect(a, token("alice")), await connect(b, token("bob"))]
    clients.append(await connect(b, token("carol")))
    await clients[0].request({"t": "join", "room": "lobby"})

    def settled(body: dict[str, Any]) -> bool:
        conns = {r["node"]: r["connections"] for r in body["nodes"]}
        return conns == {"a": 1, "b": 2, "c": 0}

    for node in (a, b, c):  # every node sees the whole cluster
        body = await stats_until(node, settled)
        assert [r["node"] for r in body["nodes"]] == ["a", "b", "c"]
    # the keys that were there before are kept
    assert body["node"]["id"] == "c" and body["node"]["connections"] == 0
    assert body["cluster"]["connections"] == 3
    rec = {r["node"]: r for r in body["nodes"]}
    assert rec["a"]["rooms"] == 1 and rec["b"]["users"] == 2
    assert rec["b"]["handshakes"]["101"] == 2 and rec["a"]["frames_in"] >= 1
    for r in body["nodes"]:
        assert r["version"] == __version__ and r["ready"] is True and r["draining"] is False
        assert r["ts"] > r["started_at"] > 0 and r["interval_s"] == 0.2
        assert r["max_connections"] == 20000
    await stats_until(c, lambda body: all(r["backend_rtt_ms"] is not None for r in body["nodes"]))
    totals = body["totals"]
    assert totals["nodes"] == 3 and totals["ready"] == 3 and totals["connections"] == 3
    assert totals["users"] == 3 and totals["handshakes"]["101"] == 3
    assert totals["max_connections"] == 3 * 20000

    # a node that stops leaves the list at once (its record is removed, not left to expire)
    for client in clients[1:]:
        client.close()
    await b.stop()
    r = await stats(a)
    assert [rec["node"] for rec in r.body["nodes"]] == ["a", "c"]
    assert r.body["totals"]["nodes"] == 2
    clients[0].close()


@pytest.mark.gen_test(timeout=30)
async def test_a_node_that_dies_disappears_within_three_intervals(start: Start) -> None:
    a = await start("a")
    b = await start("b")
    await stats_until(a, lambda body: len(body["nodes"]) == 2)
    # b's writer stops without removing its record, as when the process is killed
    await b.node.stats.stop(drop=False)
    loop = asyncio.get_running_loop()
    gone_from = loop.time()
    body = await stats_until(a, lambda body: [r["node"] for r in body["nodes"]] == ["a"])
    assert loop.time() - gone_from < 3 * 0.2 + 1.0
    assert body["totals"]["nodes"] == 1
