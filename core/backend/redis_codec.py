"""The wire format of the Redis backend: how publications, presence events, node
commands, session records and inbox messages are encoded in Redis (msgpack).

Guarantees:

* Every value is one msgpack array, packed with ``use_bin_type=True`` and unpacked
  with ``raw=False``: ``bytes`` come back as ``bytes``, ``str`` as ``str``, ``None``
  as ``None``; decoding gives back exactly what was encoded.
* A **publication** is ``[seq, epoch, from_uid, ts, data, origin]``. The node packs
  only the tail ``[from_uid, ts, data, origin]`` (:func:`publication_tail`) without
  its one-byte array header; the publish script of :mod:`core.backend.redis_scripts`
  prepends the header ``0x96`` and ``seq, epoch``, so the payload bytes are never
  re-encoded. History entries and room channel messages are these same bytes.
* A **presence event** on a room channel is ``[marker, uid, origin]`` with marker
  ``"j"`` (join) or ``"l"`` (leave); a publication starts with an integer, a
  presence event with a string: :func:`decode_room_message` tells them apart.
* A **node command** is ``[op, code, reason, uid, conn_id, jti, dm]``; ``dm`` is
  ``nil`` or a **direct message** ``[mid, to_uid, from_uid, data, ts]``, which is
  also how the offline inbox stores one.
* A **session record** is ``<admission no>|`` followed by ``[node_id, ip,
  connected_at, jti]``; the admission script reads ``connected_at`` (element 3 in
  Lua) to find the oldest session.
* Decoding raises ``ValueError`` when the bytes are not exactly one msgpack value
  (invalid, truncated, trailing bytes), when a publication, presence event, node
  command or session record is an array of the wrong (non-zero) length, when a node
  command's op is unknown, or when a session record's ``<admission no>`` is not a
  number. Only nodes write these values, so no other shape is checked.

Nodes of one cluster share these bytes: changing a layout needs every node
upgraded at once (or a new ``backend.key_prefix``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import msgpack

from core.backend.base import (
    DirectMessage,
    NodeCommand,
    NodeOp,
    PresenceEvent,
    Publication,
    SessionRecord,
)

__all__ = [
    "decode_command",
    "decode_dm",
    "decode_publication",
    "decode_record",
    "decode_room_message",
    "encode_command",
    "encode_dm",
    "encode_presence",
    "encode_record",
    "pairs",
    "publication_tail",
]

_JOIN, _LEAVE = "j", "l"
#: msgpack fixarray header of the 4-element publication tail
_TAIL_HEADER = 0x94


def _pack(obj: object) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


# -- rooms -------------------------------------------------------------------------


def publication_tail(from_uid: str | None, ts: int, data: bytes, origin: str | None) -> memoryview:
    """``[from_uid, ts, data, origin]`` packed, without its array header (see above)."""
    packed = memoryview(_pack((from_uid, ts, data, origin)))
    assert packed[0] == _TAIL_HEADER
    return packed[1:]


def _publication(room: str, items: Sequence[Any]) -> Publication:
    seq, epoch, from_uid, ts, data, origin = items
    return Publication(room, seq, epoch, from_uid, ts, data, origin)


def decode_publication(room: str, payload: bytes) -> Publication:
    """A publication of ``room`` from its payload (a history entry or channel message)."""
    return _publication(room, _unpack(payload))


def encode_presence(event: Literal["join", "leave"], uid: str, origin: str) -> bytes:
    """The room channel message announcing ``uid``'s first join or last leave."""
    return _pack((_JOIN if event == "join" else _LEAVE, uid, origin))


def decode_room_message(room: str, payload: bytes) -> Publication | PresenceEvent:
    """A room channel message: a publication or a presence event."""
    items = _unpack(payload)
    if isinstance(items[0], int):
        return _publication(room, items)
    marker, uid, origin = items
    return PresenceEvent(room, uid, "join" if marker == _JOIN else "leave", origin)


# -- node commands and direct messages ----------------------------------------------


def _dm_fields(dm: DirectMessage) -> tuple[str, str, str | None, bytes, int]:
    return (dm.mid, dm.to_uid, dm.from_uid, dm.data, dm.ts)


def encode_dm(dm: DirectMessage) -> bytes:
    """A direct message as the offline inbox stores it."""
    return _pack(_dm_fields(dm))


def decode_dm(payload: bytes) -> DirectMessage:
    return DirectMessage(*_unpack(payload))


def encode_command(command: NodeCommand) -> bytes:
    """A node mailbox message."""
    c = command
    dm = None if c.dm is None else _dm_fields(c.dm)
    return _pack((c.op.value, c.code, c.reason, c.uid, c.conn_id, c.jti, dm))


def decode_command(payload: bytes) -> NodeCommand:
    op, code, reason, uid, conn_id, jti, dm = _unpack(payload)
    return NodeCommand(
        NodeOp(op), code, reason, uid, conn_id, jti, None if dm is None else DirectMessage(*dm)
    )


# -- session registry ------------------------------------------------------------


def encode_record(record: SessionRecord) -> bytes:
    """A registry entry without its ``<admission no>|`` prefix (the script adds it)."""
    return _pack((record.node_id, record.ip, record.connected_at, record.jti))


def decode_record(uid: str, conn_id: str, value: bytes) -> tuple[SessionRecord, int]:
    """A registry entry ``<admission no>|<msgpack>`` -> (record, admission no)."""
    number, _, blob = value.partition(b"|")
    node_id, ip, connected_at, jti = _unpack(blob)
    return SessionRecord(conn_id, uid, node_id, ip, connected_at, jti), int(number)


def pairs(flat: Sequence[Any]) -> Iterator[tuple[str, bytes]]:
    """A flat script reply ``[name, value, name, value, ...]`` as (str, bytes) pairs."""
    for i in range(0, len(flat) - 1, 2):
        yield flat[i].decode(), flat[i + 1]
