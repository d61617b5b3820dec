"""Fixtures for tests against real redis-server processes.

``redis_server`` is the session's shared server (one process for the whole test
run, see :func:`tests.redis_server.shared_server`); ``own_redis`` is a private one
for tests that stop, freeze or measure it. ``redis_nodes`` builds started
:class:`~core.backend.redis.RedisBackend` nodes with a unique key prefix and closes
them at teardown. pytest-tornado has no async fixtures: these are sync and clean
up through ``io_loop.run_sync``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tornado.ioloop import IOLoop

from core.backend.base import BackendOptions, BackendUnavailable
from core.backend.redis import RedisBackend
from core.clock import SystemClock
from tests.contract.conftest import Recorder
from tests.redis_server import RedisServer, shared_server


class RedisNodes:
    """Started Redis backends of one test, all sharing one key prefix (one cluster)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.key_prefix = f"squall-it:{uuid.uuid4().hex}:"
        self._nodes: list[RedisBackend] = []

    async def start(
        self,
        node_id: str,
        *,
        url: str | None = None,
        cls: type[RedisBackend] = RedisBackend,
        options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> tuple[RedisBackend, Recorder]:
        """A started backend (``cls`` may be a test subclass) and its recorder."""
        opts = BackendOptions(**{"key_prefix": self.key_prefix, **(options or {})})
        backend = cls(node_id, opts, SystemClock(), url or self.url, **kwargs)
        recorder = Recorder()
        await backend.start(recorder)
        self._nodes.append(backend)
        return backend, recorder

    async def aclose(self) -> None:
        for backend in reversed(self._nodes):
            with contextlib.suppress(BackendUnavailable):
                await backend.close()
        self._nodes.clear()


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    """The session's shared redis-server."""
    return shared_server()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone (it may be stopped, frozen, restarted)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_nodes(io_loop: IOLoop, redis_server: RedisServer) -> Iterator[RedisNodes]:
    """Backends on the shared server; closed after the test."""
    nodes = RedisNodes(redis_server.url)
    yield nodes
    io_loop.run_sync(nodes.aclose, timeout=30)
