"""The typed client frames of Squall wire protocol v1, as :func:`core.protocol.decode`
returns them.

Guarantees: every frame is a frozen dataclass holding values already validated by
the decoder (ids are unsigned 64-bit ints, room names and text fields within the
limits of :mod:`core.protocol`, ``data`` one packed MessagePack value). Nothing here
validates, performs I/O or keeps state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "AckFrame",
    "AuthFrame",
    "ClientFrame",
    "JoinFrame",
    "LeaveFrame",
    "PingFrame",
    "PresenceFrame",
    "PubFrame",
    "RefreshFrame",
    "RpcFrame",
    "SendFrame",
]


@dataclass(frozen=True, slots=True)
class AuthFrame:
    """``{"t":"auth","token":...}``: first-frame authentication."""

    token: str


@dataclass(frozen=True, slots=True)
class RefreshFrame:
    """A new access token for the same ``sub``."""

    id: int
    token: str


@dataclass(frozen=True, slots=True)
class JoinFrame:
    """Join ``room``; ``since``/``epoch`` ask for recovery of missed messages;
    ``token`` is a room token (namespaces with ``join: token``)."""

    id: int
    room: str
    since: int | None
    epoch: str | None
    token: str | None = None


@dataclass(frozen=True, slots=True)
class LeaveFrame:
    id: int
    room: str


@dataclass(frozen=True, slots=True)
class PubFrame:
    """``data`` is the MessagePack encoding of the client's ``data`` value."""

    id: int
    room: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SendFrame:
    """``data`` is the MessagePack encoding of the client's ``data`` value."""

    id: int
    to: str
    data: bytes


@dataclass(frozen=True, slots=True)
class RpcFrame:
    """A call answered by the application (rpc hook); ``data`` is packed MessagePack."""

    id: int
    method: str
    data: bytes


@dataclass(frozen=True, slots=True)
class AckFrame:
    """At least one message id; ``ack`` has no reply."""

    mids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PresenceFrame:
    id: int
    room: str


@dataclass(frozen=True, slots=True)
class PingFrame:
    id: int


ClientFrame: TypeAlias = (
    AuthFrame
    | RefreshFrame
    | JoinFrame
    | LeaveFrame
    | PubFrame
    | SendFrame
    | AckFrame
    | PresenceFrame
    | PingFrame
    | RpcFrame
)
