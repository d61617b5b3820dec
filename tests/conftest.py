"""Fixtures shared by every test directory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import pytest
from tornado.ioloop import IOLoop

from tests.harness import RunningNode, start_node
from tests.log_hygiene import LogHygiene
from tests.procs import ServerProcess

NodeFactory = Callable[..., Awaitable[RunningNode]]

_CAPTURE_FIXTURES = ("capsys", "capfd", "capsysbinary", "capfdbinary")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "log_allows(pattern, ...): regexes of log problems this test provokes on purpose",
    )


@pytest.fixture(autouse=True)
def log_hygiene(request: pytest.FixtureRequest) -> Iterator[LogHygiene]:
    """Fail the test when a node logged a traceback, ``Exception ignored`` or
    ``never awaited`` (see :mod:`tests.log_hygiene`).

    Autouse and set up first, so it is torn down last: what nodes log while they stop
    counts. Subprocess nodes report through :meth:`LogHygiene.check_text`.
    """
    allowed = [p for m in request.node.iter_markers("log_allows") for p in m.args]
    hygiene = LogHygiene(allowed)
    capture = None
    if not any(name in request.fixturenames for name in _CAPTURE_FIXTURES):
        capture = request.getfixturevalue("capfd")
    hygiene.start()
    try:
        yield hygiene
    finally:
        hygiene.stop()
        if capture is not None:
            out, err = capture.readouterr()
            hygiene.check_text("stderr", err)
            hygiene.check_text("stdout", out)
    bad = hygiene.verdict()
    if bad:
        pytest.fail("node log not clean:\n" + "\n---\n".join(bad), pytrace=False)


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


@pytest.fixture
def server_procs(log_hygiene: LogHygiene) -> Iterator[Callable[..., ServerProcess]]:
    """``server_procs([args], {env}, name=...)`` starts ``server.py``; after the test
    every one still running is killed (with its workers) and its log checked."""
    started: list[ServerProcess] = []

    def start(
        args: list[str] | None = None, env: Mapping[str, str] | None = None, name: str = "server"
    ) -> ServerProcess:
        proc = ServerProcess(args or [], env, name)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        log_hygiene.check_text(proc.name, proc.log)
