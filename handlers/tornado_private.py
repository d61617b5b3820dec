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
* **A light reader for live connections** (:class:`FrameReader`). Tornado reads each
  connection with a chain of ~10 suspended coroutines (the request's ``_execute``
  task down to ``_read_bytes``) and two reads per frame. Without permessage-deflate,
  :meth:`StrictProtocol13._receive_frame_loop` instead hands the stream to a
  callback reader that scans whole chunks for frames, so the coroutine chain and the
  handshake's task end right after ``open`` (memory per connection, and one read per
  chunk instead of per frame). It replays Tornado's ``_receive_frame`` checks and
  hands every complete message to Tornado's own ``_handle_message``.
* **Shedding the handshake** (:func:`shed_handshake`): once upgraded, a connection
  needs none of the HTTP request's headers, arguments or connection objects, nor the
  handler's response headers and template namespace.
* **Draining the listen queue** (:func:`accept_in_batches_of`). Tornado's accept
  handler takes at most ``tornado.netutil._DEFAULT_BACKLOG`` (128) connections per
  wake-up, to share them between processes on one socket. Squall's workers each have
  their own ``SO_REUSEPORT`` socket, so nothing is shared, and in a reconnect storm
  the node, busy with the handshakes it took, drained its queue 128 at a time while
  thousands arrived at once: the queue overflowed and the kernel dropped connections,
  which the clients retried 1 s, 3 s, 7 s later. Taken as many as ``server.backlog``
  per wake-up, they wait in the node's FIFO admission queue instead.

