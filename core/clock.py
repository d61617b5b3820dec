"""Injectable clocks.

Every piece of core logic that depends on time takes a :class:`Clock` so tests can
drive expiry deterministically. ``wall()`` is Unix time in seconds (float) and is
what tokens, history timestamps and TTLs use; ``monotonic()`` never goes backwards
and is what liveness and rate windows use inside one process.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """A source of wall-clock and monotonic time, in seconds."""

    def wall(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to (for unit tests of expiry logic)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = start
        self._mono = 1000.0

    def wall(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds
