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

from client.backoff import Attempts, Backoff
from client.connection import SquallClient, TokenSource
from client.errors import AuthRefused, Closed, ConnectionLost, RequestFailed, SquallError
from client.frames import NO_RECONNECT, Frame
from client.rooms import RoomState

__all__ = [
    "NO_RECONNECT",
    "Attempts",
    "AuthRefused",
    "Backoff",
    "Closed",
    "ConnectionLost",
    "Frame",
    "RequestFailed",
    "RoomState",
    "SquallClient",
    "SquallError",
    "TokenSource",
]
