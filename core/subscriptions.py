"""Keeps the node's backend subscriptions equal to the rooms that have local members.

A node subscribes to a room when its first local member joins and unsubscribes
when the last one leaves. Joins and leaves race (a join may arrive while the
unsubscribe of the previous last member is in flight), so every transition runs
under a per-room lock and re-reads the wanted state from the hub once it holds it:
whatever the interleaving, after the last ``sync(room)`` returns the node is
subscribed exactly when the room has members.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from core.backend.base import Backend
from core.hub import Hub

__all__ = ["Subscriptions"]


class Subscriptions:
    """Subscribed rooms of one node."""

    def __init__(
        self,
        backend: Backend,
        hub: Hub,
        on_unsubscribed: Callable[[str], None] | None = None,
    ) -> None:
        self._backend = backend
        self._on_unsubscribed = on_unsubscribed
        self._hub = hub
        self._subscribed: set[str] = set()
        # per room in transition: its lock and how many sync() calls hold or await it
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def __contains__(self, room: str) -> bool:
        return room in self._subscribed

    def rooms(self) -> list[str]:
        return sorted(self._subscribed)

    async def sync(self, room: str) -> None:
        """Subscribe or unsubscribe ``room`` to match the hub. Raises BackendUnavailable."""
        want = self._hub.has_members(room)
        if want == (room in self._subscribed) and room not in self._locks:
            return  # fast path: nothing to change, nothing in flight
        entry = self._locks.get(room)
        if entry is None:
            entry = self._locks[room] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                want = self._hub.has_members(room)
                if want and room not in self._subscribed:
                    await self._backend.subscribe_room(room)
                    self._subscribed.add(room)
                elif not want and room in self._subscribed:
                    await self._backend.unsubscribe_room(room)
                    self._subscribed.discard(room)
                    if self._on_unsubscribed is not None:
                        self._on_unsubscribed(room)
        finally:
            users[0] -= 1
            if not users[0]:  # nobody holds or awaits the lock: forget it
                del self._locks[room]
