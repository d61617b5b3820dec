"""Squall Python client: a reconnecting asyncio client for the Squall v1 protocol.

Usage::

    from client import SquallClient

    async with SquallClient("ws://localhost:8080/ws", token) as c:
        await c.join("lobby")
        await c.publish("lobby", {"text": "hi"})
        async for frame in c.messages():
            print(frame)

See :mod:`client.connection` for the guarantees and docs/client.md for a tour.
"""

from client.backoff import REFERENCE as REFERENCE_BACKOFF
from client.backoff import Attempts, Backoff
from client.connection import SquallClient, TokenSource
from client.errors import (
    AuthRefused,
    Closed,
    ConnectionLost,
    GaveUp,
    RequestFailed,
    SquallError,
)
from client.events import StatusEvent
from client.frames import NO_RECONNECT, RESTART, Frame
from client.rooms import RoomState

__version__ = "0.1.0"

__all__ = [
    "NO_RECONNECT",
    "REFERENCE_BACKOFF",
    "RESTART",
    "Attempts",
    "AuthRefused",
    "Backoff",
    "Closed",
    "ConnectionLost",
    "Frame",
    "GaveUp",
    "RequestFailed",
    "RoomState",
    "SquallClient",
    "SquallError",
    "StatusEvent",
    "TokenSource",
    "__version__",
]
