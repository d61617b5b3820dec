"""Every private name of Tornado that Squall relies on, in one place.

Squall uses Tornado's public API everywhere else. These two needs have no public API:

* **Refusing unmasked client frames.** RFC 6455 section 5.1: "The server MUST close
  the connection upon receiving a frame that is not masked". Tornado accepts them.
  :class:`StrictProtocol13` checks the mask bit of each frame header as it is read,
  which needs the protocol's private ``_receive_frame`` / ``_read_bytes`` steps.
* **Building that protocol.** A handler that returns its own protocol object from
  the public hook ``get_websocket_protocol`` must pass Tornado's private
  ``_WebSocketParams``; :func:`make_protocol` does it, with no per-connection ping
  timer (the node's single sweeper pings every connection).

:data:`PRIVATE_NAMES` lists each private name used, and ``tests/unit/test_private_names.py``
checks that each still exists with the expected kind, so a Tornado upgrade that renames
one fails loudly with the name, instead of misbehaving.
"""

from __future__ import annotations

from typing import Any

from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketHandler, WebSocketProtocol13, _WebSocketParams

__all__ = ["PRIVATE_NAMES", "PROTOCOL_ERROR", "StrictProtocol13", "make_protocol"]

PROTOCOL_ERROR = 1002

#: (object, private attribute, what it must be) for every private Tornado name used here
PRIVATE_NAMES: tuple[tuple[str, str, str], ...] = (
    ("tornado.websocket", "_WebSocketParams", "class"),
    ("tornado.websocket.WebSocketProtocol13", "_receive_frame", "coroutine function"),
    ("tornado.websocket.WebSocketProtocol13", "_read_bytes", "coroutine function"),
)


class StrictProtocol13(WebSocketProtocol13):
    """Refuses unmasked client frames with 1002 (protocol error)."""

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


def make_protocol(
    handler: WebSocketHandler,
    max_message_size: int,
    compression_options: dict[str, Any] | None,
) -> StrictProtocol13:
    """The server protocol of ``handler``: strict masking, no per-connection pings."""
    params = _WebSocketParams(
        ping_interval=None,
        ping_timeout=None,
        max_message_size=max_message_size,
        compression_options=compression_options,
    )
    return StrictProtocol13(handler, False, params)
