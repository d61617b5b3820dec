"""The core's :class:`~core.connection.Transport` over a Tornado WebSocket handler.

Three fast paths, each with its own seam:

* **Pre-built frames.** The same frame bytes object goes to every member of a room,
  instead of ``write_message`` framing the payload again (and starting a task) for
  each connection.
* **Coalescing** (:class:`WriteBatcher`). Frames queued for one connection during one
  event-loop iteration are joined and written once, at the end of the iteration: a
  burst of ten room messages costs one ``send()`` per member, not ten.
* **Direct send.** When the connection's ``IOStream`` has nothing queued, the batch is
  handed straight to ``socket.send``; only an unsent remainder goes through
  ``IOStream.write`` (which allocates a Future per call). Plain TCP streams only: TLS
  streams always go through ``IOStream.write``.

When permessage-deflate was negotiated, frames must be compressed per connection, so
that connection uses ``write_message`` and none of the above.

Ordering: frames leave in the order they were queued; a close flushes what is queued
before the close frame; nothing is written after the close frame.
"""

from __future__ import annotations

import asyncio
import contextlib

from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler, WebSocketProtocol13

from core.outbound import Outbound
from core.protocol import Encoding
from core.wsframe import PING_FRAME

__all__ = ["TornadoTransport", "WriteBatcher"]


class WriteBatcher:
    """Flushes every transport that queued frames, once per event-loop iteration."""

    __slots__ = ("_dirty", "_scheduled", "flushes", "writes")

    def __init__(self) -> None:
        self._dirty: list[TornadoTransport] = []
        self._scheduled = False
        #: flush rounds and connection writes so far (observability and tests)
        self.flushes = 0
        self.writes = 0

    def mark(self, transport: TornadoTransport) -> None:
        self._dirty.append(transport)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        self.flushes += 1
        self.writes += len(dirty)
        for transport in dirty:
            transport.flush()


class TornadoTransport:
    """Writes pre-framed bytes to one upgraded connection."""

    __slots__ = (
        "_batcher",
        "_compressed",
        "_direct",
        "_handler",
        "_pending",
        "_pending_bytes",
        "_proto",
    )

    def __init__(self, handler: WebSocketHandler, batcher: WriteBatcher) -> None:
        self._handler: WebSocketHandler | None = handler
        self._batcher = batcher
        self._proto: WebSocketProtocol13 | None = None
        self._compressed = False
        self._direct = False
        self._pending: list[bytes] | None = None
        self._pending_bytes = 0

    def attach(self) -> None:
        """Called once the upgrade completed (the stream exists from then on)."""
        assert self._handler is not None
        proto = self._handler.ws_connection
        assert isinstance(proto, WebSocketProtocol13)
        self._proto = proto
        self._compressed = proto._compressor is not None
        # exact type: SSLIOStream is a subclass and must not be bypassed
        self._direct = type(proto.stream) is IOStream

    def send(self, out: Outbound, encoding: Encoding) -> None:
        if self._compressed:
            proto = self._proto
            if proto is None or proto.is_closing():
                return
            payload = out.payload(encoding)
            assert self._handler is not None  # proto is None once detached
            with contextlib.suppress(StreamClosedError, WebSocketClosedError):
                self._handler.write_message(payload, binary=isinstance(payload, bytes))
            return
        self._queue(out.frame(encoding))

    def _queue(self, frame: bytes) -> None:
        pending = self._pending
        if pending is None:
            self._pending = [frame]
            self._pending_bytes = len(frame)
            self._batcher.mark(self)
        else:
            pending.append(frame)
            self._pending_bytes += len(frame)

    def flush(self) -> None:
        """Write what was queued, as one buffer."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        self._pending_bytes = 0
        proto = self._proto
        if proto is None or proto.is_closing():
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        stream = proto.stream
        if stream.closed():
            return
        if self._direct and not len(stream._write_buffer):
            try:
                sent = stream.socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as e:
                stream.close(exc_info=e)
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]  # type: ignore[assignment]
        with contextlib.suppress(StreamClosedError):
            stream.write(data)

    def buffered(self) -> int:
        proto = self._proto
        if proto is None:
            return self._pending_bytes
        return len(proto.stream._write_buffer) + self._pending_bytes

    def ping(self) -> None:
        if self._compressed:
            proto = self._proto
            if proto is not None and not proto.is_closing():
                with contextlib.suppress(StreamClosedError):
                    proto.stream.write(PING_FRAME)
            return
        self._queue(PING_FRAME)

    def close(self, code: int, reason: str) -> None:
        self.flush()  # queued frames (the bye among them) precede the close frame
        if self._handler is not None:
            self._handler.close(code, reason)

    def detach(self) -> None:
        """The connection is gone: drop the references to the handler and protocol.

        The core's ``Connection`` outlives the socket for its clean-up and points at
        this transport; without this, connection, transport and handler form a
        reference cycle that keeps the handler, its stream, socket and request alive
        until a full garbage collection (rare with the node's GC tuning), which shows
        as RSS and fds growing under churn. Writes after this are dropped.
        """
        self._handler = None
        self._proto = None
        self._pending = None
        self._pending_bytes = 0

    def abort(self) -> None:
        self._pending = None
        self._pending_bytes = 0
        proto = self._proto
        if proto is not None:
            proto._abort()
