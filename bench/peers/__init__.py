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
    #: client handshake for the phased load generator: "squall" (join frame),
    #: "peer" (room in the query string ``/ws?room=NAME``), "sio" (Socket.IO)
    proto: str = "peer"
    #: server processes (ports) the members are spread over
    nodes: int = 1
    #: needs a redis-server (``redis_url`` passed to :meth:`command`)
    redis: bool = False
    #: worker processes per node (``server.py --workers N``: SO_REUSEPORT on one port)
    workers: int = 1
    #: CPU placement in the phased scenarios: ``split`` = server(s) on CPU 0, load
    #: generators and redis-server on CPU 1; ``clients`` = server free on every CPU,
    #: load generators and redis-server on CPU 1; ``none`` = nothing pinned (a dyno:
    #: the server's workers, the load generators and Redis share every core)
    placement: str = "split"

    def command(
        self, port: int, workdir: Path, redis_url: str | None = None, node: int = 0
    ) -> list[str]:
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

    def command(
        self, port: int, workdir: Path, redis_url: str | None = None, node: int = 0
    ) -> list[str]:
        conf = workdir / f"squall-bench-{node}.yaml"
        text = self.yaml
        if self.redis:
            assert redis_url is not None
            # one key prefix per run: every node of the run shares it, runs never do
            prefix = f"bench{workdir.name}:"
            text += f"backend: {{url: '{redis_url}', key_prefix: '{prefix}'}}\n"
            text = text.replace("server: {", f"server: {{node_id: bench-node-{node}, ", 1)
        conf.write_text(text)
        argv = [sys.executable, "server.py", "--config", str(conf), "--port", str(port)]
        if self.workers > 1:
            argv += ["--workers", str(self.workers)]
        return argv

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SQUALL_JWT_SECRET"] = _JWT_SECRET
        for key in ("REDIS_URL", "PORT", "WEB_CONCURRENCY"):  # memory backend, one process
            env.pop(key, None)
        return env


@dataclass(frozen=True)
class ModulePeer(Target):
    module: str = ""

    def command(
        self, port: int, workdir: Path, redis_url: str | None = None, node: int = 0
    ) -> list[str]:
        argv = [sys.executable, "-m", self.module, "--port", str(port)]
        if self.redis:
            assert redis_url is not None
            argv += ["--redis", redis_url, "--channel", f"bench{workdir.name}"]
        return argv


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        SquallTarget(
            "squall",
            "Squall (server.py, memory backend, JWT auth, msgpack)",
            auth=True,
            proto="squall",
        ),
        SquallTarget(
            "squall_redis",
            "Squall, one node, Redis backend",
            auth=True,
            proto="squall",
            redis=True,
        ),
        SquallTarget(
            "squall_redis_2nodes",
            "Squall, two nodes sharing one Redis; members alternate between the nodes",
            auth=True,
            proto="squall",
            nodes=2,
            redis=True,
        ),
        SquallTarget(
            "squall_workers",
            "Squall, one server.py --workers 2 (SO_REUSEPORT, one port), Redis backend; "
            "nothing pinned: workers, load generators and Redis share both cores",
            auth=True,
            proto="squall",
            redis=True,
            workers=2,
            placement="none",
        ),
        SquallTarget(
            "squall_workers_lgpin",
            "as squall_workers, but the load generators and Redis pinned to CPU 1 "
            "(the workers still free on both cores)",
            auth=True,
            proto="squall",
            redis=True,
            workers=2,
            placement="clients",
        ),
        ModulePeer(
            "websockets",
            "websockets 17 asyncio server, websockets.broadcast() "
            "(bench/peers/websockets_broadcast.py)",
            auth=False,
            module="bench.peers.websockets_broadcast",
        ),
        ModulePeer(
            "raw_floor",
            "selectors loop, one socket.send of a pre-built frame per member "
            "(bench/peers/raw_floor.py)",
            auth=False,
            module="bench.peers.raw_floor",
        ),
        ModulePeer(
            "socketio_2nodes",
            "python-socketio AsyncServer + AsyncRedisManager on aiohttp, two nodes "
            "(bench/peers/socketio_redis.py)",
            auth=False,
            proto="sio",
            nodes=2,
            redis=True,
            module="bench.peers.socketio_redis",
        ),
        ModulePeer(
            "tornado_plain",
            "plain Tornado WebSocketHandler, write_message loop (bench/peers/tornado_plain.py)",
            auth=False,
            module="bench.peers.tornado_plain",
        ),
    )
}
