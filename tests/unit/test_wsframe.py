"""RFC 6455 framing, checked by hand and against Tornado's own implementation.

The interop tests run Tornado's ``WebSocketProtocol13`` over a ``socket.socketpair``
(no network): what Tornado writes must be byte for byte what :func:`server_frame`
builds, and what :func:`client_frame` builds must be what Tornado reads.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType

import pytest
from tornado.iostream import IOStream
from tornado.util import _websocket_mask_python
from tornado.websocket import WebSocketProtocol13, _WebSocketParams

from core.wsframe import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    PING_FRAME,
    client_frame,
    close_payload,
    mask_payload,
    message_frame,
    parse_close,
    parse_frames,
    server_frame,
)

BOUNDARY_LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]


def payload_of(length: int) -> bytes:
    return bytes(i % 251 for i in range(length))


# -- by hand -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_server_frame_uses_the_shortest_length_form(length: int, header: bytes) -> None:
    payload = payload_of(length)
    assert server_frame(OP_BINARY, payload) == header + payload


def test_server_frame_flags_and_prebuilt_frames() -> None:
    assert server_frame(OP_TEXT, b"a", fin=False) == b"\x01\x01a"
    assert server_frame(OP_CONT, b"b") == b"\x80\x01b"
    assert PING_FRAME == b"\x89\x00"
    assert message_frame("é") == b"\x81\x02\xc3\xa9"
    assert message_frame(b"\x00") == b"\x82\x01\x00"


@pytest.mark.parametrize(
    ("opcode", "payload", "fin"),
    [(OP_PING, b"x" * 126, True), (OP_CLOSE, b"", False), (16, b"", True), (-1, b"", True)],
)
def test_server_frame_refuses_invalid_frames(opcode: int, payload: bytes, fin: bool) -> None:
    with pytest.raises(ValueError):
        server_frame(opcode, payload, fin)


def test_client_frame_masks_and_sets_bits() -> None:
    frame = client_frame(OP_TEXT, b"abcde", mask=b"\x01\x02\x03\x04")
    assert frame == b"\x81\x85\x01\x02\x03\x04" + bytes(
        [ord("a") ^ 1, ord("b") ^ 2, ord("c") ^ 3, ord("d") ^ 4, ord("e") ^ 1]
    )
    assert client_frame(OP_BINARY, b"x", mask=None) == b"\x82\x01x"
    assert client_frame(OP_BINARY, b"", mask=None, fin=False, rsv1=True) == b"\x42\x00"
    # invalid on purpose: an oversized control frame is still built
    assert client_frame(OP_PING, b"p" * 200, mask=None)[:4] == b"\x89\x7e\x00\xc8"


@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 63, 64, 65, 1000, 65537])
def test_mask_payload_matches_tornado(length: int) -> None:
    mask, payload = b"\x9a\x01\xfe\x37", payload_of(length)
    assert mask_payload(mask, payload) == _websocket_mask_python(mask, payload)
    assert mask_payload(mask, mask_payload(mask, payload)) == payload
    with pytest.raises(ValueError):
        mask_payload(b"\x00", payload)


def test_parse_frames_consumes_only_complete_frames() -> None:
    frames = [
        server_frame(OP_TEXT, b"hello"),
        client_frame(OP_BINARY, payload_of(300)),
        server_frame(OP_BINARY, payload_of(70000), fin=False),
        client_frame(OP_CONT, b"", mask=b"\xff\xff\xff\xff"),
        PING_FRAME,
    ]
    expected = [
        (OP_TEXT, True, b"hello"),
        (OP_BINARY, True, payload_of(300)),
        (OP_BINARY, False, payload_of(70000)),
        (OP_CONT, True, b""),
        (OP_PING, True, b""),
    ]
    wire = b"".join(frames)
    # one byte at a time: every split point of every header form
    buf, got = bytearray(), []
    for i in range(len(wire)):
        buf.append(wire[i])
        got += parse_frames(buf)
        assert len(buf) + sum(len(f) for f in frames[: len(got)]) == i + 1
    assert got == expected and buf == bytearray()
    buf = bytearray(wire + b"\x82")
    assert parse_frames(buf) == expected and buf == bytearray(b"\x82")


def test_parse_frames_refuses_a_64_bit_length_with_the_top_bit_set() -> None:
    with pytest.raises(ValueError):
        parse_frames(bytearray(b"\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x00"))


def test_close_payload_round_trip() -> None:
    assert close_payload(4000, "bad") == b"\x0f\xa0bad"
    assert parse_close(close_payload(4408, "héartbeat")) == (4408, "héartbeat")
    assert parse_close(b"") == (None, "")
    assert parse_close(b"\x03\xe8\xff") == (1000, "\ufffd")


# -- against Tornado -----------------------------------------------------------------


class Recorder:
    """The delegate Tornado's protocol object reports to (``_WebSocketDelegate``)."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[tuple[str, object]] = asyncio.Queue()

    def on_message(self, message: str | bytes) -> None:
        self.events.put_nowait(("message", message))

    def on_ping(self, data: bytes) -> None:
        self.events.put_nowait(("ping", data))

    def on_pong(self, data: bytes) -> None:
        self.events.put_nowait(("pong", data))

    def on_ws_connection_close(self, code: int | None = None, reason: str | None = None) -> None:
        self.events.put_nowait(("close", code))

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.events.put_nowait(("exception", value))


