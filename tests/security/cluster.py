"""Two Squall nodes on one real Redis, and truly parallel raw HTTP requests.

:func:`two_nodes` starts nodes ``a`` and ``b`` sharing the test process's
redis-server under a fresh key prefix. :func:`parallel_posts` opens every socket
first and then writes every request before reading any answer, so the requests
reach the nodes at once (Tornado's HTTP client would queue them ten at a time).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from tests.conftest import NodeFactory
from tests.harness import RunningNode
from tests.redis_server import shared_server

__all__ = ["parallel_posts", "redis_overrides", "two_nodes"]


def redis_overrides() -> dict[str, object]:
    return {
        "backend.url": shared_server().url,
        "backend.key_prefix": f"squall-sec:{uuid.uuid4().hex}:",
    }


async def two_nodes(
    nodes: NodeFactory, overrides: Mapping[str, object]
) -> tuple[RunningNode, RunningNode]:
    shared = {**redis_overrides(), **overrides}
    return await nodes(shared, node_id="a"), await nodes(shared, node_id="b")


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        return int(head.split(b" ", 2)[1])
    finally:
        writer.close()


async def parallel_posts(
    requests: Sequence[tuple[RunningNode, str, Any, Mapping[str, str]]],
) -> list[int]:
    """POST each ``(node, path, json body, headers)`` at once; returns the statuses in order."""
    streams = await asyncio.gather(*(_open(node.port) for node, _, _, _ in requests))
    for (node, path, body, headers), (_, writer) in zip(requests, streams, strict=True):
        raw = json.dumps(body).encode()
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: 127.0.0.1:{node.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(raw)}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + raw)
    await asyncio.gather(*(writer.drain() for _, writer in streams))
    return list(await asyncio.gather(*(_answer(r, w) for r, w in streams)))
