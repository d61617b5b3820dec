"""The router: turns what the backend pushes into this node into frames for its members.

It is the node's :class:`~core.backend.base.BackendListener` (centrifuge's
``BrokerEventHandler``) and the only sender of a ``pub``'s ``ok``.

Guarantees:

* **The publisher's ``ok`` precedes its own ``msg``.** A publication carries its origin
  (``conn:request id``); whichever reaches the router first, the ``publish`` reply
  (:meth:`Router.published`) or the publication itself, sends the ``ok``, exactly once.
* **Encode once.** A room message is encoded once per subprotocol in use, and the
  same bytes are queued to every local member; a member being answered a ``join``
  gets it buffered instead (:meth:`core.hub.Hub.fanout`).
* **Commands** (close a connection, a user's connections, a token's connections;
  deliver a private message) apply to local connections, and to connections still
  being admitted (an eviction is kept and applied when they open).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from core.admission_watch import mark_admitting
from core.backend.base import NodeCommand, NodeOp, PresenceEvent, Publication
from core.catchup import RoomCatchup
from core.clock import Clock
from core.connection import Connection
from core.hub import Hub
from core.metrics import Metrics
from core.outbound import Outbound
from core.protocol import encode, encode_dm, encode_msg, ok, presence_event

__all__ = ["Router"]

log = logging.getLogger("squall.node")


class Router:
    """Backend events of one node, into frames."""

    def __init__(
        self,
        hub: Hub,
        clock: Clock,
        metrics: Metrics,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        on_recovered: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        self._hub = hub
        self._clock = clock
        self._metrics = metrics
        self._spawn = spawn
        self._on_recovered = on_recovered
        self._backend_lost = False
        #: set by the node: room publications go through it (in order, gaps caught up)
        self.catchup: RoomCatchup | None = None

    @property
    def backend_lost(self) -> bool:
        """True from a backend outage until the backend is available again."""
        return self._backend_lost

    # -- the publisher's ok --------------------------------------------------------

    def published(self, conn: Connection, request_id: int, seq: int) -> None:
        """Answer a ``pub`` with ``ok`` unless its publication already did."""
        if request_id in conn.pending_pubs:
            del conn.pending_pubs[request_id]
            self._metrics.frames_out.labels("ok").inc()
            conn.send_frame(ok(request_id, seq=seq))

    # -- backend listener ----------------------------------------------------------

    def on_publication(self, pub: Publication) -> None:
        if self.catchup is not None:
            self.catchup.publication(pub)  # calls deliver() in order, once
        else:
            self.deliver(pub)

    def ack_origin(self, pub: Publication) -> None:
        """The ``ok`` of the ``pub`` that produced ``pub``, if on this node and not sent."""
        if pub.origin is not None:
            conn_id, _, rid = pub.origin.rpartition(":")
            origin = self._hub.get(conn_id)
            if origin is not None and rid.isdigit():
                self.published(origin, int(rid), pub.seq)

    def deliver(self, pub: Publication) -> None:
        """Fan ``pub`` out to the local members (its publisher's ``ok`` first)."""
        start = self._clock.monotonic()
        self.ack_origin(pub)
        out = Outbound(partial(encode_msg, pub))
        sent = self._hub.fanout(pub, out)
        if sent:
            self._metrics.frames_out.labels("msg").inc(sent)
        self._metrics.fanout_seconds.observe(self._clock.monotonic() - start)

    def on_presence(self, event: PresenceEvent) -> None:
        frame = presence_event(event.room, event.uid, event.event)
        out = Outbound(partial(encode, frame))
        n = 0
        for conn in self._hub.members(event.room):
            if conn.conn_id != event.origin and conn.send(out):
                n += 1
        if n:
            self._metrics.frames_out.labels("presence").inc(n)

    def on_command(self, command: NodeCommand) -> None:
        code, reason = command.code, command.reason
        hub = self._hub
        if command.op is NodeOp.CLOSE_CONN and command.conn_id is not None:
            conn = hub.get(command.conn_id)
            if conn is not None and conn.uid is not None:
                conn.close(code, reason)
            else:
                pending = conn or hub.admitting.get(command.conn_id)
                if pending is not None:
                    pending.kicked = (code, reason)
        elif command.op is NodeOp.CLOSE_USER and command.uid is not None:
            for conn in hub.of_user(command.uid):
                conn.close(code, reason)
            mark_admitting(hub, hub.admitting, command)
        elif command.op is NodeOp.CLOSE_JTI and command.jti is not None:
            for conn in hub:
                if conn.claims is not None and conn.claims.jti == command.jti:
                    conn.close(code, reason)
            mark_admitting(hub, hub.admitting, command)
        elif command.op is NodeOp.DELIVER_DM and command.dm is not None:
            out = Outbound(partial(encode_dm, command.dm, False))
            n = sum(1 for conn in hub.of_user(command.dm.to_uid) if conn.send(out))
            if n:
                self._metrics.frames_out.labels("dm").inc(n)

    def on_availability(self, available: bool) -> None:
        self._metrics.backend_available.set(1 if available else 0)
        if available:
            log.info("backend available")
            if self.catchup is not None:
                # resubscribed: what the rooms missed meanwhile comes from history
                self.catchup.resume_all()
            if self._backend_lost:
                self._backend_lost = False
                self._spawn(self._on_recovered())
        else:
            self._backend_lost = True
            log.error("backend unavailable")
