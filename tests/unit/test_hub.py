"""Fan-out writes one encoded frame, the same bytes object, to every member."""

from __future__ import annotations

import msgpack

from core.backend.base import Publication
from core.connection import Connection
from core.hub import Hub
from core.outbound import Outbound
from core.protocol import Encoding, encode_msg
from core.wsframe import parse_frames


class RecordingTransport:
    """A Transport that keeps what was written (no socket)."""

    def __init__(self, stuck: bool = False) -> None:
        self.writes: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self.stuck = stuck
        self.aborted = False

    def send(self, out: Outbound, encoding: Encoding) -> None:
        self.writes.append(out.frame(encoding))

    def buffered(self) -> int:
        return sum(map(len, self.writes)) if self.stuck else 0

    def ping(self) -> None:
        self.writes.append(b"\x89\x00")

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def abort(self) -> None:
        self.aborted = True


def _conn(i: int, enc: Encoding = Encoding.MSGPACK, stuck: bool = False) -> Connection:
    return Connection(f"c{i}", "127.0.0.1", enc, RecordingTransport(stuck), 1000, 0.0, 0)


def test_fanout_encodes_once_per_encoding_and_shares_bytes() -> None:
    hub = Hub()
    members = [_conn(i) for i in range(50)] + [_conn(100 + i, Encoding.JSON) for i in range(5)]
    for c in members:
        hub.add(c)
        hub.add_member("r", c)
    builds: list[Encoding] = []
    pub = Publication("r", 1, "e", "alice", 5, msgpack.packb({"x": 1}))

    def build(enc: Encoding) -> bytes | str:
        builds.append(enc)
        return encode_msg(pub, enc)

    assert hub.fanout(pub, Outbound(build)) == 55
    assert sorted(builds) == sorted([Encoding.MSGPACK, Encoding.JSON])
    firsts = [c.transport.writes[0] for c in members]  # type: ignore[attr-defined]
    assert all(w is firsts[0] for w in firsts[:50])  # identical object, not equal copies
    assert all(w is firsts[50] for w in firsts[50:])
    (frame,) = parse_frames(bytearray(firsts[0]))
    assert msgpack.unpackb(frame[2]) == {
        "t": "msg",
        "room": "r",
        "seq": 1,
        "from": "alice",
        "ts": 5,
        "epoch": "e",
        "data": {"x": 1},
    }


def test_joining_member_gets_buffered_not_written() -> None:
    hub = Hub()
    a, b = _conn(1), _conn(2)
    for c in (a, b):
        hub.add(c)
        hub.add_member("r", c)
    b.joining["r"] = []
    pub = Publication("r", 1, "e", None, 0, msgpack.packb(None))
    assert hub.fanout(pub, Outbound(lambda enc: encode_msg(pub, enc))) == 1
    assert b.joining["r"] == [pub] and not b.transport.writes  # type: ignore[attr-defined]


def test_slow_consumer_is_cut_and_skipped() -> None:
    hub = Hub()
    slow = _conn(1, stuck=True)
    hub.add(slow)
    hub.add_member("r", slow)
    pub = Publication("r", 1, "e", None, 0, msgpack.packb("x" * 2000))
    out = Outbound(lambda enc: encode_msg(pub, enc))
    assert hub.fanout(pub, out) == 0
    assert slow.closed and slow.transport.closed[0] == 4011  # type: ignore[attr-defined]
    assert slow.transport.aborted  # type: ignore[attr-defined]
    assert hub.fanout(pub, out) == 0  # nothing more is written to it
    assert len(slow.transport.writes) == 1  # type: ignore[attr-defined]
