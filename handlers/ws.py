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
from tornado.websocket import WebSocketProtocol

from core.connection import Connection
from core.errors import Refusal
from core.netaddr import TrustedProxies, client_ip
from core.node import Node
from core.protocol import CloseCode, Encoding, select_encoding
from core.session import Session
from core.subprotocols import SUPPORTED, refusal_of_offer
from handlers.base import SafeRequestMixin, write_json_error
from handlers.tornado_private import make_protocol, shed_handshake
from handlers.transport import MessageTransport, TornadoTransport

__all__ = ["MAX_QUEUED_MESSAGES", "AuthMixin", "SquallSocket"]

log = logging.getLogger("squall.ws")

#: inbound messages a connection may have waiting; more are answered 429 (then 4008)
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

    def initialize(self, node: Node, session: Session, trusted: TrustedProxies) -> None:
        self.gate = node.gate
        self.queue = node.queue
        self.life = node.life
        self.conf = node.settings
        self.clock = node.clock
        self.metrics = node.metrics
        self.session = session
        self.trusted = trusted
        self.conn: Connection | None = None
        # permessage-deflate compresses per connection: such nodes write messages one
        # by one; all others write pre-built frames.
        self.transport: TornadoTransport | MessageTransport = (
            MessageTransport(self)
            if self.conf.server.websocket_compression
            else TornadoTransport(self)
        )
        self._started = self.clock.monotonic()
        self._encoding = Encoding.MSGPACK
        self._opened = False
        #: on_close ran before open: the client went away during the handshake
        self._gone = False
        self._counted = False
        # Inbound messages waiting for the connection's consumer task (see on_message).
        self._inbox: deque[str | bytes] | None = None  # created on first use
        self._consumer: asyncio.Task[None] | None = None

    # -- handshake -------------------------------------------------------------

    def _refuse(self, reject: Refusal) -> None:
        self.metrics.handshakes.labels(str(reject.status)).inc()
        write_json_error(self, reject.status, reject.error, reject.message, reject.retry_after)

    async def prepare(self) -> None:
        gate = self.gate
        unsupported = refusal_of_offer(self.request.headers.get("Sec-WebSocket-Protocol"))
        if unsupported is not None:
            self.metrics.handshakes.labels("400").inc()
            extra = {"supported": list(SUPPORTED)}
            return write_json_error(self, 400, "bad_subprotocol", unsupported, extra=extra)
        reject = gate.capacity_check()
        if reject is not None:
            return self._refuse(reject)
        # A storm queues here (bounded wait, FIFO) instead of overrunning the backend.
        if not await self.queue.enter():
            retry = self.queue.retry_after()
            return self._refuse(Refusal(503, "busy", "node busy: retry after Retry-After", retry))
        try:
            await self._admit()
        finally:
            self.queue.leave()

    async def _admit(self) -> None:
        gate = self.gate
        reject = gate.capacity_check()
        if reject is not None:
            return self._refuse(reject)
        gate.pending_handshakes += 1
        self._counted = True
        ip = self.client_address()
        reject = gate.origin_check(
            self.request.headers.get("Origin"), self.request.headers.get("Host")
        )
        if reject is not None:
            return self._refuse(reject)
        token = self.bearer_token()
        if token is None:
            # first-frame authentication; a locked-out ip is refused right away
            reject = await gate.lockout_check(ip)
            if reject is not None:
                return self._refuse(reject)
            self.conn = self.life.new_connection(ip, self._encoding, self.transport)
            return
        result = await gate.authenticate(token, ip)  # lockout checked there
        if isinstance(result, Refusal):
            return self._refuse(result)
        self.conn = self.life.new_connection(ip, self._encoding, self.transport)
        reject = await gate.admit(self.conn, result)
        if reject is not None:
            return self._refuse(reject)

    async def get(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().get(*args, **kwargs)
        finally:
            self._uncount()
            if not self._opened and self.conn is not None:
                await self.life.release(self.conn)

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.gate.pending_handshakes -= 1

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
        return {} if self.conf.server.websocket_compression else None

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        if self.request.headers.get("Sec-WebSocket-Version") != "13":
            return None
        return make_protocol(self, self.max_message_size, self.get_compression_options())

    @property
    def max_message_size(self) -> int:
        return self.conf.limits.max_frame_bytes

    # -- connection ------------------------------------------------------------

    def open(self, *args: str, **kwargs: str) -> None:
        conn = self.conn
        assert conn is not None
        if self._gone:
            # Reset during the handshake: Tornado already ran on_close and still calls
            # open. Never register it (nothing would remove it); get() releases it.
            return
        self._opened = True
        self._uncount()
        self.transport.attach()
        self.set_nodelay(True)
        shed_handshake(self)
        conn.encoding = self._encoding
        self.life.opened(conn, self._auth_timeout)
        if conn.uid is not None:
            self.metrics.handshakes.labels("101").inc()
            self.metrics.handshake_seconds.observe(self.clock.monotonic() - self._started)

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
        if len(inbox) >= MAX_QUEUED_MESSAGES:
            # Reading outpaces handling (a request waits on the backend): answer 429,
            # which closes with 4008 only after the rate limit's strikes.
            self.session.overloaded(conn, message)
            return
        inbox.append(message)
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
            if self._inbox is inbox:
                self._inbox = None  # an idle connection holds no queue

    def on_pong(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.last_seen = self.clock.monotonic()

    def on_ping(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.last_seen = self.clock.monotonic()

    def on_close(self) -> None:
        self._gone = True
        self._inbox = None
        if self._consumer is not None:
            # nobody reads the answers any more; cleanup below releases the session
            self._consumer.cancel()
        conn = self.conn
        self.transport.detach()  # no cycle through the core's Connection (see detach)
        if conn is not None and self._opened:
            self.life.spawn(self.life.closed(conn))
