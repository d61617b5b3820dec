"""The callback frame reader of live connections (handlers/tornado_private.py FrameReader).

Raw sockets send what Tornado's client never would: frames split at every byte, many
frames in one write, control frames inside a fragmented message, reserved bits,
oversized control frames, stray continuations, bad UTF-8, a close frame. Each case
checks what the reader guarantees (same as Tornado's own frame loop) and that the node
releases the connection exactly once.
"""

from __future__ import annotations

import asyncio
import json
import struct

import msgpack
import pytest

from core.wsframe import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, client_frame
from tests.conftest import NodeFactory
from tests.harness import RunningNode, eventually, token
from tests.rawws import RawClient


async def _welcomed(node: RunningNode, protocol: str = "squall.v1.msgpack") -> RawClient:
    hdr = {"Authorization": f"Bearer {token('alice')}", "Sec-WebSocket-Protocol": protocol}
    raw, status, _ = await RawClient.connect(node.port, headers=hdr)
    assert status == 101
    welcome = await raw.next_frame()
    assert welcome is not None and welcome[0] in (OP_BINARY, OP_TEXT)
    return raw


def _ping(i: int) -> bytes:
    return client_frame(OP_BINARY, msgpack.packb({"t": "ping", "id": i}))


async def _pongs(raw: RawClient, count: int) -> list[int]:
    ids = []
    while len(ids) < count:
        frame = await raw.next_frame()
        assert frame is not None
        if frame[0] == OP_BINARY:
            reply = msgpack.unpackb(frame[2])
            assert reply["t"] == "pong", reply
            ids.append(reply["id"])
    return ids


async def _released(node: RunningNode) -> None:
    await eventually(lambda: len(node.node.hub) == 0)


@pytest.mark.gen_test(timeout=20)
async def test_frames_split_at_every_byte_and_batched_in_one_write(nodes: NodeFactory) -> None:
    node = await nodes({"ratelimit.messages": 10000})
    raw = await _welcomed(node)
    data = b"".join(_ping(i) for i in range(1, 4))
    for i in range(len(data)):  # one byte per write: every split point of a frame
        raw.send_raw(data[i : i + 1])
        await raw.writer.drain()
        await asyncio.sleep(0)
    assert await _pongs(raw, 3) == [1, 2, 3]
    # 200 frames (with a 126-length header among them) in a single write, in order
    big = client_frame(OP_BINARY, msgpack.packb({"t": "ping", "id": 999, "x": "y" * 300}))
    raw.send_raw(b"".join(_ping(i) for i in range(10, 210)) + big)
    assert await _pongs(raw, 201) == [*range(10, 210), 999]
    raw.close()
    await _released(node)


@pytest.mark.gen_test(timeout=20)
async def test_ping_inside_a_fragmented_message_and_a_text_message(nodes: NodeFactory) -> None:
    node = await nodes()
    raw = await _welcomed(node, "squall.v1.json")
    body = json.dumps({"t": "ping", "id": 5}).encode()
    raw.send(OP_TEXT, body[:4], fin=False)
    raw.send(OP_PING, b"hb")  # control frames may interleave with fragments
    raw.send(OP_CONT, body[4:8], fin=False)
    raw.send(OP_CONT, body[8:], fin=True)
    frame = await raw.next_frame()
    assert frame == (OP_PONG, True, b"hb")
    frame = await raw.next_frame()
    assert frame is not None and frame[0] == OP_TEXT
    assert json.loads(frame[2]) == {"t": "pong", "id": 5}
    raw.close()
    await _released(node)


@pytest.mark.gen_test(timeout=20)
async def test_close_frame_is_echoed_and_reading_stops(nodes: NodeFactory) -> None:
    node = await nodes()
    raw = await _welcomed(node)
    # the close frame, then a ping that must not be read any more
    raw.send_raw(client_frame(OP_CLOSE, struct.pack("!H", 1000) + b"bye") + _ping(1))
    frame = await raw.next_frame()
    assert frame is not None and frame[0] == OP_CLOSE
    assert struct.unpack("!H", frame[2][:2])[0] == 1000
    assert await raw.next_frame() is None  # EOF: no pong for the ping after the close
    await _released(node)
    assert node.node.hub.admitting == {}


@pytest.mark.parametrize(
    "bad",
    [
        client_frame(OP_BINARY, b"x", rsv1=True),  # reserved bit, no extension
        client_frame(OP_PING, b"p" * 126),  # control frame over 125 bytes
        client_frame(OP_PING, b"p", fin=False),  # fragmented control frame
        client_frame(OP_CONT, b"x"),  # continuation of nothing
        client_frame(OP_BINARY, b"a", fin=False) + client_frame(OP_BINARY, b"b"),  # interleaved
        client_frame(OP_TEXT, b"\xff\xfe"),  # text that is not UTF-8
        client_frame(0x3, b"x"),  # unknown opcode
    ],
)
@pytest.mark.gen_test(timeout=20)
async def test_protocol_violations_abort_the_connection(nodes: NodeFactory, bad: bytes) -> None:
    node = await nodes()
    raw = await _welcomed(node)
    raw.send_raw(bad + _ping(1))
    while True:  # nothing is answered, the connection ends
        frame = await raw.next_frame()
        if frame is None:
            break
        assert frame[0] == OP_CLOSE
    await _released(node)


@pytest.mark.gen_test(timeout=20)
async def test_too_big_is_refused_before_its_payload_arrives(nodes: NodeFactory) -> None:
    node = await nodes({"limits.max_frame_bytes": 1024})
    raw = await _welcomed(node)
    # only the header of a 1 MiB frame: the length alone decides
    raw.send_raw(bytes([0x82, 0x80 | 127]) + (1 << 20).to_bytes(8, "big") + b"mask")
    assert await raw.close_code() == 1009
    await _released(node)
