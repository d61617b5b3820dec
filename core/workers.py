"""The parent of ``server.workers`` worker processes: start, watch, replace, stop.

Guarantees of :meth:`Supervisor.run`:

* Each worker is forked with ``run_worker(slot)`` and exits with its return value.
  Its start (``worker <slot> started: pid <pid>``) and its exit (``worker <slot>
  (pid <pid>) exited with status <n>`` / ``killed by signal <NAME>``) are logged on
  ``squall.workers``, and ``on_exit(pid)`` is called for every exit.
* SIGTERM and SIGINT are forwarded to every worker; from then on nothing is
  restarted, and ``run`` returns once every worker exited: 0 when all exited 0,
  else the worst status.
* A worker that exits while not told to is replaced after a backoff
  (``base_s`` doubling per recent death, capped at ``cap_s``). More than
  ``max_deaths`` deaths within ``window_s``: the workers keep dying, so the others
  are stopped and ``run`` returns 1. A worker exiting with status 2 reported a
  configuration error, which a restart cannot fix: the others are stopped and
  ``run`` returns 2.
* The parent waits on signals (a self-pipe), never by polling.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

__all__ = ["RestartPolicy", "Supervisor"]

log = logging.getLogger("squall.workers")


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When to replace a dead worker, and when to give up."""

    max_deaths: int = 5
    window_s: float = 60.0
    base_s: float = 0.5
    cap_s: float = 10.0

    def delay(self, recent_deaths: int) -> float:
        """Seconds before replacing a worker after ``recent_deaths`` (>= 1) deaths."""
        return min(self.cap_s, self.base_s * 2.0 ** max(recent_deaths - 1, 0))


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exited with status {code}"


class Supervisor:
    """Runs ``count`` workers; see the module docstring."""

    def __init__(
        self,
        count: int,
        run_worker: Callable[[int], int],
        policy: RestartPolicy | None = None,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self._count = count
        self._run_worker = run_worker
        self._policy = policy or RestartPolicy()
        self._on_exit = on_exit
        self._children: dict[int, int] = {}  # pid -> slot
        self._restart_at: dict[int, float] = {}  # slot -> monotonic time
        self._deaths: list[float] = []
        self._stopping = False
        self._result = 0
        self._pipe: tuple[int, int] | None = None

    def run(self) -> int:
        """Start every worker and supervise them until they are all gone."""
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._pipe = (r, w)
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        }
        old_wakeup = signal.set_wakeup_fd(w)
        try:
            for slot in range(self._count):
                self._spawn(slot)
            while self._children or (self._restart_at and not self._stopping):
                self._reap()
                self._restart_due()
                if not self._children and (self._stopping or not self._restart_at):
                    break
                timeout = None
                if self._restart_at and not self._stopping:
                    timeout = max(0.0, min(self._restart_at.values()) - time.monotonic())
                with contextlib.suppress(InterruptedError):
                    select.select([r], [], [], timeout)
                with contextlib.suppress(BlockingIOError):
                    os.read(r, 512)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(r)
            os.close(w)
            self._pipe = None
        return self._result

    # -- workers -----------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                if self._pipe is not None:
                    os.close(self._pipe[0])
                    os.close(self._pipe[1])
                code = self._run_worker(slot)
            except BaseException:
                log.exception("worker %d crashed", slot)
            finally:
                logging.shutdown()
                os._exit(code)
        self._children[pid] = slot
        log.info("worker %d started: pid %d", slot, pid)

    def _reap(self) -> None:
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self._children.clear()
                return
            if pid == 0:
                return
            slot = self._children.pop(pid, None)
            if slot is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if self._on_exit is not None:
                self._on_exit(pid)
            if self._stopping:
                log.info("worker %d (pid %d) %s", slot, pid, _describe(status))
                if code != 0 and self._result == 0:
                    self._result = abs(code) if code > 0 else 1
                continue
            log.error("worker %d (pid %d) %s", slot, pid, _describe(status))
            self._died(slot, code)

    def _died(self, slot: int, code: int) -> None:
        if code == 2:
            log.error("worker %d reported a configuration error: stopping every worker", slot)
            self._give_up(2)
            return
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < self._policy.window_s] + [now]
        if len(self._deaths) > self._policy.max_deaths:
            log.error(
                "workers keep dying (%d exits within %.0f s): giving up",
                len(self._deaths),
                self._policy.window_s,
            )
            self._give_up(1)
            return
        delay = self._policy.delay(len(self._deaths))
        log.warning("replacing worker %d in %.1f s", slot, delay)
        self._restart_at[slot] = now + delay

    def _restart_due(self) -> None:
        if self._stopping:
            self._restart_at.clear()
            return
        now = time.monotonic()
        for slot, at in sorted(self._restart_at.items()):
            if at <= now:
                del self._restart_at[slot]
                self._spawn(slot)

    def _give_up(self, result: int) -> None:
        self._result = result
        self._stop(signal.SIGTERM)

    def _stop(self, signum: int) -> None:
        self._stopping = True
        self._restart_at.clear()
        for pid in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGCHLD:
            return  # the wakeup fd woke the loop: it reaps
        if not self._stopping:
            log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self._children))
        self._stop(signum)
