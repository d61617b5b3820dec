"""Handshakes arriving together: the Backend contract when their calls are batched.

A reconnect storm puts many handshakes in one loop iteration; the Redis backend then
answers their ``access_state``, ``admit`` and ``inbox_list`` calls from shared round
trips (core/backend/redis_batch.py). These tests run every kind of backend through
such a storm, on two nodes where the store is shared, and check that each call still
gets its own answer and that the per-user cap stays exact.
"""

from __future__ import annotations

import asyncio

import pytest

from core.backend.base import Backend, DirectMessage, InboxPage, SessionRecord
from tests.contract.conftest import Harness

pytestmark = pytest.mark.gen_test(timeout=30)

USERS = 8
PER_USER = 12
LIMIT = 3


def _record(uid: str, conn_id: str, node: str) -> SessionRecord:
    return SessionRecord(conn_id=conn_id, uid=uid, node_id=node, ip="10.0.0.1", connected_at=0)


async def _nodes(harness: Harness) -> list[Backend]:
    first = await harness.make_backend("n1")
    return [first, await harness.make_backend("n2")] if harness.shared else [first]


async def test_storm_of_handshakes_keeps_the_exact_cap_and_answers_each_call(
    harness: Harness,
) -> None:
    nodes = await _nodes(harness)
    await nodes[0].ban("u1", None)
    await nodes[0].revoke_jti("jti-u2", harness.now_ms() + 60_000)
    for i in range(USERS):
        await nodes[0].inbox_put(
            DirectMessage(mid=f"m{i}", to_uid=f"u{i}", from_uid="x", data=b"", ts=i)
        )
    calls = []
    records = []
    for i in range(USERS):
        for j in range(PER_USER):
            node = nodes[(i + j) % len(nodes)]
            record = _record(f"u{i}", f"c{i}-{j}", node.node_id)
            records.append(record)
            calls.append(node.access_state("10.0.0.1", f"u{i}", f"jti-u{i}"))
            calls.append(node.admit(record, LIMIT, "reject"))
            calls.append(node.inbox_list(f"u{i}"))
    results = await asyncio.gather(*calls)  # one loop iteration submits them all
    states, admissions, inboxes = results[0::3], results[1::3], results[2::3]
    for k, record in enumerate(records):
        uid = record.uid
        assert states[k].banned == (uid == "u1")
        assert states[k].revoked == (uid == "u2")
        assert states[k].lockout_s == 0
        assert [m.mid for m in inboxes[k]] == [f"m{uid[1:]}"]
    for i in range(USERS):
        won = [
            r.conn_id
            for r, a in zip(records, admissions, strict=True)
            if r.uid == f"u{i}" and a.admitted
        ]
        assert len(won) == LIMIT  # exact, across both nodes
        live = await nodes[-1].sessions_of(f"u{i}")
        assert sorted(s.conn_id for s in live) == sorted(won)
    counts = await nodes[0].cluster_counts()
    assert sum(counts.values()) == USERS * LIMIT


async def test_storm_with_kick_oldest_leaves_exactly_the_cap(harness: Harness) -> None:
    nodes = await _nodes(harness)
    records = [_record("alice", f"c{j}", nodes[j % len(nodes)].node_id) for j in range(40)]
    results = await asyncio.gather(
        *(nodes[j % len(nodes)].admit(r, LIMIT, "kick_oldest") for j, r in enumerate(records))
    )
    assert all(res.admitted for res in results)
    evicted = [s.conn_id for res in results for s in res.evicted]
    assert len(evicted) == len(set(evicted)) == 40 - LIMIT
    live = {s.conn_id for s in await nodes[0].sessions_of("alice")}
    assert len(live) == LIMIT and live.isdisjoint(evicted)
    assert sum((await nodes[0].cluster_counts()).values()) == LIMIT


async def test_a_handshake_that_goes_away_frees_its_slot(harness: Harness) -> None:
    nodes = await _nodes(harness)
    b = nodes[0]
    gone = _record("carol", "gone", b.node_id)
    task = asyncio.ensure_future(b.admit(gone, 1, "reject"))
    await asyncio.sleep(0)  # submitted; on Redis not yet answered
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass  # the backend undoes what the admission did
    else:
        await b.release(gone)  # it finished first: the caller owns it, as the gate does
    # the slot it may have been given comes back: a new login is admitted at cap 1
    for _ in range(100):
        if not await b.sessions_of("carol"):
            break
        await asyncio.sleep(0.02)
    assert (await b.admit(_record("carol", "next", b.node_id), 1, "reject")).admitted


async def test_an_admission_reads_access_and_the_inbox_in_its_own_step(harness: Harness) -> None:
    """``Admission.access`` and ``Admission.inbox``: read with the registry write where
    the backend can (memory, one Redis), left to the caller on a cluster (None)."""
    nodes = await _nodes(harness)
    b = nodes[-1]
    await nodes[0].ban("banned", None)
    await nodes[0].revoke_jti("jti-revoked", harness.now_ms() + 60_000)
    for uid in ("ok", "banned", "revoked"):
        for i in range(3):
            dm = DirectMessage(mid=f"{uid}{i}", to_uid=uid, from_uid="x", data=b"d" * 10, ts=i)
            await nodes[0].inbox_put(dm)

    def rec(uid: str, conn: str) -> SessionRecord:
        return SessionRecord(conn, uid, b.node_id, "10.0.0.1", 0, jti=f"jti-{uid}")

    page = InboxPage(max_bytes=1, seen_ttl_s=60)
    results = await asyncio.gather(
        *(b.admit(rec(uid, f"c-{uid}"), 5, "reject", page) for uid in ("ok", "banned", "revoked"))
    )
    ok, banned, revoked = results
    assert all(r.admitted for r in results)  # the gate refuses (and releases) these
    if harness.kind == "redis-cluster":
        assert all(r.access is None and r.inbox is None for r in results)
        return
    assert ok.access is not None and not ok.access.revoked and not ok.access.banned
    assert ok.inbox is not None and [m.mid for m in ok.inbox] == ["ok0"]  # one page, >= 1
    assert await b.was_seen("ok") and not await b.was_seen("banned")
    assert banned.access is not None and banned.access.banned and banned.inbox is None
    assert revoked.access is not None and revoked.access.revoked and revoked.inbox is None
    # indexed under its node in the same step; a rejected one is not
    assert (await b.cluster_counts()).get(b.node_id) == 3
    full = await b.admit(rec("ok", "c-2"), 1, "reject", page)
    assert not full.admitted and full.inbox is None
    assert (await b.cluster_counts()).get(b.node_id) == 3
    # no inbox asked: none read, access still read
    plain = await b.admit(rec("ok2", "c-3"), 5, "reject")
    assert plain.inbox is None and plain.access is not None
