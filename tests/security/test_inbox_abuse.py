"""Finding 3 of issue 10: the offline inbox cannot be turned against its owner.

The old ``greet()`` wrote the whole inbox at once: after 990 DMs of 1.5 KB every
reconnect of the victim got ``welcome``, hundreds of frames and close 4011, for the
inbox's whole life, and nothing bounded the inbox's bytes. Now delivery is paged
to the outbound buffer and paced by acks, the inbox has a byte cap, a sender has
a quota per recipient, and ``offline.recipients`` decides whether unknown users
can be written to. The flood runs on two nodes of one Redis.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from core.backend.base import inbox_size
from core.connection import Connection
from core.inbox_delivery import QUOTA_REASON
from core.wsframe import OP_BINARY
from tests.conftest import NodeFactory
from tests.harness import Client, RunningNode, connect, eventually, token
from tests.rawws import RawClient
from tests.security.cluster import two_nodes

# 990 DMs as in the report, of 4.5 KB rather than 1.5 KB: on loopback the kernel
# takes about 2.5 MB of a non-reading socket at once, a real link far less.
BLOB = "x" * 4500
FLOOD = {
    "ratelimit.messages": 100000,
    "limits.outbound_buffer_bytes": 262144,
    "offline.max_bytes": 8 * 1024 * 1024,
    "offline.max_per_sender": 0,
}


async def send_many(client: Client, to: str, n: int, data: Any = BLOB) -> list[dict[str, Any]]:
    """``n`` pipelined ``send`` frames; returns their replies in order."""
    first = client.next_id
    for i in range(n):
        client.send({"t": "send", "id": first + i, "to": to, "data": data})
    client.next_id += n
    replies: dict[int, dict[str, Any]] = {}
    while len(replies) < n:
        frame = await client.wait_for(lambda f: f["t"] in ("ok", "err"), timeout=30)
        replies[frame["id"]] = frame
    return [replies[first + i] for i in range(n)]


async def _paused_reader_is_not_cut(node: RunningNode, uid: str) -> None:
    headers = {
        "Authorization": f"Bearer {token(uid)}",
        "Sec-WebSocket-Protocol": "squall.v1.msgpack",
    }
    raw, status, _ = await RawClient.connect(node.port, headers=headers, rcvbuf=4096)
    assert status == 101
    try:
        seen: list[Connection] = []

        def cut() -> bool:
            return b'squall_closes_total{code="4011"}' in node.node.metrics.render()

        def offered() -> bool:  # greeted, and the first write was offered to the kernel
            if not seen:
                seen.extend(node.node.hub.of_user(uid))
            return cut() or (bool(seen) and (seen[0].out is None or seen[0].closed))

        await eventually(offered, timeout=10)
        assert not cut() and not seen[0].closed, "the recipient was cut for its own backlog"
        raw.send(OP_BINARY, msgpack.packb({"t": "ping", "id": 1}))
        while True:  # read the page, then the pong: the connection is alive
            frame = await raw.next_frame(timeout=10)
            assert frame is not None and frame[0] == OP_BINARY, frame
            if msgpack.unpackb(frame[2])["t"] == "pong":
                break
    finally:
        raw.close()


async def _alive(client: Client) -> None:
    reply = await client.request({"t": "ping"}, timeout=10)
    assert reply["t"] == "pong"


@pytest.mark.gen_test(timeout=120)
async def test_a_flooded_recipient_gets_its_backlog_in_pages_and_is_never_cut(
    nodes: NodeFactory,
) -> None:
    a, b = await two_nodes(nodes, FLOOD)
    mallory = await connect(a, token("mallory"))
    replies = await send_many(mallory, "victim", 990)
    assert all(r["t"] == "ok" and r["queued"] for r in replies)

    # A recipient that does not read for a while (a slow mobile link): the server
    # writes its backlog into the socket at once and cuts it (4011) unless it pages.
    for _ in range(2):
        await _paused_reader_is_not_cut(b, "victim")

    # Reconnecting without acking: a page every time, never a 4011.
    for _ in range(3):
        victim = await connect(b, token("victim"))
        first = await victim.expect("dm", timeout=10)
        assert first["offline"] is True
        await _alive(victim)
        victim.close()

    # Acking: the whole backlog arrives, page after page, on one live connection.
    victim = await connect(b, token("victim"))
    seen: set[str] = set()
    while len(seen) < 990:
        frame = await victim.recv(timeout=10)
        assert frame is not None, f"closed {victim.ws.close_code} after {len(seen)} messages"
        if frame["t"] == "dm":
            seen.add(frame["mid"])
            victim.send({"t": "ack", "mid": frame["mid"]})
    assert seen == {r["mid"] for r in replies}
    await _alive(victim)
    assert await b.backend.inbox_list("victim") == []


@pytest.mark.gen_test(timeout=60)
async def test_the_inbox_has_a_byte_cap(nodes: NodeFactory) -> None:
    node = await nodes({**FLOOD, "offline.max_bytes": 20000})
    mallory = await connect(node, token("mallory"))
    replies = await send_many(mallory, "victim", 30, "x" * 1500)
    stored = await node.backend.inbox_list("victim")
    assert sum(inbox_size(dm) for dm in stored) <= 20000
    assert 10 <= len(stored) < 30
    assert stored[-1].mid == replies[-1]["mid"]  # the newest are kept


@pytest.mark.gen_test(timeout=60)
async def test_a_sender_over_its_quota_is_told_and_acks_free_it(nodes: NodeFactory) -> None:
    a, b = await two_nodes(nodes, {"offline.max_per_sender": 5})
    mallory = await connect(a, token("mallory"))
    replies = await send_many(mallory, "victim", 7)
    assert [r["t"] for r in replies] == ["ok"] * 5 + ["err"] * 2
    assert replies[5]["code"] == 429 and replies[5]["reason"] == QUOTA_REASON
    carol = await connect(b, token("carol"))
    assert (await carol.request({"t": "send", "to": "victim", "data": 1}))["t"] == "ok"
    # the refused ones were neither queued nor delivered
    victim = await connect(b, token("victim"))
    mids = []
    for _ in range(6):
        mids.append((await victim.expect("dm"))["mid"])
    assert set(mids) == {r["mid"] for r in replies[:5]} | {mids[-1]}
    victim.send({"t": "ack", "mid": mids[:2]})
    await _alive(victim)  # the ack is handled before the pong
    again = await send_many(mallory, "victim", 3)
    assert [r["t"] for r in again] == ["ok", "ok", "err"]
    live = [await victim.expect("dm") for _ in range(2)]
    assert [f["offline"] for f in live] == [False, False]


@pytest.mark.gen_test(timeout=60)
async def test_server_api_sends_have_no_sender_quota(nodes: NodeFactory) -> None:
    import json

    from tests.security import http, signed_headers_for

    node = await nodes({"offline.max_per_sender": 1})
    for _ in range(3):
        body = json.dumps({"to": "victim", "data": 1}).encode()
        headers = signed_headers_for("POST", "/api/send", body)
        r = await http(node, "POST", "/api/send", body=body, headers=headers)
        assert r.status == 200 and r.body["queued"] is True


async def _send_to(node: RunningNode, to: str) -> dict[str, Any]:
    alice = await connect(node, token("alice"))
    try:
        return await alice.request({"t": "send", "to": to, "data": "hi"})
    finally:
        alice.close()


@pytest.mark.gen_test(timeout=60)
async def test_recipients_known_refuses_users_never_seen(nodes: NodeFactory) -> None:
    a, b = await two_nodes(nodes, {"offline.recipients": "known"})
    reply = await _send_to(a, "ghost")
    assert reply["t"] == "err" and reply["code"] == 404 and reply["reason"] == "unknown user"
    bob = await connect(b, token("bob"))  # seen once, on the other node
    bob.close()
    reply = await _send_to(a, "bob")
    assert reply["t"] == "ok" and reply["queued"] is True


@pytest.mark.gen_test(timeout=60)
async def test_recipients_any_is_the_default(nodes: NodeFactory) -> None:
    node = await nodes()
    reply = await _send_to(node, "ghost")
    assert reply["t"] == "ok" and reply["queued"] is True


@pytest.mark.gen_test(timeout=60)
async def test_acking_a_backlog_one_frame_each_is_not_rate_limited(nodes: NodeFactory) -> None:
    # The default rate limit (50 frames/s, 4008 after 20 refusals) applies to the
    # recipient; its backlog is 4 times that, acked one frame per message.
    node = await nodes({"offline.max_per_sender": 0})
    for sender in ("s1", "s2", "s3", "s4"):
        c = await connect(node, token(sender))
        replies = await send_many(c, "victim", 45, "w" * 100)
        assert all(r["t"] == "ok" for r in replies)
        c.close()
    victim = await connect(node, token("victim"))
    got: set[str] = set()
    while len(got) < 180:
        frame = await victim.recv(timeout=10)
        assert frame is not None, f"closed {victim.ws.close_code} after {len(got)}"
        assert frame["t"] != "err", frame
        if frame["t"] == "dm":
            got.add(frame["mid"])
            victim.send({"t": "ack", "mid": frame["mid"]})
    await _alive(victim)
    assert await node.backend.inbox_list("victim") == []
