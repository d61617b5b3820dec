"""The servers a benchmark can run: Squall itself and comparison peers.

A :class:`Target` knows how to start one server on a port and which client handshake
it speaks (``auth``: a JWT bearer header, a ``welcome``, then ``join``; otherwise the
client is a room member as soon as the upgrade completes). Add a peer by writing
``bench/peers/<name>.py`` with a ``--port`` option and registering a
:class:`ModulePeer` in :data:`TARGETS`.
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TARGETS", "ModulePeer", "SquallTarget", "Target"]


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    #: the load generator authenticates (JWT header) and joins the room
    auth: bool

    def command(self, port: int, workdir: Path) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """Environment of the server and of the load generator processes."""
        return dict(os.environ)


# A fresh secret per bench process: tokens are minted by the load generator with it.
_JWT_SECRET = "bench-" + secrets.token_hex(24)

#: Squall's configuration for the fan-out benchmarks. Everything not set is default.
SQUALL_YAML = """\
server: {host: 127.0.0.1, drain_s: 1}
log: {level: WARNING, format: text}
ratelimit: {messages: 1000000}
limits: {max_connections_per_user: 100000, outbound_buffer_bytes: 67108864}
heartbeat: {interval_s: 300}
# 2,000 joins would otherwise send ~2,000,000 presence frames before publishing starts.
rooms: {presence_events: false}
"""


@dataclass(frozen=True)
class SquallTarget(Target):
    yaml: str = SQUALL_YAML

    def command(self, port: int, workdir: Path) -> list[str]:
        conf = workdir / "squall-bench.yaml"
        conf.write_text(self.yaml)
        return [sys.executable, "server.py", "--config", str(conf), "--port", str(port)]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SQUALL_JWT_SECRET"] = _JWT_SECRET
        for key in ("REDIS_URL", "PORT", "WEB_CONCURRENCY"):  # memory backend, one process
            env.pop(key, None)
        return env


@dataclass(frozen=True)
class ModulePeer(Target):
    module: str = ""

    def command(self, port: int, workdir: Path) -> list[str]:
        return [sys.executable, "-m", self.module, "--port", str(port)]


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        SquallTarget(
            "squall",
            "Squall (server.py, memory backend, JWT auth, msgpack)",
            auth=True,
        ),
        ModulePeer(
            "tornado_plain",
            "plain Tornado WebSocketHandler, write_message loop (bench/peers/tornado_plain.py)",
            auth=False,
            module="bench.peers.tornado_plain",
        ),
    )
}
