"""The Redis side of ``bench.scaling``: one redis-server or a 3-master Redis Cluster.

:class:`Topology` starts either kind with the test harness's servers
(tests/redis_server.py: throw-away ports and directories, no persistence; the cluster
is three masters without replicas joined by ``redis-cli --cluster create``), pins every
redis-server process to one CPU, and samples what the benchmark measures per master:
on-CPU time from ``/proc`` (schedstat, nanoseconds) and the ``INFO stats`` byte
counters of client traffic (the cluster bus is not counted in them).
"""

from __future__ import annotations

import subprocess
from typing import NamedTuple

import redis
from redis.crc import key_slot

from bench import cpu_seconds
from tests.redis_server import RedisClusterServers, RedisServer

__all__ = ["KINDS", "Sample", "Topology"]

#: ``redis``: one redis-server; ``cluster``: three masters, no replicas
KINDS = ("redis", "cluster")


class Sample(NamedTuple):
    """One reading per master (in the order of :attr:`Topology.ports`)."""

    cpu: list[float]  # on-CPU seconds of each redis-server
    out: list[int]  # total_net_output_bytes
    inp: list[int]  # total_net_input_bytes

    def since(self, start: Sample) -> Sample:
        return Sample(
            [a - b for a, b in zip(self.cpu, start.cpu, strict=True)],
            [a - b for a, b in zip(self.out, start.out, strict=True)],
            [a - b for a, b in zip(self.inp, start.inp, strict=True)],
        )


class Topology:
    """A started Redis topology of ``kind`` (see :data:`KINDS`), its servers on ``cpu``."""

    def __init__(self, kind: str, cpu: int | None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown Redis topology {kind!r}")
        self.kind = kind
        self._cluster: RedisClusterServers | None = None
        if kind == "cluster":
            self._cluster = RedisClusterServers(3)
            self.servers = self._cluster.servers
            try:
                self._cluster.start()
            except BaseException:
                self._cluster.cleanup()
                raise
            self.url = self._cluster.url
        else:
            server = RedisServer(extra_args=("--maxclients", "1000"))
            self.servers = [server]
            try:
                server.start()
            except BaseException:
                server.cleanup()
                raise
            self.url = server.url
        self.pids: list[int] = []
        for server in self.servers:
            proc = server._proc  # the harness keeps the process private; we need its pid
            assert proc is not None
            self.pids.append(proc.pid)
            if cpu is not None:
                subprocess.run(["taskset", "-pc", str(cpu), str(proc.pid)], capture_output=True)
        self.ports = [s.port for s in self.servers]
        self.admins = [redis.Redis(port=p) for p in self.ports]
        self._slots: list[tuple[int, int, int]] = []  # (first, last, master index)
        if kind == "cluster":
            slots = self.admins[0].execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
            for first, last, owner, *_replicas in slots:
                self._slots.append((int(first), int(last), self.ports.index(int(owner[1]))))

    def master_of(self, key: str) -> int:
        """Index of the master that holds ``key`` (always 0 on one redis-server)."""
        slot = key_slot(key.encode())
        for first, last, index in self._slots:
            if first <= slot <= last:
                return index
        return 0

    def sample(self) -> Sample:
        cpu, out, inp = [], [], []
        for pid, admin in zip(self.pids, self.admins, strict=True):
            cpu.append(cpu_seconds(pid).sched)
            stats = admin.info("stats")
            out.append(int(stats["total_net_output_bytes"]))
            inp.append(int(stats["total_net_input_bytes"]))
        return Sample(cpu, out, inp)

    def stop(self) -> None:
        for admin in self.admins:
            admin.close()
        if self._cluster is not None:
            self._cluster.cleanup()
        else:
            self.servers[0].cleanup()
