"""Reconnect delays: one policy, shared word for word with ``static/squall.js``.

The policy (:class:`Backoff`) is an immutable value, safe to share between clients
and to use as a default argument; the per-client state (:class:`Attempts`) counts
consecutive failed tries and owns its random source, so nothing here is global.

The rules (docs/client.md, "Reconnecting"; the JavaScript client implements the
same ones, and both have property tests of them):

* **ceiling**: before try ``n`` (0-based count of consecutive failed tries) the
  delay is at most ``min(cap, base * 2**n)``.
* **jitter** in ``[0, 1]``: the delay is drawn uniformly from
  ``[ceiling * (1 - jitter), ceiling]``. ``1`` is full jitter (AWS Architecture
  Blog, "Exponential Backoff And Jitter"), which spreads a herd of clients that
  lost the same node over the whole window; ``0`` is plain doubling.
* **max_attempts**: after that many consecutive failed tries the client gives up
  (:meth:`Attempts.next_delay` returns ``None``); ``None`` never gives up.
* **reset**: a connection that stayed up ``reset_after`` seconds starts the count
  over (one drop after hours of uptime waits at most ``base``); a shorter one keeps
  it (a server that accepts and drops at once is not hammered).
* **restart**: a close that announces a restart or drain (1012, 1001) does not
  inherit the count: the next try is try 1 of a new count, after a short delay
  drawn from ``[0, restart_delay]`` (fully jittered, so the drained node's clients
  spread over the other nodes instead of arriving at once). Later failures go on
  from there (``base * 2``, ...).

:data:`REFERENCE` reproduces the reference design: 1 s doubling to 30 s, 10 tries.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT", "REFERENCE", "Attempts", "Backoff"]

#: ``2.0 ** 64`` is already far above any sensible cap; bounding the exponent keeps
#: the arithmetic finite however many attempts failed.
_MAX_EXPONENT = 64


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter, an optional try limit and reset rules.

    ``base``: ceiling of the first delay (s). ``cap``: no delay ever exceeds it.
    ``jitter``: fraction of the ceiling that is random (1 = full jitter).
    ``max_attempts``: consecutive failed tries before giving up (``None``: never).
    ``reset_after``: uptime (s) after which a drop starts the count over.
    ``restart_delay``: ceiling (s) of the delay after a restart/drain close.
    """

    base: float = 0.5
    cap: float = 30.0
    jitter: float = 1.0
    max_attempts: int | None = None
    reset_after: float = 10.0
    restart_delay: float = 1.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap <= 0:
            raise ValueError("backoff base and cap must be positive")
        if self.cap < self.base:
            raise ValueError("backoff cap must not be below its base")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be between 0 and 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("backoff max_attempts must be at least 1 (or None)")
        if self.reset_after < 0 or self.restart_delay < 0:
            raise ValueError("backoff reset_after and restart_delay must not be negative")

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the delay before try number ``attempt`` (0-based)."""
        if attempt < 0:
            raise ValueError("attempt must not be negative")
        return min(self.cap, self.base * 2.0 ** min(attempt, _MAX_EXPONENT))

    def delay(self, attempt: int, rng: Callable[[], float]) -> float:
        """A delay in ``[ceiling * (1 - jitter), ceiling]``; ``rng`` gives ``[0, 1)``."""
        top = self.ceiling(attempt)
        return top * (1.0 - self.jitter) + top * self.jitter * rng()


#: The client's default: 0.5 s full-jittered doubling to 30 s, never gives up.
DEFAULT: Final = Backoff()

#: The reference design's preset: 1 s doubling to 30 s (20 % jitter), gives up after
#: 10 consecutive failed tries.
REFERENCE: Final = Backoff(base=1.0, cap=30.0, jitter=0.2, max_attempts=10)


class Attempts:
    """One client's retry state under a :class:`Backoff` policy.

    Guarantees: :meth:`next_delay` never exceeds ``policy.cap`` and returns ``None``
    exactly when ``max_attempts`` consecutive tries failed; :meth:`restart` and a
    connection that lasted ``reset_after`` seconds start the count over. Times are
    caller-supplied monotonic seconds (testable).
    """

    def __init__(self, policy: Backoff, rng: Callable[[], float] | None = None) -> None:
        self.policy = policy
        self._rng = rng if rng is not None else random.Random().random
        #: consecutive failed tries since the last connection that counted
        self.attempt = 0
        self._up_since: float | None = None

    @property
    def exhausted(self) -> bool:
        """True once ``max_attempts`` consecutive tries failed."""
        limit = self.policy.max_attempts
        return limit is not None and self.attempt >= limit

    def next_delay(self) -> float | None:
        """The delay before the next try, counting one more try; ``None``: give up."""
        if self.exhausted:
            return None
        delay = self.policy.delay(self.attempt, self._rng)
        self.attempt += 1
        return delay

    def restart(self) -> float:
        """The delay before the try after a restart/drain close, which counts as try 1
        of a new count (the old count is dropped)."""
        self.attempt = 1
        return self.policy.restart_delay * self._rng()

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
