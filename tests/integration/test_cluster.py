"""Several Squall nodes sharing one real redis-server behave as one server.

Each test runs whole nodes (Tornado apps on their own ports, the same factories as
server.py) with a unique key prefix on the session's shared redis-server, or on a
private one when it stops Redis.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.conftest import NodeFactory
from tests.harness import (
    Client,
    HandshakeRefused,
    RunningNode,
    connect,
    eventually,
    refused,
    token,
)
from tests.procs import ServerProcess
from tests.redis_server import RedisServer, free_port, shared_cluster, shared_server

ROOT = Path(__file__).resolve().parents[2]

Cluster = Callable[..., Awaitable[RunningNode]]

#: run on a single Redis and on a 3-master Redis Cluster (sharded pub/sub, hash tags)
BOTH_KINDS = pytest.mark.parametrize("cluster", ["redis", "redis-cluster"], indirect=True)


@pytest.fixture(params=["redis"])
def cluster(request: pytest.FixtureRequest, nodes: NodeFactory) -> Cluster:
    """``await cluster("a", {...})`` starts a node on the shared Redis, one prefix per test.

    Tests marked ``BOTH_KINDS`` run a second time on a 3-master Redis Cluster.
    """
    url = shared_cluster().url if request.param == "redis-cluster" else shared_server().url
    prefix = f"squall-cl:{uuid.uuid4().hex}:"

    async def start(
        node_id: str, overrides: dict[str, Any] | None = None, **kw: Any
    ) -> RunningNode:
        conf = {"backend.url": kw.pop("url", url), "backend.key_prefix": prefix}
        conf.update(overrides or {})
        return await nodes(conf, node_id=node_id)

    return start


async def _ready(node: RunningNode) -> int:
    resp = await AsyncHTTPClient().fetch(node.http + "/readyz", raise_error=False)
    return resp.code


@pytest.mark.gen_test(timeout=30)
@BOTH_KINDS
async def test_room_message_reaches_every_node_once_in_order(cluster: Cluster) -> None:
    a, b, c = [await cluster(n) for n in ("a", "b", "c")]
    members = [await connect(n, token(f"u-{n.node.node_id}")) for n in (a, b, c)]
    extra_b = await connect(b, token("u-b2"))
    for m in [*members, extra_b]:
        assert (await m.request({"t": "join", "room": "world"}))["t"] == "ok"
    pubs = []
    for i in range(20):
        ok = await members[0].request({"t": "pub", "room": "world", "data": i})
        pubs.append(ok["seq"])
    assert pubs == list(range(1, 21))
    for m in [*members, extra_b]:
        got = []
        while len(got) < 20:
            f = await m.wait_for(lambda f: f["t"] == "msg")
            got.append((f["seq"], f["data"]))
        assert got == [(i + 1, i) for i in range(20)]
        # nothing more: a ping round trip proves no duplicate is in flight before it
        assert (await m.request({"t": "ping"}))["t"] == "pong"
        assert not [f for f in m.backlog if f["t"] == "msg"]


@pytest.mark.gen_test(timeout=30)
@BOTH_KINDS
async def test_concurrent_publishers_on_two_nodes_share_one_order(cluster: Cluster) -> None:
    a = await cluster("a", {"ratelimit.messages": 10000})
    b = await cluster("b", {"ratelimit.messages": 10000})
    pa, pb = await connect(a, token("pa")), await connect(b, token("pb"))
    wa, wb = await connect(a, token("wa")), await connect(b, token("wb"))
    for cl in (pa, pb, wa, wb):
        await cl.request({"t": "join", "room": "order"})

    async def burst(cl: Client, tag: str) -> None:
        for k in range(30):
            await cl.request({"t": "pub", "room": "order", "data": f"{tag}{k}"})

    await asyncio.gather(burst(pa, "a"), burst(pb, "b"))
    orders = []
    for w in (wa, wb):
        seen = []
        while len(seen) < 60:
            f = await w.wait_for(lambda f: f["t"] == "msg")
            seen.append((f["seq"], f["data"]))
        orders.append(seen)
    assert [s for s, _ in orders[0]] == list(range(1, 61))
    assert orders[0] == orders[1]


@pytest.mark.gen_test(timeout=30)
@BOTH_KINDS
async def test_presence_is_cluster_wide(cluster: Cluster) -> None:
    a, b = await cluster("a"), await cluster("b")
    alice = await connect(a, token("alice"))
    await alice.request({"t": "join", "room": "p"})
    bob = await connect(b, token("bob"))
    await bob.request({"t": "join", "room": "p"})
    ev = await alice.wait_for(lambda f: f["t"] == "presence")
    assert ev["uid"] == "bob" and ev["event"] == "join"
    assert (await alice.request({"t": "presence", "room": "p"}))["users"] == ["alice", "bob"]
    assert (await bob.request({"t": "presence", "room": "p"}))["users"] == ["alice", "bob"]
    bob.close()
    ev = await alice.wait_for(lambda f: f["t"] == "presence")
    assert ev["uid"] == "bob" and ev["event"] == "leave"


@pytest.mark.gen_test(timeout=30)
@BOTH_KINDS
async def test_private_message_to_a_user_on_another_node(cluster: Cluster) -> None:
    a, b = await cluster("a"), await cluster("b")
    alice = await connect(a, token("alice"))
    bob = await connect(b, token("bob"))
    ok = await alice.request({"t": "send", "to": "bob", "data": {"hi": 1}})
    assert ok["online"] is True and ok["queued"] is True
    dm = await bob.expect("dm")
    assert dm["mid"] == ok["mid"] and dm["from"] == "alice" and dm["data"] == {"hi": 1}


@pytest.mark.gen_test(timeout=30)
@BOTH_KINDS
async def test_kick_oldest_acts_across_nodes_within_a_second(cluster: Cluster) -> None:
    conf = {"limits.max_connections_per_user": 1}
    a, b = await cluster("a", conf), await cluster("b", conf)
    old = await connect(a, token("alice"))
    started = time.monotonic()
    new = await connect(b, token("alice"))
    assert await old.closed(timeout=1.0) == 4009
    assert time.monotonic() - started < 1.0
    assert (await new.request({"t": "ping"}))["t"] == "pong"


@pytest.mark.gen_test(timeout=30)
@BOTH_KINDS
async def test_ban_acts_across_nodes(cluster: Cluster) -> None:
    a, b = await cluster("a"), await cluster("b")
    victim = await connect(b, token("mallory"))
    await a.backend.ban("mallory", None)
    e = await refused(a, token("mallory"))
    assert e.status == 403
    e = await refused(b, token("mallory"))
    assert e.status == 403
    await a.backend.unban("mallory")
    ok = await connect(b, token("mallory"))
    ok.close()
    victim.close()


@pytest.mark.gen_test(timeout=60)
@BOTH_KINDS
async def test_per_user_cap_is_exact_under_concurrent_connects(cluster: Cluster) -> None:
    conf = {"limits.max_connections_per_user": 3, "limits.on_new_login": "reject"}
    a, b = await cluster("a", conf), await cluster("b", conf)
    tok = token("crowd")

    async def one(i: int) -> Client | int:
        try:
            return await connect(a if i % 2 else b, tok)
        except HandshakeRefused as e:
            return e.status

    results = await asyncio.gather(*(one(i) for i in range(50)))
    admitted = [r for r in results if isinstance(r, Client)]
    assert len(admitted) == 3
    assert all(r == 429 for r in results if not isinstance(r, Client))
    sessions = await a.backend.sessions_of("crowd")
    assert len(sessions) == 3


@pytest.mark.gen_test(timeout=60)
async def test_redis_outage_is_loud_and_self_healing(cluster: Cluster, tmp_path: Path) -> None:
    server = RedisServer().start()
    try:
        a = await cluster("a", url=server.url)
        b = await cluster("b", url=server.url)
        pub = await connect(a, token("pub"))
        sub = await connect(b, token("sub"))
        await pub.request({"t": "join", "room": "r"})
        await sub.request({"t": "join", "room": "r"})
        assert await _ready(a) == 200
        server.stop()
        await eventually(lambda: not a.backend.available and not b.backend.available, 10)
        assert await _ready(a) == 503 and await _ready(b) == 503
        e = await pub.request({"t": "pub", "room": "r", "data": "lost?"})
        assert e["t"] == "err" and e["code"] == 503
        assert (await refused(a, token("newcomer"))).status == 503
        server.start()
        started = time.monotonic()
        await eventually(lambda: a.backend.available and b.backend.available, 10)
        assert await _ready(a) == 200
        # delivery resumes: b resubscribed to the room by itself
        deadline = time.monotonic() + 5
        while True:
            ok = await pub.request({"t": "pub", "room": "r", "data": "back"})
            if ok["t"] == "ok":
                break
            assert time.monotonic() < deadline
        msg = await sub.wait_for(lambda f: f["t"] == "msg" and f["data"] == "back", timeout=5)
        assert msg["seq"] >= 1
        # the restarted Redis lost everything; the nodes wrote their sessions and
        # memberships again, so limits and presence still see these users
        await eventually(lambda: not b.node.router.backend_lost)
        for _ in range(100):
            if await a.backend.presence_members("r") == ["pub", "sub"]:
                break
            await asyncio.sleep(0.02)
        assert await a.backend.presence_members("r") == ["pub", "sub"]
        assert [s.conn_id for s in await a.backend.sessions_of("sub")] == [
            c.conn_id for c in b.node.hub
        ]
        assert time.monotonic() - started < 10
        metrics = b.node.metrics.registry.get_sample_value("squall_backend_available")
        assert metrics == 1.0
    finally:
        server.cleanup()


def _spawn_node(
    server_procs: Callable[..., ServerProcess], url: str, prefix: str, port: int, node_id: str
) -> ServerProcess:
    env = {
        "REDIS_URL": url,
        "SQUALL_BACKEND__KEY_PREFIX": prefix,
        "SQUALL_HEARTBEAT__INTERVAL_S": "0.5",
        "SQUALL_LIMITS__MAX_CONNECTIONS_PER_USER": "1",
        "SQUALL_LIMITS__ON_NEW_LOGIN": "reject",
        "SQUALL_SERVER__HOST": "127.0.0.1",
        "SQUALL_SERVER__DRAIN_S": "1",
    }
    proc = server_procs(["--port", str(port), "--node-id", node_id], env, name=node_id)
    proc.wait_for_line("listening", timeout=15)
    return proc


@pytest.mark.gen_test(timeout=60)
async def test_sigkilled_node_frees_its_users_slots(
    cluster: Cluster, server_procs: Callable[..., ServerProcess]
) -> None:
    url = shared_server().url
    prefix = f"squall-kill:{uuid.uuid4().hex}:"
    port = free_port()
    proc = _spawn_node(server_procs, url, prefix, port, "victim")
    victim = RunningNode.__new__(RunningNode)
    victim.port = port
    holder = await connect(victim, token("alice"))
    assert (await holder.request({"t": "ping"}))["t"] == "pong"
    survivor = await cluster(
        "survivor",
        {
            "backend.key_prefix": prefix,
            "heartbeat.interval_s": 0.5,
            "limits.max_connections_per_user": 1,
            "limits.on_new_login": "reject",
        },
    )
    assert (await refused(survivor, token("alice"))).status == 429
    proc.signal(signal.SIGKILL)
    proc.wait(5)
    killed_at = time.monotonic()
    while True:
        try:
            c = await connect(survivor, token("alice"))
            break
        except HandshakeRefused as e:
            assert e.status == 429
            assert time.monotonic() - killed_at < 2 * 0.5 + 1.0, "slot not freed in time"
            await asyncio.sleep(0.05)
    assert time.monotonic() - killed_at <= 2 * 0.5 + 0.5
    c.close()


@pytest.mark.gen_test(timeout=30)
async def test_flushed_redis_is_noticed_by_the_heartbeat_and_refilled(cluster: Cluster) -> None:
    import redis.asyncio as aioredis

    server = RedisServer().start()
    try:
        a = await cluster("a", {"heartbeat.interval_s": 0.2}, url=server.url)
        alice = await connect(a, token("alice"))
        await alice.request({"t": "join", "room": "kept"})
        assert [s.uid for s in await a.backend.sessions_of("alice")] == ["alice"]
        raw = aioredis.from_url(server.url)
        await raw.flushall()
        await raw.aclose()
        assert await a.backend.sessions_of("alice") == []
        deadline = time.monotonic() + 3
        while not await a.backend.sessions_of("alice"):
            assert time.monotonic() < deadline, "sessions not re-registered"
            await asyncio.sleep(0.05)
        assert await a.backend.presence_members("kept") == ["alice"]
    finally:
        server.cleanup()


@pytest.mark.gen_test(timeout=30)
async def test_a_room_message_costs_one_redis_command(cluster: Cluster) -> None:
    import redis.asyncio as aioredis

    server = RedisServer().start()
    try:
        a = await cluster("a", {"ratelimit.messages": 1000}, url=server.url)
        b = await cluster("b", url=server.url)
        pub = await connect(a, token("pub"))
        sub = await connect(b, token("sub"))
        await pub.request({"t": "join", "room": "cost"})
        await sub.request({"t": "join", "room": "cost"})
        raw = aioredis.from_url(server.url)
        await raw.config_resetstat()
        for i in range(20):
            assert (await pub.request({"t": "pub", "room": "cost", "data": i}))["t"] == "ok"
        for _ in range(20):
            await sub.wait_for(lambda f: f["t"] == "msg")
        stats = await raw.info("commandstats")
        await raw.aclose()
        # one EVALSHA per message: rate charge, seq, history and PUBLISH in one script
        # (nothing else runs in this window: the heartbeat interval is 25 s)
        assert stats["cmdstat_evalsha"]["calls"] == 20
        assert "cmdstat_eval" not in stats
    finally:
        server.cleanup()
