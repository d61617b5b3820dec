"""The messages that travel between nodes and to clients: room messages, private
messages, presence events, and a room's position in its history.

These types sit below both the codec (:mod:`core.protocol`, which turns them into
frames) and the storage layer (:mod:`core.backend`, which stores and moves them), so
neither imports the other. They are immutable values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["DirectMessage", "PresenceEvent", "Publication", "Recovery", "RoomPosition"]


@dataclass(frozen=True, slots=True)
class Publication:
    """One room message, as stored in history and delivered to every node.

    ``data`` is the MessagePack encoding of the client's ``data`` value and travels
    as bytes end to end. ``origin`` is ``"<conn_id>:<request id>"`` of the ``pub``
    that produced it (``None`` for server API publications) so the publishing
    node can put the ``ok`` before the ``msg`` on the sender's connection.
    """

    room: str
    seq: int
    epoch: str
    from_uid: str | None
    ts: int
    data: bytes
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class RoomPosition:
    """The latest ``seq`` of a room (0 when nothing was published) and its epoch."""

    seq: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Recovery:
    """What :meth:`Backend.recover` found.

    ``publications`` are those with ``since < seq <= position.seq`` still in history,
    ascending and gap-free. ``recovered`` is True only when they are *all* of them:
    the client's epoch (if given) matches and history reaches back to ``since + 1``.
    """

    publications: list[Publication]
    position: RoomPosition
    recovered: bool


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A user's first connection joined a room, or its last one left (cluster-wide).

    ``origin`` is the connection id whose join/leave caused it; that connection
    does not receive the event.
    """

    room: str
    uid: str
    event: Literal["join", "leave"]
    origin: str


@dataclass(frozen=True, slots=True)
class DirectMessage:
    """A private message. ``from_uid`` is ``None`` for messages sent by the server API."""

    mid: str
    to_uid: str
    from_uid: str | None
    data: bytes
    ts: int
