"""Storm-proof admission: handshakes queue for a bounded time instead of failing at once.

A node that restarts under thousands of clients gets all of them back within a few
seconds. Run concurrently, their backend round trips would queue for the backend's
connection pool until its timeout and fail as "backend unavailable": a wall of 503s
that sends everyone back into the storm. :class:`AdmissionGate` lets at most
``concurrency`` handshakes do backend work at a time, first come first served, and
holds the others in a queue.

Guarantees:

* At most ``concurrency`` holders at any time; waiters are served in arrival order.
* A waiter is refused (``None`` from :meth:`AdmissionGate.enter`, the caller answers
  503 with :meth:`AdmissionGate.retry_after`) when the queue already holds
  ``max_waiting`` handshakes, or when it did not get a slot within ``max_wait_s``:
  no handshake waits longer than that, whatever the storm.
* It does not hide an outage: while the backend is unavailable the handshake is
  refused 503 at once, before the gate (core.gate's capacity check).
* A holder must call :meth:`AdmissionGate.leave` exactly once (also when cancelled:
  the caller's ``finally``); a waiter cancelled while queued leaves nothing behind.
* ``Retry-After`` is the time the queue ahead needs at the rate handshakes were
  recently completed (at least 1 s, at most 30 s), jittered by +-50 %: refused
  clients come back spread over the time the node needs, not in one wave.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque

__all__ = ["AdmissionGate"]


class AdmissionGate:
    """FIFO gate in front of the handshakes' backend work; see the module docstring."""

    def __init__(
        self,
        concurrency: int = 32,
        max_waiting: int = 5000,
        max_wait_s: float = 8.0,
        rng: random.Random | None = None,
    ) -> None:
        if concurrency < 1 or max_waiting < 0 or max_wait_s <= 0:
            raise ValueError("concurrency >= 1, max_waiting >= 0 and max_wait_s > 0 needed")
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self.max_wait_s = max_wait_s
        self._rng = rng or random.Random()
        self._holders = 0
        #: (waiter, deadline) in arrival order; a waiter already done (cancelled by
        #: its handshake, or answered) is skipped when reached, not searched for
        self._waiters: deque[tuple[asyncio.Future[bool], float]] = deque()
        #: waiters not yet done (the queue's real length)
        self._live = 0
        #: one timer for the whole queue, at the oldest waiter's deadline (all wait
        #: the same ``max_wait_s``, so the oldest expires first)
        self._timer: asyncio.TimerHandle | None = None
        #: loop times of the latest completed handshakes (the recent service rate)
        self._done: deque[float] = deque(maxlen=256)
        #: handshakes refused by the gate (observability and tests)
        self.refused = 0

    @property
    def holders(self) -> int:
        return self._holders

    @property
    def waiting(self) -> int:
        return self._live

    async def enter(self) -> bool:
        """Take a slot; False (refused) when the queue is full or the wait ran out.

        A storm queues thousands of waiters: each costs one future and a deque entry
        (no task, no timer of its own)."""
        if not self._live and self._holders < self.concurrency:
            self._holders += 1
            return True
        if self._live >= self.max_waiting:
            self.refused += 1
            return False
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append((waiter, loop.time() + self.max_wait_s))
        self._live += 1
        if self._timer is None:
            self._arm(loop)
        try:
            granted = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                if waiter.result():
                    self.leave()  # granted, but the handshake went away: pass it on
            else:
                waiter.cancel()
                self._live -= 1  # its entry is skipped when reached
            raise
        if not granted:
            self.refused += 1
        return granted

    def leave(self) -> None:
        """Give a slot back (exactly once per successful :meth:`enter`)."""
        self._holders -= 1
        self._done.append(asyncio.get_running_loop().time())
        self._grant()

    def retry_after(self) -> float:
        """Seconds a refused client should wait: grows with the queue, jittered."""
        done = self._done
        if len(done) >= 2 and done[-1] > done[0]:
            rate = (len(done) - 1) / (done[-1] - done[0])
            ahead = len(self._waiters) / rate
        else:
            ahead = 1.0
        return round(min(30.0, max(1.0, ahead)) * self._rng.uniform(0.5, 1.5), 1)

    # -- internals -----------------------------------------------------------------

    def _head(self) -> tuple[asyncio.Future[bool], float] | None:
        """The oldest waiter not yet done (entries of done ones are dropped)."""
        waiters = self._waiters
        while waiters:
            if not waiters[0][0].done():
                return waiters[0]
            waiters.popleft()
        return None

    def _grant(self) -> None:
        while self._holders < self.concurrency:
            head = self._head()
            if head is None:
                return
            self._waiters.popleft()
            self._live -= 1
            self._holders += 1
            head[0].set_result(True)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        head = self._head()
        self._timer = None if head is None else loop.call_at(head[1], self._expire)

    def _expire(self) -> None:
        """Refuse every waiter whose deadline passed; re-arm for the next one."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        while (head := self._head()) is not None and head[1] <= now + 1e-3:
            self._waiters.popleft()
            self._live -= 1
            head[0].set_result(False)
        self._arm(loop)