class Peer:
    """Our raw end of the socket pair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.loop = asyncio.get_running_loop()

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = await self.loop.sock_recv(self.sock, 65536)
            assert chunk, "tornado closed the connection"
            self.buf += chunk
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def frame(self) -> tuple[int, bool, bytes]:
        while True:
            frames = parse_frames(self.buf)
            if frames:
                assert len(frames) == 1
                return frames[0]
            chunk = await self.loop.sock_recv(self.sock, 65536)
            assert chunk, "tornado closed the connection"
            self.buf += chunk


@asynccontextmanager
async def tornado_end(
    mask_outgoing: bool,
) -> AsyncIterator[tuple[WebSocketProtocol13, Recorder, Peer]]:
    """Tornado's RFC 6455 implementation on one end of a socket pair, ours on the other.

    ``mask_outgoing=False`` is Tornado in the server role, ``True`` in the client role.
    """
    theirs, ours = socket.socketpair()
    ours.setblocking(False)
    recorder = Recorder()
    protocol = WebSocketProtocol13(recorder, mask_outgoing, _WebSocketParams())
    protocol.stream = IOStream(theirs)
    reader = asyncio.create_task(protocol._receive_frame_loop())
    try:
        yield protocol, recorder, Peer(ours)
    finally:
        protocol.stream.close()
        await reader
        ours.close()


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(body(), 5)

    asyncio.run(bounded())


async def next_event(recorder: Recorder) -> tuple[str, object]:
    return await recorder.events.get()


@pytest.mark.parametrize("length", BOUNDARY_LENGTHS)
def test_tornado_writes_exactly_server_frame(length: int) -> None:
    payload = payload_of(length)

    async def body() -> None:
        async with tornado_end(mask_outgoing=False) as (protocol, _, peer):
            expected = server_frame(OP_BINARY, payload)
            await protocol.write_message(payload, binary=True)
            assert await peer.read_exactly(len(expected)) == expected
            text = "ü" * (length // 2)
            expected = message_frame(text)
            await protocol.write_message(text)
            assert await peer.read_exactly(len(expected)) == expected

    run(body)


@pytest.mark.parametrize("length", BOUNDARY_LENGTHS)
def test_tornado_reads_client_and_server_frames(length: int) -> None:
    payload = payload_of(length)

    async def body() -> None:
        async with tornado_end(mask_outgoing=False) as (_, recorder, peer):
            await peer.send(client_frame(OP_BINARY, payload))
            assert await next_event(recorder) == ("message", payload)
            await peer.send(client_frame(OP_BINARY, payload, mask=None))
            assert await next_event(recorder) == ("message", payload)
        async with tornado_end(mask_outgoing=True) as (_, recorder, peer):
            await peer.send(message_frame(payload))
            assert await next_event(recorder) == ("message", payload)
            await peer.send(message_frame("é" * length))
            assert await next_event(recorder) == ("message", "é" * length)

    run(body)


def test_tornado_reassembles_fragments_with_an_interleaved_ping() -> None:
    async def body() -> None:
        async with tornado_end(mask_outgoing=False) as (_, recorder, peer):
            await peer.send(
                client_frame(OP_TEXT, b"frag", fin=False)
                + client_frame(OP_PING, b"hb")
                + client_frame(OP_CONT, b"men", fin=False)
                + client_frame(OP_CONT, b"ted")
            )
            assert await next_event(recorder) == ("ping", b"hb")
            assert await peer.frame() == (OP_PONG, True, b"hb")
            assert await next_event(recorder) == ("message", "fragmented")

    run(body)


def test_tornado_answers_ping_frame_and_reads_close_payload() -> None:
    async def body() -> None:
        async with tornado_end(mask_outgoing=True) as (protocol, recorder, peer):
            await peer.send(PING_FRAME)
            assert await next_event(recorder) == ("ping", b"")
            assert await peer.frame() == (OP_PONG, True, b"")  # masked by tornado, unmasked here
            protocol.close(4011, "slow consumer")
            opcode, fin, payload = await peer.frame()
            assert (opcode, fin, parse_close(payload)) == (OP_CLOSE, True, (4011, "slow consumer"))
            await peer.send(server_frame(OP_CLOSE, close_payload(4011)))
            assert await next_event(recorder) == ("close", 4011)

    run(body)


def test_tornado_rejects_what_client_frame_builds_on_purpose() -> None:
    async def body() -> None:
        async with tornado_end(mask_outgoing=False) as (_, recorder, peer):
            # RSV1 without a negotiated extension: tornado aborts the connection
            await peer.send(client_frame(OP_BINARY, b"x", rsv1=True))
            assert await next_event(recorder) == ("close", None)
            assert await peer.loop.sock_recv(peer.sock, 1) == b""

    run(body)


def test_frame_length_header_is_network_order() -> None:
    frame = server_frame(OP_BINARY, payload_of(70000))
    assert struct.unpack("!Q", frame[2:10]) == (70000,)
