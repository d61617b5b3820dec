"""``GET /ws``: the WebSocket endpoint, a thin adapter over :mod:`core.node`.

Handshake order (first refusal wins, each an HTTP answer with PROTOCOL.md's JSON
body): draining / full / backend down (503), Origin (403), IP lockout (429),
token (401), revoked (401), banned (403), per-user cap with ``reject`` (429). With a
valid token, lockout, revocation and ban are read in one backend round trip.
Without a token the upgrade proceeds and the first frame must be ``auth``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import tornado.web
import tornado.websocket
from tornado.websocket import WebSocketProtocol, _WebSocketParams

from core.connection import Connection
from core.netaddr import TrustedProxies, client_ip
from core.node import UNAVAILABLE, Node, Reject
from core.protocol import CloseCode, Encoding, select_encoding
from core.session import Session
from handlers.base import SafeRequestMixin, write_json_error
from handlers.strict_protocol import StrictProtocol13
from handlers.transport import TornadoTransport, WriteBatcher

__all__ = ["MAX_QUEUED_MESSAGES", "AuthMixin", "SquallSocket"]

log = logging.getLogger("squall.ws")

#: inbound messages a connection may have waiting before it is closed with 4008
MAX_QUEUED_MESSAGES = 1024


class AuthMixin(tornado.web.RequestHandler):
    """Finds the access token of a request and the client's address."""

    trusted: TrustedProxies

    def bearer_token(self) -> str | None:
        """Token from ``Authorization: Bearer`` first, then ``?token=``."""
        header = self.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        token = self.get_query_argument("token", None)
        return token or None

    def client_address(self) -> str:
        peer = self.request.remote_ip or "unknown"
        return client_ip(peer, self.request.headers.get("X-Forwarded-For"), self.trusted)


