"""RFC 6455 framing for the load generators and the raw peer: the one frame scanner.

:func:`scan` takes everything received so far and returns the complete frames in it
as ``(opcode, start, end)`` offsets into the buffer (the payload is
``data[start:end]``; for a masked frame, ``mask_at`` gives where its 4-byte key
starts, which is ``start - 4``), plus how many bytes were consumed. One call per
read, not per frame: a helper call per frame would cost the load generator more CPU
than the server it measures, which is why the four copies this replaced were inlined.

:func:`client_frame` builds a masked client frame with the all-zero key (RFC 6455
section 5.3 allows any key; the zero key leaves the payload unchanged).
"""

from __future__ import annotations

import struct

__all__ = ["CLOSE_FRAME", "client_frame", "scan"]

_ZERO_MASK = b"\x00\x00\x00\x00"


def scan(data: bytes) -> tuple[list[tuple[int, int, int]], int]:
    """Complete frames of ``data`` as ``(opcode, start, end)``, and bytes consumed.

    Works for both directions: a masked frame's ``start`` is after its masking key.
    An incomplete last frame is left unconsumed (``data[consumed:]`` is the rest).
    """
    frames: list[tuple[int, int, int]] = []
    append = frames.append
    pos, n = 0, len(data)
    while n - pos >= 2:
        b1 = data[pos + 1]
        length = b1 & 0x7F
        start = pos + 2
        if length == 126:
            if n - pos < 4:
                break
            length = (data[pos + 2] << 8) | data[pos + 3]
            start = pos + 4
        elif length == 127:
            if n - pos < 10:
                break
            length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            start = pos + 10
        if b1 & 0x80:
            start += 4
        end = start + length
        if end > n:
            break
        append((data[pos] & 0x0F, start, end))
        pos = end
    return frames, pos


def client_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One masked frame (FIN, binary by default) with the all-zero masking key."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    return head + _ZERO_MASK + payload


#: a close frame with code 1000, as a client sends it
CLOSE_FRAME = b"\x88\x82" + _ZERO_MASK + struct.pack("!H", 1000)
