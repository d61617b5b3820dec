"""Reconnect delays: capped exponential backoff with full jitter.

The policy (:class:`Backoff`) is an immutable value, safe to share between clients
and to use as a default argument; the per-client state (:class:`Attempts`) counts
consecutive failures and owns its random source, so nothing here is global.

Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): the n-th
delay is drawn uniformly from ``[0, min(cap, base * 2**n))``, which spreads a herd
of clients that lost the same node over the whole window instead of letting them
come back in synchronised waves.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Attempts", "Backoff"]

#: ``2.0 ** 64`` is already far above any sensible cap; bounding the exponent keeps
#: the arithmetic finite however many attempts failed.
_MAX_EXPONENT = 64


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter.

    ``base``: ceiling of the first delay (seconds). ``cap``: no delay ever exceeds it.
    ``reset_after``: a connection that stayed up at least this long resets the
    attempt count, so one drop after hours of uptime waits at most ``base``.
    """

    base: float = 0.5
    cap: float = 30.0
    reset_after: float = 10.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap <= 0:
            raise ValueError("backoff base and cap must be positive")
        if self.cap < self.base:
            raise ValueError("backoff cap must not be below its base")
        if self.reset_after < 0:
            raise ValueError("backoff reset_after must not be negative")

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the delay before retry number ``attempt`` (0-based)."""
        if attempt < 0:
            raise ValueError("attempt must not be negative")
        return min(self.cap, self.base * 2.0 ** min(attempt, _MAX_EXPONENT))

    def delay(self, attempt: int, rng: Callable[[], float]) -> float:
        """A delay in ``[0, ceiling(attempt)]``; ``rng`` returns floats in ``[0, 1)``."""
        return rng() * self.ceiling(attempt)


class Attempts:
    """One client's retry state under a :class:`Backoff` policy.

    Guarantees: :meth:`next_delay` never exceeds ``policy.cap``; the ceiling doubles
    with each consecutive failure until it reaches the cap; :meth:`connected`
    followed by :meth:`disconnected` at least ``reset_after`` seconds later starts
    over from ``base``. Times are caller-supplied monotonic seconds (testable).
    """

    def __init__(self, policy: Backoff, rng: Callable[[], float] | None = None) -> None:
        self.policy = policy
        self._rng = rng if rng is not None else random.Random().random
        self.attempt = 0
        self._up_since: float | None = None

    def next_delay(self) -> float:
        """The delay before the next try; counts one more failure."""
        delay = self.policy.delay(self.attempt, self._rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0

    def connected(self, now: float) -> None:
        """A connection was established at ``now``."""
        self._up_since = now

    def disconnected(self, now: float) -> None:
        """The connection established by :meth:`connected` ended at ``now``."""
        if self._up_since is not None and now - self._up_since >= self.policy.reset_after:
            self.reset()
        self._up_since = None
