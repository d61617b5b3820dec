"""Reconnect delays: a backoff *strategy* and a retry *policy*, kept apart.

The split follows redis-py's ``redis/backoff.py`` and ``redis/retry.py``: a
:class:`BackoffStrategy` only answers "how long to wait after the n-th consecutive
failure"; a :class:`RetryPolicy` decides whether to try again at all and asks its
strategy for the delay. The Redis backend's reconnect loop retries forever; a
client library can reuse the same pieces with a bounded number of attempts.

:class:`FullJitterBackoff` is the "full jitter" variant of capped exponential
backoff (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015): the delay
is uniform in ``[0, min(cap, base * 2**failures)]``. Spreading reconnects over the
whole interval is what keeps many nodes that lost Redis at the same instant from
reconnecting in lock-step.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["BackoffStrategy", "FullJitterBackoff", "RetryPolicy"]

#: Exponents above this add nothing once capped and would overflow a float.
_MAX_EXPONENT = 62


class BackoffStrategy(Protocol):
    """How long to wait before the next attempt."""

    def compute(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (``failures >= 0``)."""
        ...


@dataclass(frozen=True, slots=True)
class FullJitterBackoff:
    """Capped exponential backoff with full jitter.

    Guarantees: ``0 <= compute(n) <= min(cap, base * 2**n)`` for every ``n >= 0``
    (never above ``cap``, never negative, no overflow for any ``n``).
    ``uniform`` is injectable so tests can pin the jitter.
    """

    base: float = 0.05
    cap: float = 2.0
    uniform: Callable[[float, float], float] = field(default=random.uniform, repr=False)

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError(f"need 0 < base <= cap, got base={self.base!r} cap={self.cap!r}")

    def ceiling(self, failures: int) -> float:
        """The upper bound of the delay after ``failures`` failures."""
        return min(self.cap, self.base * 2.0 ** min(max(failures, 0), _MAX_EXPONENT))

    def compute(self, failures: int) -> float:
        return min(self.ceiling(failures), max(0.0, self.uniform(0.0, self.ceiling(failures))))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Whether to retry after a failure, and after how long.

    ``max_attempts`` counts attempts in total (the first one included); ``None``
    retries forever, which is what a long-lived subscriber wants.
    """

    strategy: BackoffStrategy
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, got {self.max_attempts!r}")

    def delay(self, failures: int) -> float | None:
        """Seconds to wait after ``failures`` consecutive failed attempts, or ``None`` to stop."""
        if self.max_attempts is not None and failures >= self.max_attempts:
            return None
        return self.strategy.compute(max(failures - 1, 0))
