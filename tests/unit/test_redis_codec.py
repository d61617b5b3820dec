"""core.backend.redis_codec: every layout round-trips; malformed input raises ValueError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from core.backend.base import (
    DirectMessage,
    NodeCommand,
    NodeOp,
    PresenceEvent,
    Publication,
    SessionRecord,
)
from core.backend.redis_codec import (
    decode_command,
    decode_dm,
    decode_publication,
    decode_record,
    decode_room_message,
    encode_command,
    encode_dm,
    encode_presence,
    encode_record,
    pairs,
    publication_tail,
)

#: ``data`` values as pack_data produces them, plus bytes that are no msgpack at all:
#: the codec must carry every one unchanged (bin 8, 16 and 32 headers included).
DATA = [
    msgpack.packb({"text": "hi", "n": [1, 2.5, None, True]}, use_bin_type=True),
    msgpack.packb("\u00e9t\u00e9 \U0001f600", use_bin_type=True),
    msgpack.packb(b"\x00\xff raw", use_bin_type=True),
    b"",
    b"\xc1\x00\xff|\x96",
    bytes(range(256)) * 300,  # 76,800 bytes: a bin 32 header
]


def script_payload(seq: int, epoch: str, tail: memoryview) -> bytes:
    """What the publish script stores and publishes: ``0x96 .. pack(seq, epoch) .. tail``."""
    head: bytes = msgpack.packb(seq) + msgpack.packb(epoch, use_bin_type=True)
    return b"\x96" + head + bytes(tail)


# --------------------------------------------------------------------------- publications


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize(
    ("from_uid", "origin"), [("alice", "c1:7"), (None, None), ("\u00fcser|x", None)]
)
def test_publication_round_trip_keeps_data_bytes(
    data: bytes, from_uid: str | None, origin: str | None
) -> None:
    ts = 1_700_000_000_123
    tail = publication_tail(from_uid, ts, data, origin)
    payload = script_payload(42, "e-1f", tail)
    expected = Publication("room/1", 42, "e-1f", from_uid, ts, data, origin)
    for decoded in (
        decode_publication("room/1", payload),
        decode_room_message("room/1", payload),
    ):
        assert decoded == expected
        assert type(decoded.data) is bytes
        assert decoded.data == data  # byte-identical, never re-encoded
    assert data in payload  # carried verbatim inside the stored bytes


def test_publication_tail_is_the_array_without_its_header() -> None:
    tail = publication_tail("u", 5, b"\x01", "o")
    assert isinstance(tail, memoryview)
    assert msgpack.unpackb(b"\x94" + bytes(tail), raw=False) == ["u", 5, b"\x01", "o"]


@pytest.mark.parametrize("seq", [1, 127, 128, 65_536, 2**40])
def test_publication_sequence_numbers_of_every_width(seq: int) -> None:
    payload = script_payload(seq, "ep", publication_tail("u", 1, b"d", None))
    assert decode_publication("r", payload).seq == seq


# --------------------------------------------------------------------------- presence


@pytest.mark.parametrize("event", ["join", "leave"])
def test_presence_event_round_trip(event: Any) -> None:
    payload = encode_presence(event, "bob", "conn-9")
    assert decode_room_message("lobby", payload) == PresenceEvent("lobby", "bob", event, "conn-9")


def test_presence_event_is_told_from_a_publication_by_its_first_element() -> None:
    assert msgpack.unpackb(encode_presence("join", "1", "c"), raw=False)[0] == "j"
    assert msgpack.unpackb(encode_presence("leave", "1", "c"), raw=False)[0] == "l"
    pub = decode_room_message("r", script_payload(1, "e", publication_tail("1", 2, b"", None)))
    assert isinstance(pub, Publication)


# --------------------------------------------------------------------------- node commands


DM = DirectMessage("m-1", "carol", "dave", DATA[0], 1_700_000_000_000)
SERVER_DM = DirectMessage("m-2", "carol", None, DATA[4], 1)


@pytest.mark.parametrize(
    "command",
    [
        NodeCommand(NodeOp.CLOSE_USER, 4010, "kicked", uid="carol"),
        NodeCommand(NodeOp.CLOSE_CONN, 4009, "replaced", uid="carol", conn_id="c-3"),
        NodeCommand(NodeOp.CLOSE_JTI, 4001, "revoked", jti="j-77"),
        NodeCommand(NodeOp.CLOSE_USER),
        NodeCommand(NodeOp.DELIVER_DM, dm=DM),
        NodeCommand(NodeOp.DELIVER_DM, dm=SERVER_DM),
    ],
)
def test_node_command_round_trip(command: NodeCommand) -> None:
    decoded = decode_command(encode_command(command))
    assert decoded == command
    assert type(decoded.op) is NodeOp
    if command.dm is not None:
        assert decoded.dm is not None and decoded.dm.data == command.dm.data


def test_node_command_layout() -> None:
    raw = msgpack.unpackb(encode_command(NodeCommand(NodeOp.DELIVER_DM, dm=DM)), raw=False)
    assert raw == [
        "deliver_dm",
        1000,
        "",
        None,
        None,
        None,
        ["m-1", "carol", "dave", DM.data, DM.ts],
    ]
    assert msgpack.unpackb(encode_command(NodeCommand(NodeOp.CLOSE_USER)), raw=False)[6] is None


@pytest.mark.parametrize("dm", [DM, SERVER_DM, DirectMessage("m", "u", "v", DATA[5], 0)])
def test_inbox_direct_message_round_trip(dm: DirectMessage) -> None:
    decoded = decode_dm(encode_dm(dm))
    assert decoded == dm
    assert type(decoded.data) is bytes and decoded.data == dm.data


# --------------------------------------------------------------------------- session records


@pytest.mark.parametrize(
    "record",
    [
        SessionRecord("c-1", "alice", "node-a", "203.0.113.9", 1_700_000_000_000, "jti-1"),
        SessionRecord("c-2", "alice", "node|b", "2001:db8::1", 0, None),
    ],
)
@pytest.mark.parametrize("number", [0, 17, 2**53])
def test_session_record_round_trip(record: SessionRecord, number: int) -> None:
    # The admission script prepends "<admission no>|"; the first "|" ends the number
    # even when the record itself holds one.
    value = str(number).encode() + b"|" + encode_record(record)
    assert decode_record(record.uid, record.conn_id, value) == (record, number)


def test_session_record_connected_at_is_the_third_element() -> None:
    record = SessionRecord("c", "u", "n", "ip", 123_456, None)
    assert msgpack.unpackb(encode_record(record), raw=False)[2] == 123_456


def test_pairs() -> None:
    flat = [b"c-1", b"v1", "c-\u00e9".encode(), b"\x00|v2"]
    assert list(pairs(flat)) == [("c-1", b"v1"), ("c-\u00e9", b"\x00|v2")]
    assert list(pairs([])) == []


# --------------------------------------------------------------------------- malformed input

VALID: dict[str, tuple[Callable[[bytes], object], bytes]] = {
    "publication": (
        lambda b: decode_publication("r", b),
        script_payload(1, "e", publication_tail("u", 1, b"d", "o")),
    ),
    "room message": (lambda b: decode_room_message("r", b), encode_presence("join", "u", "c")),
    "command": (decode_command, encode_command(NodeCommand(NodeOp.DELIVER_DM, dm=DM))),
    "direct message": (decode_dm, encode_dm(DM)),
    "record": (
        lambda b: decode_record("u", "c", b),
        b"3|" + encode_record(SessionRecord("c", "u", "n", "ip", 1)),
    ),
}


def _damaged(valid: bytes) -> list[bytes]:
    return [
        b"",
        b"\xc1",  # never used in msgpack
        valid[:-1],  # truncated
        valid + b"\x00",  # trailing bytes
    ]


@pytest.mark.parametrize("kind", sorted(VALID))
def test_undecodable_bytes_raise_value_error(kind: str) -> None:
    decode, valid = VALID[kind]
    decode(valid)  # the undamaged value decodes
    if kind == "record":
        prefix, _, blob = valid.partition(b"|")
        damaged = [prefix + b"|" + d for d in _damaged(blob)]
    else:
        damaged = _damaged(valid)
    for payload in damaged:
        with pytest.raises(ValueError):
            decode(payload)


def _packed(*items: object) -> bytes:
    return bytes(msgpack.packb(list(items), use_bin_type=True))


@pytest.mark.parametrize(
    ("decode", "payload"),
    [
        (lambda b: decode_publication("r", b), _packed(1, "e", "u", 5, b"d")),
        (lambda b: decode_publication("r", b), _packed(1, "e", "u", 5, b"d", None, "x")),
        (lambda b: decode_room_message("r", b), _packed(1, "e")),
        (lambda b: decode_room_message("r", b), _packed("j", "u")),
        (lambda b: decode_room_message("r", b), _packed("l", "u", "c", "extra")),
        (decode_command, _packed("close_user", 1000, "")),
        (lambda b: decode_record("u", "c", b), b"1|" + _packed("n", "ip", 1)),
        (lambda b: decode_record("u", "c", b), b"1|" + _packed("n", "ip", 1, None, 0)),
    ],
    ids=[
        "publication-short",
        "publication-long",
        "room-publication-short",
        "presence-short",
        "presence-long",
        "command-short",
        "record-short",
        "record-long",
    ],
)
def test_wrong_length_raises_value_error(decode: Callable[[bytes], object], payload: bytes) -> None:
    with pytest.raises(ValueError):
        decode(payload)


def test_unknown_node_op_raises_value_error() -> None:
    with pytest.raises(ValueError):
        decode_command(_packed("reboot", 1000, "", None, None, None, None))


@pytest.mark.parametrize("prefix", [b"", b"x", b"1.5", b"-"])
def test_record_admission_number_must_be_a_number(prefix: bytes) -> None:
    blob = encode_record(SessionRecord("c", "u", "n", "ip", 1))
    with pytest.raises(ValueError):
        decode_record("u", "c", prefix + b"|" + blob)
