"""The core's :class:`~core.connection.Transport` over a Tornado WebSocket handler.

The core owns each connection's queue of outgoing frames and decides when a reader is
too slow; this module only writes bytes and reports how many the kernel has not taken.
It uses public Tornado API only (``IOStream.write``/``writing``/``closed``/``socket``,
``WebSocketHandler.close``/``ping``/``write_message``).

* **Pre-built frames** (:class:`TornadoTransport`). The same frame bytes object goes to
  every member of a room, instead of ``write_message`` framing the payload again (and
  starting a task) for each connection; a batch of frames is joined into one buffer.
* **Direct send.** When the connection's ``IOStream`` holds nothing unsent, the batch
  is handed straight to ``socket.send``; only an unsent remainder goes through
  ``IOStream.write``. Plain TCP streams only: TLS streams always use ``IOStream.write``.
* **Refused bytes.** Every ``IOStream.write`` returns a future that resolves once its
  bytes were taken by the kernel, in order; the bytes of writes whose future is not
  done yet are exactly the ones offered and refused so far.

When permessage-deflate is configured, frames must be compressed per connection, so
those connections use :class:`MessageTransport` (``write_message``) and none of the above.

Ordering: frames leave in the order they were queued; a close writes its close frame
after everything written before it; nothing is written after the close frame.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from core.outbound import PING, Outbound
from core.protocol import Encoding

if TYPE_CHECKING:
    from asyncio import Future

__all__ = ["MessageTransport", "TornadoTransport"]


class _Edge:
    """What both transports share: the handler, its stream once upgraded, closing."""

    __slots__ = ("_handler", "_stream")

    def __init__(self, handler: WebSocketHandler) -> None:
        self._handler: WebSocketHandler | None = handler
        self._stream: IOStream | None = None

    def attach(self) -> None:
        """Called once the upgrade completed (the stream exists from then on)."""
        assert self._handler is not None
        proto = self._handler.ws_connection
        assert proto is not None
        self._stream = proto.stream

    def _open_stream(self) -> IOStream | None:
        """The stream, or None once the stream or the WebSocket is closing."""
        stream = self._stream
        if stream is None or self._handler is None:
            return None
        proto = self._handler.ws_connection
        if proto is None or proto.is_closing() or stream.closed():
            return None
        return stream

    def close(self, code: int, reason: str) -> None:
        if self._handler is not None:
            self._handler.close(code, reason)

    def detach(self) -> None:
        """The connection is gone: drop the references to the handler and its stream.

        The core's ``Connection`` outlives the socket for its clean-up and points at
        this transport; without this, connection, transport and handler form a
        reference cycle that keeps the handler, its stream, socket and request alive
        until a full garbage collection (rare with the node's GC tuning): RSS grew by
        ~1.5 KB per connect cycle under churn (tests/chaos/test_churn.py). Writes
        after this are dropped.
        """
        self._handler = None
        self._stream = None

    def abort(self) -> None:
        stream = self._stream
        if stream is not None:
            stream.close()  # Tornado's close callback then runs on_close


class TornadoTransport(_Edge):
    """Writes pre-framed bytes to one upgraded connection."""

    __slots__ = ("_direct", "_inflight", "_inflight_bytes")

    def __init__(self, handler: WebSocketHandler) -> None:
        super().__init__(handler)
        self._direct = False
        # (future of an IOStream.write, its size), oldest first; only while refused
        self._inflight: deque[tuple[Future[None], int]] | None = None
        self._inflight_bytes = 0

    def attach(self) -> None:
        super().attach()
        # exact type: SSLIOStream is a subclass and must not be bypassed
        self._direct = type(self._stream) is IOStream

    def write(self, batch: Sequence[Outbound], encoding: Encoding) -> int:
        stream = self._open_stream()
        if stream is None:
            return 0
        data: bytes | memoryview = (
            batch[0].frame(encoding)
            if len(batch) == 1
            else b"".join([out.frame(encoding) for out in batch])
        )
        if not stream.writing():
            self._inflight = None  # everything offered before was taken
            self._inflight_bytes = 0
            if self._direct:
                try:
                    sent = stream.socket.send(data)
                except BlockingIOError:
                    sent = 0
                except OSError as e:
                    stream.close(exc_info=e)
                    return 0
                if sent == len(data):
                    return 0
                data = memoryview(data)[sent:]
        try:
            future = stream.write(data)
        except StreamClosedError:
            return 0
        return self._refused(future, len(data))

    def _refused(self, future: Future[None], size: int) -> int:
        inflight = self._inflight
        if inflight is None:
            if future.done():
                return 0
            inflight = self._inflight = deque()
        inflight.append((future, size))
        self._inflight_bytes += size
        while inflight and inflight[0][0].done():
            self._inflight_bytes -= inflight.popleft()[1]
        return self._inflight_bytes


class MessageTransport(_Edge):
    """Writes each frame with ``write_message`` (per-connection compression).

    Refused bytes are counted as the payload sizes written since the stream was last
    seen with nothing unsent: an upper bound of what the kernel has not taken.
    """

    __slots__ = ("_refused_bytes",)

    def __init__(self, handler: WebSocketHandler) -> None:
        super().__init__(handler)
        self._refused_bytes = 0

    def write(self, batch: Sequence[Outbound], encoding: Encoding) -> int:
        stream = self._open_stream()
        handler = self._handler
        if stream is None or handler is None:
            return 0
        size = 0
        for out in batch:
            if out is PING:
                with contextlib.suppress(WebSocketClosedError):
                    handler.ping(b"")
                continue
            payload = out.payload(encoding)
            size += len(payload)
            try:
                future = handler.write_message(payload, binary=isinstance(payload, bytes))
            except WebSocketClosedError:
                return 0
            future.add_done_callback(_retrieve)
        if stream.writing():
            self._refused_bytes += size
        else:
            self._refused_bytes = 0
        return self._refused_bytes


def _retrieve(future: Future[None]) -> None:
    """Mark a write's failure (the connection closed meanwhile) as seen."""
    if not future.cancelled():
        future.exception()
