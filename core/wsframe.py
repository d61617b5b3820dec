"""RFC 6455 frame building and parsing, sans I/O.

The server side (:func:`server_frame`, :func:`message_frame`, :data:`PING_FRAME`)
builds unmasked frames (RFC 6455 section 5.1: a server must not mask) so a message
encoded once can be framed once and the same bytes written to every member
connection.

The client side (:func:`client_frame`, :func:`parse_frames`, :func:`close_payload`,
:func:`parse_close`) exists for raw-socket tests that must send what a well-behaved
client library never would (unmasked or fragmented frames, reserved bits) and read
exactly what the server wrote. :func:`client_frame` therefore does not validate.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "PING_FRAME",
    "client_frame",
    "close_payload",
    "mask_payload",
    "message_frame",
    "parse_close",
    "parse_frames",
    "server_frame",
]

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

_FIN: Final = 0x80
_RSV1: Final = 0x40
_MASK_BIT: Final = 0x80
_MAX_CONTROL_PAYLOAD: Final = 125  # RFC 6455 section 5.5


def _header(first: int, length: int, mask_bit: int) -> bytes:
    """First byte, then the payload length in its shortest form (section 5.2)."""
    if length < 126:
        return struct.pack("!BB", first, mask_bit | length)
    if length <= 0xFFFF:
        return struct.pack("!BBH", first, mask_bit | 126, length)
    return struct.pack("!BBQ", first, mask_bit | 127, length)


def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One unmasked frame. Raises ``ValueError`` for an opcode outside 0..15, or a
    control frame (opcode >= 8) that is fragmented or carries over 125 bytes.
    """
    if not 0 <= opcode <= 0xF:
        raise ValueError(f"opcode {opcode} is not 4 bits")
    if opcode & 0x8 and (not fin or len(payload) > _MAX_CONTROL_PAYLOAD):
        raise ValueError("control frames are unfragmented and carry at most 125 bytes")
    return _header((_FIN if fin else 0) | opcode, len(payload), 0) + payload


def message_frame(payload: bytes | str) -> bytes:
    """A complete message in one frame: ``str`` -> text frame (UTF-8), ``bytes`` -> binary.

    Raises ``UnicodeEncodeError`` for a ``str`` with lone surrogates.
    """
    if isinstance(payload, str):
        return server_frame(OP_TEXT, payload.encode("utf-8"))
    return server_frame(OP_BINARY, payload)


#: An empty ping, sent by the heartbeat sweep to every connection.
PING_FRAME: Final = server_frame(OP_PING, b"")


def mask_payload(mask: bytes, payload: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` (section 5.3); masking is its own inverse."""
    if len(mask) != 4:
        raise ValueError("a masking key is 4 bytes")
    n = len(payload)
    if n == 0:
        return b""
    # One big-int XOR instead of a Python loop over the bytes.
    key = (mask * (n // 4 + 1))[:n]
    mixed = int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")
    return mixed.to_bytes(n, "big")


def client_frame(
    opcode: int,
    payload: bytes,
    mask: bytes | None = b"\x00\x01\x02\x03",
    fin: bool = True,
    rsv1: bool = False,
) -> bytes:
    """A frame as a client would send it: masked with ``mask``, unmasked when ``None``.

    For tests: nothing is validated, so it builds invalid frames on purpose too
    (unmasked, fragmented control frames, oversized control payloads, RSV1 set).
    """
    first = (_FIN if fin else 0) | (_RSV1 if rsv1 else 0) | (opcode & 0xF)
    if mask is None:
        return _header(first, len(payload), 0) + payload
    return _header(first, len(payload), _MASK_BIT) + mask + mask_payload(mask, payload)


def parse_frames(buf: bytearray) -> list[tuple[int, bool, bytes]]:
    """Remove every complete frame from the front of ``buf``; return (opcode, fin, payload).

    Masked frames are unmasked. An incomplete frame at the end stays in ``buf`` for
    the next call. Reserved bits are ignored. Raises ``ValueError`` for a 64-bit
    length with its most significant bit set (section 5.2 forbids it).
    """
    frames: list[tuple[int, bool, bytes]] = []
    pos = 0
    while len(buf) - pos >= 2:
        first, second = buf[pos], buf[pos + 1]
        length = second & 0x7F
        offset = pos + 2
        if length == 126:
            if len(buf) < offset + 2:
                break
            (length,) = struct.unpack_from("!H", buf, offset)
            offset += 2
        elif length == 127:
            if len(buf) < offset + 8:
                break
            (length,) = struct.unpack_from("!Q", buf, offset)
            if length >> 63:
                raise ValueError("64-bit payload length has its top bit set")
            offset += 8
        mask = None
        if second & _MASK_BIT:
            if len(buf) < offset + 4:
                break
            mask = bytes(buf[offset : offset + 4])
            offset += 4
        if len(buf) < offset + length:
            break
        payload = bytes(buf[offset : offset + length])
        if mask is not None:
            payload = mask_payload(mask, payload)
        frames.append((first & 0xF, bool(first & _FIN), payload))
        pos = offset + length
    del buf[:pos]
    return frames


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame: 2-byte code then the UTF-8 reason (section 5.5.1)."""
    return struct.pack("!H", code) + reason.encode("utf-8")


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """(code, reason) of a close frame's payload; code ``None`` when the payload is empty.

    The reason is decoded leniently (replacement characters) since this is for tests
    that must report what the peer sent, not reject it.
    """
    if len(payload) < 2:
        return None, ""
    (code,) = struct.unpack_from("!H", payload)
    return code, payload[2:].decode("utf-8", errors="replace")
