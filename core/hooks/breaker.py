"""A circuit breaker for one hook: stop calling an application that keeps failing.

States: *closed* (calls go through), *open* (calls fail at once, for ``reset_s``),
*half-open* (after ``reset_s``: exactly one trial call goes through; its success
closes the circuit, its failure opens it for another ``reset_s``).

Guarantees: ``failures`` consecutive failures open the circuit; any success resets
the count; while open, :meth:`allow` is False without calling anything; at most one
trial call is in flight while half-open. Time comes from the injected clock.
"""

from __future__ import annotations

from core.clock import Clock

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    def __init__(self, failures: int, reset_s: float, clock: Clock) -> None:
        if failures < 1 or reset_s <= 0:
            raise ValueError("failures must be >= 1 and reset_s > 0")
        self._threshold = failures
        self._reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        if self._opened_at is None:
            return "closed"
        if self._clock.monotonic() - self._opened_at >= self._reset_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """Whether a call may go out now (claims the trial when half-open)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial = False

    def failure(self) -> None:
        self._trial = False
        if self._opened_at is not None:
            self._opened_at = self._clock.monotonic()  # the trial failed: open again
            return
        self._failures += 1
        if self._failures >= self._threshold:
            self._opened_at = self._clock.monotonic()
