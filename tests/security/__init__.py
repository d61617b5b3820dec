"""Black-box security tests, and the HTTP helpers they share with the integration tests.

:func:`http` speaks to a running node's HTTP endpoints and returns status, JSON body
and headers without raising on 4xx/5xx; :func:`signed_headers_for` signs a server-API
request the way a backend would (``core.signing`` is the reference); :func:`users_file`
writes an ``auth.users_file``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from core.passwords import hash_password
from core.signing import signed_headers
from tests.harness import BASE, RunningNode

__all__ = ["API_SECRET", "Response", "http", "raw_status", "signed_headers_for", "users_file"]

API_SECRET = str(BASE["api.secret"])


@dataclass
class Response:
    status: int
    body: Any
    headers: Mapping[str, str]
    raw: bytes


async def http(
    node: RunningNode,
    method: str,
    path: str,
    *,
    json_body: Any = None,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> Response:
    """One request to ``node``; never raises for an HTTP error status."""
    if json_body is not None:
        body = json.dumps(json_body).encode()
    if body is None and method in ("POST", "PUT"):
        body = b""
    scheme = "https" if node.settings.server.tls.cert_file else "http"
    req = HTTPRequest(
        f"{scheme}://127.0.0.1:{node.port}{path}",
        method=method,
        body=body,
        headers=dict(headers or {}),
        request_timeout=timeout,
        ssl_options=ssl_context,
    )
    resp = await AsyncHTTPClient().fetch(req, raise_error=False)
    if resp.code == 599:
        raise resp.error or AssertionError("request failed")
    raw = resp.body or b""
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    return Response(resp.code, parsed, dict(resp.headers), raw)


def signed_headers_for(
    method: str,
    path: str,
    body: bytes = b"",
    *,
    secret: str = API_SECRET,
    now_ms: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """X-Squall-Timestamp / -Nonce / -Signature for a request signed now."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return signed_headers(secret, method, path, body, now_ms=ms, nonce=nonce)


def users_file(directory: Path, users: Mapping[str, str]) -> str:
    """Write ``{username: hash(password)}`` to ``directory/users.yaml``; returns its path."""
    path = directory / "users.yaml"
    lines = [f'{json.dumps(name)}: "{hash_password(pw)}"' for name, pw in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


async def raw_status(port: int, method: str, path: str, headers: Mapping[str, str]) -> int:
    """Send only a request head (no body) on a raw socket; returns the answer's status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return int(head.split(b" ", 2)[1])
    finally:
        writer.close()
