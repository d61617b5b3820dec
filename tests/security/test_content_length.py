"""Finding 5 of issue 10: ``Content-Length`` must be ASCII digits on ``/auth/*`` and ``/api/*``.

``"²".isdigit()`` is true and ``int("²")`` raises: the old check answered 500 with a
traceback in the node log. Every non-ASCII-digit length is now 400 with the JSON
error body, and nothing is logged at ERROR.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.conftest import NodeFactory

LENGTHS = ["²", "٣", "\uff11", "-1", "+5", "1_0", "0x10", "5.0", "1e3"]
PATHS = [("POST", "/auth/login"), ("POST", "/auth/refresh"), ("POST", "/api/kick")]


async def _answer(port: int, method: str, path: str, length: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
        writer.write(head.encode("utf-8"))
        await writer.drain()
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        status = int(raw.split(b" ", 2)[1])
        body = b""
        for line in raw.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                body = await asyncio.wait_for(reader.readexactly(int(line.split(b":")[1])), 5)
        return status, body
    finally:
        writer.close()


@pytest.mark.gen_test(timeout=30)
async def test_non_ascii_digit_content_length_is_400_without_traceback(
    nodes: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    node = await nodes()
    for method, path in PATHS:
        for length in LENGTHS:
            status, body = await _answer(node.port, method, path, length)
            assert status == 400, (path, length, status, body)
            assert b"500" not in body
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]
    assert "Traceback" not in caplog.text


@pytest.mark.gen_test(timeout=30)
async def test_superscript_length_gets_the_json_error_body(nodes: NodeFactory) -> None:
    node = await nodes()
    status, body = await _answer(node.port, "POST", "/auth/login", "²")
    assert status == 400
    assert b'"bad_request"' in body and b"ASCII digits" in body


@pytest.mark.gen_test(timeout=30)
async def test_ascii_lengths_still_work(nodes: NodeFactory) -> None:
    node = await nodes()
    status, _ = await _answer(node.port, "POST", "/auth/login", "99999999")
    assert status == 413
