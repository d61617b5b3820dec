"""A small HTTP/1.1 client for hook requests: POST, keep-alive, bounded connections.

Why not Tornado's ``AsyncHTTPClient``: ``core/`` imports nothing from Tornado, and its
default client (``simple_httpclient``) opens a new connection for every request; hook
calls sit on the path of every ``pub``, so the connection set-up would double their
cost. This client keeps idle connections per origin and reuses them.

Guarantees:

* at most ``max_connections`` connections per origin exist at once (busy + idle); a
  request waits for one (the caller bounds the wait with its timeout);
* a connection is reused only after a complete response that allowed it
  (``Content-Length`` framing, no ``Connection: close``); anything else closes it, so
  a half-read response can never be read as the answer of the next request;
* a response larger than ``max_body`` bytes, a malformed status line or header, or a
  response without ``Content-Length`` (or chunked) raises :class:`HttpError`;
* a cancelled request (timeout) closes its connection;
* a request that fails on a reused idle connection (the server closed it meanwhile)
  is sent once more, byte for byte, on a new connection; nothing else is retried here;
* :meth:`HttpPool.close` closes every idle connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["HttpError", "HttpPool", "HttpResponse"]

_MAX_HEADER_LINE = 8192
_MAX_HEADERS = 100


class HttpError(Exception):
    """The request could not be sent or the response read (connection refused, reset,
    malformed response)."""


class _Stale(HttpError):
    """The connection was closed before any byte of the response arrived."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()


class _Origin:
    """The connections to one scheme://host:port."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, limit: int) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.idle: list[_Conn] = []
        self.slots = asyncio.Semaphore(limit)


class HttpPool:
    """Keep-alive connections per origin; ``post`` sends one request on one of them."""

    def __init__(self, max_connections: int = 64, max_body: int = 1 << 20) -> None:
        self._limit = max_connections
        self._max_body = max_body
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._tls: ssl.SSLContext | None = None
        #: connections opened so far (tests and the benchmark read it)
        self.opened = 0

    def _origin(self, scheme: str, host: str, port: int) -> _Origin:
        key = (scheme, host, port)
        origin = self._origins.get(key)
        if origin is None:
            tls = None
            if scheme == "https":
                if self._tls is None:
                    self._tls = ssl.create_default_context()
                tls = self._tls
            origin = self._origins[key] = _Origin(host, port, tls, self._limit)
        return origin

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> HttpResponse:
        """POST ``body`` to ``url`` with ``headers``; the response, whatever its status."""
        parts = urlsplit(url)
        scheme = parts.scheme
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        origin = self._origin(scheme, host, port)
        netloc = host if parts.port is None else f"{host}:{port}"
        head = [f"POST {path} HTTP/1.1", f"Host: {netloc}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        async with origin.slots:
            conn = origin.idle.pop() if origin.idle else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect(origin)
            try:
                response, keep = await self._exchange(conn, request)
            except (HttpError, OSError, asyncio.IncompleteReadError) as e:
                conn.close()
                if not reused or not isinstance(e, _Stale):
                    raise _failure(e) from None
                # An idle keep-alive connection the server closed meanwhile: one new try
                # on a fresh connection. The same bytes go again, nonce included: if the
                # server had read the first copy, it refuses this one as a replay, so a
                # request is never acted upon twice.
                conn = await self._connect(origin)
                try:
                    response, keep = await self._exchange(conn, request)
                except (HttpError, OSError, asyncio.IncompleteReadError) as e2:
                    conn.close()
                    raise _failure(e2) from None
                except BaseException:
                    conn.close()
                    raise
            except BaseException:
                conn.close()  # cancelled mid-exchange: the connection is in an unknown state
                raise
            if keep:
                origin.idle.append(conn)
            else:
                conn.close()
            return response

    async def _connect(self, origin: _Origin) -> _Conn:
        try:
            reader, writer = await asyncio.open_connection(
                origin.host, origin.port, ssl=origin.tls, limit=_MAX_HEADER_LINE * 2
            )
        except OSError as e:
            raise HttpError(f"cannot connect: {e.strerror or type(e).__name__}") from None
        self.opened += 1
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, request: bytes) -> tuple[HttpResponse, bool]:
        try:
            conn.writer.write(request)
            await conn.writer.drain()
            status_line = await conn.reader.readline()
        except ConnectionError as e:
            raise _Stale(f"connection lost before the response: {type(e).__name__}") from None
        if not status_line:
            raise _Stale("connection closed before the response")
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpError("malformed status line")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            line = await conn.reader.readline()
            if line in (b"\r\n", b"\n"):
                break
            if not line.endswith(b"\n"):
                raise HttpError("truncated header")
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise HttpError("malformed header")
            headers[name.strip().lower()] = value.strip()
        else:
            raise HttpError("too many headers")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise HttpError("chunked responses are not supported; send Content-Length")
        length_text = headers.get("content-length")
        if length_text is None or not length_text.isdigit():
            raise HttpError("response without Content-Length")
        length = int(length_text)
        if length > self._max_body:
            raise HttpError("response body too large")
        body = await conn.reader.readexactly(length)
        keep = headers.get("connection", "").lower() != "close" and parts[0] != "HTTP/1.0"
        return HttpResponse(status, body, headers), keep

    async def close(self) -> None:
        for origin in self._origins.values():
            for conn in origin.idle:
                conn.close()
                with contextlib.suppress(Exception):
                    await conn.writer.wait_closed()
            origin.idle.clear()


def _failure(e: BaseException) -> HttpError:
    if isinstance(e, HttpError):
        return HttpError(f"request failed: {e}")
    return HttpError(f"request failed: {type(e).__name__}")