class SquallSocket(SafeRequestMixin, AuthMixin, tornado.websocket.WebSocketHandler):
    """One client connection."""

    def initialize(
        self, node: Node, session: Session, trusted: TrustedProxies, batcher: WriteBatcher
    ) -> None:
        self.node = node
        self.session = session
        self.trusted = trusted
        self.conn: Connection | None = None
        self.transport = TornadoTransport(self, batcher)
        self._started = node.clock.monotonic()
        self._encoding = Encoding.MSGPACK
        self._opened = False
        self._counted = False
        # Inbound messages waiting for the connection's consumer task (see on_message).
        self._inbox: deque[str | bytes] | None = None  # created on first use
        self._consumer: asyncio.Task[None] | None = None

    # -- handshake -------------------------------------------------------------

    def _refuse(self, reject: Reject) -> None:
        self.node.metrics.handshakes.labels(str(reject.status)).inc()
        write_json_error(self, reject.status, reject.error, reject.message, reject.retry_after)

    async def prepare(self) -> None:
        node = self.node
        reject = node.capacity_check()
        if reject is not None and reject is not UNAVAILABLE:
            return self._refuse(reject)
        # A storm queues here (bounded wait, FIFO), also for a backend coming back.
        if not await node.gate.enter():
            return self._refuse(
                Reject(503, CloseCode.INTERNAL, "busy", "try again", node.gate.retry_after())
            )
        try:
            await self._admit()
        finally:
            node.gate.leave()

    async def _admit(self) -> None:
        node = self.node
        reject = node.capacity_check()
        if reject is not None:
            return self._refuse(reject)
        node.pending_handshakes += 1
        self._counted = True
        ip = self.client_address()
        reject = node.origin_check(
            self.request.headers.get("Origin"), self.request.headers.get("Host")
        )
        if reject is not None:
            return self._refuse(reject)
        token = self.bearer_token()
        if token is None:
            # first-frame authentication; a locked-out ip is refused right away
            reject = await node.lockout_check(ip)
            if reject is not None:
                return self._refuse(reject)
            self.conn = node.new_connection(ip, self._encoding, self.transport)
            return
        result = await node.authenticate(token, ip)  # lockout checked there
        if isinstance(result, Reject):
            return self._refuse(result)
        self.conn = node.new_connection(ip, self._encoding, self.transport)
        reject = await node.admit(self.conn, result)
        if reject is not None:
            return self._refuse(reject)

    async def get(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().get(*args, **kwargs)
        finally:
            self._uncount()
            if not self._opened and self.conn is not None:
                await self.node.release(self.conn)

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.node.pending_handshakes -= 1

    def on_finish(self) -> None:
        self._uncount()

    def check_origin(self, origin: str) -> bool:
        return True  # checked in prepare(), to answer with the JSON error body

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        chosen = select_encoding(subprotocols)
        self._encoding = chosen or Encoding.MSGPACK
        if self.conn is not None:
            self.conn.encoding = self._encoding
        return chosen.value if chosen is not None else None

    def get_compression_options(self) -> dict[str, Any] | None:
        return {} if self.node.settings.server.websocket_compression else None

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        if self.request.headers.get("Sec-WebSocket-Version") != "13":
            return None
        params = _WebSocketParams(
            ping_interval=None,  # the node's single sweeper pings; no per-connection timer
            ping_timeout=None,
            max_message_size=self.max_message_size,
            compression_options=self.get_compression_options(),
        )
        return StrictProtocol13(self, False, params)

    @property
    def max_message_size(self) -> int:
        return self.node.settings.limits.max_frame_bytes

    # -- connection ------------------------------------------------------------

    def open(self, *args: str, **kwargs: str) -> None:
        conn = self.conn
        assert conn is not None
        self._opened = True
        self._uncount()
        self.transport.attach()
        self.set_nodelay(True)
        conn.encoding = self._encoding
        self.node.opened(conn, self._auth_timeout)
        if conn.uid is not None:
            self.node.metrics.handshakes.labels("101").inc()
            self.node.metrics.handshake_seconds.observe(self.node.clock.monotonic() - self._started)

    def _auth_timeout(self) -> None:
        conn = self.conn
        if conn is not None and conn.uid is None:
            conn.close(CloseCode.AUTH_TIMEOUT, "authentication timeout")

    def on_message(self, message: str | bytes) -> None:
        """Queue ``message`` for this connection's consumer task, in order.

        Synchronous on purpose: Tornado then goes on reading the frames already in its
        buffer in the same loop iteration (an async ``on_message`` costs one Task and
        at least one iteration per message). A burst of frames from one read is thus
        handled back to back, and the fan-out it causes leaves in one coalesced write
        per member. The consumer exists only while messages wait (idle connections
        hold no task); one consumer per connection keeps messages strictly ordered.
        """
        conn = self.conn
        if conn is None or conn.closed:
            return
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(message)
        if len(inbox) > MAX_QUEUED_MESSAGES:
            # Reading outpaces handling by far: a flood the rate limit cannot absorb.
            inbox.clear()
            conn.close(CloseCode.RATE_LIMIT, "too many frames queued")
            return
        if self._consumer is None:
            self._consumer = asyncio.ensure_future(self._consume(conn))

    async def _consume(self, conn: Connection) -> None:
        inbox = self._inbox
        assert inbox is not None
        try:
            while inbox:
                await self.session.handle(conn, inbox.popleft())
        except Exception:
            log.exception("frame handling failed")
            inbox.clear()
            conn.close(CloseCode.INTERNAL, "internal error")
        finally:
            self._consumer = None

    def on_pong(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.last_seen = self.node.clock.monotonic()

    def on_ping(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.last_seen = self.node.clock.monotonic()

    def on_close(self) -> None:
        self._inbox = None
        if self._consumer is not None:
            # nobody reads the answers any more; cleanup below releases the session
            self._consumer.cancel()
        conn = self.conn
        self.transport.detach()  # no cycle through the core's Connection (see detach)
        if conn is not None and self._opened:
            self.node.spawn(self.node.closed(conn))
