"""The :class:`~core.backend.base.Backend` contract, run against every backend kind.

Each test states one guarantee from ``core/backend/base.py``. Absence of a delivery
is checked with a *barrier*: something delivered after it on the same node proves
that it did not come first (delivery to one node is in order). Expiry tests use TTLs
of about one second and ``harness.advance`` (instant for memory, real for Redis).

The last section covers what only :class:`~core.backend.memory.MemoryBackend`
promises (asynchronous delivery, dropped foreign commands, bounded memory).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from core.backend.base import (
    AttemptLimits,
    Backend,
    DirectMessage,
    InboxQuotaExceeded,
    Membership,
    NodeCommand,
    NodeOp,
    PresenceEvent,
    Publication,
    PublishRequest,
    RateLimited,
    RateSpec,
    RotateOutcome,
    SessionRecord,
    inbox_size,
)
from core.backend.memory import PURGE_INTERVAL_S, MemoryBackend
from core.config import RoomsConfig
from core.namespaces import RoomRules, parse_namespaces
from tests.contract.conftest import Harness, Recorder

pytestmark = pytest.mark.gen_test(timeout=20)


def session(uid: str, conn_id: str, node: str = "n1", at: int = 0) -> SessionRecord:
    return SessionRecord(conn_id=conn_id, uid=uid, node_id=node, ip="10.0.0.1", connected_at=at)


def dm(mid: str, to: str = "bob", ts: int = 0) -> DirectMessage:
    return DirectMessage(mid=mid, to_uid=to, from_uid="alice", data=mid.encode(), ts=ts)


async def barrier(backend: Backend, rec: Recorder) -> None:
    """Publish to a subscribed side room and wait for it: everything before is in."""
    await backend.subscribe_room("barrier")
    pub = await backend.publish("barrier", b"", None, 0)
    await rec.wait_for(lambda: pub in rec.publications)


def room_pubs(rec: Recorder, room: str) -> list[int]:
    return [p.seq for p in rec.publications if p.room == room]


# -- life cycle ------------------------------------------------------------------


async def test_available_from_start_until_close(harness: Harness) -> None:
    b = await harness.make_backend()
    assert b.available
    await harness.close(b)
    assert not b.available


# -- rooms: seq, delivery, history -----------------------------------------------


async def test_seq_is_gap_free_and_delivered_in_order_under_concurrent_publishes(
    harness: Harness,
) -> None:
    b = await harness.make_backend()
    rec = harness.recorder(b)
    await b.subscribe_room("r")
    pubs = await asyncio.gather(*(b.publish("r", b"%d" % i, "u", i) for i in range(200)))
    assert sorted(p.seq for p in pubs) == list(range(1, 201))
    assert len({p.epoch for p in pubs}) == 1
    await rec.wait_for(lambda: len(rec.publications) == 200)
    assert [p.seq for p in rec.publications] == list(range(1, 201))
    assert sorted(rec.publications, key=lambda p: p.seq) == sorted(pubs, key=lambda p: p.seq)
    assert (await b.position("r")).seq == 200


async def test_publication_carries_its_fields_and_is_delivered_as_returned(
    harness: Harness,
) -> None:
    b = await harness.make_backend()
    rec = harness.recorder(b)
    await b.subscribe_room("r")
    pos = await b.position("r")
    pub = await b.publish("r", b"\x81\xa1a\x01", "alice", 1234, origin="c1:7")
    assert (pub.room, pub.seq, pub.epoch) == ("r", 1, pos.epoch)
    assert (pub.from_uid, pub.ts, pub.data, pub.origin) == ("alice", 1234, b"\x81\xa1a\x01", "c1:7")
    server = await b.publish("r", b"", None, 5)
    assert (server.seq, server.from_uid, server.origin) == (2, None, None)
    await rec.wait_for(lambda: len(rec.publications) == 2)
    assert rec.publications == [pub, server]


async def test_publish_many_keeps_request_order_and_fails_each_request_alone(
    harness: Harness,
) -> None:
    b = await harness.make_backend()
    rec = harness.recorder(b)
    await b.subscribe_room("pm")
    rate = RateSpec("rl:pm-user", 5, 60.0)
    requests = [
        PublishRequest("pm", b"%d" % i, "u", i, origin=f"c:{i}", rate=rate) for i in range(8)
    ]
    first = await b.publish_many(requests[:3])
    rest = await b.publish_many(requests[3:])
    outcomes = first + rest
    published = [o for o in outcomes if isinstance(o, Publication)]
    # the first five fit the limit, in request order; the last three are refused alone
    assert [p.seq for p in published] == [1, 2, 3, 4, 5]
    assert [p.data for p in published] == [b"0", b"1", b"2", b"3", b"4"]
    assert [p.origin for p in published] == [f"c:{i}" for i in range(5)]
    assert all(isinstance(o, RateLimited) and o.retry_after > 0 for o in outcomes[5:])
    await rec.wait_for(lambda: len(room_pubs(rec, "pm")) == 5)
    assert room_pubs(rec, "pm") == [1, 2, 3, 4, 5]
    assert await b.publish_many([]) == []


async def test_position_of_unknown_room_is_zero_with_a_stable_epoch(harness: Harness) -> None:
    b = await harness.make_backend()
    first = await b.position("fresh")
    assert first.seq == 0 and first.epoch
    assert await b.position("fresh") == first
    assert (await b.publish("fresh", b"", None, 0)).epoch == first.epoch
    other = await b.position("other")
    assert other.epoch != first.epoch


async def test_only_subscribed_rooms_are_delivered(harness: Harness) -> None:
    b = await harness.make_backend()
    rec = harness.recorder(b)
    await b.publish("a", b"", None, 0)
    await b.subscribe_room("b")
    await b.subscribe_room("b")  # idempotent: still one delivery per publication
    await b.publish("b", b"", None, 0)
    await barrier(b, rec)
    assert room_pubs(rec, "a") == []
    assert room_pubs(rec, "b") == [1]

    await b.unsubscribe_room("b")
    await b.unsubscribe_room("b")
    await b.publish("b", b"", None, 0)
    await b.subscribe_room("c")
    await b.publish("c", b"", None, 0)
    await rec.wait_for(lambda: room_pubs(rec, "c") == [1])
    assert room_pubs(rec, "b") == [1]


async def test_recover_returns_history_after_since(harness: Harness) -> None:
    b = await harness.make_backend(history_size=5)
    for i in range(8):
        await b.publish("r", b"%d" % i, None, i)
    pos = await b.position("r")
    assert pos.seq == 8

    full = await b.recover("r", 3, pos.epoch)
    assert full.recovered and full.position == pos
    assert [p.seq for p in full.publications] == [4, 5, 6, 7, 8]
    assert full.publications[0].data == b"3"

    no_epoch = await b.recover("r", 5, None)
    assert no_epoch.recovered and [p.seq for p in no_epoch.publications] == [6, 7, 8]

    for since in (0, 2):  # history no longer reaches back to since + 1
        partial = await b.recover("r", since, pos.epoch)
        assert not partial.recovered
        assert [p.seq for p in partial.publications] == [4, 5, 6, 7, 8]

    for since in (8, 9):  # nothing missed
        up_to_date = await b.recover("r", since, pos.epoch)
        assert up_to_date.recovered and up_to_date.publications == []


async def test_recover_with_another_epoch_recovers_nothing(harness: Harness) -> None:
    b = await harness.make_backend()
    await b.publish("r", b"", None, 0)
    pos = await b.position("r")
    lost = await b.recover("r", 0, "not-" + pos.epoch)
    assert (lost.recovered, lost.publications, lost.position) == (False, [], pos)


async def test_history_expires_after_last_publish_and_a_new_epoch_begins(
    harness: Harness,
) -> None:
    b = await harness.make_backend(history_ttl_s=1)
    await b.publish("r", b"", None, 0)
    await harness.advance(0.6)
    await b.publish("r", b"", None, 0)  # pushes expiry to 1 s from now
    await harness.advance(0.6)
    old = await b.position("r")
    assert old.seq == 2
    await harness.advance(1.1)

    new = await b.position("r")
    assert new.seq == 0 and new.epoch != old.epoch
    stale = await b.recover("r", 2, old.epoch)
    assert (stale.recovered, stale.publications) == (False, [])
    pub = await b.publish("r", b"", None, 0)
    assert (pub.seq, pub.epoch) == (1, new.epoch)


async def test_room_namespaces_give_each_room_its_own_history_size(harness: Harness) -> None:
    """rooms.namespaces: history size per room, through publish and publish_many."""
    rules = RoomRules(
        RoomsConfig(
            history_size=4,
            namespaces=parse_namespaces(
                [{"pattern": "none:*", "history_size": 0}, {"pattern": "big:*", "history_size": 6}]
            ),
        )
    )
    b = await harness.make_backend(history_size=4, room_history=rules.history)
    for room in ("none:a", "big:a", "plain"):
        for i in range(8):
            await b.publish(room, b"%d" % i, None, i)
        await b.publish_many([PublishRequest(room, b"x", None, 0) for _ in range(2)])
    kept = {}
    for room in ("none:a", "big:a", "plain"):
        rec = await b.recover(room, 0, None)
        assert rec.position.seq == 10
        kept[room] = [p.seq for p in rec.publications]
    assert kept == {"none:a": [], "big:a": [5, 6, 7, 8, 9, 10], "plain": [7, 8, 9, 10]}


async def test_room_namespaces_give_each_room_its_own_history_ttl(harness: Harness) -> None:
    rules = RoomRules(
        RoomsConfig(
            history_ttl_s=60,
            namespaces=parse_namespaces([{"pattern": "brief:*", "history_ttl_s": 1}]),
        )
    )
    b = await harness.make_backend(history_ttl_s=60, room_history=rules.history)
    await b.publish("brief:a", b"", None, 0)
    await b.publish("long", b"", None, 0)
    brief, long = await b.position("brief:a"), await b.position("long")
    await harness.advance(1.2)
    assert (await b.position("brief:a")).epoch != brief.epoch  # expired: a new epoch
    assert await b.position("long") == long


# -- presence --------------------------------------------------------------------


async def test_presence_first_join_and_last_leave_per_user(harness: Harness) -> None:
    b = await harness.make_backend()
    rec = harness.recorder(b)
    await b.subscribe_room("r")
    a1, a2, bob = (
        Membership("r", "alice", "c1"),
        Membership("r", "alice", "c2"),
        Membership("r", "bob", "c3"),
    )
    assert await b.presence_join(a1, announce=True)
    assert not await b.presence_join(a2, announce=True)
    assert await b.presence_join(bob, announce=True)
    assert await b.presence_members("r") == ["alice", "bob"]
    assert not await b.presence_leave(a1, announce=True)
    assert await b.presence_members("r") == ["alice", "bob"]
    assert await b.presence_leave(a2, announce=True)
    assert await b.presence_members("r") == ["bob"]

    expected = [
        PresenceEvent("r", "alice", "join", "c1"),
        PresenceEvent("r", "bob", "join", "c3"),
        PresenceEvent("r", "alice", "leave", "c2"),
    ]
    await rec.wait_for(lambda: len(rec.presence) == 3)
    await barrier(b, rec)
    assert rec.presence == expected


async def test_presence_rejoin_and_unknown_leave_change_nothing(harness: Harness) -> None:
    b = await harness.make_backend()
    m = Membership("r", "alice", "c1")
    assert await b.presence_join(m, announce=False)
    assert not await b.presence_join(m, announce=False)
    assert not await b.presence_leave(Membership("r", "alice", "nope"), announce=False)
    assert not await b.presence_leave(Membership("elsewhere", "alice", "c1"), announce=False)
    assert await b.presence_members("r") == ["alice"]
    assert await b.presence_leave(m, announce=False)
    assert not await b.presence_leave(m, announce=False)
    assert await b.presence_members("r") == []


async def test_presence_without_announce_or_subscription_sends_no_event(
    harness: Harness,
) -> None:
    b = await harness.make_backend()
    rec = harness.recorder(b)
    await b.subscribe_room("r")
    assert await b.presence_join(Membership("r", "alice", "c1"), announce=False)
    assert await b.presence_join(Membership("quiet", "bob", "c2"), announce=True)
    assert await b.presence_leave(Membership("r", "alice", "c1"), announce=False)
    assert await b.presence_join(Membership("r", "carol", "c3"), announce=True)
    await rec.wait_for(lambda: len(rec.presence) == 1)
    await barrier(b, rec)
    assert rec.presence == [PresenceEvent("r", "carol", "join", "c3")]


async def test_membership_expires_unless_refreshed(harness: Harness) -> None:
    b = await harness.make_backend(session_ttl_s=1.0)
    alice, bob = Membership("r", "alice", "c1"), Membership("r", "bob", "c2")
    await b.presence_join(alice, announce=False)
    await b.presence_join(bob, announce=False)
    await harness.advance(0.6)
    await b.refresh([], [alice])
    await harness.advance(0.6)
    assert await b.presence_members("r") == ["alice"]
    assert await b.presence_join(Membership("r", "bob", "c3"), announce=False)
    await harness.advance(1.1)
    assert await b.presence_members("r") == []


# -- session registry ------------------------------------------------------------


async def test_admit_reject_never_exceeds_limit_under_concurrency(harness: Harness) -> None:
    b = await harness.make_backend()
    records = [session("alice", f"c{i}", at=i) for i in range(50)]
    results = await asyncio.gather(*(b.admit(r, 3, "reject") for r in records))
    admitted = [r.conn_id for r, res in zip(records, results, strict=True) if res.admitted]
    assert len(admitted) == 3
    assert all(res.evicted == [] for res in results)
    assert sorted(s.conn_id for s in await b.sessions_of("alice")) == sorted(admitted)


async def test_admit_kick_oldest_keeps_exactly_limit_under_concurrency(harness: Harness) -> None:
    b = await harness.make_backend()
    records = [session("alice", f"c{i}", at=i) for i in range(50)]
    results = await asyncio.gather(*(b.admit(r, 3, "kick_oldest") for r in records))
    assert all(res.admitted for res in results)
    evicted = [s.conn_id for res in results for s in res.evicted]
    live = [s.conn_id for s in await b.sessions_of("alice")]
    assert len(live) == 3
    # every session is either still live or was evicted exactly once
    assert Counter(evicted + live) == Counter(r.conn_id for r in records)


async def test_admit_kick_oldest_evicts_the_oldest_down_to_limit(harness: Harness) -> None:
    b = await harness.make_backend()
    s1, s2, s3 = (
        session("alice", "c1", at=30),
        session("alice", "c2", at=10),
        session("alice", "c3", at=20),
    )
    for s in (s1, s2, s3):
        assert (await b.admit(s, 3, "kick_oldest")).admitted
    assert await b.sessions_of("alice") == [s2, s3, s1]  # oldest first

    s4 = session("alice", "c4", at=40)
    assert (await b.admit(s4, 3, "kick_oldest")).evicted == [s2]
    s5 = session("alice", "c5", at=50)
    assert (await b.admit(s5, 1, "kick_oldest")).evicted == [s3, s1, s4]  # limit lowered
    assert await b.sessions_of("alice") == [s5]
    rejected = await b.admit(session("alice", "c6", at=60), 1, "reject")
    assert (rejected.admitted, rejected.evicted) == (False, [])
    assert await b.sessions_of("alice") == [s5]
    assert (await b.admit(session("bob", "c7"), 1, "reject")).admitted  # limits are per user


async def test_release_is_idempotent_and_counts_follow(harness: Harness) -> None:
    b = await harness.make_backend()
    s1, s2 = session("alice", "c1", at=1), session("bob", "c2", at=2)
    await b.admit(s1, 5, "reject")
    await b.admit(s2, 5, "reject")
    assert (await b.cluster_counts()).get("n1") == 2
    await b.release(s1)
    await b.release(s1)
    await b.release(session("nobody", "c9"))
    assert await b.sessions_of("alice") == []
    assert await b.sessions_of("bob") == [s2]
    assert (await b.cluster_counts()).get("n1") == 1
    await b.release(s2)
    assert (await b.cluster_counts()).get("n1", 0) == 0


async def test_session_expires_unless_refreshed(harness: Harness) -> None:
    b = await harness.make_backend(session_ttl_s=1.0)
    s1, s2 = session("alice", "c1", at=1), session("alice", "c2", at=2)
    await b.admit(s1, 2, "reject")
    await b.admit(s2, 2, "reject")
    await harness.advance(0.6)
    assert await b.refresh([s1], []) == 0  # none was gone
    await harness.advance(0.6)
    assert await b.sessions_of("alice") == [s1]
    assert (await b.cluster_counts()).get("n1") == 1
    assert (await b.admit(session("alice", "c3", at=3), 2, "reject")).admitted  # s2 dropped
    await harness.advance(1.1)
    assert await b.sessions_of("alice") == []
    assert (await b.cluster_counts()).get("n1", 0) == 0
    # an expired record is not brought back, and is reported gone
    assert await b.refresh([s1, session("bob", "c9", at=4)], []) == 2
    assert await b.sessions_of("alice") == []


async def test_command_to_own_node_and_command_user(harness: Harness) -> None:
    b = await harness.make_backend()
    rec = harness.recorder(b)
    cmd = NodeCommand(NodeOp.CLOSE_CONN, code=4009, reason="kicked", conn_id="c1")
    await b.send_command(b.node_id, cmd)
    await rec.wait_for(lambda: len(rec.commands) == 1)
    assert rec.commands == [cmd]

    await b.admit(session("alice", "c1", node=b.node_id), 5, "reject")
    await b.admit(session("alice", "c2", node=b.node_id), 5, "reject")
    close_user = NodeCommand(NodeOp.CLOSE_USER, code=4003, uid="alice")
    assert await b.command_user("alice", close_user) == 1  # one node, once
    assert await b.command_user("nobody", close_user) == 0
    await rec.wait_for(lambda: len(rec.commands) == 2)
    await barrier(b, rec)
    assert rec.commands == [cmd, close_user]


# -- bans and revoked tokens -----------------------------------------------------


async def test_bans_with_and_without_ttl(harness: Harness) -> None:
    b = await harness.make_backend()
    await b.ban("alice", None)
    await b.ban("bob", 1)
    assert await b.is_banned("alice") and await b.is_banned("bob")
    assert not await b.is_banned("carol")
    await harness.advance(1.1)
    assert await b.is_banned("alice")
    assert not await b.is_banned("bob")
    await b.unban("alice")
    await b.unban("alice")
    assert not await b.is_banned("alice")


async def test_ban_is_the_auth_key_an_operator_can_write(harness: Harness) -> None:
    b = await harness.make_backend()
    await harness.write_key(b, "auth:carol", "banned", None)
    await harness.write_key(b, "auth:dave", "active", None)
    assert await b.is_banned("carol")
    assert not await b.is_banned("dave")
    await b.unban("carol")
    assert not await b.is_banned("carol")


async def test_revoked_jti_expires_at_until(harness: Harness) -> None:
    b = await harness.make_backend()
    await b.revoke_jti("j1", harness.now_ms() + 1000)
    await b.revoke_jti("j0", harness.now_ms() - 1)  # already expired: nothing to remember
    assert await b.is_revoked("j1")
    assert not await b.is_revoked("j0")
    assert not await b.is_revoked("j2")
    await harness.advance(1.1)
    assert not await b.is_revoked("j1")


# -- refresh-token families ------------------------------------------------------


async def test_family_rotates_and_reuse_revokes_it(harness: Harness) -> None:
    b = await harness.make_backend()
    await b.family_start("f", "t1", 60)
    assert await b.family_rotate("f", "t1", "t2", 60) is RotateOutcome.ROTATED
    assert await b.family_rotate("f", "stranger", "x", 60) is RotateOutcome.UNKNOWN
    assert await b.family_rotate("f", "t2", "t3", 60) is RotateOutcome.ROTATED
    assert await b.family_rotate("f", "t1", "t4", 60) is RotateOutcome.REUSED
    assert await b.family_rotate("f", "t3", "t5", 60) is RotateOutcome.UNKNOWN
    assert await b.family_rotate("none", "t1", "t2", 60) is RotateOutcome.UNKNOWN


async def test_concurrent_rotations_of_one_token_rotate_once(harness: Harness) -> None:
    b = await harness.make_backend()
    await b.family_start("f", "t1", 60)
    outcomes = await asyncio.gather(
        b.family_rotate("f", "t1", "a", 60), b.family_rotate("f", "t1", "b", 60)
    )
    assert Counter(outcomes) == Counter([RotateOutcome.ROTATED, RotateOutcome.REUSED])
    for new in ("a", "b"):  # the reuse revoked the family, winner included
        assert await b.family_rotate("f", new, "c", 60) is RotateOutcome.UNKNOWN


async def test_family_revoke_and_expiry(harness: Harness) -> None:
    b = await harness.make_backend()
    await b.family_start("f", "t1", 60)
    await b.family_revoke("f")
    await b.family_revoke("f")
    await b.family_revoke("never-started")
    assert await b.family_rotate("f", "t1", "t2", 60) is RotateOutcome.UNKNOWN

    await b.family_start("g", "t1", 1)
    await harness.advance(0.6)
    assert await b.family_rotate("g", "t1", "t2", 1) is RotateOutcome.ROTATED  # extends
    await harness.advance(0.6)
    assert await b.family_rotate("g", "t2", "t3", 1) is RotateOutcome.ROTATED
    await harness.advance(1.1)
    assert await b.family_rotate("g", "t3", "t4", 1) is RotateOutcome.UNKNOWN


# -- nonces, lockouts, rate limits -----------------------------------------------


async def test_nonce_is_claimed_once_within_ttl(harness: Harness) -> None:
    b = await harness.make_backend()
    assert await b.claim_nonce("n", 1)
    assert not await b.claim_nonce("n", 1)
    assert await b.claim_nonce("m", 1)
    await harness.advance(1.1)
    assert await b.claim_nonce("n", 1)


async def test_lockout_after_failures_and_unblock_after_block(harness: Harness) -> None:
    b = await harness.make_backend()
    assert await b.record_auth_failure("1.2.3.4", 3, 1.0, 1.0) == 0.0
    assert await b.record_auth_failure("1.2.3.4", 3, 1.0, 1.0) == 0.0
    assert await b.lockout_remaining("1.2.3.4") == 0.0
    blocked = await b.record_auth_failure("1.2.3.4", 3, 1.0, 1.0)
    assert 0.0 < blocked <= 1.0
    assert 0.0 < await b.lockout_remaining("1.2.3.4") <= 1.0
    assert await b.lockout_remaining("5.6.7.8") == 0.0
    await harness.advance(1.1)
    assert await b.lockout_remaining("1.2.3.4") == 0.0
    assert await b.record_auth_failure("1.2.3.4", 3, 1.0, 1.0) == 0.0  # a fresh count


async def test_lockout_window_slides(harness: Harness) -> None:
    b = await harness.make_backend()
    for _ in range(4):  # never 3 failures within 1 s
        assert await b.record_auth_failure("ip", 3, 1.0, 5.0) == 0.0
        await harness.advance(0.6)
    assert await b.lockout_remaining("ip") == 0.0


async def test_attempts_are_reserved_atomically_within_the_budget(harness: Harness) -> None:
    b = await harness.make_backend()
    limits = AttemptLimits(failures=5, window_s=5.0, block_s=5.0, max_in_flight=100)
    waits = await asyncio.gather(*(b.attempt_begin("ip", f"a{i}", limits) for i in range(60)))
    reserved = [f"a{i}" for i, wait in enumerate(waits) if wait == 0.0]
    assert len(reserved) == 5
    assert all(0.0 < wait <= 1.0 for wait in waits if wait != 0.0)
    blocked = [await b.attempt_end("ip", a, True, limits) for a in reserved]
    assert blocked[:4] == [0.0] * 4 and 0.0 < blocked[4] <= 5.0
    assert 0.0 < await b.lockout_remaining("ip") <= 5.0
    assert 0.0 < await b.attempt_begin("ip", "late", limits) <= 5.0
    assert await b.attempt_begin("other-ip", "x", limits) == 0.0


async def test_attempts_in_flight_are_capped_and_successes_do_not_count(
    harness: Harness,
) -> None:
    b = await harness.make_backend()
    limits = AttemptLimits(failures=3, window_s=5.0, block_s=5.0, max_in_flight=2)
    assert await b.attempt_begin("ip", "a", limits) == 0.0
    assert await b.attempt_begin("ip", "b", limits) == 0.0
    assert await b.attempt_begin("ip", "c", limits) > 0.0  # two in flight already
    assert await b.attempt_end("ip", "a", False, limits) == 0.0
    assert await b.attempt_begin("ip", "c", limits) == 0.0
    for attempt in ("b", "c"):
        assert await b.attempt_end("ip", attempt, False, limits) == 0.0
    for i in range(10):  # successes never spend the budget
        assert await b.attempt_begin("ip", f"ok{i}", limits) == 0.0
        assert await b.attempt_end("ip", f"ok{i}", False, limits) == 0.0
    assert await b.lockout_remaining("ip") == 0.0


async def test_failed_attempts_share_the_window_with_other_failures(harness: Harness) -> None:
    b = await harness.make_backend()
    limits = AttemptLimits(failures=3, window_s=5.0, block_s=5.0, max_in_flight=3)
    assert await b.record_auth_failure("ip", 3, 5.0, 5.0) == 0.0
    assert await b.record_auth_failure("ip", 3, 5.0, 5.0) == 0.0
    assert await b.attempt_begin("ip", "a", limits) == 0.0
    assert await b.attempt_begin("ip", "b", limits) > 0.0  # 2 failures + 1 in flight
    assert await b.attempt_end("ip", "a", True, limits) > 0.0
    assert await b.attempt_end("ip", "unknown", True, limits) > 0.0  # blocked: not counted


async def test_an_unsettled_attempt_stops_counting_after_its_ttl(harness: Harness) -> None:
    b = await harness.make_backend()
    limits = AttemptLimits(
        failures=5, window_s=5.0, block_s=5.0, max_in_flight=1, in_flight_ttl_s=1.0
    )
    assert await b.attempt_begin("ip", "lost", limits) == 0.0
    assert await b.attempt_begin("ip", "next", limits) > 0.0
    await harness.advance(1.1)
    assert await b.attempt_begin("ip", "next", limits) == 0.0


async def test_rate_hit_sliding_window(harness: Harness) -> None:
    b = await harness.make_backend()
    for _ in range(3):
        assert await b.rate_hit("pub:alice", 3, 1.0) == 0.0
    retry = await b.rate_hit("pub:alice", 3, 1.0)
    assert 0.0 < retry <= 1.0
    assert await b.rate_hit("pub:bob", 3, 1.0) == 0.0  # keys are independent
    await harness.advance(1.1)
    assert await b.rate_hit("pub:alice", 3, 1.0) == 0.0


async def test_rate_hit_refusals_are_not_counted(harness: Harness) -> None:
    b = await harness.make_backend()
    assert await b.rate_hit("k", 2, 1.0) == 0.0
    await harness.advance(0.5)
    assert await b.rate_hit("k", 2, 1.0) == 0.0
    for _ in range(5):
        assert await b.rate_hit("k", 2, 1.0) > 0.0
    await harness.advance(0.6)  # the first hit left the window, the refusals never entered
    assert await b.rate_hit("k", 2, 1.0) == 0.0


async def test_publish_charged_to_a_rate_limit(harness: Harness) -> None:
    b = await harness.make_backend()
    spec = RateSpec("pub:alice", 3, 1.0)
    seqs = [(await b.publish("rated", b"\x01", "alice", 0, rate=spec)).seq for _ in range(3)]
    assert seqs == [1, 2, 3]
    with pytest.raises(RateLimited) as refused:
        await b.publish("rated", b"\x01", "alice", 0, rate=spec)
    assert 0.0 < refused.value.retry_after <= 1.0
    # refused: nothing was published, and the same limit is what rate_hit sees
    assert (await b.position("rated")).seq == 3
    assert await b.rate_hit("pub:alice", 3, 1.0) > 0.0
    assert (await b.publish("rated", b"\x01", None, 0)).seq == 4  # no rate: not charged
    await harness.advance(1.1)
    assert (await b.publish("rated", b"\x01", "alice", 0, rate=spec)).seq == 5


# -- offline inbox ---------------------------------------------------------------


async def test_inbox_is_bounded_ordered_and_acked(harness: Harness) -> None:
    b = await harness.make_backend(offline_max_messages=3)
    for i in range(1, 6):
        assert await b.inbox_put(dm(f"m{i}", ts=i))
    assert [m.mid for m in await b.inbox_list("bob")] == ["m3", "m4", "m5"]
    assert (await b.inbox_list("bob"))[0] == dm("m3", ts=3)
    assert await b.inbox_ack("bob", ["m3", "m9", "m3"]) == 1
    assert [m.mid for m in await b.inbox_list("bob")] == ["m4", "m5"]
    assert await b.inbox_ack("bob", ["m4", "m5"]) == 2
    assert await b.inbox_list("bob") == []
    assert await b.inbox_ack("bob", ["m4"]) == 0
    assert await b.inbox_list("carol") == []


async def test_inbox_expires_after_last_put(harness: Harness) -> None:
    b = await harness.make_backend(offline_ttl_s=1)
    await b.inbox_put(dm("m1"))
    await harness.advance(0.6)
    await b.inbox_put(dm("m2"))
    await harness.advance(0.6)
    assert [m.mid for m in await b.inbox_list("bob")] == ["m1", "m2"]
    await harness.advance(1.1)
    assert await b.inbox_list("bob") == []


def sized(mid: str, size: int, sender: str | None = "alice", to: str = "bob") -> DirectMessage:
    data = b"x" * (size - inbox_size(DirectMessage(mid, to, sender, b"", 0)))
    message = DirectMessage(mid=mid, to_uid=to, from_uid=sender, data=data, ts=0)
    assert inbox_size(message) == size
    return message


async def test_inbox_byte_cap_drops_the_oldest_and_keeps_the_newest(harness: Harness) -> None:
    b = await harness.make_backend(offline_max_bytes=1000)
    for i in range(5):
        assert await b.inbox_put(sized(f"m{i}", 300))
    assert [m.mid for m in await b.inbox_list("bob")] == ["m2", "m3", "m4"]
    assert await b.inbox_ack("bob", ["m2"]) == 1
    assert await b.inbox_put(sized("m5", 300))
    assert [m.mid for m in await b.inbox_list("bob")] == ["m3", "m4", "m5"]
    assert await b.inbox_put(sized("huge", 5000))  # alone over the cap: it stays, alone
    assert [m.mid for m in await b.inbox_list("bob")] == ["huge"]


async def test_inbox_sender_quota_refuses_and_acks_free_it(harness: Harness) -> None:
    b = await harness.make_backend(offline_max_per_sender=2)
    assert await b.inbox_put(sized("a1", 100, "mallory"))
    assert await b.inbox_put(sized("a2", 100, "mallory"))
    with pytest.raises(InboxQuotaExceeded):
        await b.inbox_put(sized("a3", 100, "mallory"))
    assert await b.inbox_put(sized("a2", 120, "mallory"))  # replacing a known mid is no new one
    assert await b.inbox_put(sized("c1", 100, "carol"))  # other senders are not affected
    assert await b.inbox_put(sized("s1", 100, None))  # nor the server API
    assert await b.inbox_put(sized("s2", 100, None))
    assert await b.inbox_put(sized("s3", 100, None))
    assert await b.inbox_put(sized("a1", 100, "mallory", to="dave"))  # per recipient
    assert [m.mid for m in await b.inbox_list("bob")] == ["a1", "a2", "c1", "s1", "s2", "s3"]
    assert await b.inbox_ack("bob", ["a1"]) == 1
    assert await b.inbox_put(sized("a3", 100, "mallory"))
    with pytest.raises(InboxQuotaExceeded):
        await b.inbox_put(sized("a4", 100, "mallory"))


async def test_inbox_quota_is_freed_by_drops_too(harness: Harness) -> None:
    b = await harness.make_backend(offline_max_per_sender=2, offline_max_messages=2)
    assert await b.inbox_put(sized("a1", 100, "mallory"))
    assert await b.inbox_put(sized("a2", 100, "mallory"))
    assert await b.inbox_put(sized("c1", 100, "carol"))  # drops a1
    assert await b.inbox_put(sized("a3", 100, "mallory"))  # quota: a2 only, drops a2
    assert [m.mid for m in await b.inbox_list("bob")] == ["c1", "a3"]


async def test_inbox_pages_by_bytes(harness: Harness) -> None:
    b = await harness.make_backend()
    for i in range(6):
        assert await b.inbox_put(sized(f"m{i}", 250))
    page = await b.inbox_list("bob", max_bytes=600)
    assert [m.mid for m in page] == ["m0", "m1"]
    assert [m.mid for m in await b.inbox_list("bob", max_bytes=100)] == ["m0"]  # at least one
    assert len(await b.inbox_list("bob", max_bytes=10_000)) == 6
    assert await b.inbox_ack("bob", [m.mid for m in page]) == 2
    assert [m.mid for m in await b.inbox_list("bob", max_bytes=600)] == ["m2", "m3"]
    assert await b.inbox_list("nobody", max_bytes=600) == []


async def test_seen_users_are_remembered_for_a_while(harness: Harness) -> None:
    b = await harness.make_backend()
    assert not await b.was_seen("bob")
    await b.mark_seen("bob", 1)
    assert await b.was_seen("bob") and not await b.was_seen("carol")
    await harness.advance(1.1)
    assert not await b.was_seen("bob")


# -- several nodes of one cluster (kinds with a shared store) --------------------


async def test_nodes_see_one_order_of_publications(cluster: Harness) -> None:
    a, b = await cluster.make_backend("a"), await cluster.make_backend("b")
    for node in (a, b):
        await node.subscribe_room("r")
    await asyncio.gather(*(node.publish("r", b"", None, 0) for _ in range(50) for node in (a, b)))
    for node in (a, b):
        pubs = cluster.recorder(node).publications
        await cluster.recorder(node).wait_for(lambda: len(pubs) == 100)
        assert [p.seq for p in pubs] == list(range(1, 101))


async def test_presence_is_cluster_wide(cluster: Harness) -> None:
    a, b = await cluster.make_backend("a"), await cluster.make_backend("b")
    await b.subscribe_room("r")
    assert await a.presence_join(Membership("r", "alice", "c1"), announce=True)
    assert not await b.presence_join(Membership("r", "alice", "c2"), announce=True)
    assert await b.presence_members("r") == ["alice"]
    assert not await a.presence_leave(Membership("r", "alice", "c1"), announce=True)
    assert await b.presence_leave(Membership("r", "alice", "c2"), announce=True)
    rec = cluster.recorder(b)
    await rec.wait_for(lambda: len(rec.presence) == 2)
    assert [e.event for e in rec.presence] == ["join", "leave"]


async def test_session_registry_is_cluster_wide(cluster: Harness) -> None:
    a, b = await cluster.make_backend("a"), await cluster.make_backend("b")
    records = [session("alice", f"c{i}", node=("a", "b")[i % 2], at=i) for i in range(20)]
    results = await asyncio.gather(
        *(((a, b)[i % 2]).admit(r, 3, "reject") for i, r in enumerate(records))
    )
    assert sum(res.admitted for res in results) == 3
    await a.admit(session("bob", "x1", node="a", at=1), 5, "reject")
    await b.admit(session("bob", "x2", node="b", at=2), 5, "reject")
    assert [s.conn_id for s in await a.sessions_of("bob")] == ["x1", "x2"]
    counts = await b.cluster_counts()
    assert counts.get("a", 0) + counts.get("b", 0) == 5

    cmd = NodeCommand(NodeOp.CLOSE_USER, uid="bob")
    assert await a.command_user("bob", cmd) == 2
    for node in (a, b):
        commands = cluster.recorder(node).commands
        await cluster.recorder(node).wait_for(lambda: cmd in commands)

    await cluster.close(a)
    assert [s.conn_id for s in await b.sessions_of("bob")] == ["x2"]
    assert (await b.cluster_counts()).get("a", 0) == 0


async def test_command_reaches_only_its_node(cluster: Harness) -> None:
    a, b = await cluster.make_backend("a"), await cluster.make_backend("b")
    for_b = NodeCommand(NodeOp.CLOSE_CONN, conn_id="c1")
    await a.send_command("b", for_b)
    rec_b = cluster.recorder(b)
    await rec_b.wait_for(lambda: rec_b.commands == [for_b])
    await barrier(a, cluster.recorder(a))
    assert cluster.recorder(a).commands == []


# -- MemoryBackend only ----------------------------------------------------------


async def test_memory_delivers_after_the_call_returns(memory_harness: Harness) -> None:
    b = await memory_harness.make_backend()
    rec = memory_harness.recorder(b)
    await rec.wait_for(lambda: rec.availability == [True])
    await b.subscribe_room("r")
    pub = await b.publish("r", b"", None, 0)
    assert rec.publications == []
    await rec.wait_for(lambda: rec.publications == [pub])
    await b.presence_join(Membership("r", "alice", "c1"), announce=True)
    assert rec.presence == []
    await rec.wait_for(lambda: len(rec.presence) == 1)
    cmd = NodeCommand(NodeOp.CLOSE_USER, uid="alice")
    await b.send_command("n1", cmd)
    assert rec.commands == []
    await rec.wait_for(lambda: rec.commands == [cmd])


async def test_memory_drops_commands_for_other_nodes(memory_harness: Harness) -> None:
    b = await memory_harness.make_backend("n1")
    rec = memory_harness.recorder(b)
    await b.send_command("n2", NodeCommand(NodeOp.CLOSE_USER, uid="alice"))
    mine = NodeCommand(NodeOp.CLOSE_USER, uid="bob")
    await b.send_command("n1", mine)
    await rec.wait_for(lambda: len(rec.commands) >= 1)
    assert rec.commands == [mine]


async def test_memory_close_drops_sessions_memberships_and_pending_delivery(
    memory_harness: Harness,
) -> None:
    b = await memory_harness.make_backend("n1")
    assert isinstance(b, MemoryBackend)
    rec = memory_harness.recorder(b)
    await b.subscribe_room("r")
    await b.admit(session("alice", "c1", node="n1"), 5, "reject")
    await b.admit(session("alice", "c2", node="elsewhere"), 5, "reject")
    await b.presence_join(Membership("r", "alice", "c1"), announce=False)
    await b.publish("r", b"", None, 0)  # scheduled, not yet delivered
    await memory_harness.close(b)
    assert [s.conn_id for s in await b.sessions_of("alice")] == ["c2"]
    assert await b.presence_members("r") == []
    await asyncio.sleep(0)  # one loop turn: the scheduled delivery runs and must do nothing
    assert rec.publications == []
    assert (await b.position("r")).seq == 1  # room state belongs to the cluster


async def test_memory_set_key_and_get_key(memory_harness: Harness) -> None:
    b = await memory_harness.make_backend()
    assert isinstance(b, MemoryBackend)
    await b.set_key("k", "v", 1)
    await b.set_key("forever", "w", None)
    assert await b.get_key("k") == "v"
    await memory_harness.advance(1.0)
    assert await b.get_key("k") is None
    assert await b.get_key("forever") == "w"
    with pytest.raises(ValueError):
        await b.set_key("k", "v", 0)


async def test_memory_stays_bounded_when_everything_expires(memory_harness: Harness) -> None:
    b = await memory_harness.make_backend(
        session_ttl_s=1.0, history_ttl_s=1, offline_ttl_s=1, history_size=2
    )
    assert isinstance(b, MemoryBackend)
    for i in range(100):
        await b.publish(f"room{i}", b"", None, 0)
        await b.presence_join(Membership(f"room{i}", f"u{i}", f"c{i}"), announce=False)
        await b.admit(session(f"u{i}", f"c{i}"), 3, "reject")
        await b.ban(f"u{i}", 1)
        await b.revoke_jti(f"j{i}", memory_harness.now_ms() + 1000)
        await b.family_start(f"f{i}", "t", 1)
        await b.claim_nonce(f"n{i}", 1)
        await b.record_auth_failure(f"ip{i}", 5, 1.0, 1.0)
        await b.record_auth_failure(f"blocked{i}", 1, 1.0, 1.0)
        await b.rate_hit(f"rate{i}", 5, 1.0)
        await b.inbox_put(dm(f"m{i}", to=f"u{i}"))
    assert b.entry_count() == 100 * 11
    assert b.purge() == 0  # nothing has expired yet

    await memory_harness.advance(1.0)
    assert b.entry_count() == 100 * 11  # expired but not swept yet ...
    assert await b.sessions_of("u0") == []  # ... yet invisible, and dropped when read
    assert not await b.is_banned("u0")
    assert b.entry_count() == 100 * 11 - 2
    await memory_harness.advance(PURGE_INTERVAL_S)
    assert await b.claim_nonce("trigger", 1)  # any adding call sweeps when one is due
    assert b.entry_count() == 1
    assert b.purge() == 0
