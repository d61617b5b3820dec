"""Fixtures that run the backend contract suite against every backend kind.

A *driver* knows how to build one kind of backend and how to move time for it;
the :class:`Harness` wraps a driver for one test: it builds started backends with
a :class:`Recorder` as listener, gives every test a fresh ``key_prefix`` and closes
everything at teardown.

The kinds: ``memory``; ``redis``, on the test process's shared redis-server; and
``redis-cluster``, on the process's shared 3-master Redis Cluster (started on first
use, about 2 s, and stopped at exit). Every test gets its own ``key_prefix``, so
one server or cluster serves every test of the process.

To add a kind: write a class satisfying :class:`Driver` and register it in
:data:`DRIVERS`. ``shared = True`` when backends built by one harness share a
store (they are nodes of one cluster); the multi-node tests then run for it.
``advance`` may really sleep (real TTLs): every expiry test uses TTLs of about 1 s.

pytest-tornado runs ``@pytest.mark.gen_test`` async tests on the ``io_loop``
fixture but has no async fixtures, so the fixtures here are sync and the harness
is closed by a finalizer through ``io_loop.run_sync``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest
import redis.asyncio
from tornado.ioloop import IOLoop

from core.backend.base import (
    Backend,
    BackendOptions,
    NodeCommand,
    PresenceEvent,
    Publication,
)
from core.backend.memory import MemoryBackend
from core.backend.redis import RedisBackend
from core.clock import Clock, ManualClock, SystemClock
from tests.redis_server import shared_cluster, shared_server

#: Seconds a test waits for a delivery before failing.
DELIVERY_TIMEOUT_S = 5.0


class Recorder:
    """A :class:`~core.backend.base.BackendListener` that keeps what it receives."""

    def __init__(self) -> None:
        self.publications: list[Publication] = []
        self.presence: list[PresenceEvent] = []
        self.commands: list[NodeCommand] = []
        self.availability: list[bool] = []
        self._changed = asyncio.Event()

    def on_publication(self, pub: Publication) -> None:
        self.publications.append(pub)
        self._changed.set()

    def on_presence(self, event: PresenceEvent) -> None:
        self.presence.append(event)
        self._changed.set()

    def on_command(self, command: NodeCommand) -> None:
        self.commands.append(command)
        self._changed.set()

    def on_availability(self, available: bool) -> None:
        self.availability.append(available)
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float = DELIVERY_TIMEOUT_S
    ) -> None:
        """Return once ``predicate()`` holds; re-checked after every delivery."""

        async def watch() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(watch(), timeout)


class Driver(Protocol):
    """How to build and drive one backend kind."""

    #: backends built by one driver instance share one store (cluster nodes)
    shared: bool

    @property
    def clock(self) -> Clock:
        """The clock whose ``wall()`` the backends use (tests derive ``until`` from it)."""

    def build(self, node_id: str, options: BackendOptions) -> Backend:
        """A new, not yet started backend."""

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for the backends' expiry."""

    async def write_key(self, backend: Backend, key: str, value: str, ttl_s: float | None) -> None:
        """Write a raw key as an operator would (``key`` without the prefix)."""

    async def aclose(self) -> None:
        """Release what the driver holds (after every backend was closed)."""


class MemoryDriver:
    """In-process backends on one :class:`ManualClock`; each backend is its own store."""

    shared = False

    def __init__(self) -> None:
        self.clock = ManualClock()

    def build(self, node_id: str, options: BackendOptions) -> Backend:
        return MemoryBackend(node_id, options, self.clock)

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    async def write_key(self, backend: Backend, key: str, value: str, ttl_s: float | None) -> None:
        assert isinstance(backend, MemoryBackend)
        await backend.set_key(key, value, ttl_s)

    async def aclose(self) -> None:
        return None


