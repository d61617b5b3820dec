"""wss:// with TLS 1.2+ only, and mutual TLS with ``server.tls.client_ca_file``."""

from __future__ import annotations

import asyncio
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from server import build_ssl_context
from tests.certs import Pki, client_context, make_pki
from tests.conftest import NodeFactory
from tests.harness import RunningNode, token
from tests.security import http

# The test deliberately speaks TLS 1.1; Python warns that the name is deprecated.
TLS_1_1 = getattr(ssl.TLSVersion, "TLSv1_1")


@pytest.fixture
def pki(tmp_path: Path) -> Iterator[Pki]:
    yield make_pki(tmp_path)


async def _tls_node(nodes: NodeFactory, pki: Pki, mtls: bool = False) -> RunningNode:
    overrides: dict[str, object] = {
        "server.tls.cert_file": str(pki.server_cert),
        "server.tls.key_file": str(pki.server_key),
    }
    if mtls:
        overrides["server.tls.client_ca_file"] = str(pki.ca_cert)
    return await nodes(overrides)


async def _wss(node: RunningNode, ctx: ssl.SSLContext) -> WebSocketClientConnection:
    """A wss:// connection with a token; returns it after reading ``welcome``."""
    req = HTTPRequest(
        f"wss://127.0.0.1:{node.port}/ws",
        headers={"Authorization": f"Bearer {token('alice')}"},
        ssl_options=ctx,
        request_timeout=5,
    )
    ws = await websocket_connect(req, subprotocols=["squall.v1.msgpack"])
    frame = await asyncio.wait_for(ws.read_message(), 5)
    assert frame is not None and msgpack.unpackb(frame)["t"] == "welcome"
    return ws


async def _negotiated(port: int, ctx: ssl.SSLContext) -> str:
    """The TLS version a bare handshake with ``ctx`` negotiates (raises when refused)."""
    _reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"), 5
    )
    version = writer.get_extra_info("ssl_object").version()
    writer.close()
    return str(version)


@pytest.mark.gen_test(timeout=30)
async def test_wss_serves_tls_1_2_and_1_3_and_refuses_1_1(nodes: NodeFactory, pki: Pki) -> None:
    node = await _tls_node(nodes, pki)
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        ctx = client_context(pki, version=version)
        assert await _negotiated(node.port, ctx) == name
        ws = await _wss(node, ctx)
        ws.close()
    r = await http(node, "GET", "/healthz", ssl_context=client_context(pki))
    assert r.status == 200  # https too

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = client_context(pki, version=TLS_1_1)
    # Control: this client really offers TLS 1.1 (a permissive server accepts it) ...
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive.minimum_version = TLS_1_1
    permissive.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    control = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=permissive)
    try:
        control_port = control.sockets[0].getsockname()[1]
        assert await _negotiated(control_port, old) == "TLSv1.1"
    finally:
        control.close()
    # ... so the node's refusal is its own configuration at work.
    with pytest.raises(ssl.SSLError):
        await _negotiated(node.port, old)
    ctx = build_ssl_context(node.settings)
    assert ctx is not None and ctx.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.gen_test(timeout=30)
async def test_mtls_requires_a_client_certificate_from_the_ca(nodes: NodeFactory, pki: Pki) -> None:
    node = await _tls_node(nodes, pki, mtls=True)
    good = client_context(pki, cert=(pki.client_cert, pki.client_key))
    ws = await _wss(node, good)
    ws.close()
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        for cert in (None, (pki.rogue_client_cert, pki.rogue_client_key)):
            ctx = client_context(pki, version=version, cert=cert)
            with pytest.raises((ssl.SSLError, OSError, asyncio.IncompleteReadError)):
                # TLS 1.3 reports the refusal on the first read, after the handshake.
                ws = await _wss(node, ctx)
                ws.close()


@pytest.mark.gen_test(timeout=30)
async def test_plain_http_to_a_tls_port_gets_nothing(nodes: NodeFactory, pki: Pki) -> None:
    node = await _tls_node(nodes, pki)
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        data = await asyncio.wait_for(reader.read(1024), 5)
    except ConnectionResetError:
        data = b""
    writer.close()
    assert b"200 OK" not in data and b"healthz" not in data
