"""Start-up: connect the node to its backend before the port is bound.

A platform router (Heroku's) sends traffic as soon as the port is bound, so a node
binds only once its backend is up, or once ``server.backend_wait_s`` ran out.

Guarantees of :func:`connect_backend`:

* It returns True once ``node.start()`` succeeded, False when ``deadline`` passed
  (or ``stop`` was set) first; with ``deadline=None`` it tries until then.
* Every failed attempt is logged (WARNING, ``squall.startup``) with its real cause
  (``ConnectionError: Error 111 connecting to ...``), never with a password.
* A failure no retry can fix (a wrong password, a certificate that fails
  verification, ``redis://`` at a TLS port, see
  :func:`core.backend.redis_diagnose.diagnose`) raises :class:`StartupError` at once,
  naming the configuration key to change.
* Delays between attempts: 0.1 s doubling up to ``max_delay_s``, never past the
  deadline.
"""

from __future__ import annotations

import asyncio
import logging

from core.backend.base import (
    Backend,
    BackendUnavailable,
    NodeCommand,
    PresenceEvent,
    Publication,
)
from core.backend.redis_diagnose import diagnose
from core.node import Node

__all__ = ["StartupError", "check_backend", "connect_backend"]

log = logging.getLogger("squall.startup")


class StartupError(Exception):
    """A start-up failure that is a configuration problem: exit 2 with this one line."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config error: {key}: {problem}")
        self.key = key
        self.problem = problem


async def connect_backend(
    node: Node,
    url: str | None,
    stop: asyncio.Event,
    deadline: float | None,
    max_delay_s: float = 2.0,
) -> bool:
    """Start ``node`` (its backend), retrying until ``deadline`` (loop time); see above."""
    loop = asyncio.get_running_loop()
    delay = 0.1
    while not stop.is_set():
        try:
            await node.start()
            return True
        except BackendUnavailable as exc:
            problem = await diagnose(exc, url) if url is not None else None
            if problem is not None:
                raise StartupError(*problem) from None
            cause = str(exc)
        wait = delay if deadline is None else min(delay, deadline - loop.time())
        if wait <= 0:
            log.warning("backend still unreachable after server.backend_wait_s: %s", cause)
            return False
        log.warning("backend not reachable yet (%s); retrying in %.1f s", cause, wait)
        try:
            await asyncio.wait_for(stop.wait(), wait)
        except TimeoutError:
            delay = min(delay * 2, max_delay_s)
    return False


class _Ignore:
    """A listener for a connection check: nothing is subscribed, nothing is kept."""

    def on_publication(self, pub: Publication) -> None:
        """Nothing to deliver to."""

    def on_presence(self, event: PresenceEvent) -> None:
        """Nothing to deliver to."""

    def on_command(self, command: NodeCommand) -> None:
        """Nothing to deliver to."""

    def on_availability(self, available: bool) -> None:
        """Not watched."""


async def check_backend(backend: Backend, url: str) -> None:
    """Connect ``backend`` once (as a node would), then close it.

    Raises :class:`StartupError` for a configuration error (see :func:`connect_backend`)
    and :class:`BackendUnavailable` with the cause when Redis is merely unreachable.
    """
    try:
        await backend.start(_Ignore())
    except BackendUnavailable as exc:
        problem = await diagnose(exc, url)
        if problem is not None:
            raise StartupError(*problem) from None
        raise
    await backend.close()
