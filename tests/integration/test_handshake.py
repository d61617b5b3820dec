"""Handshake statuses, first-frame authentication and every token that must be refused."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import jwt
import msgpack
import pytest
import redis.asyncio

from core.backend.base import BackendOptions, DirectMessage, NodeCommand, NodeOp
from core.backend.memory import MemoryBackend
from core.backend.redis import RedisBackend
from core.clock import SystemClock
from tests.conftest import NodeFactory
from tests.harness import connect, eventually, refused, token
from tests.redis_server import shared_server
from tests.tokens import (
    SECRET,
    good_claims,
    make_token,
    rsa_keypair,
    tamper_payload,
    unsigned_none_token,
)


def _claims(**over: Any) -> dict[str, Any]:
    c = good_claims("alice")
    for k, v in over.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def bad_tokens(public_pem: str) -> dict[str, str]:
    now = int(time.time())
    return {
        "alg_none": unsigned_none_token(_claims()),
        "hs256_with_rsa_public_pem": make_token(_claims(), secret=public_pem),
        "alg_outside_allowlist": make_token(_claims(), alg="HS512", secret=SECRET + "z" * 24),
        "tampered_payload": tamper_payload(make_token(_claims()), sub="admin"),
        "expired_past_leeway": make_token(_claims(exp=now - 30)),
        "missing_exp": make_token(_claims(exp=None)),
        "missing_jti": make_token(_claims(jti=None)),
        "missing_sub": make_token(_claims(sub=None)),
        "nbf_in_future": make_token(_claims(nbf=now + 120)),
        "wrong_aud": make_token(_claims(aud="someone-else")),
        "wrong_iss": make_token(_claims(iss="https://evil.example")),
        "garbage": "not.a.jwt",
    }


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("via", ["header", "query"])
async def test_each_bad_token_is_refused_401(nodes: NodeFactory, via: str) -> None:
    _priv, pub = rsa_keypair()
    node = await nodes(
        {
            "auth.audience": "squall-tests",
            "auth.issuer": "https://issuer.example",
            "auth.lockout.failures": 1000,
        }
    )
    for name, tok in bad_tokens(pub).items():
        e = await refused(node, tok, via=via)
        assert e.status == 401, name
        assert e.body["error"] == "unauthorized", name
    good = make_token(_claims(aud="squall-tests", iss="https://issuer.example"))
    c = await connect(node, good, via=via)
    assert (await c.request({"t": "ping"}))["t"] == "pong"


@pytest.mark.gen_test(timeout=15)
async def test_exp_inside_leeway_is_accepted(nodes: NodeFactory) -> None:
    node = await nodes({"auth.leeway_s": 30})
    tok = make_token(_claims(exp=int(time.time()) - 10))
    c = await connect(node, tok, welcome=False)
    # accepted, then closed as expired only once the leeway runs out (20 s away)
    assert (await c.expect("welcome"))["uid"] == "alice"


@pytest.mark.gen_test(timeout=15)
async def test_banned_user_403_and_origin_403(nodes: NodeFactory) -> None:
    node = await nodes({"security.allowed_origins": ["https://app.example.com"]})
    await node.backend.ban("mallory", None)
    e = await refused(node, token("mallory"))
    assert e.status == 403 and e.body["error"] == "banned"
    # an operator can write the documented key directly
    await node.backend.set_key("auth:eve", "banned", None)  # type: ignore[attr-defined]
    assert (await refused(node, token("eve"))).status == 403
    for origin in ("https://app.example.com.evil.example", "https://evil.example", "null"):
        e = await refused(node, token("alice"), headers={"Origin": origin})
        assert e.status == 403 and e.body["error"] == "origin_not_allowed", origin
    ok = await connect(node, token("alice"), headers={"Origin": "https://app.example.com"})
    ok.close()


@pytest.mark.gen_test(timeout=15)
async def test_same_host_origin_rule(nodes: NodeFactory) -> None:
    node = await nodes()
    host = f"127.0.0.1:{node.port}"
    c = await connect(node, token("alice"), headers={"Origin": f"http://{host}"})
    c.close()
    e = await refused(node, token("alice"), headers={"Origin": "http://other.example"})
    assert e.status == 403


@pytest.mark.gen_test(timeout=15)
async def test_lockout_429_after_failures_then_other_ips_unaffected(nodes: NodeFactory) -> None:
    node = await nodes({"auth.lockout.failures": 3, "auth.lockout.block_s": 60})
    for _ in range(3):
        assert (await refused(node, "garbage")).status == 401
    e = await refused(node, token("alice"))  # even a valid token
    assert e.status == 429 and e.body["error"] == "locked_out"
    assert int(e.headers["Retry-After"]) > 0
    assert await node.backend.lockout_remaining("10.9.9.9") == 0


@pytest.mark.gen_test(timeout=15)
async def test_per_user_limit_reject_429(nodes: NodeFactory) -> None:
    node = await nodes({"limits.max_connections_per_user": 2, "limits.on_new_login": "reject"})
    a = await connect(node, token("alice"))
    b = await connect(node, token("alice"))
    e = await refused(node, token("alice"))
    assert e.status == 429 and e.body["error"] == "too_many_connections"
    other = await connect(node, token("bob"))  # other users unaffected
    a.close()
    await a.closed()
    # the slot is free again once the first connection is gone
    c = await _retry_connect(node, token("alice"))
    for x in (b, c, other):
        x.close()


async def _retry_connect(node: Any, tok: str) -> Any:
    # the session is released just after the close completes
    await eventually(lambda: len(node.node.hub) == 2)
    return await connect(node, tok)


@pytest.mark.gen_test(timeout=15)
async def test_kick_oldest_4009(nodes: NodeFactory) -> None:
    node = await nodes({"limits.max_connections_per_user": 2})
    first = await connect(node, token("alice"))
    second = await connect(node, token("alice"))
    third = await connect(node, token("alice"))
    bye = await first.expect("bye")
    assert bye["code"] == 4009
    assert await first.closed() == 4009
    for c in (second, third):
        assert (await c.request({"t": "ping"}))["t"] == "pong"


@pytest.mark.gen_test(timeout=15)
async def test_max_connections_503_with_retry_after(nodes: NodeFactory) -> None:
    node = await nodes({"limits.max_connections": 2})
    a = await connect(node, token("a"))
    b = await connect(node, token("b"))
    e = await refused(node, token("c"))
    assert e.status == 503 and "Retry-After" in e.headers
    node.node.life.draining = True
    a.close()
    await a.closed()
    e = await refused(node, token("c"))
    assert e.status == 503 and e.body["error"] == "draining"
    b.close()


@pytest.mark.gen_test(timeout=15)
async def test_first_frame_auth(nodes: NodeFactory) -> None:
    node = await nodes({"limits.max_connections_per_user": 1, "limits.on_new_login": "reject"})
    c = await connect(node, None)
    c.send({"t": "auth", "token": token("alice")})
    w = await c.expect("welcome")
    assert w["uid"] == "alice"
    # same failures after a first-frame auth: 4001, 4003, 4029
    bad = await connect(node, None)
    bad.send({"t": "auth", "token": "garbage"})
    assert (await bad.expect("bye"))["code"] == 4001
    assert await bad.closed() == 4001
    await node.backend.ban("mallory", None)
    banned = await connect(node, None)
    banned.send({"t": "auth", "token": token("mallory")})
    assert await banned.closed() == 4003
    limited = await connect(node, None)
    limited.send({"t": "auth", "token": token("alice")})
    assert await limited.closed() == 4029
    other = await connect(node, None)
    other.send({"t": "ping", "id": 1})  # anything but auth first
    assert await other.closed() == 4001


@pytest.mark.gen_test(timeout=15)
async def test_auth_timeout_4004(nodes: NodeFactory) -> None:
    node = await nodes({"auth.timeout_s": 0.3})
    c = await connect(node, None)
    assert (await c.expect("bye"))["code"] == 4004
    assert await c.closed() == 4004


@pytest.mark.gen_test(timeout=15)
async def test_token_expiry_4002_unless_refreshed(nodes: NodeFactory) -> None:
    node = await nodes({"auth.leeway_s": 0})
    short = make_token(good_claims("alice", ttl=1))
    c = await connect(node, short)
    assert (await c.expect("bye", timeout=5))["code"] == 4002
    assert await c.closed() == 4002
    # refreshed in time: survives past the first token's expiry
    d = await connect(node, make_token(good_claims("bob", ttl=1)))
    ok = await d.request({"t": "refresh", "token": token("bob", ttl=60)})
    assert ok["t"] == "ok"
    # absence of a close cannot be awaited: wait past the old expiry, then check
    await asyncio.sleep(1.6)
    assert (await d.request({"t": "ping"}))["t"] == "pong"


class _RacingBackend(MemoryBackend):
    """Plays a newer login that evicts each admission before its reply arrives."""

    async def admit(self, record: Any, limit: int, policy: Any, inbox: Any = None) -> Any:
        result = await super().admit(record, limit, policy, inbox)
        if record.uid == "raced":
            cmd = NodeCommand(NodeOp.CLOSE_CONN, 4009, "replaced", conn_id=record.conn_id)
            await self.send_command(self.node_id, cmd)
            await asyncio.sleep(0)  # let the mailbox deliver before admit returns
        return result


@pytest.mark.gen_test(timeout=15)
async def test_eviction_during_admission_is_not_lost(nodes: NodeFactory) -> None:
    backend = _RacingBackend("n1", BackendOptions(), SystemClock())
    node = await nodes(backend=backend)
    e = await refused(node, token("raced"))
    assert e.status == 429 and e.body["error"] == "replaced"
    assert await backend.sessions_of("raced") == []
    c = await connect(node, None)
    c.send({"t": "auth", "token": token("raced")})
    assert await c.closed() == 4009
    ok = await connect(node, token("calm"))
    ok.close()


@pytest.mark.gen_test(timeout=15)
@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_asymmetric_algorithms_end_to_end(
    nodes: NodeFactory, tmp_path: Any, alg: str
) -> None:
    from tests.tokens import ec_keypair, ed25519_keypair

    priv, pub = {"RS256": rsa_keypair, "ES256": ec_keypair, "EdDSA": ed25519_keypair}[alg]()
    pub_file = tmp_path / "public.pem"
    pub_file.write_text(pub)
    node = await nodes(
        {"auth.algorithms": [alg], "auth.secret": None, "auth.public_key_file": str(pub_file)}
    )
    good = make_token(good_claims("alice"), alg=alg, secret=priv)
    c = await connect(node, good)
    assert (await c.request({"t": "ping"}))["t"] == "pong"
    # an HS256 token signed with the public key as HMAC secret: the confusion attack
    assert (await refused(node, make_token(good_claims("alice"), secret=pub))).status == 401
    assert (await refused(node, make_token(good_claims("alice")))).status == 401


@pytest.mark.gen_test(timeout=30)
async def test_concurrent_handshakes_on_redis_take_two_calls_each(nodes: NodeFactory) -> None:
    """On one Redis a handshake costs the access read and ONE admission script (which
    also indexes the session, re-reads revocation and ban, and reads the inbox page):
    no separate re-check or inbox call. Offline messages still arrive; a user banned
    and a token revoked before the storm are still refused."""
    node = await nodes(
        {"backend.url": shared_server().url, "backend.key_prefix": f"hs:{uuid.uuid4().hex}:"}
    )
    backend = node.backend
    assert isinstance(backend, RedisBackend)
    n = 40
    for i in range(0, n, 4):
        data = msgpack.packb("hi")  # the encoded payload, as a sender's dm carries it
        dm = DirectMessage(mid=f"m{i}", to_uid=f"s{i}", from_uid="x", data=data, ts=i)
        assert await backend.inbox_put(dm)
    await backend.ban("s1", None)
    revoked = make_token(good_claims("s2"))
    jti = jwt.decode(revoked, options={"verify_signature": False})["jti"]
    await backend.revoke_jti(jti, int(time.time() * 1000) + 60_000)
    before = backend.batch_counts()
    tokens = [revoked if i == 2 else token(f"s{i}") for i in range(n)]
    outcomes = await asyncio.gather(*(connect(node, t) for t in tokens), return_exceptions=True)
    after = backend.batch_counts()
    calls = {kind: after[kind][1] - before[kind][1] for kind in after}
    assert calls["access_state"] == n and calls["admit"] == n - 2 and calls["inbox_list"] == 0
    assert calls["release"] == 0  # the banned and the revoked were refused before admission
    assert calls["admit"] > after["admit"][0] - before["admit"][0]  # batched
    for i, outcome in enumerate(outcomes):
        if i in (1, 2):
            assert isinstance(outcome, Exception), f"s{i} was admitted"
            continue
        assert not isinstance(outcome, BaseException), outcome
        if i % 4 == 0:
            dm = await outcome.expect("dm")
            assert dm["mid"] == f"m{i}" and dm["offline"] is True and dm["data"] == "hi"
        outcome.close()
    assert await backend.sessions_of("s1") == [] and await backend.sessions_of("s2") == []


@pytest.mark.gen_test(timeout=60)
async def test_a_mass_disconnect_on_redis_releases_everything_in_few_round_trips(
    nodes: NodeFactory,
) -> None:
    """300 members of 10 rooms drop at once (a network blip): every session and
    membership is released, each leave announced once, in batched round trips."""
    node = await nodes(
        {"backend.url": shared_server().url, "backend.key_prefix": f"md:{uuid.uuid4().hex}:"}
    )
    backend = node.backend
    assert isinstance(backend, RedisBackend)
    n = 300
    clients = await asyncio.gather(*(connect(node, token(f"m{i}")) for i in range(n)))
    for i, c in enumerate(clients):
        c.send({"t": "join", "id": 1, "room": f"room{i % 10}"})
    for c in clients:
        await c.wait_for(lambda f: f.get("t") == "ok" and f.get("id") == 1)
    assert sum((await backend.cluster_counts()).values()) == n
    before = backend.batch_counts()
    for c in clients:
        c.close()

    async def all_released() -> bool:
        if sum((await backend.cluster_counts()).values()):
            return False
        return not any([await backend.presence_members(f"room{r}") for r in range(10)])

    deadline = asyncio.get_running_loop().time() + 20
    while not await all_released():  # released by the node, no event to await
        assert asyncio.get_running_loop().time() < deadline, "not all released in time"
        await asyncio.sleep(0.05)
    after = backend.batch_counts()
    for kind in ("release", "presence_leave"):
        batches = after[kind][0] - before[kind][0]
        calls = after[kind][1] - before[kind][1]
        assert calls == n
        assert batches < n // 5, f"{kind}: {batches} round trips for {calls} calls"
    for i in range(0, n, 37):
        assert await backend.sessions_of(f"m{i}") == []


@pytest.mark.gen_test(timeout=60)
async def test_after_a_pubsub_outage_every_room_catches_up_in_batched_round_trips(
    nodes: NodeFactory,
) -> None:
    """600 rooms with members lose the node's pub/sub link while messages are published
    to them; when it is back every room is caught up from history (each member gets
    its room's message once, in order) with the history reads batched, not 600 round
    trips at once."""
    url = shared_server().url
    node = await nodes(
        {
            "backend.url": url,
            "backend.key_prefix": f"cu:{uuid.uuid4().hex}:",
            "ratelimit.messages": 100_000,  # 100 joins at once per client
        }
    )
    backend = node.backend
    assert isinstance(backend, RedisBackend)
    rooms = [f"c{i}" for i in range(600)]
    clients = await asyncio.gather(*(connect(node, token(f"cu{i}")) for i in range(6)))
    for j, c in enumerate(clients):
        for i, room in enumerate(rooms[j * 100 : (j + 1) * 100]):
            c.send({"t": "join", "id": 10 + i, "room": room})
    for c in clients:
        await c.wait_for(lambda f: f.get("t") == "ok" and f.get("id") == 109, timeout=20)
    admin = redis.asyncio.Redis.from_url(url)
    try:
        before = backend.batch_counts()["room_state"]
        await admin.client_kill_filter(_type="pubsub")
        # Published while the node is not listening, or (if it resubscribed already)
        # live: either way each member gets its room's message once, in order, and the
        # node's resubscription catches every room up (resume_all).
        for room in rooms:
            await backend.publish(room, msgpack.packb(room), None, 0)
        for j, c in enumerate(clients):
            got = set()
            while len(got) < 100:
                frame = await c.wait_for(lambda f: f.get("t") == "msg", timeout=20)
                c.backlog.clear()
                assert frame["data"] == frame["room"] and frame["room"] not in got
                got.add(frame["room"])
            assert got == set(rooms[j * 100 : (j + 1) * 100])
        deadline = asyncio.get_running_loop().time() + 20
        while backend.batch_counts()["room_state"][1] - before[1] < len(rooms):
            # the catch-up of every room after the resubscription: no event to await
            assert asyncio.get_running_loop().time() < deadline, "rooms not caught up"
            await asyncio.sleep(0.02)
        after = backend.batch_counts()["room_state"]
    finally:
        await admin.aclose()
    calls, batches = after[1] - before[1], after[0] - before[0]
    assert calls >= 600
    assert batches <= calls // 10, f"{batches} round trips for {calls} history reads"
