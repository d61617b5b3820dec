"""The end of a drain: drop what is left, release everything in one batch, disconnect.

Runs after the drain window (every connection was sent ``bye`` + 1012 and given
``server.drain_s`` to go). Guarantees of :func:`finish`:

* the node is marked stopping first, so connections closing from then on release
  nothing one by one;
* every connection still open is dropped (its transport aborted) and its local
  clean-up runs, bounded by ``grace_s``;
* then :meth:`~core.node.Node.stop`: background work finishes or is cancelled and
  awaited, and the backend releases every session, membership and presence entry of
  this node in one batch while its connections are still open, then closes them.

Nothing is left to run when the event loop ends, so no ``Exception ignored``,
``never awaited`` or half-closed generator is reported at exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from core.node import Node

__all__ = ["finish"]

log = logging.getLogger("squall.shutdown")


async def finish(node: Node, grace_s: float = 2.0) -> None:
    """See the module docstring."""
    node.life.stopping = True
    left = list(node.hub)
    if left:
        log.warning("%d connections still open after server.drain_s: dropping them", len(left))
    for conn in left:
        conn.closed = True
        conn.transport.abort()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(node.life.wait_empty(), grace_s)
    await node.stop()
