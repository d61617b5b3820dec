"""Finding 4 of issue 10: a refresh to narrower ``rooms`` must drop the rooms it no
longer allows.

The old code kept every joined room after an in-band ``refresh``: ``pub`` there
still succeeded and API publishes were still delivered. Now the refresh leaves
each room the new claims do not allow, tells the client with a ``left`` frame
before its ``ok``, and ``pub`` checks the claim itself. Run on two nodes of one
Redis so the API publish comes from the other node.
"""

from __future__ import annotations

import json

import pytest

from client import SquallClient
from tests.conftest import NodeFactory
from tests.harness import Client, connect, token
from tests.security import http, signed_headers_for
from tests.security.cluster import two_nodes

WIDE = ["secret-*", "public"]


async def api_publish(node: object, room: str, data: object) -> int:
    body = json.dumps({"room": room, "data": data}).encode()
    headers = signed_headers_for("POST", "/api/publish", body)
    r = await http(node, "POST", "/api/publish", body=body, headers=headers)  # type: ignore[arg-type]
    assert r.status == 200, r.body
    return int(r.body["seq"])


async def _joined(node: object, rooms: list[str], joins: list[str]) -> Client:
    c = await connect(node, token("alice", rooms=rooms))  # type: ignore[arg-type]
    for room in joins:
        assert (await c.request({"t": "join", "room": room}))["t"] == "ok"
    return c


@pytest.mark.gen_test(timeout=30)
async def test_refresh_to_narrower_rooms_leaves_them(nodes: NodeFactory) -> None:
    a, b = await two_nodes(nodes, {})
    alice = await _joined(b, WIDE, ["secret-plans", "public"])
    watcher = await _joined(b, ["secret-*"], ["secret-plans"])  # keeps the room subscribed on b
    rid = alice.next_id
    alice.next_id += 1
    alice.send({"t": "refresh", "id": rid, "token": token("alice", rooms=["public"])})
    left = await alice.recv()
    assert left == {
        "t": "left",
        "room": "secret-plans",
        "code": 403,
        "reason": "room not allowed by the refreshed token",
    }
    reply = await alice.recv()
    assert reply is not None and reply["t"] == "ok" and reply["id"] == rid

    pub = await alice.request({"t": "pub", "room": "secret-plans", "data": "leak"})
    assert pub["t"] == "err" and pub["code"] == 403
    join = await alice.request({"t": "join", "room": "secret-plans"})
    assert join["t"] == "err" and join["code"] == 403

    # An API publish from node a to the room reaches the watcher, never alice.
    seq = await api_publish(a, "secret-plans", "after the refresh")
    got = await watcher.wait_for(lambda f: f["t"] == "msg")
    assert got["seq"] == seq
    barrier = await api_publish(a, "public", "barrier")
    msg = await alice.wait_for(lambda f: f["t"] == "msg")
    assert msg["room"] == "public" and msg["seq"] == barrier, msg
    assert all(f.get("room") != "secret-plans" for f in alice.backlog)

    # still a member of what the new token allows
    assert (await alice.request({"t": "pub", "room": "public", "data": 1}))["t"] == "ok"
    presence = await watcher.request({"t": "presence", "room": "secret-plans"})
    assert presence["users"] == ["alice"]  # the watcher is alice too: one user


@pytest.mark.gen_test(timeout=30)
async def test_refresh_keeping_the_rooms_leaves_nothing(nodes: NodeFactory) -> None:
    node = await nodes()
    alice = await _joined(node, WIDE, ["secret-plans"])
    reply = await alice.request({"t": "refresh", "token": token("alice", rooms=["secret-*"])})
    assert reply["t"] == "ok"
    assert (await alice.request({"t": "pub", "room": "secret-plans", "data": 1}))["t"] == "ok"


@pytest.mark.gen_test(timeout=30)
async def test_refresh_to_no_rooms_leaves_all_and_presence_follows(nodes: NodeFactory) -> None:
    node = await nodes()
    alice = await connect(node, token("alice", rooms=WIDE))
    bob = await connect(node, token("bob"))
    for room in ("secret-a", "secret-b", "public"):
        assert (await alice.request({"t": "join", "room": room}))["t"] == "ok"
    assert (await bob.request({"t": "join", "room": "secret-a"}))["t"] == "ok"
    reply = await alice.request({"t": "refresh", "token": token("alice", rooms=[])})
    assert reply["t"] == "ok"
    left = sorted(f["room"] for f in alice.backlog if f["t"] == "left")
    assert left == ["public", "secret-a", "secret-b"]
    assert (await bob.request({"t": "presence", "room": "secret-a"}))["users"] == ["bob"]


@pytest.mark.gen_test(timeout=30)
async def test_the_python_client_forgets_a_room_it_was_made_to_leave(nodes: NodeFactory) -> None:
    node = await nodes()
    seen: list[dict[str, object]] = []
    client = SquallClient(node.url, token=token("alice", rooms=WIDE), on_message=seen.append)
    await client.connect()
    try:
        await client.join("secret-plans")
        await client.join("public")
        await client.refresh(token("alice", rooms=["public"]))
        assert set(client.rooms) == {"public"}
        assert [f["t"] for f in seen] == ["left"]
    finally:
        await client.close()
