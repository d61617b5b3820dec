"""The wire codec against PROTOCOL.md: decoding, validation, hostile input, encoding."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import pytest
from msgpack import ExtType, Timestamp

from core.backend.base import DirectMessage, Publication
from core.protocol import (
    AckFrame,
    AuthFrame,
    ClientFrame,
    CloseCode,
    Encoding,
    ErrCode,
    JoinFrame,
    LeaveFrame,
    PingFrame,
    PresenceFrame,
    ProtocolError,
    PubFrame,
    RefreshFrame,
    RequestError,
    SendFrame,
    bye,
    data_from_json,
    decode,
    encode,
    encode_dm,
    encode_msg,
    err,
    error_frame,
    msgpack_to_json_value,
    ok,
    pack_data,
    pong,
    presence_event,
    select_encoding,
    should_reconnect,
    validate_room,
    welcome,
)

MP = Encoding.MSGPACK
JS = Encoding.JSON
BOTH = pytest.mark.parametrize("encoding", [MP, JS], ids=["msgpack", "json"])


def packb(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def wire(obj: Any, encoding: Encoding) -> bytes | str:
    """What a well-behaved client sends for ``obj``."""
    return packb(obj) if encoding is MP else json.dumps(obj)


@contextmanager
def quick(limit_s: float = 1.0) -> Iterator[None]:
    """Guard against stalls only; the assertions inside are what the test checks."""
    start = time.perf_counter()
    yield
    assert time.perf_counter() - start < limit_s


def protocol_error(message: bytes | str, encoding: Encoding) -> ProtocolError:
    with quick(), pytest.raises(ProtocolError) as info:
        decode(message, encoding)
    assert info.value.close_code is CloseCode.BAD_REQUEST
    return info.value


def request_error(message: bytes | str, encoding: Encoding) -> RequestError:
    with quick(), pytest.raises(RequestError) as info:
        decode(message, encoding)
    assert info.value.code is ErrCode.BAD_REQUEST
    return info.value


# -- every client frame type -----------------------------------------------------------

VALID: list[tuple[dict[str, Any], ClientFrame]] = [
    ({"t": "auth", "token": "a.b.c"}, AuthFrame("a.b.c")),
    ({"t": "refresh", "id": 1, "token": "x" * 8192}, RefreshFrame(1, "x" * 8192)),
    ({"t": "join", "id": 2, "room": "lobby"}, JoinFrame(2, "lobby", None, None)),
    (
        {"t": "join", "id": 3, "room": "r", "since": 0, "epoch": "ep"},
        JoinFrame(3, "r", 0, "ep"),
    ),
    (
        {"t": "join", "id": 4, "room": "r", "since": None, "epoch": None},
        JoinFrame(4, "r", None, None),
    ),
    ({"t": "join", "id": 5, "room": "r", "since": 2**64 - 1}, JoinFrame(5, "r", 2**64 - 1, None)),
    ({"t": "leave", "id": 6, "room": "r"}, LeaveFrame(6, "r")),
    ({"t": "pub", "id": 7, "room": "r", "data": {"a": [1]}}, PubFrame(7, "r", packb({"a": [1]}))),
    ({"t": "pub", "id": 8, "room": "r", "data": None}, PubFrame(8, "r", b"\xc0")),
    ({"t": "send", "id": 9, "to": "bob", "data": "hi"}, SendFrame(9, "bob", packb("hi"))),
    ({"t": "send", "id": 10, "to": "b" * 256, "data": 1}, SendFrame(10, "b" * 256, b"\x01")),
    ({"t": "ack", "mid": "m1"}, AckFrame(("m1",))),
    ({"t": "ack", "mid": ["m1", "m" * 128]}, AckFrame(("m1", "m" * 128))),
    ({"t": "presence", "id": 11, "room": "r"}, PresenceFrame(11, "r")),
    ({"t": "ping", "id": 0}, PingFrame(0)),
    ({"t": "ping", "id": 2**64 - 1}, PingFrame(2**64 - 1)),
    ({"t": "ping", "id": 12, "extra": [1, 2]}, PingFrame(12)),  # unknown fields ignored
    ({"t": "join", "id": 13, "room": "é" * 64}, JoinFrame(13, "é" * 64, None, None)),
]


@BOTH
@pytest.mark.parametrize(("obj", "expected"), VALID)
def test_decodes_each_frame_type(
    obj: dict[str, Any], expected: ClientFrame, encoding: Encoding
) -> None:
    assert decode(wire(obj, encoding), encoding) == expected


DATA_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**64 - 1,
    -(2**63),
    1.5,
    "",
    "héllo ☃",
    [],
    [1, "a", None, [2.5]],
    {},
    {"a": {"b": {"c": [True]}}},
]


@BOTH
@pytest.mark.parametrize("value", DATA_VALUES, ids=repr)
def test_pub_data_is_the_packed_value(value: Any, encoding: Encoding) -> None:
    frame = decode(wire({"t": "pub", "id": 1, "room": "r", "data": value}, encoding), encoding)
    assert isinstance(frame, PubFrame)
    assert frame.data == packb(value)
    assert msgpack.unpackb(frame.data) == value


@pytest.mark.parametrize(
    "value",
    [b"\x00\xff", ExtType(5, b"xyz"), Timestamp(1, 2), {1: "int key", None: 0, b"k": 1}],
    ids=repr,
)
def test_msgpack_only_data_values_survive(value: Any) -> None:
    frame = decode(packb({"t": "send", "id": 1, "to": "u", "data": value}), MP)
    assert isinstance(frame, SendFrame)
    assert msgpack.unpackb(frame.data, strict_map_key=False) == value


# -- request errors (err 400, connection stays open) -----------------------------------

# (frame, reason, request id the error must carry)
INVALID: list[tuple[dict[str, Any], str, int | None]] = [
    ({}, "missing field: t", None),
    ({"id": 3}, "missing field: t", 3),
    ({"t": "nope", "id": 3}, "unknown frame type", 3),
    ({"t": 7, "id": 3}, "unknown frame type", 3),
    ({"t": None}, "unknown frame type", None),
    ({"t": "PING", "id": 1}, "unknown frame type", 1),
    ({"t": "ping"}, "missing field: id", None),
    ({"t": "ping", "id": True}, "invalid field: id", None),
    ({"t": "ping", "id": -1}, "invalid field: id", None),
    ({"t": "ping", "id": 1.0}, "invalid field: id", None),
    ({"t": "ping", "id": "1"}, "invalid field: id", None),
    ({"t": "ping", "id": None}, "invalid field: id", None),
    ({"t": "auth"}, "missing field: token", None),
    ({"t": "auth", "token": ""}, "invalid field: token", None),
    ({"t": "auth", "token": "x" * 8193}, "invalid field: token", None),
    ({"t": "auth", "token": 5}, "invalid field: token", None),
    ({"t": "refresh", "id": 1}, "missing field: token", 1),
    ({"t": "refresh", "token": "x"}, "missing field: id", None),
    ({"t": "join", "id": 1}, "missing field: room", 1),
    ({"t": "join", "id": 1, "room": ""}, "invalid field: room", 1),
    ({"t": "join", "id": 1, "room": "r" * 129}, "invalid field: room", 1),
    ({"t": "join", "id": 1, "room": "é" * 65}, "invalid field: room", 1),  # 130 bytes
    ({"t": "join", "id": 1, "room": "a\x00b"}, "invalid field: room", 1),
    ({"t": "join", "id": 1, "room": "a\nb"}, "invalid field: room", 1),
    ({"t": "join", "id": 1, "room": "a\x7f"}, "invalid field: room", 1),
    ({"t": "join", "id": 1, "room": "a\x85"}, "invalid field: room", 1),
    ({"t": "join", "id": 1, "room": 12}, "invalid field: room", 1),
    ({"t": "join", "id": 1, "room": ["r"]}, "invalid field: room", 1),
    ({"t": "join", "id": 1, "room": "r", "since": -1}, "invalid field: since", 1),
    ({"t": "join", "id": 1, "room": "r", "since": True}, "invalid field: since", 1),
    ({"t": "join", "id": 1, "room": "r", "since": 1.5}, "invalid field: since", 1),
    ({"t": "join", "id": 1, "room": "r", "since": "3"}, "invalid field: since", 1),
    ({"t": "join", "id": 1, "room": "r", "epoch": 5}, "invalid field: epoch", 1),
    ({"t": "join", "id": 1, "room": "r", "epoch": ""}, "invalid field: epoch", 1),
    ({"t": "join", "id": 1, "room": "r", "epoch": "e" * 129}, "invalid field: epoch", 1),
    ({"t": "leave", "id": 2, "room": "\x1f"}, "invalid field: room", 2),
    ({"t": "pub", "id": 4, "room": "r"}, "missing field: data", 4),
    ({"t": "pub", "id": 4, "data": 1}, "missing field: room", 4),
    ({"t": "send", "id": 5, "data": 1}, "missing field: to", 5),
    ({"t": "send", "id": 5, "to": "", "data": 1}, "invalid field: to", 5),
    ({"t": "send", "id": 5, "to": "é" * 129, "data": 1}, "invalid field: to", 5),
    ({"t": "send", "id": 5, "to": 7, "data": 1}, "invalid field: to", 5),
    ({"t": "send", "id": 5, "to": "u"}, "missing field: data", 5),
    ({"t": "ack"}, "missing field: mid", None),
    ({"t": "ack", "mid": []}, "invalid field: mid", None),
    ({"t": "ack", "mid": ""}, "invalid field: mid", None),
    ({"t": "ack", "mid": ["a", 1]}, "invalid field: mid", None),
    ({"t": "ack", "mid": ["m" * 129]}, "invalid field: mid", None),
    ({"t": "ack", "mid": {"a": 1}}, "invalid field: mid", None),
    ({"t": "ack", "mid": 3}, "invalid field: mid", None),
    ({"t": "presence", "id": 6}, "missing field: room", 6),
    ({"t": "ping", "id": [1]}, "invalid field: id", None),
]


@BOTH
@pytest.mark.parametrize(("obj", "reason", "request_id"), INVALID)
def test_invalid_requests_are_err_400(
    obj: dict[str, Any], reason: str, request_id: int | None, encoding: Encoding
) -> None:
    e = request_error(wire(obj, encoding), encoding)
    assert (e.reason, e.request_id, e.retry_after) == (reason, request_id, None)


@pytest.mark.parametrize(
    ("obj", "reason", "request_id"),
    [
        ({"t": "ping", "id": 2**64}, "invalid field: id", None),
        ({"t": "join", "id": 1, "room": "r", "since": 2**64}, "invalid field: since", 1),
    ],
)
def test_json_numbers_beyond_uint64_are_err_400(
    obj: dict[str, Any], reason: str, request_id: int | None
) -> None:
    # msgpack cannot even express these; a float id is the msgpack counterpart
    e = request_error(json.dumps(obj), JS)
    assert (e.reason, e.request_id) == (reason, request_id)


def test_non_string_top_level_key_is_err_400_with_id() -> None:
    e = request_error(packb({"t": "ping", "id": 4, 1: 2}), MP)
    assert (e.reason, e.request_id) == ("non-string key", 4)
    e = request_error(packb({"t": "ping", b"id": 4}), MP)
    assert (e.reason, e.request_id) == ("non-string key", None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"t":"join","id":1,"room":"\\ud800"}', "invalid field: room"),
        ('{"t":"refresh","id":1,"token":"a\\udfffb"}', "invalid field: token"),
        ('{"t":"send","id":1,"to":"\\ud800","data":1}', "invalid field: to"),
        ('{"t":"pub","id":1,"room":"r","data":"\\ud800"}', "invalid field: data"),
        ('{"t":"pub","id":1,"room":"r","data":18446744073709551616}', "invalid field: data"),
        ('{"t":"pub","id":1,"room":"r","data":-9223372036854775809}', "invalid field: data"),
        (
            '{"t":"pub","id":1,"room":"r","data":' + "[" * 600 + "]" * 600 + "}",
            "invalid field: data",
        ),
        ('{"t":"ack","mid":["\\ud800"]}', "invalid field: mid"),
        ('{"t":"join","id":1,"room":"r","epoch":"\\ud800"}', "invalid field: epoch"),
    ],
)
def test_json_values_without_a_msgpack_form_are_err_400(text: str, reason: str) -> None:
    assert request_error(text, JS).reason == reason


def _nested(depth: int) -> Any:
    value: Any = None
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@BOTH
def test_data_nesting_limit_is_max_data_depth(encoding: Encoding) -> None:
    frame = decode(
        wire({"t": "pub", "id": 1, "room": "r", "data": _nested(100)}, encoding), encoding
    )
    assert isinstance(frame, PubFrame)
    assert msgpack.unpackb(frame.data) == _nested(100)
    e = request_error(
        wire({"t": "pub", "id": 2, "room": "r", "data": _nested(101)}, encoding), encoding
    )
    assert (e.reason, e.request_id) == ("invalid field: data", 2)


def test_msgpack_data_nested_1000_deep_is_err_400() -> None:
    data = b"\x91" * 1000 + b"\xc0"  # decodable: the C unpacker stops at 1024 levels
    message = b"\x84" + packb("t") + packb("pub") + packb("id") + b"\x09"
    message += packb("room") + packb("r") + packb("data") + data
    e = request_error(message, MP)
    assert (e.reason, e.request_id) == ("invalid field: data", 9)


def test_validate_room_is_the_rule_decode_applies() -> None:
    assert validate_room("a/b:c d", 3) == "a/b:c d"
    assert validate_room("x" * 128, None) == "x" * 128
    with pytest.raises(RequestError) as info:
        validate_room("x" * 129, 3)
    assert (info.value.code, info.value.request_id) == (ErrCode.BAD_REQUEST, 3)
    with pytest.raises(RequestError):
        validate_room(None, None)


# -- protocol errors (close 4000) and hostile input ------------------------------------


def test_text_frame_on_msgpack_and_binary_frame_on_json_close_4000() -> None:
    text = json.dumps({"t": "ping", "id": 1})
    assert protocol_error(text, MP).reason == "text frame on the binary subprotocol"
    assert protocol_error(text.encode(), JS).reason == "binary frame on the JSON subprotocol"


def _deep_json(depth: int) -> str:
    return '{"t":"pub","id":1,"room":"r","data":' + "[" * depth + "]" * depth + "}"


HOSTILE_MSGPACK: dict[str, bytes] = {
    "empty": b"",
    "truncated": packb({"t": "ping", "id": 1})[:-1],
    "trailing garbage": packb({"t": "ping", "id": 1}) + b"\x00",
    "two maps": packb({"t": "ping", "id": 1}) * 2,
    "array top level": packb(["t", "ping"]),
    "int top level": packb(5),
    "str top level": packb("ping"),
    "nil top level": b"\xc0",
    "reserved byte 0xc1": b"\xc1",
    "2**32-element array": b"\xdd\xff\xff\xff\xff",
    "2**32-entry map": b"\xdf\xff\xff\xff\xff",
    "2**32-byte str": b"\xdb\xff\xff\xff\xff",
    "2**32-byte bin": b"\xc6\xff\xff\xff\xff",
    "2**32-byte ext": b"\xc9\xff\xff\xff\xff\x05",
    "huge array inside a map": b"\x81\xa4data\xdd\xff\xff\xff\xff",
    "100k nested arrays": b"\x81\xa4data" + b"\x91" * 100_000 + b"\xc0",
    "100k nested maps": b"\x81\xa1a" * 100_000 + b"\xc0",
    "invalid utf-8 value": b"\x82\xa1t\xa2\xff\xfe\xa2id\x01",
    "invalid utf-8 key": b"\x81\xa2\xc3\x28\x01",
    "invalid utf-8 in data": b"\x84"
    + b"".join(packb(x) for x in ["t", "pub", "id", 1, "room", "r", "data"])
    + b"\xa2\xc3\x28",
    "map used as a key": b"\x81\x81\xc0\xc0\xc0",
    "array used as a key": b"\x81\x91\xc0\xc0",
    "bad timestamp length": b"\x81\xa1a\xd5\xff\x00\x00",
}

HOSTILE_JSON: dict[str, str] = {
    "empty": "",
    "truncated": '{"t":"ping","id":1',
    "trailing garbage": '{"t":"ping","id":1} x',
    "array top level": '["t","ping"]',
    "int top level": "5",
    "str top level": '"ping"',
    "null top level": "null",
    "NaN": '{"t":"pub","id":1,"room":"r","data":NaN}',
    "Infinity": '{"t":"pub","id":1,"room":"r","data":-Infinity}',
    "5000-digit int": '{"t":"pub","id":1,"room":"r","data":' + "9" * 5000 + "}",
    "100k nested arrays": _deep_json(100_000),
    "100k nested objects": '{"a":' * 100_000 + "1" + "}" * 100_000,
    "single quotes": "{'t':'ping'}",
}


@pytest.mark.parametrize("message", HOSTILE_MSGPACK.values(), ids=HOSTILE_MSGPACK.keys())
def test_hostile_msgpack_closes_4000_fast(message: bytes) -> None:
    protocol_error(message, MP)


@pytest.mark.parametrize("message", HOSTILE_JSON.values(), ids=HOSTILE_JSON.keys())
def test_hostile_json_closes_4000_fast(message: str) -> None:
    protocol_error(message, JS)


def _colliding_timestamps(n: int) -> list[Timestamp]:
    """Distinct timestamps that all hash like (0, 0), by inverting CPython's 64-bit
    tuple hash (xxHash-based, Objects/tupleobject.c) for the first lane."""
    m = 2**64
    p1, p2, p5 = 11400714785074694791, 14029467366897019727, 2870177450012600261
    p1_inv, p2_inv = pow(p1, -1, m), pow(p2, -1, m)

    def rotr(x: int) -> int:
        return ((x >> 31) | (x << 33)) % m

    target = hash((0, 0)) % m
    after_second = rotr((target - (2 ^ (p5 ^ 3527539))) * p1_inv % m)
    found: list[Timestamp] = []
    ns = 0
    while len(found) < n:
        seconds = (rotr((after_second - ns * p2) * p1_inv % m) - p5) * p2_inv % m
        if seconds < 2**61 - 1:  # an int below the hash modulus hashes to itself
            found.append(Timestamp(seconds, ns))
        ns += 1
    # distinct by construction (ns grows); a set() of them would itself be quadratic
    assert len({hash(t) for t in found}) == 1
    return found


def test_timestamp_map_keys_are_refused_before_hash_flooding() -> None:
    keys = _colliding_timestamps(4000)
    data = b"\xde" + len(keys).to_bytes(2, "big") + b"".join(packb(k) + b"\xc0" for k in keys)
    message = b"\x84" + b"".join(packb(x) for x in ["t", "pub", "id", 1, "room", "r", "data"])
    with quick(0.25):
        protocol_error(message + data, MP)


def test_fuzzed_frames_raise_only_documented_errors() -> None:
    rng = random.Random(20240601)
    seeds = [obj for obj, _ in VALID] + [obj for obj, _, _ in INVALID]
    outcomes = {"frame": 0, "request": 0, "protocol": 0}
    start = time.perf_counter()
    for _ in range(4000):
        encoding = rng.choice([MP, JS])
        seed = wire(rng.choice(seeds), encoding)
        raw = bytearray(seed.encode() if isinstance(seed, str) else seed)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(4)
            if op == 0 and raw:
                del raw[rng.randrange(len(raw)) :]
            elif op == 1 and raw:
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            elif op == 2:
                raw.insert(rng.randrange(len(raw) + 1), rng.randrange(256))
            elif raw:
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        message: bytes | str = bytes(raw)
        if encoding is JS:
            message = bytes(raw).decode("utf-8", errors="replace")
        try:
            decode(message, encoding)
            outcomes["frame"] += 1
        except RequestError as e:
            assert e.code is ErrCode.BAD_REQUEST
            outcomes["request"] += 1
        except ProtocolError as e:
            assert e.close_code is CloseCode.BAD_REQUEST
            outcomes["protocol"] += 1
    assert time.perf_counter() - start < 10
    assert all(outcomes.values()), outcomes  # the mutations reached all three outcomes


# -- data values to JSON ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (-7, -7),
        (2.5, 2.5),
        (math.nan, None),
        (-math.inf, None),
        ("s", "s"),
        (b"\x00\xff", {"$bin": "AP8="}),
        (b"", {"$bin": ""}),
        (ExtType(7, b"ab"), {"$ext": 7, "$bin": "YWI="}),
        (Timestamp(1_700_000_000, 123_456_789), 1_700_000_000_123),
        (Timestamp(-1, 999_999_999), -1),  # floored, like every ms timestamp
        ([1, [b"x"]], [1, [{"$bin": "eA=="}]]),
        (
            {2: "a", True: "b", None: "c", 1.5: "d"},
            {"2": "a", "true": "b", "null": "c", "1.5": "d"},
        ),
        ({b"k": 1}, {'{"$bin":"aw=="}': 1}),
        ({"a": {"b": [None, {"c": 2**64 - 1}]}}, {"a": {"b": [None, {"c": 2**64 - 1}]}}),
    ],
    ids=repr,
)
def test_msgpack_to_json_value(value: Any, expected: Any) -> None:
    assert msgpack_to_json_value(packb(value)) == expected


def test_pack_data_refuses_values_without_a_msgpack_form() -> None:
    for bad in [object(), 2**64, -(2**63) - 1, "\ud800", _nested(101), (_nested(100),), {1, 2}]:
        with pytest.raises(ValueError):
            pack_data(bad)
    assert data_from_json({"a": [1, None]}) == packb({"a": [1, None]})


# -- encoding server frames ------------------------------------------------------------

ALL_DATA: Any = {
    "nil": None,
    "bool": [True, False],
    "int": [0, -1, 127, 128, -33, 2**32, 2**64 - 1, -(2**63)],
    "float": [0.5, -1e300],
    "str": ["", "ü☃", "x" * 300],
    "bin": [b"", b"\x00" * 70_000],
    "array": [[], [[1], [2, [3]]]],
    "map": {"": {}, "k": {"nested": {"deep": [1, {"x": None}]}}},
}


@pytest.mark.parametrize("value", [*ALL_DATA.values(), ALL_DATA], ids=[*ALL_DATA, "all"])
@pytest.mark.parametrize("from_uid", ["alice", None])
def test_encode_msg_round_trips(value: Any, from_uid: str | None) -> None:
    pub = Publication("room/é", 2**40, "ep", from_uid, 1_700_000_000_000, packb(value))
    expected = {
        "t": "msg",
        "room": "room/é",
        "seq": 2**40,
        "from": from_uid,
        "ts": pub.ts,
        "epoch": "ep",
    }
    encoded = encode_msg(pub, MP)
    assert isinstance(encoded, bytes)
    assert msgpack.unpackb(encoded) == {**expected, "data": value}
    assert encoded == packb({**expected, "data": value})  # byte for byte what packb makes
    text = encode_msg(pub, JS)
    assert isinstance(text, str)
    assert json.loads(text) == {**expected, "data": msgpack_to_json_value(packb(value))}


@pytest.mark.parametrize("value", [*ALL_DATA.values(), ALL_DATA], ids=[*ALL_DATA, "all"])
@pytest.mark.parametrize("offline", [True, False])
def test_encode_dm_round_trips(value: Any, offline: bool) -> None:
    dm = DirectMessage("m-1", "bob", None if offline else "alice", packb(value), 5)
    expected = {"t": "dm", "mid": "m-1", "from": dm.from_uid, "ts": 5, "offline": offline}
    encoded = encode_dm(dm, offline, MP)
    assert isinstance(encoded, bytes)
    assert msgpack.unpackb(encoded) == {**expected, "data": value}
    text = encode_dm(dm, offline, JS)
    assert isinstance(text, str)
    assert json.loads(text) == {**expected, "data": msgpack_to_json_value(packb(value))}


def test_encode_msg_keeps_ext_and_timestamp_data_intact() -> None:
    value = [ExtType(3, b"\x01"), Timestamp(5, 6)]
    pub = Publication("r", 1, "e", None, 0, packb(value))
    assert msgpack.unpackb(encode_msg(pub, MP))["data"] == value
    assert json.loads(encode_msg(pub, JS))["data"] == [{"$ext": 3, "$bin": "AQ=="}, 5000]


def test_json_encoding_of_the_deepest_allowed_data() -> None:
    # MAX_DATA_DEPTH levels must convert even when the caller is itself deep in a stack
    def at_depth(n: int) -> str | bytes:
        if n:
            return at_depth(n - 1)
        return encode_msg(Publication("r", 1, "e", None, 0, packb(_nested(100))), JS)

    assert json.loads(at_depth(300))["data"] == _nested(100)


SERVER_FRAMES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (
        welcome("c1", "alice", "n1", 25.0, 1_700_000_000_000),
        {
            "t": "welcome",
            "conn": "c1",
            "uid": "alice",
            "node": "n1",
            "hb": 25.0,
            "exp": 1_700_000_000_000,
        },
    ),
    (ok(3), {"t": "ok", "id": 3}),
    (
        ok(4, room="r", seq=9, epoch="e", recovered=False),
        {"t": "ok", "id": 4, "room": "r", "seq": 9, "epoch": "e", "recovered": False},
    ),
    (ok(5, users=["a", "b"]), {"t": "ok", "id": 5, "users": ["a", "b"]}),
    (
        err(6, ErrCode.FORBIDDEN, "not a member"),
        {"t": "err", "id": 6, "code": 403, "reason": "not a member"},
    ),
    (
        err(None, ErrCode.RATE_LIMITED, "rate limited", 1.5),
        {"t": "err", "code": 429, "reason": "rate limited", "retry_after": 1.5},
    ),
    (
        error_frame(RequestError(ErrCode.UNAVAILABLE, "backend down", 8, 2.0)),
        {"t": "err", "id": 8, "code": 503, "reason": "backend down", "retry_after": 2.0},
    ),
    (
        error_frame(RequestError(ErrCode.BAD_REQUEST, "unknown frame type")),
        {"t": "err", "code": 400, "reason": "unknown frame type"},
    ),
    (bye(CloseCode.RESTART, "draining"), {"t": "bye", "code": 1012, "reason": "draining"}),
    (pong(2**64 - 1), {"t": "pong", "id": 2**64 - 1}),
    (
        presence_event("r", "bob", "leave"),
        {"t": "presence", "room": "r", "uid": "bob", "event": "leave"},
    ),
]


@BOTH
@pytest.mark.parametrize(("frame", "expected"), SERVER_FRAMES)
def test_server_frames_encode(
    frame: dict[str, Any], expected: dict[str, Any], encoding: Encoding
) -> None:
    encoded = encode(frame, encoding)
    if encoding is MP:
        assert isinstance(encoded, bytes)
        decoded = msgpack.unpackb(encoded)
    else:
        assert isinstance(encoded, str)
        decoded = json.loads(encoded)
    assert decoded == expected
    if "code" in decoded:  # enum members go out as plain ints
        assert type(decoded["code"]) is int


def test_json_encoding_is_compact_and_strict() -> None:
    assert encode(ok(1, x="é"), JS) == '{"t":"ok","id":1,"x":"é"}'
    assert (
        encode(ok(1, x=math.nan, b=b"\x01"), JS) == '{"t":"ok","id":1,"x":null,"b":{"$bin":"AQ=="}}'
    )


def test_request_error_after_decode_answers_with_its_id() -> None:
    e = request_error(wire({"t": "leave", "id": 77}, JS), JS)
    assert error_frame(e) == {"t": "err", "id": 77, "code": 400, "reason": "missing field: room"}


# -- codes and subprotocols ------------------------------------------------------------


def test_reconnect_is_false_exactly_for_the_terminal_codes() -> None:
    terminal = {4001, 4003, 4009, 4010, 4029}
    for code in CloseCode:
        assert code.reconnect is (code.value not in terminal), code
    assert should_reconnect(1006) and should_reconnect(4999)
    assert not should_reconnect(4010)


def test_codes_have_the_protocol_values() -> None:
    assert [int(c) for c in ErrCode] == [400, 403, 404, 409, 413, 429, 503]
    assert [int(c) for c in CloseCode] == [
        1000,
        1009,
        1011,
        1012,
        4000,
        4001,
        4002,
        4003,
        4004,
        4008,
        4009,
        4010,
        4011,
        4029,
        4408,
    ]


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        ([], None),
        (["chat", "v2"], None),
        (["squall.v1.json"], JS),
        (["squall.v1.json", "squall.v1.msgpack"], JS),
        (["other", " squall.v1.msgpack", "squall.v1.json"], MP),
        (["SQUALL.V1.JSON"], None),
    ],
)
def test_select_encoding_takes_the_first_we_speak(
    offered: list[str], expected: Encoding | None
) -> None:
    assert select_encoding(offered) is expected
