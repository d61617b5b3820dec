"""One sweeper for the liveness of every connection of a node.

A single periodic callback (driven by the I/O layer, a Tornado ``PeriodicCallback``
in ``handlers/``) calls :meth:`Sweeper.sweep` every ``heartbeat.interval_s``
instead of one ping coroutine per connection. Each sweep:

* closes with 4408 every connection that showed no sign of life (no pong, no
  inbound frame) for ``misses`` intervals;
* queues a pre-built WebSocket ping frame on every other connection;
* refreshes the session records and room memberships of the node's connections in
  the backend in ONE batched call, so they outlive the sweep interval and expire
  within ``2 x interval_s`` when the node dies.

Guarantee: a silent connection is closed between ``misses x interval`` and
``(misses + 1) x interval`` after its last sign of life.
"""

from __future__ import annotations

import logging

from core.backend.base import BackendUnavailable, Membership, SessionRecord
from core.node import Node
from core.protocol import CloseCode

__all__ = ["Sweeper"]

log = logging.getLogger("squall.heartbeat")


class Sweeper:
    """Liveness sweep over all connections of ``node``."""

    def __init__(self, node: Node) -> None:
        self._hub = node.hub
        self._life = node.life
        self._backend = node.backend
        self._clock = node.clock
        self._metrics = node.metrics
        hb = node.settings.heartbeat
        self.interval_s = hb.interval_s
        self.timeout_s = hb.interval_s * hb.misses
        self._refreshing = False
        self.sweeps = 0

    def sweep(self) -> None:
        """Ping the live, close the silent, schedule one batched registry refresh."""
        now = self._clock.monotonic()
        deadline = now - self.timeout_s
        sessions: list[SessionRecord] = []
        memberships: list[Membership] = []
        for conn in self._hub:
            if conn.closed:
                continue
            if conn.last_seen < deadline:
                conn.close(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
                continue
            conn.ping()
            if conn.record is not None:
                sessions.append(conn.record)
                memberships.extend(conn.memberships.values())
        self.sweeps += 1
        if sessions and not self._refreshing:
            self._refreshing = True
            self._life.spawn(self._refresh(sessions, memberships))

    def _live(self, record: SessionRecord) -> bool:
        """Whether ``record``'s connection is still open and registered."""
        conn = self._hub.get(record.conn_id)
        return conn is not None and not conn.closed and conn.record is record

    async def _refresh(self, sessions: list[SessionRecord], memberships: list[Membership]) -> None:
        try:
            gone = await self._backend.refresh(sessions, memberships)
            # Records of connections that closed (and were released) since the sweep
            # are gone as they should be; only a live one missing means trouble.
            gone -= sum(1 for r in sessions if not self._live(r))
            if gone > 0:
                # Flushed store, or a refresh that came too late: write them again.
                log.warning("%d session records were gone; re-registering", gone)
                await self._life.reregister()
        except BackendUnavailable:
            self._metrics.backend_errors.inc()
            log.warning("could not refresh %d session records", len(sessions))
        finally:
            self._refreshing = False