:data:`PRIVATE_NAMES` lists each private name used, and ``tests/unit/test_private_names.py``
checks that each still exists with the expected kind, so a Tornado upgrade that renames
one fails loudly with the name, instead of misbehaving.
"""

from __future__ import annotations

import logging
from asyncio import Future
from typing import Any, cast

import tornado.netutil
from tornado.httputil import HTTPFile, HTTPHeaders
from tornado.iostream import IOStream, StreamClosedError
from tornado.util import _websocket_mask
from tornado.websocket import WebSocketHandler, WebSocketProtocol13, _WebSocketParams

__all__ = [
    "PRIVATE_NAMES",
    "PROTOCOL_ERROR",
    "FrameReader",
    "StrictProtocol13",
    "accept_in_batches_of",
    "make_protocol",
    "shed_handshake",
]

log = logging.getLogger("squall.ws")

PROTOCOL_ERROR = 1002
MESSAGE_TOO_BIG = 1009
#: most bytes taken from the stream per read (one loop callback scans them all)
READ_CHUNK = 65536

#: (object, private attribute, what it must be) for every private Tornado name used here
PRIVATE_NAMES: tuple[tuple[str, str, str], ...] = (
    ("tornado.websocket", "_WebSocketParams", "class"),
    ("tornado.websocket.WebSocketProtocol13", "_receive_frame", "coroutine function"),
    ("tornado.websocket.WebSocketProtocol13", "_read_bytes", "coroutine function"),
    ("tornado.websocket.WebSocketProtocol13", "_receive_frame_loop", "coroutine function"),
    ("tornado.websocket.WebSocketProtocol13", "_handle_message", "function"),
    ("tornado.websocket.WebSocketProtocol", "_abort", "function"),
    ("tornado.util", "_websocket_mask", "function"),
    ("tornado.web.RequestHandler", "_headers", "instance attribute"),
    ("tornado.netutil", "_DEFAULT_BACKLOG", "int"),
)


def accept_in_batches_of(n: int) -> None:
    """Let Tornado's accept handlers take up to ``n`` (at least 128) connections per
    wake-up (process-wide; see the module docstring). Call before ``add_sockets``."""
    tornado.netutil._DEFAULT_BACKLOG = max(128, n)


class StrictProtocol13(WebSocketProtocol13):
    """Refuses unmasked client frames with 1002 (protocol error)."""

    _at_header = False

    async def _receive_frame_loop(self) -> None:
        """Read with a :class:`FrameReader` (no compression) or Tornado's own loop.

        Returns at once in the first case: the reader, not this coroutine, keeps the
        connection read, so the handshake's coroutines and task are freed.
        """
        if self._decompressor is not None or self.stream is None:
            await super()._receive_frame_loop()
            return
        FrameReader(self, self.stream).start()

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


class FrameReader:
    """Reads client frames of one upgraded connection with callbacks, chunk by chunk.

    Guarantees, the same as Tornado's ``_receive_frame_loop`` without compression:
    messages reach ``handler.on_message`` (through Tornado's ``_handle_message``:
    UTF-8 check of text, close echo, pong to ping, ``on_ping``/``on_pong``) whole and
    in order; an unmasked frame closes with 1002 after the close frame was written; a
    message above ``max_message_size`` closes with 1009 as soon as its length is known
    (never buffered); reserved bits, fragmented or long control frames, a stray
    continuation or an interleaved data frame abort the connection; after the client's
    close frame nothing more is read; ``handler.on_ws_connection_close`` is called
    exactly once, when reading ends. A message handler returning an awaitable pauses
    reading until it completes.
    """

    __slots__ = ("_buf", "_done", "_frag", "_frag_opcode", "_max", "_proto", "_stream")

    def __init__(self, proto: WebSocketProtocol13, stream: IOStream) -> None:
        self._proto = proto
        self._stream = stream
        self._buf = b""
        self._frag: bytearray | None = None
        self._frag_opcode = 0
        self._max: int = proto.params.max_message_size
        self._done = False

    def start(self) -> None:
        self._read()

    def _read(self) -> None:
        try:
            future = cast("Future[bytes]", self._stream.read_bytes(READ_CHUNK, partial=True))
        except StreamClosedError:
            self._lost()
            return
        future.add_done_callback(self._on_data)

    def _lost(self) -> None:
        self._proto._abort()
        self._finish()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._buf = b""
            self._frag = None
            proto = self._proto
            proto.handler.on_ws_connection_close(proto.close_code, proto.close_reason)

    def _on_data(self, future: Future[bytes]) -> None:
        try:
            data = future.result()
        except StreamClosedError:
            self._lost()
            return
        except Exception:
            log.exception("websocket read failed")
            self._lost()
            return
        self._scan(self._buf + data if self._buf else data)

    def _resume(self, future: Future[Any]) -> None:
        self._scan(self._buf)

    def _scan(self, buf: bytes) -> None:
        proto = self._proto
        n = len(buf)
        pos = 0
        self._buf = b""
        while not proto.client_terminated:
            if n - pos < 2:
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if not b1 & 0x80:
                self._unmasked()
                return
            if b0 & 0x70:  # reserved bits: no extension was negotiated
                proto._abort()
                break
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            head = pos + 2
            if opcode & 0x8 and length >= 126:
                proto._abort()
                break
            if length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                head = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = pos + 10
            frag = self._frag
            if length + (len(frag) if frag is not None else 0) > self._max:
                proto.close(MESSAGE_TOO_BIG, "message too big")
                proto._abort()
                break
            end = head + 4 + length
            if end > n:
                break
            data = _websocket_mask(buf[head : head + 4], buf[head + 4 : end])
            pos = end
            fin = b0 & 0x80
            if opcode & 0x8:
                if not fin:
                    proto._abort()
                    break
            elif opcode == 0:
                if frag is None:
                    proto._abort()
                    break
                frag.extend(data)
                if not fin:
                    continue
                opcode = self._frag_opcode
                data = bytes(frag)
                self._frag = None
            elif frag is not None:
                proto._abort()
                break
            elif not fin:
                self._frag_opcode = opcode
                self._frag = bytearray(data)
                continue
            handled = proto._handle_message(opcode, data)
            if handled is not None:
                self._buf = buf[pos:]
                handled.add_done_callback(self._resume)
                return
        if proto.client_terminated:
            self._finish()
            return
        if pos < n:
            self._buf = buf[pos:]
        self._read()

    def _unmasked(self) -> None:
        """RFC 6455 5.1: close with 1002, abort once the close frame was written."""
        proto = self._proto
        proto.close(PROTOCOL_ERROR, "unmasked client frame")
        try:
            written = self._stream.write(b"")
        except StreamClosedError:
            self._lost()
            return
        written.add_done_callback(lambda _f: self._lost())


_NO_HEADERS = HTTPHeaders()
_NO_ARGUMENTS: dict[str, list[bytes]] = {}
_NO_FILES: dict[str, list[HTTPFile]] = {}


def shed_handshake(handler: WebSocketHandler) -> None:
    """Drop what an upgraded connection no longer needs, to save memory per connection.

    The request keeps its method, uri, remote_ip and protocol (log lines name them);
    its headers, arguments and files become shared empty ones and its HTTP connection
    objects are released. The handler drops its response headers and its template
    namespace. Call only after the upgrade completed (``open``).
    """
    request = handler.request
    request.headers = _NO_HEADERS
    request.arguments = request.query_arguments = request.body_arguments = _NO_ARGUMENTS
    request.files = _NO_FILES
    request.connection = None
    request.server_connection = None
    handler._headers = _NO_HEADERS
    handler.ui = None  # type: ignore[assignment]
