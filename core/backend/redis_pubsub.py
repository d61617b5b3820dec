"""The Redis backend's pub/sub side: the node's subscriber connection(s), kept alive.

Guarantees of :class:`PubSub`:

* **One connection per node** (on Redis Cluster: one per master, with sharded
  ``SSUBSCRIBE``; each channel rides the link of the master owning its slot). It
  carries the node's mailbox, its liveness probe and exactly the room channels
  passed to :meth:`PubSub.subscribe` and not since unsubscribed.
* **Order**: Redis delivers one channel's messages in publish order and one link
  reads them in that order, so while a connection lives each channel is delivered
  gap-free and in order (at-most-once across a reconnect).
* **Confirmed subscriptions**: :meth:`PubSub.subscribe` returns only once Redis
  confirmed; :meth:`PubSub.unsubscribe` stops delivery at once, confirmed or not
  (a message already in flight for it is dropped here).
* **Self-healing**: a supervisor task reconnects with the :class:`RetryPolicy`'s
  jittered backoff (jittered even the first time, so nodes that lost Redis together
  spread out), reloads the scripts (``prepare``), resubscribes mailbox, probe and
  every wanted channel, and only then reports the node available again. Every
  ``probe_interval_s`` it publishes a token to the probe channel (on a connection of
  its own, never waiting behind commands in the shared pool) and expects it back
  on its own connection within ``probe_timeout_s``; a silent (half-open)
  connection is thus detected within ``probe_interval_s + probe_timeout_s`` and
  rebuilt. On a cluster the topology is re-read before reconnecting.
* **Availability**: :attr:`PubSub.available` is True while every link is up and the
  last probe came back; ``on_availability`` is called on each transition (logged on
  ``squall.backend.redis``), and once with True soon after :meth:`PubSub.start`.
  Nothing is called after :meth:`PubSub.close`.
* Callbacks never break a connection: an exception from ``on_mailbox`` or
  ``on_room`` is logged and that one message dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from core.backend.backoff import RetryPolicy
from core.backend.redis_edge import RawConnection
from core.clock import Clock

__all__ = ["FAILURES", "PubSub", "describe"]

log = logging.getLogger("squall.backend.redis")

#: Redis errors, socket errors and our own timeouts: all mean "Redis cannot answer".
FAILURES = (RedisError, OSError, asyncio.TimeoutError)


def describe(exc: BaseException) -> str:
    """``ExceptionType: message`` for logs and :class:`BackendUnavailable` texts."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Link:
    """One pub/sub connection and its subscriptions.

    Redis answers each (S)SUBSCRIBE/(S)UNSUBSCRIBE channel with one confirmation, in
    command order, interleaved with messages; :meth:`request` waits for exactly
    those, matched against a FIFO of waiters (sends are serialised so FIFO order is
    send order). Any mismatch, unsolicited unsubscribe (cluster slot moved) or
    read error ends the reader task, which the supervisor turns into a reconnect.
    """

    def __init__(
        self,
        conn: RawConnection,
        prober: RawConnection,
        sharded: bool,
        probe_channel: bytes,
        on_message: Callable[[bytes, bytes], None],
        timeout_s: float,
        name: str = "",
    ) -> None:
        self.conn = conn
        #: the link's own connection for probe publishes (same server as ``conn``): a
        #: node busy with a storm of handshakes holding every pooled connection must
        #: not take its probe's wait for a pool slot for a dead Redis
        self.prober = prober
        #: the cluster node name (``host:port``) this link is connected to
        self.name = name
        self.probe_channel = probe_channel
        self._on_message = on_message
        self._timeout_s = timeout_s
        s = b"s" if sharded else b""
        self._sub, self._unsub, self._message = s + b"subscribe", s + b"unsubscribe", s + b"message"
        self._publish = s.upper() + b"PUBLISH"
        #: (reply kind, channel, resolved True when confirmed / False when lost)
        self._pending: deque[tuple[bytes, bytes, asyncio.Future[bool]]] = deque()
        self._send_lock = asyncio.Lock()
        self._probe: tuple[bytes, asyncio.Future[bool]] | None = None
        self.reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.conn.connect()
        await self.prober.connect()
        self.reader = asyncio.ensure_future(self._read())

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.wait([self.reader])
            if not self.reader.cancelled():
                self.reader.exception()  # retrieved: the supervisor already reported it
        self._resolve_all()
        await self.conn.disconnect()
        await self.prober.disconnect()

    @property
    def alive(self) -> bool:
        return self.reader is not None and not self.reader.done()

    async def request(self, subscribe: bool, channels: Sequence[bytes]) -> None:
        """(Un)subscribe ``channels``; returns once Redis confirmed every one of them."""
        if not channels:
            return
        kind = self._sub if subscribe else self._unsub
        loop = asyncio.get_running_loop()
        waiters: list[asyncio.Future[bool]] = []
        async with self._send_lock:
            if not self.alive:
                raise ConnectionError("pub/sub connection is down")
            for channel in channels:
                waiters.append(loop.create_future())
                self._pending.append((kind, channel, waiters[-1]))
            # One command per channel: sharded channels of different slots may not share one.
            await self.conn.send([(kind.upper(), ch) for ch in channels])
        done, _ = await asyncio.wait(waiters, timeout=self._timeout_s)
        if len(done) < len(waiters):
            raise TimeoutError(f"no {kind.decode()} confirmation within {self._timeout_s} s")
        if not all(w.result() for w in waiters):
            raise ConnectionError("pub/sub connection lost before confirmation")

    async def probe(self, token: bytes) -> None:
        """Publish ``token`` on the probe channel (own connection) and wait until it
        comes back here."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._probe = (token, waiter)
        try:
            await self.prober.command(self._publish, self.probe_channel, token)
            if not await waiter:
                raise ConnectionError("pub/sub connection lost during the probe")
        finally:
            self._probe = None

    async def _read(self) -> None:
        try:
            while True:
                reply = await self.conn.read()
                kind = reply[0]
                if kind == self._message:
                    if reply[1] == self.probe_channel:
                        self._probe_arrived(reply[2])
                    else:
                        self._on_message(reply[1], reply[2])
                elif kind in (self._sub, self._unsub):
                    self._confirm(kind, reply[1])
                else:
                    raise ConnectionError(f"unexpected pub/sub reply {kind!r}")
        finally:
            self._resolve_all()

    def _confirm(self, kind: bytes, channel: bytes) -> None:
        if not self._pending:
            raise ConnectionError(f"unsolicited {kind.decode()} of {channel!r}")
        want_kind, want_channel, waiter = self._pending.popleft()
        if (want_kind, want_channel) != (kind, channel):
            raise ConnectionError("pub/sub confirmations out of order")
        if not waiter.done():
            waiter.set_result(True)

    def _probe_arrived(self, token: bytes) -> None:
        if self._probe is not None and self._probe[0] == token and not self._probe[1].done():
            self._probe[1].set_result(True)

    def _resolve_all(self) -> None:
        # Waiters learn "lost" through a False result, never an unretrieved exception.
        while self._pending:
            waiter = self._pending.popleft()[2]
            if not waiter.done():
                waiter.set_result(False)
        if self._probe is not None and not self._probe[1].done():
            self._probe[1].set_result(False)


class PubSub:
    """The node's subscriber side; see the module docstring.

    ``client`` is the backend's command client: its connection settings (TLS,
    timeouts, protocol) are reused for the subscriber connections, named
    ``client_name``; on a cluster it also names the masters and the slot owners.
    ``mailbox`` is the node's command channel and ``probe_base`` the name its probe
    channels are derived from. ``prepare`` runs before every (re)subscription (the
    backend loads its scripts there).
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        node_id: str,
        client_name: str,
        mailbox: bytes,
        probe_base: str,
        on_mailbox: Callable[[bytes], None],
        on_room: Callable[[str, bytes], None],
        on_availability: Callable[[bool], None],
        prepare: Callable[[], Awaitable[None]],
        clock: Clock,
        retry: RetryPolicy,
        probe_interval_s: float,
        probe_timeout_s: float,
        timeout_s: float,
    ) -> None:
        self._client = client
        self._node_id = node_id
        self._client_name = client_name
        self._mailbox = mailbox
        self._probe_base = probe_base
        self._on_mailbox = on_mailbox
        self._on_room = on_room
        self._on_availability = on_availability
        self._prepare = prepare
        self._clock = clock
        self._retry = retry
        self._probe_interval_s = probe_interval_s
        self._probe_timeout_s = probe_timeout_s
        self._timeout_s = timeout_s
        self._available = False
        self._closed = False
        self._supervisor: asyncio.Task[None] | None = None
        self._links: list[_Link] = []
        self._connected_once = False
        #: room channel -> room, for every room subscribed and not unsubscribed since
        self._wanted: dict[bytes, str] = {}
        self._unique = itertools.count()

    @property
    def available(self) -> bool:
        """True while the connection(s) are up and the last probe came back."""
        return self._available

    async def start(self) -> None:
        """Connect, subscribe mailbox and probe, pass one probe, then supervise.

        Raises one of :data:`FAILURES` (keeping nothing open) when Redis cannot be
        reached; ``on_availability(True)`` follows soon after a successful start.
        """
        await self._connect()
        self._available = True
        asyncio.get_running_loop().call_soon(self._announce_start)
        self._supervisor = asyncio.ensure_future(self._supervise())

    async def close(self) -> None:
        """Stop the supervisor and disconnect; no callback is called afterwards."""
        self._closed = True
        self._available = False
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.wait([self._supervisor])
        await self._drop_links()
        self._wanted.clear()

    async def subscribe(self, channel: bytes, room: str) -> None:
        """Deliver ``channel``'s messages to ``on_room(room, ...)``, once Redis confirmed.

        Raises one of :data:`FAILURES` while the connection is down; a channel not
        subscribed before is then not wanted (subscribe again once available), and
        one subscribed before stays subscribed.
        """
        already = channel in self._wanted
        self._wanted[channel] = room
        try:
            if not self._links:
                raise ConnectionError("pub/sub connection is down")
            # Sent even when already wanted: a first call may still await its confirmation.
            await self._route(channel, self._links).request(True, [channel])
        except FAILURES:
            if not already:  # an earlier successful subscribe stays in force
                self._wanted.pop(channel, None)
            raise

    async def unsubscribe(self, channel: bytes) -> None:
        """Stop delivering ``channel`` at once; never raises.

        If Redis cannot confirm, the stale server-side subscription is only filtered
        out until the next reconnect.
        """
        room = self._wanted.pop(channel, None)
        if room is None or not self._links:
            return
        try:
            await self._route(channel, self._links).request(False, [channel])
        except FAILURES as exc:
            log.debug("unsubscribe %r not confirmed: %s", room, describe(exc))

    # -- supervisor: connect, watch, reconnect ----------------------------------

    def _announce_start(self) -> None:
        if not self._closed and self._available:
            self._notify(True)

    async def _supervise(self) -> None:
        failures = 0
        while True:
            if not self._links:
                try:
                    await self._connect()
                except Exception as exc:
                    failures += 1
                    self._mark(False, f"reconnect failed: {describe(exc)}", exc)
                    delay = self._retry.delay(failures) or 0.0
                    log.debug(
                        "node %s: reconnect %d failed, next in %.2f s",
                        self._node_id,
                        failures,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                self._mark(True, "reconnected, every channel resubscribed")
            try:
                await self._watch()
            except Exception as exc:
                self._mark(False, describe(exc), exc)
            await self._drop_links()
            # Jittered even the first time: nodes that lost Redis together spread out.
            await asyncio.sleep(self._retry.delay(1) or 0.0)

    def _mark(self, available: bool, reason: str, exc: Exception | None = None) -> None:
        if exc is not None and not isinstance(exc, FAILURES):
            # Not a Redis or network failure: a bug. Loud, then heal like any failure.
            log.error("pub/sub supervisor error for node %s", self._node_id, exc_info=exc)
        if available == self._available:
            return
        self._available = available
        if available:
            log.info("redis available again for node %s: %s", self._node_id, reason)
        else:
            log.warning("redis unavailable for node %s: %s", self._node_id, reason)
        self._notify(available)

    def _notify(self, available: bool) -> None:
        if self._closed:
            return
        try:
            self._on_availability(available)
        except Exception:
            log.exception("listener.on_availability(%s) failed", available)

    async def _connect(self) -> None:
        """Prepare, open the link(s), subscribe mailbox + probe + wanted rooms, pass one
        probe round. Only then is the node (again) available."""
        await self._prepare()
        links = await self._open_links()
        try:
            plan: dict[int, list[bytes]] = {id(link): [link.probe_channel] for link in links}
            for channel in [self._mailbox, *self._wanted]:
                plan[id(self._route(channel, links))].append(channel)
            for link in links:
                await link.request(True, plan[id(link)])
            await self._probe_all(links)
        except BaseException:
            for link in links:
                await link.close()
            raise
        self._links = links
        self._connected_once = True

    async def _open_links(self) -> list[_Link]:
        links: list[_Link] = []
        try:
            if isinstance(self._client, RedisCluster):
                await self._client.initialize()
                if self._connected_once:
                    # A link died: slots may have moved (failover, resharding).
                    await self._client.nodes_manager.initialize()
                for i, node in enumerate(self._client.get_primaries()):
                    probe = self._cluster_probe_channel(node.name, i)
                    conn = RawConnection.like(node, self._client_name)
                    own = RawConnection.like(node, self._client_name + ":probe")
                    links.append(self._make_link(conn, own, probe, node.name))
                    await links[-1].open()
            else:
                sub = RawConnection.like(self._client, self._client_name)
                own = RawConnection.like(self._client, self._client_name + ":probe")
                links.append(self._make_link(sub, own, self._probe_base.encode()))
                await links[-1].open()
        except BaseException:
            for link in links:
                await link.close()
            raise
        return links

    def _make_link(
        self, conn: RawConnection, prober: RawConnection, probe_channel: bytes, name: str = ""
    ) -> _Link:
        sharded = isinstance(self._client, RedisCluster)
        return _Link(conn, prober, sharded, probe_channel, self._dispatch, self._timeout_s, name)

    def _cluster_probe_channel(self, node_name: str, index: int) -> bytes:
        """A probe channel whose slot the master ``node_name`` owns (one per master)."""
        for n in range(1 << 20):
            channel = f"{self._probe_base}:{index}:{n}"
            if self._owner(channel) == node_name:
                return channel.encode()
        raise ConnectionError(f"no probe channel found for {node_name}")

    def _owner(self, channel: str) -> str:
        """Name of the master serving ``channel``'s slot (cluster only)."""
        assert isinstance(self._client, RedisCluster)
        node = self._client.get_node_from_key(channel)
        if node is None:
            raise ConnectionError(f"no master serves the slot of {channel!r}")
        return node.name

    def _route(self, channel: bytes, links: list[_Link]) -> _Link:
        """The link that carries ``channel``: the only one, or its slot's master's."""
        if not isinstance(self._client, RedisCluster):
            return links[0]
        owner = self._owner(channel.decode())
        for link in links:
            if link.name == owner:
                return link
        raise ConnectionError(f"slot of {channel!r} moved to {owner}: topology changed")

    async def _watch(self) -> None:
        """Return (raising) as soon as a reader dies or a probe fails."""
        prober = asyncio.ensure_future(self._probe_forever())
        tasks: list[asyncio.Task[None]] = [prober]
        tasks += [link.reader for link in self._links if link.reader is not None]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise ConnectionError("pub/sub reader stopped")
        finally:
            prober.cancel()
            await asyncio.wait([prober])

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval_s)
            await self._probe_all(self._links)

    async def _probe_all(self, links: list[_Link]) -> None:
        """One probe round on every link; ConnectionError when one does not come back.

        The timeout counts event-loop time in short slices, each worth its nominal
        length however late it fires: a node whose loop is overloaded (its reader
        runs late, the reply waits in the socket) is not mistaken for a half-open
        connection, while on a healthy loop the bound is ``probe_timeout_s``.
        """
        token = f"{self._clock.wall():.6f}:{next(self._unique)}".encode()
        round_ = asyncio.ensure_future(asyncio.gather(*(link.probe(token) for link in links)))
        waited, step = 0.0, min(0.1, self._probe_timeout_s)
        try:
            while not round_.done():
                if waited >= self._probe_timeout_s:
                    raise ConnectionError(
                        f"liveness probe not back within {self._probe_timeout_s} s (half-open?)"
                    )
                await asyncio.wait({round_}, timeout=step)
                waited += step
            round_.result()
        finally:
            if not round_.done():
                round_.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await round_

    async def _drop_links(self) -> None:
        links, self._links = self._links, []
        for link in links:
            await link.close()

    def _dispatch(self, channel: bytes, payload: bytes) -> None:
        """Hand a message to its callback; a bad message or callback bug is logged."""
        try:
            if channel == self._mailbox:
                self._on_mailbox(payload)
                return
            room = self._wanted.get(channel)
            if room is not None:  # else unsubscribed while in flight
                self._on_room(room, payload)
        except Exception:
            log.exception("dropped a message on %r", channel)