class RedisDriver:
    """Nodes of one cluster on the test process's shared redis-server; real time."""

    shared = True

    def __init__(self) -> None:
        self.clock = SystemClock()
        self.url = self.server_url()
        self._raw: redis.asyncio.Redis | redis.asyncio.RedisCluster | None = None

    @staticmethod
    def server_url() -> str:
        """The URL the backends connect to (starts the shared server on first use)."""
        return shared_server().url

    def raw_client(self) -> redis.asyncio.Redis | redis.asyncio.RedisCluster:
        """A plain client for writes an operator would make."""
        return redis.asyncio.Redis.from_url(self.url)

    def build(self, node_id: str, options: BackendOptions) -> Backend:
        return RedisBackend(node_id, options, self.clock, self.url)

    async def advance(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def write_key(self, backend: Backend, key: str, value: str, ttl_s: float | None) -> None:
        if self._raw is None:
            self._raw = self.raw_client()
        px = None if ttl_s is None else int(ttl_s * 1000)
        await self._raw.set(backend.options.key_prefix + key, value, px=px)

    async def aclose(self) -> None:
        if self._raw is not None:
            await self._raw.aclose()


class RedisClusterDriver(RedisDriver):
    """Nodes of one cluster on the test process's shared 3-master Redis Cluster."""

    @staticmethod
    def server_url() -> str:
        return shared_cluster().url

    def raw_client(self) -> redis.asyncio.RedisCluster:
        return redis.asyncio.RedisCluster.from_url(self.url.replace("redis+cluster:", "redis:", 1))


#: backend kind -> driver class (instantiated once per test; ``shared`` read off the class)
DRIVERS: dict[str, type[Driver]] = {
    "memory": MemoryDriver,
    "redis": RedisDriver,
    "redis-cluster": RedisClusterDriver,
}


class Harness:
    """One test's backends of one kind; see the module docstring."""

    def __init__(self, kind: str, driver: Driver) -> None:
        self.kind = kind
        self.driver = driver
        self.key_prefix = f"squall-test:{uuid.uuid4().hex}:"
        self._nodes: dict[int, tuple[Backend, Recorder]] = {}

    @property
    def shared(self) -> bool:
        """True when backends of this harness are nodes of one cluster."""
        return self.driver.shared

    async def make_backend(self, node_id: str = "n1", **option_overrides: Any) -> Backend:
        """A started backend whose listener is a fresh :class:`Recorder`."""
        options = BackendOptions(**{"key_prefix": self.key_prefix, **option_overrides})
        backend = self.driver.build(node_id, options)
        recorder = Recorder()
        await backend.start(recorder)
        self._nodes[id(backend)] = (backend, recorder)
        return backend

    def recorder(self, backend: Backend) -> Recorder:
        return self._nodes[id(backend)][1]

    async def close(self, backend: Backend) -> None:
        """Close one backend now (teardown will not close it again)."""
        self._nodes.pop(id(backend))
        await backend.close()

    async def advance(self, seconds: float) -> None:
        await self.driver.advance(seconds)

    def now_ms(self) -> int:
        return int(self.driver.clock.wall() * 1000)

    async def write_key(self, backend: Backend, key: str, value: str, ttl_s: float | None) -> None:
        await self.driver.write_key(backend, key, value, ttl_s)

    async def aclose(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        for backend, _ in reversed(nodes):
            await backend.close()
        await self.driver.aclose()


def _harness(request: pytest.FixtureRequest, io_loop: IOLoop) -> Iterator[Harness]:
    kind: str = request.param
    harness = Harness(kind, DRIVERS[kind]())
    yield harness
    io_loop.run_sync(harness.aclose)


@pytest.fixture(params=sorted(DRIVERS))
def harness(request: pytest.FixtureRequest, io_loop: IOLoop) -> Iterator[Harness]:
    """A :class:`Harness` for every backend kind."""
    yield from _harness(request, io_loop)


@pytest.fixture(
    params=[
        pytest.param(
            kind,
            marks=()
            if DRIVERS[kind].shared
            else pytest.mark.skip(reason=f"{kind} backends cannot share a store: no second node"),
        )
        for kind in sorted(DRIVERS)
    ]
)
def cluster(request: pytest.FixtureRequest, io_loop: IOLoop) -> Iterator[Harness]:
    """A :class:`Harness` for every kind whose backends can be nodes of one cluster."""
    yield from _harness(request, io_loop)


@pytest.fixture
def memory_harness(io_loop: IOLoop) -> Iterator[Harness]:
    """A memory :class:`Harness`, for guarantees specific to :class:`MemoryBackend`."""
    harness = Harness("memory", MemoryDriver())
    yield harness
    io_loop.run_sync(harness.aclose)
