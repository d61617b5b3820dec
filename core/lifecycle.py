"""Connection life cycle on one node: created, opened and greeted, expired, closed.

Guarantees:

* A connection is in the session registry from its admission until :meth:`closed`
  (or until its record expires when the node dies); an admission whose upgrade never
  completed is undone by :meth:`release`.
* ``welcome`` is the first frame of an authenticated connection, followed by its
  offline inbox; a token that expires without a ``refresh`` closes it with 4002.
* After a backend outage, :meth:`reregister` writes every live session and membership
  again (a restarted or flushed Redis lost them).
* Background work is tracked (:meth:`spawn`) so a stop can wait for it, and a
  failure in it is logged, never lost.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

from core.backend.base import Backend, Membership
from core.clock import Clock
from core.codes import CloseCode
from core.config import Settings
from core.connection import Connection, Transport
from core.errors import BackendUnavailable
from core.hub import Hub
from core.inbox_delivery import start_inbox
from core.metrics import Metrics
from core.namespaces import rules_for
from core.protocol import Encoding, welcome
from core.subscriptions import Subscriptions
from core.writer import WriteBatcher

__all__ = ["Lifecycle"]

log = logging.getLogger("squall.node")


class Lifecycle:
    """Opens, greets, expires and closes the connections of one node."""

    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        clock: Clock,
        metrics: Metrics,
        hub: Hub,
        subs: Subscriptions,
        writer: WriteBatcher,
    ) -> None:
        self._settings = settings
        self._backend = backend
        self._clock = clock
        self._metrics = metrics
        self._hub = hub
        self._subs = subs
        self._writer = writer
        self._node_id = backend.node_id
        #: True once the node started draining: no new connection is admitted
        self.draining = False
        #: True once the drain window is over: closes then release nothing one by one,
        #: the backend's close releases everything of this node in one batch
        self.stopping = False
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._count_close = self._closed_with
        #: called after ``welcome`` with the greeted connection (the session joins its
        #: server-side rooms)
        self.on_greeted: Callable[[Connection], None] | None = None

    def now_ms(self) -> int:
        return int(self._clock.wall() * 1000)

    # -- background work -----------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def stop(self) -> None:
        """Cancel expiry timers; give background work (closing cleanups) a grace period,
        then cancel and await what is left: nothing may run against a closed backend
        (or be destroyed pending when the loop ends)."""
        self.stopping = True
        for handle in self._expiry.values():
            handle.cancel()
        self._expiry.clear()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        late = list(self._tasks)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    # -- creation and opening ------------------------------------------------------

    def new_connection(self, ip: str, encoding: Encoding, transport: Transport) -> Connection:
        conn = Connection(
            conn_id=secrets.token_urlsafe(12),
            ip=ip,
            encoding=encoding,
            transport=transport,
            outbound_limit=self._settings.limits.outbound_buffer_bytes,
            now=self._clock.monotonic(),
            connected_at=self.now_ms(),
            writer=self._writer,
        )
        conn.on_closed = self._count_close  # one shared callable, not one per connection
        return conn

    def _closed_with(self, code: int) -> None:
        self._metrics.closes.labels(str(code)).inc()

    def opened(self, conn: Connection, on_auth_timeout: Callable[[], None]) -> None:
        """The upgrade completed: greet an authenticated connection or wait for ``auth``."""
        hub = self._hub
        hub.admitting.pop(conn.conn_id, None)
        hub.add(conn)
        self._empty.clear()
        self._metrics.connections.set(len(hub))
        if conn.kicked is not None:  # evicted between admission and upgrade
            conn.close(*conn.kicked)
            return
        if conn.uid is None:
            handle = asyncio.get_running_loop().call_later(
                self._settings.auth.timeout_s, on_auth_timeout
            )
            self._expiry[conn.conn_id] = handle
            return
        self.greet(conn)

    def greet(self, conn: Connection) -> None:
        """Send ``welcome``, arm the token-expiry timer, redeliver the offline inbox."""
        assert conn.uid is not None and conn.claims is not None
        self._hub.admitting.pop(conn.conn_id, None)  # visible from here on (first-frame auth)
        self._hub.bind_user(conn)
        self._metrics.users.set(self._hub.user_count())
        self.rearm_expiry(conn)
        frame = welcome(
            conn.conn_id,
            conn.uid,
            self._node_id,
            self._settings.heartbeat.interval_s,
            conn.claims.exp * 1000,
            conn.encoding,
        )
        if conn.auto_rooms:
            frame["rooms"] = list(conn.auto_rooms)  # joined next, each answered `joined`
        conn.send_frame(frame)
        self._metrics.frames_out.labels("welcome").inc()
        pending, conn.inbox = conn.inbox, None
        if pending:
            start_inbox(conn, pending, self._metrics)  # in pages paced by acks
        if self.on_greeted is not None:
            self.on_greeted(conn)

    def rearm_expiry(self, conn: Connection) -> None:
        assert conn.claims is not None
        old = self._expiry.pop(conn.conn_id, None)
        if old is not None:
            old.cancel()
        delay = conn.claims.exp + self._settings.auth.leeway_s - self._clock.wall()
        self._expiry[conn.conn_id] = asyncio.get_running_loop().call_later(
            max(delay, 0.0), self._expire, conn
        )

    def _expire(self, conn: Connection) -> None:
        self._expiry.pop(conn.conn_id, None)
        conn.close(CloseCode.TOKEN_EXPIRED, "token expired")

    # -- closing -------------------------------------------------------------------

    async def release(self, conn: Connection) -> None:
        """Undo an admission: free the session's slot in the registry."""
        self._hub.admitting.pop(conn.conn_id, None)
        if conn.record is not None:
            try:
                await self._backend.release(conn.record)
            except BackendUnavailable:
                self._metrics.backend_errors.inc()
            conn.record = None

    async def closed(self, conn: Connection) -> None:
        """The connection is gone: leave its rooms, release its session."""
        handle = self._expiry.pop(conn.conn_id, None)
        if handle is not None:
            handle.cancel()
        conn.closed = True
        hub = self._hub
        rooms = hub.remove(conn)
        if not len(hub):
            self._empty.set()
        self._metrics.connections.set(len(hub))
        self._metrics.users.set(hub.user_count())
        self._metrics.rooms.set(hub.room_count())
        if conn.uid is None or self.stopping:
            return  # stopping: released with every other entry of this node, in one batch
        rules = rules_for(self._settings.rooms)
        try:
            for room in rooms:
                await self._backend.presence_leave(
                    Membership(room, conn.uid, conn.conn_id), rules.of(room).presence_events
                )
            await self.release(conn)
        except BackendUnavailable:
            self._metrics.backend_errors.inc()
        for room in rooms:
            await self._subs.sync(room)

    async def wait_empty(self) -> None:
        """Return once the node holds no connection."""
        await self._empty.wait()

    def close_all(self, code: CloseCode, reason: str) -> None:
        for conn in self._hub:
            conn.close(code, reason)

    # -- after an outage -----------------------------------------------------------

    async def reregister(self) -> None:
        """Write this node's sessions and memberships again after an outage.

        A restarted or flushed Redis lost them, and the heartbeat refresh only
        extends records that exist. Re-admitting an existing record is harmless
        (admission of a known conn id replaces it). Memberships are re-added without
        presence events: nobody left or joined.
        """
        conns = [c for c in self._hub if c.record is not None and not c.closed]
        limit = self._settings.limits.max_connections_per_user
        for start in range(0, len(conns), 100):
            chunk = conns[start : start + 100]
            results = await asyncio.gather(
                *(self._reregister_one(c, limit) for c in chunk), return_exceptions=True
            )
            if any(isinstance(r, BackendUnavailable) for r in results):
                self._metrics.backend_errors.inc()
                return  # down again: the next recovery starts over
        log.info("re-registered %d sessions after a backend outage", len(conns))

    async def _reregister_one(self, conn: Connection, limit: int) -> None:
        assert conn.record is not None
        await self._backend.admit(conn.record, limit, "reject")
        for room in list(conn.rooms):
            await self._backend.presence_join(
                Membership(room, conn.record.uid, conn.conn_id), announce=False
            )
