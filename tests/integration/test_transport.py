"""The write fast paths: coalescing per loop iteration, direct send, compressed fallback."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from core.backend.base import BackendOptions
from core.backend.memory import MemoryBackend
from core.clock import SystemClock
from core.wsframe import OP_BINARY
from tests.conftest import NodeFactory
from tests.harness import connect, token
from tests.rawws import RawClient


@pytest.mark.gen_test(timeout=15)
async def test_burst_in_one_iteration_is_one_write_per_member(nodes: NodeFactory) -> None:
    node = await nodes({"rooms.presence_events": False})
    members = [await connect(node, token(f"m{i}")) for i in range(20)]
    for m in members:
        await m.request({"t": "join", "room": "burst"})
    before_flushes, before_writes = node.batcher.flushes, node.batcher.writes
    # Ten publications without yielding: their deliveries run in one loop iteration.
    for i in range(10):
        await node.backend.publish("burst", msgpack.packb(i), None, 0)
    for m in members:
        got = [(await m.expect("msg"))["data"] for _ in range(10)]
        assert got == list(range(10))
    assert node.batcher.flushes - before_flushes == 1
    assert node.batcher.writes - before_writes == 20  # not 200


@pytest.mark.gen_test(timeout=15)
async def test_frames_arrive_intact_when_a_write_is_partial(nodes: NodeFactory) -> None:
    # A reader with a tiny receive buffer forces partial sends: the unsent rest must
    # follow through the stream, in order, without loss or duplication.
    node = await nodes({"ratelimit.messages": 100000})
    raw, status, _ = await RawClient.connect(
        node.port, headers={"Authorization": f"Bearer {token('small')}"}, rcvbuf=2048
    )
    assert status == 101
    raw.send(OP_BINARY, msgpack.packb({"t": "join", "id": 1, "room": "big"}))
    pub = await connect(node, token("pub"))
    await pub.request({"t": "join", "room": "big"})
    for i in range(30):
        await pub.request({"t": "pub", "room": "big", "data": {"i": i, "pad": "z" * 20000}})
    seqs = []
    while len(seqs) < 30:
        frame = await raw.next_frame()
        assert frame is not None
        obj = msgpack.unpackb(frame[2])
        if obj["t"] == "msg":
            assert obj["data"]["pad"] == "z" * 20000
            seqs.append(obj["data"]["i"])
    assert seqs == list(range(30))


@pytest.mark.gen_test(timeout=15)
async def test_compressed_connections_use_write_message(nodes: NodeFactory) -> None:
    node = await nodes({"server.websocket_compression": True})
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    req = HTTPRequest(node.url, headers={"Authorization": f"Bearer {token('z')}"})
    ws = await websocket_connect(req, compression_options={}, subprotocols=["squall.v1.msgpack"])
    assert ws.protocol._compressor is not None  # type: ignore[union-attr]
    assert msgpack.unpackb(await ws.read_message())["t"] == "welcome"
    plain = await connect(node, token("p"))
    await plain.request({"t": "join", "room": "zip"})
    ws.write_message(msgpack.packb({"t": "join", "id": 1, "room": "zip"}), binary=True)
    assert msgpack.unpackb(await ws.read_message())["t"] == "ok"
    await plain.request({"t": "pub", "room": "zip", "data": "x" * 5000})
    msg = msgpack.unpackb(await ws.read_message())
    assert msg["t"] == "msg" and msg["data"] == "x" * 5000
    ws.close()


@pytest.mark.gen_test(timeout=15)
async def test_a_burst_of_pub_frames_leaves_in_one_write_per_member(nodes: NodeFactory) -> None:
    from core.wsframe import client_frame

    node = await nodes({"rooms.presence_events": False, "ratelimit.messages": 100000})
    members = [await connect(node, token(f"m{i}")) for i in range(20)]
    for m in members:
        await m.request({"t": "join", "room": "b"})
    raw, _s, _ = await RawClient.connect(
        node.port, headers={"Authorization": f"Bearer {token('pub')}"}
    )
    await raw.next_frame()
    raw.send(OP_BINARY, msgpack.packb({"t": "join", "id": 1, "room": "b"}))
    await raw.next_frame()
    writes_before = node.batcher.writes
    pubs = [{"t": "pub", "id": 10 + i, "room": "b", "data": i} for i in range(10)]
    raw.send_raw(b"".join(client_frame(OP_BINARY, msgpack.packb(p)) for p in pubs))
    for m in members:
        assert [(await m.expect("msg"))["data"] for _ in range(10)] == list(range(10))
    # ten messages to 21 connections: at most two writes each, not ten
    assert node.batcher.writes - writes_before <= 2 * 21


class _SlowBackend(MemoryBackend):
    async def rate_hit(self, key: str, limit: int, window_s: float) -> float:
        await asyncio.sleep(0.01)  # a slow shared store: frames queue up meanwhile
        return await super().rate_hit(key, limit, window_s)


@pytest.mark.gen_test(timeout=15)
async def test_a_connection_that_outpaces_its_handling_gets_429s_then_4008(
    nodes: NodeFactory,
) -> None:
    from core.wsframe import client_frame
    from handlers.ws import MAX_QUEUED_MESSAGES

    node = await nodes(backend=_SlowBackend("n1", BackendOptions(), SystemClock()))
    raw, _s, _ = await RawClient.connect(
        node.port, headers={"Authorization": f"Bearer {token('flood')}"}
    )
    await raw.next_frame()
    ping = client_frame(OP_BINARY, msgpack.packb({"t": "ping", "id": 1}))
    raw.send_raw(ping * (MAX_QUEUED_MESSAGES + 200))
    codes: list[int] = []
    close_code = None
    while True:
        frame = await raw.next_frame(timeout=10)
        if frame is None:
            break
        if frame[0] == 0x8:
            close_code = int.from_bytes(frame[2][:2], "big")
            break
        obj = msgpack.unpackb(frame[2])
        if obj["t"] in ("err", "bye"):
            codes.append(obj["code"])
    # the overflow is answered 429 first; only a client that keeps going is closed
    assert codes[0] == 429 and codes[-1] == 4008, codes
    assert close_code == 4008
