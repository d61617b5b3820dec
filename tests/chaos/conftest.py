"""Fixtures of the chaos suite: real nodes, a real Redis, scale, figures.

``SQUALL_CHAOS`` picks the scale: unset or ``short`` (the subset inside ``make
test``: small counts, a few seconds each), ``full`` (``make chaos``: the issue's
counts), ``soak`` (``make soak``: the long churn). Each scenario prints its figures
(``-s`` shows them) and appends them as one JSON line to ``$SQUALL_CHAOS_RESULTS``
when set. Every node started through :func:`cluster` has its log checked at
teardown: a traceback, ``Exception ignored`` or ``never awaited`` fails the test.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.procs import NodeProc
from tests.chaos.swarm import SwarmProc
from tests.redis_server import RedisServer

SCALE = os.environ.get("SQUALL_CHAOS", "short")


def scaled(short: Any, full: Any, soak: Any = None) -> Any:
    """The value for the current scale (``soak`` falls back to ``full``)."""
    if SCALE == "soak":
        return full if soak is None else soak
    return full if SCALE == "full" else short


def report(scenario: str, figures: dict[str, Any]) -> None:
    """Print the figures and append them to ``$SQUALL_CHAOS_RESULTS``."""
    line = {"scenario": scenario, "scale": SCALE, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
            time.gmtime()), **figures}  # fmt: skip
    print(f"\nCHAOS {scenario} [{SCALE}]: " + json.dumps(figures, sort_keys=True))
    out = os.environ.get("SQUALL_CHAOS_RESULTS")
    if out:
        with Path(out).open("a") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")


class Cluster:
    """Nodes, swarms and a Redis of one scenario; everything is stopped at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.prefix = f"squall-chaos:{uuid.uuid4().hex[:8]}:"
        self.nodes: list[NodeProc] = []
        self.swarms: list[SwarmProc] = []
        self.redis: RedisServer | None = None

    def start_redis(self) -> RedisServer:
        self.redis = RedisServer().start()
        return self.redis

    def node(
        self, node_id: str, config: dict[str, object] | None = None, url: str | None = None
    ) -> NodeProc:
        redis_url = url if url is not None else (self.redis.url if self.redis else None)
        node = NodeProc(node_id, redis_url, self.prefix, self.workdir, config)
        self.nodes.append(node)
        return node.start()

    def swarm(self, spec: dict[str, Any]) -> SwarmProc:
        sw = SwarmProc(spec)
        self.swarms.append(sw)
        return sw

    def log_problems(self) -> list[str]:
        return [f"{n.node_id}: {p}" for n in self.nodes for p in n.log_problems()]

    def close(self) -> None:
        for sw in self.swarms:
            sw.kill()
        for node in self.nodes:
            node.stop(timeout=15)
        if self.redis is not None:
            self.redis.cleanup()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()
    problems = c.log_problems()
    assert not problems, "node logs show errors:\n" + "\n---\n".join(problems[:5])


Check = Callable[[bool, str], None]
