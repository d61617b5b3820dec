"""Rate limit, slow consumer, heartbeat and protocol-level abuse through real sockets."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from core.wsframe import OP_BINARY, OP_CONT, OP_PING, OP_PONG
from tests.conftest import NodeFactory
from tests.harness import connect, eventually, refused, token
from tests.rawws import RawClient


def _metric(node: object, name: str, labels: dict[str, str] | None = None) -> float:
    value = node.node.metrics.registry.get_sample_value(name, labels or {})  # type: ignore[attr-defined]
    return float(value or 0.0)


@pytest.mark.gen_test(timeout=15)
async def test_rate_limit_429_then_4008(nodes: NodeFactory) -> None:
    node = await nodes({"ratelimit.messages": 5, "ratelimit.window_s": 10, "ratelimit.strikes": 3})
    c = await connect(node, token("alice"))
    for _ in range(5):
        assert (await c.request({"t": "ping"}))["t"] == "pong"
    e = await c.request({"t": "ping"})
    assert e["t"] == "err" and e["code"] == 429 and e["retry_after"] > 0
    for _ in range(2):
        assert (await c.request({"t": "ping"}))["code"] == 429
    c.send({"t": "ping", "id": 99})
    assert (await c.expect("bye"))["code"] == 4008
    assert await c.closed() == 4008
    # cluster-wide per user: another connection of alice is limited too
    d = await connect(node, token("alice"))
    assert (await d.request({"t": "ping"}))["code"] == 429
    other = await connect(node, token("bob"))
    assert (await other.request({"t": "ping"}))["t"] == "pong"


@pytest.mark.gen_test(timeout=30)
async def test_slow_consumer_cut_with_4011_and_memory_bounded(nodes: NodeFactory) -> None:
    limit = 256 * 1024
    node = await nodes({"limits.outbound_buffer_bytes": limit, "ratelimit.messages": 100000})
    tok = token("slow")
    raw, status, _ = await RawClient.connect(
        node.port, headers={"Authorization": f"Bearer {tok}"}, rcvbuf=4096
    )
    assert status == 101
    raw.send(OP_BINARY, msgpack.packb({"t": "join", "id": 1, "room": "flood"}))
    # read welcome and the join ok, then stop reading
    seen = 0
    while seen < 2:
        frame = await raw.next_frame()
        assert frame is not None
        seen += 1
    pub = await connect(node, token("pub"))
    await pub.request({"t": "join", "room": "flood"})
    payload = "x" * 60000
    for _ in range(400):
        await pub.request({"t": "pub", "room": "flood", "data": payload})
        if _metric(node, "squall_closes_total", {"code": "4011"}) >= 1:
            break
    assert _metric(node, "squall_closes_total", {"code": "4011"}) == 1
    # the slow member is gone from the room; the publisher is unaffected
    # ... and its buffer is released at once, not after a close-handshake grace period
    await eventually(lambda: len(node.node.hub) == 1, timeout=1.0)
    assert (await pub.request({"t": "pub", "room": "flood", "data": 1}))["t"] == "ok"
    raw.close()


@pytest.mark.gen_test(timeout=15)
async def test_heartbeat_timeout_4408_for_a_silent_peer(nodes: NodeFactory) -> None:
    node = await nodes({"heartbeat.interval_s": 0.1, "heartbeat.misses": 2})
    raw, status, _ = await RawClient.connect(
        node.port, headers={"Authorization": f"Bearer {token('dead')}"}
    )
    assert status == 101
    pings = 0
    code = None
    while code is None:
        frame = await raw.next_frame(timeout=5)
        assert frame is not None
        if frame[0] == OP_PING:
            pings += 1  # never answered
        elif frame[0] == 8:
            code = int.from_bytes(frame[2][:2], "big")
    assert code == 4408
    assert pings >= 1


@pytest.mark.gen_test(timeout=15)
async def test_pongs_keep_a_connection_alive(nodes: NodeFactory) -> None:
    node = await nodes({"heartbeat.interval_s": 0.1, "heartbeat.misses": 2})
    raw, _status, _ = await RawClient.connect(
        node.port, headers={"Authorization": f"Bearer {token('alive')}"}
    )
    pings = 0
    while pings < 8:  # 0.8 s: four times the timeout
        frame = await raw.next_frame(timeout=5)
        assert frame is not None and frame[0] != 8, "closed although it answered pings"
        if frame[0] == OP_PING:
            pings += 1
            raw.send(OP_PONG, frame[2])
    raw.close()


@pytest.mark.gen_test(timeout=15)
async def test_unmasked_and_fragmented_frames(nodes: NodeFactory) -> None:
    node = await nodes()
    hdr = {"Authorization": f"Bearer {token('alice')}"}
    raw, _s, _ = await RawClient.connect(node.port, headers=hdr)
    await raw.next_frame()  # welcome
    raw.send(OP_BINARY, msgpack.packb({"t": "ping", "id": 1}), mask=None)
    code = await raw.close_code()
    assert code == 1002  # protocol error
    # a fragmented binary message is reassembled and answered
    raw2, _s, _ = await RawClient.connect(node.port, headers=hdr)
    await raw2.next_frame()
    body = msgpack.packb({"t": "ping", "id": 7})
    raw2.send(OP_BINARY, body[:3], fin=False)
    raw2.send(OP_CONT, body[3:], fin=True)
    frame = await raw2.next_frame()
    assert frame is not None and msgpack.unpackb(frame[2]) == {"t": "pong", "id": 7}
    # fragments adding up past the frame limit: 1009
    raw2.send(OP_BINARY, b"\x00" * 40000, fin=False)
    raw2.send(OP_CONT, b"\x00" * 40000, fin=True)
    assert await raw2.close_code() == 1009


@pytest.mark.gen_test(timeout=15)
async def test_pubs_are_charged_to_the_same_rate_limit(nodes: NodeFactory) -> None:
    node = await nodes({"ratelimit.messages": 4, "ratelimit.window_s": 10, "ratelimit.strikes": 2})
    c = await connect(node, token("alice"))
    await c.request({"t": "join", "room": "r"})  # 1
    assert (await c.request({"t": "ping"}))["t"] == "pong"  # 2
    for i in range(2):  # 3, 4
        assert (await c.request({"t": "pub", "room": "r", "data": i}))["t"] == "ok"
    e = await c.request({"t": "pub", "room": "r", "data": "over"})
    assert e["t"] == "err" and e["code"] == 429 and e["retry_after"] > 0
    assert (await c.request({"t": "ping"}))["code"] == 429
    assert (await node.backend.position("r")).seq == 2  # the refused pub was not published
    c.send({"t": "pub", "id": 50, "room": "r", "data": "again"})
    assert await c.closed() == 4008


@pytest.mark.gen_test(timeout=15)
async def test_a_node_without_a_handshake_queue_refuses_503_with_retry_after(
    nodes: NodeFactory,
) -> None:
    """``limits.handshake_concurrency: 1`` and ``limits.handshake_queue: 0``: while one
    handshake holds the only slot, the next is refused at once (503, Retry-After),
    and admitted again once the slot is free."""
    node = await nodes(
        {
            "limits.handshake_concurrency": 1,
            "limits.handshake_queue": 0,
            "limits.handshake_wait_s": 5,
        }
    )
    queue = node.node.queue
    assert (queue.concurrency, queue.max_waiting, queue.max_wait_s) == (1, 0, 5)
    assert await queue.enter()  # the only slot, held as a slow handshake would
    loop = asyncio.get_running_loop()
    try:
        start = loop.time()
        e = await refused(node, token("bob"))
        assert e.status == 503 and float(e.headers["Retry-After"]) > 0
        assert loop.time() - start < 2.5  # at once: no queue to wait in (the wait is 5 s)
    finally:
        queue.leave()
    (await connect(node, token("bob"))).close()
