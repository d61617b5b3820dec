"""The core's :class:`~core.connection.Transport` over a Tornado WebSocket handler.

Frames are written as pre-built bytes straight to the connection's ``IOStream``:
the same bytes object goes to every member of a room, instead of
``write_message`` framing the payload again for each connection. When
permessage-deflate was negotiated the frame must be compressed per connection, so
that connection falls back to ``write_message``.
"""

from __future__ import annotations

import contextlib

from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler, WebSocketProtocol13

from core.outbound import Outbound
from core.protocol import Encoding
from core.wsframe import PING_FRAME

__all__ = ["TornadoTransport"]


class TornadoTransport:
    """Writes pre-framed bytes to one upgraded connection."""

    __slots__ = ("_compressed", "_handler", "_proto")

    def __init__(self, handler: WebSocketHandler) -> None:
        self._handler = handler
        self._proto: WebSocketProtocol13 | None = None
        self._compressed = False

    def attach(self) -> None:
        """Called once the upgrade completed (the stream exists from then on)."""
        proto = self._handler.ws_connection
        assert isinstance(proto, WebSocketProtocol13)
        self._proto = proto
        self._compressed = proto._compressor is not None

    def send(self, out: Outbound, encoding: Encoding) -> None:
        proto = self._proto
        if proto is None or proto.is_closing():
            return
        try:
            if self._compressed:
                payload = out.payload(encoding)
                self._handler.write_message(payload, binary=isinstance(payload, bytes))
            else:
                proto.stream.write(out.frame(encoding))
        except (StreamClosedError, WebSocketClosedError):
            pass

    def buffered(self) -> int:
        proto = self._proto
        if proto is None:
            return 0
        return len(proto.stream._write_buffer)

    def ping(self) -> None:
        proto = self._proto
        if proto is None or proto.is_closing():
            return
        with contextlib.suppress(StreamClosedError):
            proto.stream.write(PING_FRAME)

    def close(self, code: int, reason: str) -> None:
        self._handler.close(code, reason)

    def abort(self) -> None:
        proto = self._proto
        if proto is not None:
            proto._abort()
