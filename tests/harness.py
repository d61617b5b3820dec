"""Test harness: real Squall nodes on loopback ports and a real WebSocket client.

``start_node`` builds a node exactly as server.py does (same factories), on an
ephemeral port, inside the running test's event loop. ``Client`` speaks the
msgpack or JSON subprotocol through Tornado's WebSocket client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback
from tornado.netutil import bind_sockets
from tornado.websocket import WebSocketClientConnection, websocket_connect

from core.auth import JwtSettings, TokenVerifier
from core.backend.base import Backend
from core.clock import SystemClock
from core.config import Settings, load
from core.heartbeat import Sweeper
from core.metrics import Metrics
from core.node import Node
from core.writer import WriteBatcher
from handlers.app import make_app, start_heartbeat
from server import build_backend, http_server_options
from tests.tokens import SECRET, good_claims, make_token

BASE: dict[str, object] = {
    "auth.secret": SECRET,
    "api.secret": "api-secret-" + "y" * 40,
    "server.host": "127.0.0.1",
    "log.format": "text",
}


@dataclass
class RunningNode:
    settings: Settings
    node: Node
    server: HTTPServer
    port: int
    sweeper: Sweeper
    timer: PeriodicCallback
    batcher: WriteBatcher
    stopped: bool = False

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def backend(self) -> Backend:
        return self.node.backend

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.timer.stop()
        self.server.stop()
        self.node.life.close_all(1001, "test over")  # type: ignore[arg-type]
        # as server.py's drain: let the connections' cleanup finish before deregistering
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.node.life.wait_empty(), 3)
        await self.node.stop()
        await self.server.close_all_connections()


async def start_node(
    overrides: Mapping[str, object] | None = None,
    node_id: str = "n1",
    backend: Backend | None = None,
) -> RunningNode:
    """A node on 127.0.0.1:<free port> configured with BASE + ``overrides``."""
    settings = load(None, {}, {**BASE, **(overrides or {})})
    clock = SystemClock()
    be = backend or build_backend(settings, node_id, clock)
    verifier = TokenVerifier(JwtSettings.from_auth_config(settings.auth), clock)
    node = Node(settings, be, verifier, clock, Metrics())
    await node.start()
    batcher = node.writer
    app = make_app(node)
    server = HTTPServer(app, **http_server_options(settings))
    sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    server.add_sockets(sockets)
    sweeper, timer = start_heartbeat(node)
    port = sockets[0].getsockname()[1]
    return RunningNode(settings, node, server, port, sweeper, timer, batcher)


async def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``pred()`` holds (for effects with no event to await), bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def token(sub: str = "alice", **extra: Any) -> str:
    return make_token(good_claims(sub, **extra))


class HandshakeRefused(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: Mapping[str, str]) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body
        self.headers = headers


@dataclass
class Client:
    """A WebSocket client speaking Squall frames."""

    ws: WebSocketClientConnection
    json_mode: bool = False
    next_id: int = 1
    backlog: list[dict[str, Any]] = field(default_factory=list)

    def send(self, frame: Mapping[str, Any]) -> None:
        if self.json_mode:
            self.ws.write_message(json.dumps(frame))
        else:
            self.ws.write_message(msgpack.packb(frame, use_bin_type=True), binary=True)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """Next frame, or None when the connection closed."""
        if self.backlog:
            return self.backlog.pop(0)
        msg = await asyncio.wait_for(self.ws.read_message(), timeout)
        if msg is None:
            return None
        out = json.loads(msg) if isinstance(msg, str) else msgpack.unpackb(msg, raw=False)
        assert isinstance(out, dict)
        return out

    async def expect(self, t: str, timeout: float = 5.0) -> dict[str, Any]:
        """Next frame, which must be of type ``t``."""
        frame = await self.recv(timeout)
        assert frame is not None, f"connection closed ({self.ws.close_code}) waiting for {t}"
        assert frame["t"] == t, f"expected {t}, got {frame}"
        return frame

    async def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """Skip frames until one matches ``pred`` (skipped ones are kept in order)."""
        skipped: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                frame = await self.recv(max(0.01, deadline - loop.time()))
                assert frame is not None, f"closed ({self.ws.close_code}) before match"
                if pred(frame):
                    return frame
                skipped.append(frame)
        finally:
            self.backlog[:0] = skipped

    async def request(self, frame: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send a request with a fresh id and return its ``ok``/``err``/``pong``."""
        rid = self.next_id
        self.next_id += 1
        self.send({**frame, "id": rid})
        return await self.wait_for(
            lambda f: f.get("id") == rid and f["t"] in ("ok", "err", "pong"), timeout
        )

    async def closed(self, timeout: float = 5.0) -> int | None:
        """Read until the server closes; returns the close code."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = await asyncio.wait_for(self.ws.read_message(), max(0.01, deadline - loop.time()))
            if msg is None:
                return self.ws.close_code

    def close(self) -> None:
        self.ws.close()


async def connect(
    node: RunningNode,
    tok: str | None = None,
    *,
    via: str = "header",
    json_mode: bool = False,
    headers: Mapping[str, str] | None = None,
    subprotocols: list[str] | None = None,
    welcome: bool = True,
) -> Client:
    """Open a connection; with a token, wait for ``welcome`` (unless told not to)."""
    url = node.url
    hdrs = dict(headers or {})
    if tok is not None and via == "header":
        hdrs["Authorization"] = f"Bearer {tok}"
    elif tok is not None and via == "query":
        url += f"?token={tok}"
    if subprotocols is None:
        subprotocols = ["squall.v1.json"] if json_mode else ["squall.v1.msgpack"]
    req = HTTPRequest(url, headers=hdrs, request_timeout=5)
    try:
        ws = await websocket_connect(req, subprotocols=subprotocols)
    except HTTPClientError as e:
        body: dict[str, Any] = {}
        resp = e.response
        if resp is not None and resp.body:
            body = json.loads(resp.body)
        raise HandshakeRefused(e.code, body, dict(resp.headers) if resp else {}) from None
    client = Client(ws, json_mode=json_mode)
    if tok is not None and welcome and via in ("header", "query"):
        await client.expect("welcome")
    return client


async def refused(node: RunningNode, tok: str | None, **kw: Any) -> HandshakeRefused:
    """Connect expecting an HTTP refusal; returns it."""
    try:
        client = await connect(node, tok, **kw)
    except HandshakeRefused as e:
        return e
    client.close()
    raise AssertionError("handshake was accepted")
