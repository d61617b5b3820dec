"""RedisBackend nodes sharing real redis-server processes behave as one server.

What the shared contract suite (tests/contract, run for "redis" and
"redis-cluster" too) cannot show: several nodes at once, Redis going away and
coming back, a frozen (half-open) Redis, the one-command-per-publish budget, nodes
that vanish without closing, sharded fan-out over every master and cluster links
healing. Every wait is bounded; "eventually" conditions poll with a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sized
from functools import partial
from typing import Any

import pytest
import redis.asyncio

from core.backend.base import (
    BackendUnavailable,
    DirectMessage,
    Membership,
    NodeCommand,
    NodeOp,
    PresenceEvent,
    SessionRecord,
)
from core.backend.redis import RedisBackend, mask_url
from tests.contract.conftest import Recorder
from tests.integration.conftest import RedisNodes
from tests.redis_server import RedisClusterServers, RedisServer, shared_cluster

#: fast failure detection for the fault tests
FAST: dict[str, Any] = {"probe_interval_s": 0.2, "probe_timeout_s": 0.5, "socket_timeout_s": 0.5}


def session(uid: str, conn_id: str, node: str, at: int = 0) -> SessionRecord:
    return SessionRecord(conn_id=conn_id, uid=uid, node_id=node, ip="10.0.0.1", connected_at=at)


def _at_least(items: Sized, n: int) -> bool:
    return len(items) >= n


def seqs(rec: Recorder, room: str) -> list[int]:
    return [p.seq for p in rec.publications if p.room == room]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Poll ``check`` until it holds; returns the seconds it took."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


# -- fan-out across nodes ----------------------------------------------------------


@pytest.mark.gen_test(timeout=20)
async def test_publication_reaches_every_node_once_in_seq_order(redis_nodes: RedisNodes) -> None:
    nodes = [await redis_nodes.start(name) for name in ("a", "b", "c")]
    for backend, _ in nodes:
        await backend.subscribe_room("r")
    a = nodes[0][0]
    pubs = [await a.publish("r", b"%d" % i, "alice", i, origin=f"c1:{i}") for i in range(100)]
    assert [p.seq for p in pubs] == list(range(1, 101))
    for _, rec in nodes:
        await rec.wait_for(partial(_at_least, rec.publications, 100))
        await asyncio.sleep(0.05)  # a duplicate would arrive right behind
        assert rec.publications == pubs  # once each, in seq order, fields intact


@pytest.mark.gen_test(timeout=20)
async def test_concurrent_publishes_from_three_nodes_are_gap_free(redis_nodes: RedisNodes) -> None:
    nodes = [await redis_nodes.start(name) for name in ("a", "b", "c")]
    for backend, _ in nodes:
        await backend.subscribe_room("r")
    pubs = await asyncio.gather(
        *(backend.publish("r", b"", None, 0) for _ in range(100) for backend, _ in nodes)
    )
    assert sorted(p.seq for p in pubs) == list(range(1, 301))
    for _, rec in nodes:
        await rec.wait_for(partial(_at_least, rec.publications, 300))
        assert seqs(rec, "r") == list(range(1, 301))


@pytest.mark.gen_test(timeout=20)
async def test_unsubscribed_node_stops_receiving(redis_nodes: RedisNodes) -> None:
    (a, rec_a), (b, rec_b) = await redis_nodes.start("a"), await redis_nodes.start("b")
    for backend in (a, b):
        await backend.subscribe_room("r")
    await b.unsubscribe_room("r")
    await a.publish("r", b"", None, 0)
    await b.subscribe_room("barrier")
    await a.subscribe_room("barrier")
    marker = await a.publish("barrier", b"", None, 0)
    await rec_b.wait_for(lambda: marker in rec_b.publications)
    assert seqs(rec_b, "r") == []
    assert seqs(rec_a, "r") == [1]


# -- session registry and commands across nodes ------------------------------------


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("policy", ["reject", "kick_oldest"])
async def test_admission_is_exact_across_two_backends(redis_nodes: RedisNodes, policy: str) -> None:
    (a, _), (b, _) = await redis_nodes.start("a"), await redis_nodes.start("b")
    records = [session("alice", f"c{i}", ("a", "b")[i % 2], at=i) for i in range(50)]
    results = await asyncio.gather(
        *((a, b)[i % 2].admit(r, 3, policy) for i, r in enumerate(records))  # type: ignore[arg-type]
    )
    live = [s.conn_id for s in await a.sessions_of("alice")]
    assert len(live) == 3
    if policy == "reject":
        admitted = [r.conn_id for r, res in zip(records, results, strict=True) if res.admitted]
        assert sorted(admitted) == sorted(live)
    else:
        evicted = [s.conn_id for res in results for s in res.evicted]
        assert Counter(evicted + live) == Counter(r.conn_id for r in records)
    counts = await b.cluster_counts()
    assert counts.get("a", 0) + counts.get("b", 0) == 3


@pytest.mark.gen_test(timeout=20)
async def test_kick_reaches_the_node_holding_the_session(redis_nodes: RedisNodes) -> None:
    (a, rec_a), (b, rec_b) = await redis_nodes.start("a"), await redis_nodes.start("b")
    old = session("alice", "c1", "b", at=1)
    assert (await b.admit(old, 1, "kick_oldest")).admitted
    result = await a.admit(session("alice", "c2", "a", at=2), 1, "kick_oldest")
    assert result.evicted == [old]
    kick = NodeCommand(NodeOp.CLOSE_CONN, code=4009, reason="replaced", conn_id="c1")
    for evicted in result.evicted:
        await a.send_command(evicted.node_id, kick)
    await rec_b.wait_for(lambda: rec_b.commands == [kick])
    # a's own mailbox got nothing: a command to itself arrives behind any stray one
    mine = NodeCommand(NodeOp.CLOSE_USER, uid="x")
    await a.send_command("a", mine)
    await rec_a.wait_for(lambda: len(rec_a.commands) >= 1)
    assert rec_a.commands == [mine]


@pytest.mark.gen_test(timeout=20)
async def test_presence_across_nodes(redis_nodes: RedisNodes) -> None:
    (a, rec_a), (b, rec_b), (c, _) = [await redis_nodes.start(n) for n in ("a", "b", "c")]
    await a.subscribe_room("r")
    await b.subscribe_room("r")
    assert await a.presence_join(Membership("r", "alice", "c1"), announce=True)
    assert not await b.presence_join(Membership("r", "alice", "c2"), announce=True)
    assert await c.presence_join(Membership("r", "bob", "c3"), announce=True)
    assert await b.presence_members("r") == ["alice", "bob"]
    assert not await a.presence_leave(Membership("r", "alice", "c1"), announce=True)
    assert await b.presence_leave(Membership("r", "alice", "c2"), announce=True)
    assert await c.presence_members("r") == ["bob"]
    expected = [
        PresenceEvent("r", "alice", "join", "c1"),
        PresenceEvent("r", "bob", "join", "c3"),
        PresenceEvent("r", "alice", "leave", "c2"),
    ]
    for rec in (rec_a, rec_b):
        await rec.wait_for(partial(_at_least, rec.presence, 3))
        assert rec.presence == expected


class _Vanishing(RedisBackend):
    """A node killed with SIGKILL: its connections go, nothing is deregistered."""

    async def _deregister(self) -> None:
        return None


@pytest.mark.gen_test(timeout=20)
async def test_records_of_a_vanished_node_expire_and_free_the_slot(
    redis_nodes: RedisNodes,
) -> None:
    ttl = {"session_ttl_s": 1.0}
    doomed, _ = await redis_nodes.start("doomed", cls=_Vanishing, options=ttl)
    (b, _) = await redis_nodes.start("b", options=ttl)
    assert (await doomed.admit(session("alice", "c1", "doomed"), 1, "reject")).admitted
    await doomed.presence_join(Membership("r", "alice", "c1"), announce=False)
    await doomed.close()  # no deregistration: the records stay until they expire
    assert [s.conn_id for s in await b.sessions_of("alice")] == ["c1"]
    assert not (await b.admit(session("alice", "c2", "b"), 1, "reject")).admitted

    async def slot_free() -> bool:
        return (await b.admit(session("alice", "c2", "b"), 1, "reject")).admitted

    took = await eventually(slot_free, timeout=2 * ttl["session_ttl_s"], what="slot freed")
    assert took <= 2 * ttl["session_ttl_s"]
    assert await b.presence_members("r") == []
    assert "doomed" not in await b.cluster_counts()


# -- Redis going away --------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_redis_restart_availability_resubscription_and_delivery(
    own_redis: RedisServer, redis_nodes: RedisNodes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="squall.backend.redis")
    rooms = [f"room{i}" for i in range(20)]
    (a, rec_a) = await redis_nodes.start("a", url=own_redis.url, **FAST)
    (b, _) = await redis_nodes.start("b", url=own_redis.url, **FAST)
    for room in rooms:
        await a.subscribe_room(room)
    await rec_a.wait_for(lambda: rec_a.availability == [True])

    own_redis.stop()
    await rec_a.wait_for(lambda: rec_a.availability == [True, False], timeout=3)
    assert not a.available
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await b.publish(rooms[0], b"", None, 0)
    assert time.monotonic() - started < 2  # fails fast, does not hang

    own_redis.start()  # same port, empty: scripts and subscriptions are gone
    restarted = time.monotonic()
    await rec_a.wait_for(lambda: rec_a.availability == [True, False, True], timeout=5)
    assert a.available

    async def every_room_delivered() -> bool:
        for room in rooms:
            await b.publish(room, room.encode(), None, 0)
        return all(seqs(rec_a, room) for room in rooms)

    await eventually(every_room_delivered, timeout=5, what="delivery after restart")
    assert time.monotonic() - restarted < 5
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "redis unavailable" in messages and "redis available again" in messages


@pytest.mark.gen_test(timeout=30)
async def test_frozen_redis_is_detected_by_the_probe(
    own_redis: RedisServer, redis_nodes: RedisNodes
) -> None:
    """SIGSTOP keeps every socket open and silent: only the liveness probe notices."""
    (a, rec_a) = await redis_nodes.start("a", url=own_redis.url, **FAST)
    await a.subscribe_room("r")
    await rec_a.wait_for(lambda: rec_a.availability == [True])
    own_redis.freeze()
    try:
        started = time.monotonic()
        await rec_a.wait_for(lambda: rec_a.availability == [True, False], timeout=3)
        detected = time.monotonic() - started
        assert detected < FAST["probe_interval_s"] + FAST["probe_timeout_s"] + 0.5
    finally:
        own_redis.thaw()
    await rec_a.wait_for(lambda: rec_a.availability == [True, False, True], timeout=5)
    pub = await a.publish("r", b"", None, 0)
    await rec_a.wait_for(lambda: pub in rec_a.publications)


@pytest.mark.gen_test(timeout=20)
async def test_start_fails_loudly_when_redis_is_unreachable(redis_nodes: RedisNodes) -> None:
    down = RedisServer()  # never started: nothing listens on its port
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await redis_nodes.start("a", url=down.url, **FAST)
        assert time.monotonic() - started < 2
    finally:
        down.cleanup()


# -- budget and hygiene ------------------------------------------------------------

#: Commands the publish script runs inside its one EVALSHA, per publish to a room
#: that already has an epoch (Redis counts scripted commands in commandstats too).
PUBLISH_SCRIPT_CALLS = {
    "hmget": 1,
    "hincrby": 1,
    "rpush": 1,
    "ltrim": 1,
    "pexpire": 2,
    "publish": 1,
}


async def _commandstats(admin: redis.asyncio.Redis) -> dict[str, int]:
    info = await admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in info.items()}


@pytest.mark.gen_test(timeout=20)
async def test_publish_is_one_evalsha_and_nothing_else(
    own_redis: RedisServer, redis_nodes: RedisNodes
) -> None:
    quiet: dict[str, Any] = {"probe_interval_s": 3600.0}  # no probe traffic during the measurement
    (a, rec_a) = await redis_nodes.start("a", url=own_redis.url, **quiet)
    (b, rec_b) = await redis_nodes.start("b", url=own_redis.url, **quiet)
    for backend in (a, b):
        await backend.subscribe_room("r")
    await a.publish("r", b"", None, 0)  # the room's epoch exists from here on
    admin = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        await admin.config_resetstat()
        n = 200
        for i in range(n):
            await a.publish("r", b"x" * 100, "alice", i)
        stats = await _commandstats(admin)
    finally:
        await admin.aclose()
    stats.pop("config|resetstat", None)
    stats.pop("info", None)
    assert stats.pop("evalsha") == n
    assert stats == {cmd: calls * n for cmd, calls in PUBLISH_SCRIPT_CALLS.items()}
    for rec in (rec_a, rec_b):
        await rec.wait_for(partial(_at_least, rec.publications, n + 1))
        assert seqs(rec, "r") == list(range(1, n + 2))


@pytest.mark.gen_test(timeout=20)
async def test_connections_are_bounded_and_commands_wait_for_one(
    own_redis: RedisServer, redis_nodes: RedisNodes
) -> None:
    (a, rec_a) = await redis_nodes.start("a", url=own_redis.url, max_connections=2)
    await a.subscribe_room("r")
    pubs = await asyncio.gather(*(a.publish("r", b"", None, 0) for _ in range(300)))
    assert sorted(p.seq for p in pubs) == list(range(1, 301))
    admin = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        names = [c["name"] for c in await admin.client_list()]
    finally:
        await admin.aclose()
    assert names.count("squall:a:sub") == 1  # ONE pub/sub connection per node
    assert 1 <= names.count("squall:a:cmd") <= 2
    await rec_a.wait_for(partial(_at_least, rec_a.publications, 300))


@pytest.mark.gen_test(timeout=20)
async def test_every_key_is_prefixed_and_expires(redis_nodes: RedisNodes) -> None:
    (a, _) = await redis_nodes.start("a")
    await a.subscribe_room("r")
    await a.publish("r", b"", "alice", 0)
    await a.position("quiet")
    await a.presence_join(Membership("r", "alice", "c1"), announce=True)
    await a.admit(session("alice", "c1", "a"), 3, "kick_oldest")
    await a.refresh([session("alice", "c1", "a")], [Membership("r", "alice", "c1")])
    await a.ban("bob", 60)
    await a.revoke_jti("j", int(time.time() * 1000) + 60_000)
    await a.family_start("f", "t1", 60)
    await a.family_rotate("f", "t1", "t2", 60)
    await a.claim_nonce("n", 60)
    await a.record_auth_failure("1.2.3.4", 1, 60, 60)
    await a.record_auth_failure("5.6.7.8", 5, 60, 60)
    await a.rate_hit("pub:alice", 5, 1)
    await a.inbox_put(DirectMessage("m1", "bob", None, b"\x00\xff", 1))
    admin = redis.asyncio.Redis.from_url(redis_nodes.url)
    try:
        keys = [k async for k in admin.scan_iter(match=redis_nodes.key_prefix + "*")]
        assert len(keys) >= 15
        ttls = {k.decode(): await admin.pttl(k) for k in keys}
    finally:
        await admin.aclose()
    assert all(ttl > 0 for ttl in ttls.values()), ttls
    assert ttls.keys() >= {redis_nodes.key_prefix + "auth:bob"}


@pytest.mark.gen_test(timeout=20)
async def test_redis_url_password_is_masked_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    assert mask_url("redis://u:hunter2@h:1/0") == "redis://u:***@h:1/0"
    assert mask_url("rediss://h:1/0?password=hunter2") == "rediss://h:1/0?password=***"
    caplog.set_level(logging.DEBUG, logger="squall.backend.redis")
    secret, guess = "s3cret-Pa55", "n0t-the-Pa55"
    with RedisServer(extra_args=("--requirepass", secret)) as server:
        nodes = RedisNodes(f"redis://:{secret}@127.0.0.1:{server.port}/0")
        try:
            (a, _) = await nodes.start("a")
            assert await a.claim_nonce("n", 10)
        finally:
            await nodes.aclose()
        wrong = RedisNodes(f"redis://:{guess}@127.0.0.1:{server.port}/0")
        with pytest.raises(BackendUnavailable) as failure:
            await wrong.start("b")
    logged = caplog.text + str(failure.value)
    assert "***" in logged
    assert secret not in logged and guess not in logged


@pytest.mark.gen_test(timeout=20)
async def test_rediss_with_mutual_tls(redis_nodes: RedisNodes) -> None:
    with RedisServer(tls=True) as server:
        assert server.tls is not None
        files = server.tls
        nodes = RedisNodes(server.url)
        try:
            (a, rec_a) = await nodes.start(
                "a",
                ssl_ca_file=str(files.ca),
                ssl_cert_file=str(files.client_cert),
                ssl_key_file=str(files.client_key),
            )
            await a.subscribe_room("r")
            pub = await a.publish("r", b"", None, 0)
            await rec_a.wait_for(lambda: pub in rec_a.publications)
        finally:
            await nodes.aclose()
        with pytest.raises(BackendUnavailable):  # the server requires a client certificate
            await RedisNodes(server.url).start("b", ssl_ca_file=str(files.ca))
    with pytest.raises(ValueError):  # TLS files with a plain redis:// URL: a config error
        await redis_nodes.start("c", ssl_ca_file=str(files.ca))


# -- Redis Cluster -----------------------------------------------------------------


@pytest.fixture
def redis_cluster() -> RedisClusterServers:
    """The process's shared cluster (also the contract suite's): kill clients, never stop it."""
    return shared_cluster()


@pytest.mark.gen_test(timeout=30)
async def test_cluster_fan_out_and_admission(
    redis_cluster: RedisClusterServers, redis_nodes: RedisNodes
) -> None:
    url = redis_cluster.url
    (a, rec_a), (b, rec_b) = [await redis_nodes.start(n, url=url) for n in ("a", "b")]
    rooms = [f"room{i}" for i in range(12)]  # spread over the three masters' slots
    for backend in (a, b):
        for room in rooms:
            await backend.subscribe_room(room)
    for server in redis_cluster.servers:  # sharded: each master carries its rooms' channels
        admin = redis.asyncio.Redis.from_url(server.url)
        try:
            assert await admin.pubsub_shardchannels()
        finally:
            await admin.aclose()
    pubs = await asyncio.gather(
        *(node.publish(room, b"", None, 0) for room in rooms for node in (a, b) for _ in range(5))
    )
    assert Counter(p.room for p in pubs) == Counter({room: 10 for room in rooms})
    for rec in (rec_a, rec_b):
        await rec.wait_for(partial(_at_least, rec.publications, len(pubs)))
        assert all(seqs(rec, room) == list(range(1, 11)) for room in rooms)

    records = [session("alice", f"c{i}", ("a", "b")[i % 2], at=i) for i in range(50)]
    results = await asyncio.gather(
        *((a, b)[i % 2].admit(r, 3, "reject") for i, r in enumerate(records))
    )
    assert sum(res.admitted for res in results) == 3
    assert len(await b.sessions_of("alice")) == 3
    assert sum((await a.cluster_counts()).values()) == 3
    # Which node won the race depends on how each node batched its admissions: make
    # alice's sessions live on both nodes for the kick below.
    for r, res in zip(records, results, strict=True):
        if res.admitted:
            await (a if r.node_id == "a" else b).release(r)
    for node, conn in ((a, "c100"), (b, "c101")):
        assert (
            await node.admit(session("alice", conn, node.node_id, at=100), 3, "reject")
        ).admitted

    await a.presence_join(Membership(rooms[0], "alice", "c0"), announce=True)
    await rec_b.wait_for(lambda: len(rec_b.presence) == 1)
    kick = NodeCommand(NodeOp.CLOSE_USER, uid="alice")
    assert await a.command_user("alice", kick) == 2
    for rec in (rec_a, rec_b):
        await rec.wait_for(partial(operator.eq, rec.commands, [kick]))


@pytest.mark.gen_test(timeout=30)
async def test_cluster_links_heal_after_their_connections_are_killed(
    redis_cluster: RedisClusterServers, redis_nodes: RedisNodes
) -> None:
    (a, rec_a), (b, _) = [await redis_nodes.start(n, url=redis_cluster.url, **FAST) for n in "ab"]
    rooms = [f"room{i}" for i in range(12)]
    for room in rooms:
        await a.subscribe_room(room)
    await rec_a.wait_for(lambda: rec_a.availability == [True])
    for server in redis_cluster.servers:  # every master drops every pub/sub connection
        admin = redis.asyncio.Redis.from_url(server.url)
        try:
            await admin.client_kill_filter(_type="pubsub")
        finally:
            await admin.aclose()
    await rec_a.wait_for(lambda: rec_a.availability == [True, False, True], timeout=5)

    async def every_room_delivered() -> bool:
        for room in rooms:
            await b.publish(room, b"", None, 0)
        return all(seqs(rec_a, room) for room in rooms)

    await eventually(every_room_delivered, timeout=5, what="delivery after the links healed")
    session_b = session("bob", "x1", "b")
    await b.admit(session_b, 3, "reject")
    await b.refresh([session_b], [])
    assert (await a.cluster_counts()).get("b") == 1
    await b.release(session_b)
    assert (await a.cluster_counts()).get("b", 0) == 0


@pytest.mark.gen_test(timeout=30)
async def test_a_storm_of_handshakes_takes_one_round_trip_per_kind_of_call(
    redis_nodes: RedisNodes,
) -> None:
    b, _rec = await redis_nodes.start("a")
    records = [session(f"u{i}", f"c{i}", "a") for i in range(100)]
    before = b.batch_counts()
    await asyncio.gather(
        *(b.access_state("10.0.0.1", r.uid, f"jti-{r.uid}") for r in records),
        *(b.admit(r, 1, "reject") for r in records),
        *(b.inbox_list(r.uid) for r in records),
    )
    after = b.batch_counts()
    for kind in ("access_state", "admit", "inbox_list"):
        assert after[kind][1] - before[kind][1] == 100  # calls
        assert after[kind][0] - before[kind][0] == 1  # one batch each
