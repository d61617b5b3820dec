"""Per-iteration write coalescing: one write per connection per event-loop iteration.

Frames queued for a connection during one loop iteration (a burst of room messages,
a join's history, an ``ok`` and its ``msg``) are handed to its transport together at
the end of the iteration, so a burst of ten messages costs one ``send()`` per member,
not ten.

Guarantees:

* Every connection marked during an iteration is flushed exactly once, in the order
  it was first marked, by one callback scheduled on the running asyncio loop.
* A failure while flushing one connection never stops the flush of the others:
  :meth:`core.connection.Connection.flush` contains its own failures.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["Flushable", "WriteBatcher"]


class Flushable(Protocol):
    """Something with queued output (a :class:`~core.connection.Connection`)."""

    def flush(self) -> None:
        """Hand everything queued to the transport; never raises."""


class WriteBatcher:
    """Flushes every connection that queued frames, once per event-loop iteration."""

    __slots__ = ("_dirty", "_scheduled", "flushes", "writes")

    def __init__(self) -> None:
        self._dirty: list[Flushable] = []
        self._scheduled = False
        #: flush rounds and connection flushes so far (observability and tests)
        self.flushes = 0
        self.writes = 0

    def mark(self, conn: Flushable) -> None:
        """Flush ``conn`` at the end of this iteration (call once per queued batch)."""
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        self.flushes += 1
        self.writes += len(dirty)
        for conn in dirty:
            conn.flush()
