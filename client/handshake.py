"""One connection attempt of the client: the WebSocket upgrade, then frames up to ``welcome``.

Guarantees of :func:`open_connection`:

* It returns an open connection whose subprotocol is the one asked for (or none, which
  means msgpack), with its ``welcome`` frame; or it raises and leaves nothing open.
* An HTTP refusal of the upgrade raises :class:`~client.errors.AuthRefused`; a
  timeout or network failure raises what Tornado raised (``HTTPClientError`` 599,
  ``OSError``, ``TimeoutError``); a close before ``welcome`` raises
  :class:`~client.errors.Closed` for a code after which the client must not
  reconnect, :class:`Dropped` otherwise; another subprotocol raises
  :class:`~client.errors.SquallError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Literal

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from client.errors import Closed, SquallError, refusal_from_response
from client.frames import NO_RECONNECT, SUBPROTOCOLS, Frame, decode_frame

__all__ = ["Bye", "Dropped", "close_info", "open_connection", "read_frame"]

#: ``code`` and ``reason`` of the server's last ``bye`` frame on a connection.
Bye = tuple[int | None, str]


class Dropped(Exception):
    """A connection ended with a reconnectable code (internal to the client)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


async def read_frame(ws: WebSocketClientConnection) -> Frame | None:
    """Next decodable map from ``ws``, or ``None`` once it is closed."""
    while True:
        message = await ws.read_message()
        if message is None:
            return None
        frame = decode_frame(message)
        if frame is not None:
            return frame


def close_info(ws: WebSocketClientConnection, bye: Bye | None) -> Bye:
    """Close code and reason of ``ws``; those of ``bye`` when the socket has none."""
    code, reason = ws.close_code, ws.close_reason or ""
    if code is None and bye is not None:
        code, reason = bye
    return code, reason


async def open_connection(
    url: str,
    token: str,
    *,
    headers: Mapping[str, str],
    encoding: Literal["msgpack", "json"],
    connect_timeout: float,
    ping_interval: float | None,
) -> tuple[WebSocketClientConnection, Frame, Bye | None]:
    """Connect with ``token`` as bearer; return the connection, its ``welcome`` and the
    ``bye`` received before it (``None`` without one)."""
    request = HTTPRequest(
        url,
        headers={**headers, "Authorization": f"Bearer {token}"},
        connect_timeout=connect_timeout,
        request_timeout=connect_timeout,
    )
    protocol = SUBPROTOCOLS[encoding]
    try:
        ws = await websocket_connect(request, subprotocols=[protocol], ping_interval=ping_interval)
    except HTTPClientError as e:
        if e.response is None or e.code == 599:
            raise  # timeout or network failure
        raise refusal_from_response(
            e.code, e.response.body, e.response.headers.get("Retry-After")
        ) from None
    chosen = ws.selected_subprotocol
    if chosen != protocol and not (chosen is None and encoding == "msgpack"):
        ws.close(1002, "subprotocol")
        raise SquallError(f"server chose subprotocol {chosen!r}, not {protocol!r}")
    bye: Bye | None = None
    try:
        while True:
            frame = await asyncio.wait_for(read_frame(ws), connect_timeout)
            if frame is None:
                code, reason = close_info(ws, bye)
                if code in NO_RECONNECT:
                    raise Closed(code, reason)
                raise Dropped(code, reason)
            if frame.get("t") == "welcome":
                return ws, frame, bye
            if frame.get("t") == "bye":
                bye = (frame.get("code"), str(frame.get("reason", "")))
    except BaseException:
        ws.close()
        raise
