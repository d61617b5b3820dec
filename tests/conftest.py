"""Fixtures shared by every test directory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import pytest
from tornado.ioloop import IOLoop

from tests.harness import RunningNode, start_node

NodeFactory = Callable[..., Awaitable[RunningNode]]


@pytest.fixture
def nodes(io_loop: IOLoop) -> Iterator[NodeFactory]:
    """``await nodes({...overrides})`` starts a node; all are stopped after the test."""
    started: list[RunningNode] = []

    async def factory(overrides: Mapping[str, object] | None = None, **kw: Any) -> RunningNode:
        node = await start_node(overrides, **kw)
        started.append(node)
        return node

    yield factory
    for node in reversed(started):
        io_loop.run_sync(node.stop, timeout=10)
