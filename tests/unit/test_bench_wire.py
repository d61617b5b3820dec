"""bench/wire.py's frame scanner against core/wsframe.py, frame by frame and split."""

from __future__ import annotations

import random

from bench.wire import CLOSE_FRAME, client_frame, scan
from core.wsframe import OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, parse_frames, server_frame


def test_scan_finds_every_frame_at_every_split_point() -> None:
    rng = random.Random(7)
    sizes = [0, 1, 125, 126, 127, 1000, 65535, 65536, 70000]
    opcodes = [OP_BINARY, OP_TEXT, OP_PING]
    frames = [(opcodes[i % 3], rng.randbytes(n)) for i, n in enumerate(sizes)]
    frames = [(op, p[:125]) if op == OP_PING else (op, p) for op, p in frames]
    wire = b"".join(server_frame(op, p) for op, p in frames)
    found, used = scan(wire)
    assert used == len(wire)
    assert [(op, wire[s:e]) for op, s, e in found] == frames
    for cut in (1, 2, 3, 9, 130, len(wire) - 1):
        head, consumed = scan(wire[:cut])
        rest, more = scan(wire[consumed:])
        assert [(op, wire[:cut][s:e]) for op, s, e in head] + [
            (op, wire[consumed:][s:e]) for op, s, e in rest
        ] == frames
        assert consumed + more == len(wire)


def test_scan_reads_masked_client_frames() -> None:
    wire = client_frame(b"x" * 300) + client_frame(b"hi", opcode=OP_TEXT) + CLOSE_FRAME
    found, used = scan(wire)
    assert used == len(wire)
    assert [(op, wire[s:e]) for op, s, e in found] == [
        (OP_BINARY, b"x" * 300),
        (OP_TEXT, b"hi"),
        (OP_CLOSE, b"\x03\xe8"),
    ]
    assert [(op, p) for op, _fin, p in parse_frames(bytearray(server_frame(OP_TEXT, b"hi")))] == [
        (OP_TEXT, b"hi")
    ]
