"""Every client frame type through a real node, real sockets, both subprotocols."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from tests.conftest import NodeFactory
from tests.harness import connect, token


@pytest.mark.gen_test(timeout=15)
async def test_welcome_carries_connection_facts(nodes: NodeFactory) -> None:
    node = await nodes({"heartbeat.interval_s": 7})
    tok = token("alice")
    c = await connect(node, tok, welcome=False)
    w = await c.expect("welcome")
    assert w["uid"] == "alice"
    assert w["node"] == "n1"
    assert w["hb"] == 7
    assert isinstance(w["conn"], str) and w["conn"]
    assert w["exp"] > 1_000_000_000_000  # milliseconds


@pytest.mark.gen_test(timeout=15)
async def test_join_pub_msg_order_and_seq(nodes: NodeFactory) -> None:
    node = await nodes()
    a = await connect(node, token("alice"))
    b = await connect(node, token("bob"))
    ok = await a.request({"t": "join", "room": "lobby"})
    assert ok["t"] == "ok" and ok["room"] == "lobby" and ok["seq"] == 0
    assert ok["recovered"] is False and isinstance(ok["epoch"], str)
    assert (await b.request({"t": "join", "room": "lobby"}))["t"] == "ok"
    await a.expect("presence")  # bob joined
    for i in range(1, 4):
        a.send({"t": "pub", "id": 100 + i, "room": "lobby", "data": {"n": i}})
        # the publisher's ok comes first, then its own msg
        reply = await a.expect("ok")
        assert reply == {"t": "ok", "id": 100 + i, "seq": i}
        msg = await a.expect("msg")
        assert msg["seq"] == i and msg["data"] == {"n": i} and msg["from"] == "alice"
        other = await b.expect("msg")
        assert other["seq"] == i and other["room"] == "lobby" and other["data"] == {"n": i}
        assert isinstance(other["ts"], int)


@pytest.mark.gen_test(timeout=15)
async def test_pub_requires_membership_and_leave(nodes: NodeFactory) -> None:
    node = await nodes()
    a = await connect(node, token("alice"))
    e = await a.request({"t": "pub", "room": "r", "data": 1})
    assert e["t"] == "err" and e["code"] == 403
    await a.request({"t": "join", "room": "r"})
    left = await a.request({"t": "leave", "room": "r"})
    assert left["t"] == "ok" and left["room"] == "r"
    again = await a.request({"t": "leave", "room": "r"})
    assert again["t"] == "err" and again["code"] == 404
    dup = await a.request({"t": "join", "room": "r"})
    assert dup["t"] == "ok"
    assert (await a.request({"t": "join", "room": "r"}))["code"] == 409


@pytest.mark.gen_test(timeout=15)
async def test_presence_counts_users_once_and_skips_the_cause(nodes: NodeFactory) -> None:
    node = await nodes()
    a = await connect(node, token("alice"))
    b1 = await connect(node, token("bob"))
    b2 = await connect(node, token("bob"))
    await a.request({"t": "join", "room": "p"})
    await b1.request({"t": "join", "room": "p"})
    ev = await a.expect("presence")
    assert ev == {"t": "presence", "room": "p", "uid": "bob", "event": "join"}
    await b2.request({"t": "join", "room": "p"})  # bob's second connection: no event
    users = await a.request({"t": "presence", "room": "p"})
    assert users["users"] == ["alice", "bob"]
    await b1.request({"t": "leave", "room": "p"})  # bob still there through b2
    b2.close()  # last one gone: leave event
    ev = await a.expect("presence")
    assert ev["event"] == "leave" and ev["uid"] == "bob"
    # the joiner did not get its own join event
    ping = await b1.request({"t": "ping"})
    assert ping["t"] == "pong"
    users = await a.request({"t": "presence", "room": "p"})
    assert users["users"] == ["alice"]


@pytest.mark.gen_test(timeout=15)
async def test_private_messages_online_offline_and_ack(nodes: NodeFactory) -> None:
    node = await nodes()
    a = await connect(node, token("alice"))
    b = await connect(node, token("bob"))
    ok = await a.request({"t": "send", "to": "bob", "data": "hi"})
    assert ok["t"] == "ok" and ok["online"] is True and ok["queued"] is True
    dm = await b.expect("dm")
    assert dm["mid"] == ok["mid"] and dm["from"] == "alice" and dm["data"] == "hi"
    assert dm["offline"] is False
    b.send({"t": "ack", "mid": dm["mid"]})
    assert (await b.request({"t": "ping"}))["t"] == "pong"  # ack processed
    b.close()
    await b.closed()
    ok2 = await a.request({"t": "send", "to": "carol", "data": [1, 2]})
    assert ok2["online"] is False and ok2["queued"] is True
    c = await connect(node, token("carol"))
    dm2 = await c.expect("dm")
    assert dm2["offline"] is True and dm2["data"] == [1, 2] and dm2["mid"] == ok2["mid"]
    c.send({"t": "ack", "mid": [dm2["mid"]]})
    assert (await c.request({"t": "ping"}))["t"] == "pong"
    c.close()
    # acked: a new connection of carol gets nothing; bob's acked one is gone too
    c2 = await connect(node, token("carol"))
    assert (await c2.request({"t": "ping"}))["t"] == "pong"
    b2 = await connect(node, token("bob"))
    assert (await b2.request({"t": "ping"}))["t"] == "pong"


@pytest.mark.gen_test(timeout=15)
async def test_unacked_dm_is_redelivered(nodes: NodeFactory) -> None:
    node = await nodes()
    a = await connect(node, token("alice"))
    b = await connect(node, token("bob"))
    ok = await a.request({"t": "send", "to": "bob", "data": "x"})
    await b.expect("dm")
    b.close()
    b2 = await connect(node, token("bob"))
    again = await b2.expect("dm")
    assert again["mid"] == ok["mid"] and again["offline"] is True


@pytest.mark.gen_test(timeout=15)
async def test_history_recovery_after_reconnect(nodes: NodeFactory) -> None:
    node = await nodes()
    a = await connect(node, token("alice"))
    first = await a.request({"t": "join", "room": "h"})
    for i in range(5):
        await a.request({"t": "pub", "room": "h", "data": i})
    b = await connect(node, token("bob"))
    b.send({"t": "join", "id": 9, "room": "h", "since": 2, "epoch": first["epoch"]})
    got = [await b.expect("msg") for _ in range(3)]
    assert [m["seq"] for m in got] == [3, 4, 5]
    assert [m["data"] for m in got] == [2, 3, 4]
    ok = await b.expect("ok")
    assert ok["id"] == 9 and ok["recovered"] is True and ok["seq"] == 5
    # a stale epoch: nothing replayed, recovered false
    c = await connect(node, token("carol"))
    bad = await c.request({"t": "join", "room": "h", "since": 2, "epoch": "not-the-epoch"})
    assert bad["t"] == "ok" and bad["recovered"] is False and bad["seq"] == 5


@pytest.mark.gen_test(timeout=15)
async def test_recovery_beyond_history_is_not_recovered(nodes: NodeFactory) -> None:
    node = await nodes({"rooms.history_size": 3})
    a = await connect(node, token("alice"))
    await a.request({"t": "join", "room": "h"})
    for i in range(6):
        await a.request({"t": "pub", "room": "h", "data": i})
    b = await connect(node, token("bob"))
    b.send({"t": "join", "id": 1, "room": "h", "since": 1})
    got = [await b.expect("msg") for _ in range(3)]
    assert [m["seq"] for m in got] == [4, 5, 6]
    ok = await b.expect("ok")
    assert ok["recovered"] is False


@pytest.mark.gen_test(timeout=15)
async def test_ping_refresh_and_json_subprotocol(nodes: NodeFactory) -> None:
    node = await nodes()
    j = await connect(node, token("alice"), json_mode=True)
    assert j.ws.selected_subprotocol == "squall.v1.json"
    assert (await j.request({"t": "ping"}))["t"] == "pong"
    await j.request({"t": "join", "room": "js"})
    m = await connect(node, token("bob"))
    await m.request({"t": "join", "room": "js"})
    await m.request({"t": "pub", "room": "js", "data": {"b": b"\x00\x01", "k": [1, 2.5]}})
    msg = await j.wait_for(lambda f: f["t"] == "msg")
    assert msg["data"]["k"] == [1, 2.5]
    assert msg["data"]["b"] == {"$bin": "AAE="}
    new = token("alice", ttl=600)
    ok = await j.request({"t": "refresh", "token": new})
    assert ok["t"] == "ok" and ok["exp"] > 0
    other = await j.request({"t": "refresh", "token": token("mallory")})
    assert other["t"] == "err" and other["code"] == 403


@pytest.mark.gen_test(timeout=15)
async def test_bad_frames(nodes: NodeFactory) -> None:
    node = await nodes()
    c = await connect(node, token("alice"))
    e = await c.request({"t": "nope"})
    assert e["t"] == "err" and e["code"] == 400
    e = await c.request({"t": "join", "room": "x" * 129})
    assert e["code"] == 400
    e = await c.request({"t": "join", "room": "bad\x00room"})
    assert e["code"] == 400
    e = await c.request({"t": "join"})
    assert e["code"] == 400
    assert (await c.request({"t": "ping"}))["t"] == "pong"  # still open
    c.ws.write_message(msgpack.packb([1, 2, 3]), binary=True)
    assert await c.closed() == 4000
    c2 = await connect(node, token("alice"))
    c2.ws.write_message('{"t":"ping","id":1}')  # text frame on the msgpack subprotocol
    assert await c2.closed() == 4000
    c3 = await connect(node, token("alice"))
    c3.ws.write_message(b"\xc1garbage", binary=True)
    assert await c3.closed() == 4000


@pytest.mark.gen_test(timeout=15)
async def test_frame_too_large_closes_1009(nodes: NodeFactory) -> None:
    node = await nodes({"limits.max_frame_bytes": 1024})
    c = await connect(node, token("alice"))
    c.ws.write_message(msgpack.packb({"t": "ping", "id": 1, "pad": "x" * 2000}), binary=True)
    assert await c.closed() == 1009


@pytest.mark.gen_test(timeout=15)
async def test_rooms_claim_and_max_rooms(nodes: NodeFactory) -> None:
    node = await nodes({"limits.max_rooms_per_connection": 2})
    c = await connect(node, token("alice", rooms=["public.*"]))
    assert (await c.request({"t": "join", "room": "private"}))["code"] == 403
    assert (await c.request({"t": "presence", "room": "private"}))["code"] == 403
    assert (await c.request({"t": "join", "room": "public.a"}))["t"] == "ok"
    assert (await c.request({"t": "join", "room": "public.b"}))["t"] == "ok"
    e = await c.request({"t": "join", "room": "public.c"})
    assert e["t"] == "err" and e["code"] == 403


@pytest.mark.gen_test(timeout=20)
async def test_concurrent_publishers_gap_free(nodes: NodeFactory) -> None:
    node = await nodes({"ratelimit.messages": 10000})
    pubs = [await connect(node, token(f"u{i}")) for i in range(4)]
    watcher = await connect(node, token("w"))
    await watcher.request({"t": "join", "room": "g"})
    for p in pubs:
        await p.request({"t": "join", "room": "g"})

    async def burst(c: object) -> None:
        for k in range(25):
            await c.request({"t": "pub", "room": "g", "data": k})  # type: ignore[attr-defined]

    await asyncio.gather(*(burst(p) for p in pubs))
    seqs = []
    while len(seqs) < 100:
        f = await watcher.wait_for(lambda f: f["t"] == "msg")
        seqs.append(f["seq"])
    assert seqs == list(range(1, 101))


@pytest.mark.gen_test(timeout=15)
async def test_sweeper_keeps_sessions_and_memberships_alive(nodes: NodeFactory) -> None:
    # records live 2 x interval = 0.2 s unless the heartbeat sweep refreshes them
    node = await nodes({"heartbeat.interval_s": 0.1})
    c = await connect(node, token("alice"))
    await c.request({"t": "join", "room": "alive"})
    start = node.sweeper.sweeps
    while node.sweeper.sweeps < start + 8:  # 0.8 s: four record lifetimes
        assert (await c.request({"t": "ping"}))["t"] == "pong"
        await asyncio.sleep(0.05)
    assert await node.backend.presence_members("alive") == ["alice"]
    assert [s.uid for s in await node.backend.sessions_of("alice")] == ["alice"]
