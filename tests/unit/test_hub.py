"""Fan-out writes one encoded frame, the same bytes object, to every member."""

from __future__ import annotations

from collections.abc import Sequence

import msgpack

from core.backend.base import Publication
from core.connection import Connection
from core.hub import Hub
from core.outbound import Outbound
from core.protocol import Encoding, encode_msg
from core.writer import Flushable, WriteBatcher
from core.wsframe import parse_frames


class RecordingTransport:
    """A Transport that keeps what was written (no socket).

    ``refuse`` makes the kernel take nothing (a reader that stopped reading);
    ``fail`` makes every write raise.
    """

    def __init__(self, refuse: bool = False, fail: BaseException | None = None) -> None:
        self.writes: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self.refuse = refuse
        self.fail = fail
        self.refused = 0
        self.aborted = False

    def write(self, batch: Sequence[Outbound], encoding: Encoding) -> int:
        if self.fail is not None:
            raise self.fail
        data = b"".join(out.frame(encoding) for out in batch)
        self.writes.append(data)
        if self.refuse:
            self.refused += len(data)
        return self.refused

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def abort(self) -> None:
        self.aborted = True


class ManualWriter(WriteBatcher):
    """A WriteBatcher flushed by the test instead of by the event loop."""

    def mark(self, conn: Flushable) -> None:
        self._dirty.append(conn)


def _conn(
    i: int,
    enc: Encoding = Encoding.MSGPACK,
    transport: RecordingTransport | None = None,
    writer: WriteBatcher | None = None,
    limit: int = 1000,
) -> Connection:
    return Connection(
        f"c{i}",
        "127.0.0.1",
        enc,
        transport or RecordingTransport(),
        limit,
        0.0,
        0,
        writer or ManualWriter(),
    )


def _writes(c: Connection) -> list[bytes]:
    assert isinstance(c.transport, RecordingTransport)
    return c.transport.writes


def test_fanout_encodes_once_per_encoding_and_shares_bytes() -> None:
    hub = Hub()
    writer = ManualWriter()
    members = [_conn(i, writer=writer) for i in range(50)] + [
        _conn(100 + i, Encoding.JSON, writer=writer) for i in range(5)
    ]
    for c in members:
        hub.add(c)
        hub.add_member("r", c)
    builds: list[Encoding] = []
    pub = Publication("r", 1, "e", "alice", 5, msgpack.packb({"x": 1}))

    def build(enc: Encoding) -> bytes | str:
        builds.append(enc)
        return encode_msg(pub, enc)

    assert hub.fanout(pub, Outbound(build)) == 55
    writer.flush()
    assert sorted(builds) == sorted([Encoding.MSGPACK, Encoding.JSON])
    firsts = [_writes(c)[0] for c in members]
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
    a.writer.flush()
    assert b.joining["r"] == [pub] and not _writes(b) and len(_writes(a)) == 1


def test_reader_that_stopped_is_cut_once_refused_bytes_pass_the_limit() -> None:
    hub = Hub()
    writer = ManualWriter()
    slow = _conn(1, transport=RecordingTransport(refuse=True), writer=writer, limit=5000)
    hub.add(slow)
    hub.add_member("r", slow)
    frames = 0
    while not slow.closed:
        pub = Publication("r", frames + 1, "e", None, 0, msgpack.packb("x" * 2000))
        assert hub.fanout(pub, Outbound(lambda enc, pub=pub: encode_msg(pub, enc))) == 1
        writer.flush()
        frames += 1
    transport = slow.transport
    assert isinstance(transport, RecordingTransport)
    # cut on the first write that left more than the limit refused: limit + one frame
    assert frames == 3 and 5000 < transport.refused < 5000 + 2100
    assert transport.closed is not None and transport.closed[0] == 4011 and transport.aborted
    pub = Publication("r", 9, "e", None, 0, msgpack.packb("late"))
    assert hub.fanout(pub, Outbound(lambda enc: encode_msg(pub, enc))) == 0
    assert len(transport.writes) == 3  # nothing more is written to it, no bye either


def test_burst_bigger_than_the_limit_is_not_cut_when_the_kernel_takes_it() -> None:
    hub = Hub()
    writer = ManualWriter()
    fast = _conn(1, writer=writer, limit=1000)
    hub.add(fast)
    hub.add_member("r", fast)
    for seq in range(1, 41):
        pub = Publication("r", seq, "e", None, 0, msgpack.packb("y" * 3000))
        hub.fanout(pub, Outbound(lambda enc, pub=pub: encode_msg(pub, enc)))
    writer.flush()
    assert not fast.closed
    assert len(_writes(fast)) == 1 and len(_writes(fast)[0]) > 40 * 3000  # one write


def test_a_failing_member_is_dropped_and_every_other_member_still_gets_the_message() -> None:
    hub = Hub()
    writer = ManualWriter()
    members = [
        _conn(i, writer=writer, transport=RecordingTransport(fail=OSError(32, "EPIPE")))
        if i % 3 == 0
        else _conn(i, writer=writer)
        for i in range(12)
    ]
    closes: list[int] = []
    for c in members:
        c.on_closed = closes.append
        hub.add(c)
        hub.add_member("r", c)
    pub = Publication("r", 1, "e", None, 0, msgpack.packb("z"))
    hub.fanout(pub, Outbound(lambda enc: encode_msg(pub, enc)))
    writer.flush()
    for i, c in enumerate(members):
        transport = c.transport
        assert isinstance(transport, RecordingTransport)
        if i % 3 == 0:
            assert c.closed and transport.aborted
        else:
            assert not c.closed and len(transport.writes) == 1
    assert closes == [1011] * 4
