"""The cluster stats records of :class:`~core.backend.base.Backend`, on every backend kind.

Guarantees from ``put_node_stats`` / ``drop_node_stats`` / ``node_stats``: a record
comes back as written (JSON values) with ``node`` set to the writer, a new write
replaces the old one, it vanishes ``ttl_s`` after its last write or at once when
dropped, and every node of a cluster sees every live record, sorted by node id.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tornado.ioloop import IOLoop

from tests.contract.conftest import DRIVERS, Harness, _harness

pytestmark = pytest.mark.gen_test(timeout=20)


@pytest.fixture(params=sorted(kind for kind, driver in DRIVERS.items() if driver.shared))
def nodes_of_one_cluster(request: pytest.FixtureRequest, io_loop: IOLoop) -> Iterator[Harness]:
    """A :class:`Harness` for every kind whose backends share one store (no skips)."""
    yield from _harness(request, io_loop)


def record(connections: int, **extra: object) -> dict[str, object]:
    return {
        "ts": 1_700_000_000_000,
        "connections": connections,
        "ready": True,
        "handshakes": {"101": 3, "401": 1},
        "backend_rtt_ms": 0.25,
        **extra,
    }


async def test_record_round_trips_with_the_writer_as_node(harness: Harness) -> None:
    b = await harness.make_backend("n1")
    assert await b.node_stats() == []
    await b.put_node_stats(record(7, node="someone-else"), ttl_s=30)
    assert await b.node_stats() == [{**record(7), "node": "n1"}]


async def test_a_new_write_replaces_the_previous_record(harness: Harness) -> None:
    b = await harness.make_backend("n1")
    await b.put_node_stats(record(1), ttl_s=30)
    await b.put_node_stats(record(2), ttl_s=30)
    stats = await b.node_stats()
    assert [s["connections"] for s in stats] == [2]


async def test_record_expires_ttl_after_its_last_write(harness: Harness) -> None:
    b = await harness.make_backend("n1")
    await b.put_node_stats(record(1), ttl_s=0.6)
    await harness.advance(0.3)
    await b.put_node_stats(record(2), ttl_s=0.6)  # rewritten: lives 0.6 s from here
    await harness.advance(0.4)
    assert [s["connections"] for s in await b.node_stats()] == [2]
    await harness.advance(0.4)
    assert await b.node_stats() == []


async def test_drop_removes_the_record_at_once_and_is_idempotent(harness: Harness) -> None:
    b = await harness.make_backend("n1")
    await b.put_node_stats(record(1), ttl_s=30)
    await b.drop_node_stats()
    assert await b.node_stats() == []
    await b.drop_node_stats()
    assert await b.node_stats() == []


async def test_ttl_must_be_positive(harness: Harness) -> None:
    b = await harness.make_backend("n1")
    with pytest.raises(ValueError):
        await b.put_node_stats(record(1), ttl_s=0)


async def test_every_node_sees_every_live_record(nodes_of_one_cluster: Harness) -> None:
    nodes = [await nodes_of_one_cluster.make_backend(name) for name in ("n3", "n1", "n2")]
    for i, b in enumerate(nodes):
        await b.put_node_stats(record(i), ttl_s=30)
    for b in nodes:
        stats = await b.node_stats()
        assert [s["node"] for s in stats] == ["n1", "n2", "n3"]
        assert {s["node"]: s["connections"] for s in stats} == {"n3": 0, "n1": 1, "n2": 2}
    await nodes[1].drop_node_stats()
    assert [s["node"] for s in await nodes[0].node_stats()] == ["n2", "n3"]


async def test_a_dead_node_disappears_within_its_ttl(nodes_of_one_cluster: Harness) -> None:
    alive = await nodes_of_one_cluster.make_backend("alive")
    dead = await nodes_of_one_cluster.make_backend("dead")
    await dead.put_node_stats(record(1), ttl_s=0.5)
    await alive.put_node_stats(record(2), ttl_s=30)
    assert [s["node"] for s in await alive.node_stats()] == ["alive", "dead"]
    await nodes_of_one_cluster.advance(0.7)
    assert [s["node"] for s in await alive.node_stats()] == ["alive"]
