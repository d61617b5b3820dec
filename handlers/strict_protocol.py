"""Tornado's RFC 6455 server protocol, made strict about client masking.

RFC 6455 section 5.1: "The server MUST close the connection upon receiving a frame
that is not masked", and section 5.3: every client-to-server frame is masked.
Tornado accepts unmasked client frames; this subclass checks the mask bit of each
frame header as it is read and fails the connection with 1002 (protocol error).
"""

from __future__ import annotations

from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketProtocol13

__all__ = ["StrictProtocol13"]

PROTOCOL_ERROR = 1002


class StrictProtocol13(WebSocketProtocol13):
    """Refuses unmasked client frames."""

    _at_header = False

    async def _receive_frame(self) -> None:
        # The first read of every frame is its 2-byte header.
        self._at_header = True
        await super()._receive_frame()

    async def _read_bytes(self, n: int) -> bytes:
        data = await super()._read_bytes(n)
        if self._at_header:
            self._at_header = False
            if n == 2 and not data[1] & 0x80:
                self.close(PROTOCOL_ERROR, "unmasked client frame")
                # Let the close frame reach the peer before the stream is aborted.
                await self.stream.write(b"")
                raise StreamClosedError()
        return data
