"""The Squall node: its parts, built once and handed to whoever needs them.

A node is a set of parts, each owning one job:

* :class:`~core.hub.Hub`: the local indexes (connections, users, rooms) and fan-out;
* :class:`~core.gate.Gate`: every admission decision and the code of each refusal;
* :class:`~core.lifecycle.Lifecycle`: opening, greeting, expiring, closing connections;
* :class:`~core.router.Router`: backend events into frames (and a ``pub``'s ``ok``);
* :class:`~core.subscriptions.Subscriptions`: the rooms this node is subscribed to;
* :class:`~core.writer.WriteBatcher`: one write per connection per loop iteration.

The I/O layer and :class:`~core.session.Session` take the parts they use from here
once, at construction. Nothing here holds a business rule.
"""

from __future__ import annotations

import logging

from core.admission import AdmissionGate
from core.auth import TokenVerifier
from core.backend.base import Backend
from core.catchup import RoomCatchup
from core.clock import Clock
from core.config import Settings
from core.errors import BackendUnavailable
from core.gate import Gate
from core.hooks.build import build_hooks
from core.hub import Hub
from core.lifecycle import Lifecycle
from core.metrics import Metrics
from core.router import Router
from core.stats import StatsReporter
from core.subscriptions import Subscriptions
from core.writer import WriteBatcher

__all__ = ["Node"]

log = logging.getLogger("squall.node")


class Node:
    """One Squall node. Create it, ``await start()``, hand its parts to the handlers."""

    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        verifier: TokenVerifier,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.node_id = backend.node_id
        self.verifier = verifier
        self.clock = clock
        self.metrics = metrics
        self.hub = Hub()
        self.subs = Subscriptions(
            backend, self.hub, on_unsubscribed=lambda room: self.catchup.forget(room)
        )
        #: flushes every connection's queued frames once per loop iteration
        self.writer = WriteBatcher()
        self.life = Lifecycle(settings, backend, clock, metrics, self.hub, self.subs, self.writer)
        self.router = Router(self.hub, clock, metrics, self.life.spawn, self.life.reregister)
        #: rooms delivered in order and once; gaps (an outage) caught up from history
        self.catchup = RoomCatchup(
            backend, self.hub, self.router.deliver, self.router.ack_origin, self.life.spawn
        )
        self.router.catchup = self.catchup
        #: handshakes queue here (bounded, FIFO) rather than failing at once in a storm
        limits = settings.limits
        self.queue = AdmissionGate(
            limits.handshake_concurrency, limits.handshake_queue, limits.handshake_wait_s
        )
        self.gate = Gate(
            settings, backend, verifier, metrics, self.hub, self.life, self.router.on_command
        )
        #: the application's hooks (docs/hooks.md); none configured: every call skipped
        self.hooks = build_hooks(settings, clock, metrics.count_hook)
        self.gate.hooks = self.hooks
        #: writes this node's cluster stats record (``/api/stats``) while started
        self.stats = StatsReporter(self, settings.server.stats_interval_s)

    @property
    def draining(self) -> bool:
        return self.life.draining

    def now_ms(self) -> int:
        return self.life.now_ms()

    async def start(self) -> None:
        await self.backend.start(self.router)
        self.metrics.backend_available.set(1 if self.backend.available else 0)
        self.stats.start()

    async def stop(self) -> None:
        """Deregister from the backend (after the connections were closed).

        Background work still running (cleanup of closed connections) gets a short
        grace period, then is cancelled; the backend's close then releases every
        session, membership and presence entry of this node still registered, in one
        batch, before it disconnects.
        """
        await self.life.stop()
        await self.hooks.close()
        await self.stats.stop()
        try:
            await self.backend.close()
        except BackendUnavailable:
            log.warning("backend unavailable while deregistering")
