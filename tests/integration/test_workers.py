"""``--workers N``: one dyno of N worker nodes under a supervising parent process.

Real ``server.py`` processes on the shared redis-server; ``server_procs`` kills what
is left (the whole process group) and checks every log afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import uuid
from collections.abc import Callable

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.harness import Client, RunningNode, connect, token
from tests.procs import ServerProcess
from tests.redis_server import free_port, shared_server

Procs = Callable[..., ServerProcess]


def _dyno(server_procs: Procs, workers: int = 2) -> tuple[ServerProcess, int]:
    port = free_port()
    proc = server_procs(
        ["--port", str(port), "--workers", str(workers), "--node-id", "wk"],
        {
            "REDIS_URL": shared_server().url,
            "SQUALL_BACKEND__KEY_PREFIX": f"squall-w:{uuid.uuid4().hex}:",
            "SQUALL_SERVER__HOST": "127.0.0.1",
            "SQUALL_SERVER__DRAIN_S": "1",
            "SQUALL_SERVER__METRICS_PUBLIC": "true",  # scraped on the main port here
        },
        name="dyno",
    )
    return proc, port


async def _wait_line(proc: ServerProcess, needle: str, occurrences: int = 1) -> str:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, proc.wait_for_line, needle, 30.0, occurrences)


async def _spread(port: int, want: set[str], limit: int = 60) -> list[tuple[str, Client]]:
    """Connect until every node of ``want`` welcomed at least one client."""
    target = RunningNode.__new__(RunningNode)
    target.port = port
    clients: list[tuple[str, Client]] = []
    for i in range(limit):
        c = await connect(target, token(f"u{uuid.uuid4().hex[:6]}{i}"), welcome=False)
        clients.append(((await c.expect("welcome"))["node"], c))
        if {node for node, _ in clients} >= want:
            return clients
    raise AssertionError(f"only reached {sorted({n for n, _ in clients})}")


@pytest.mark.gen_test(timeout=90)
async def test_a_worker_killed_with_sigkill_is_logged_and_replaced(server_procs: Procs) -> None:
    proc, port = _dyno(server_procs)
    await _wait_line(proc, "listening on", occurrences=2)
    started = re.findall(r"worker (\d) started: pid (\d+)", proc.log)
    assert sorted(slot for slot, _ in started) == ["0", "1"]
    victim_slot, victim_pid = started[0]
    os.kill(int(victim_pid), signal.SIGKILL)
    line = await _wait_line(proc, f"(pid {victim_pid}) killed by signal SIGKILL")
    assert f"worker {victim_slot} (pid {victim_pid})" in line
    await _wait_line(proc, f"worker {victim_slot} started: pid", occurrences=2)
    await _wait_line(proc, "listening on", occurrences=3)
    clients = await _spread(port, {"wk-w0", "wk-w1"})
    for _, c in clients:
        c.close()
    proc.signal(signal.SIGTERM)
    assert await asyncio.get_running_loop().run_in_executor(None, proc.wait, 20) == 0
    assert proc.count("exited with status 0") == 2, proc.log


@pytest.mark.gen_test(timeout=90)
async def test_every_scrape_of_a_two_worker_dyno_counts_every_connection(
    server_procs: Procs,
) -> None:
    proc, port = _dyno(server_procs)
    await _wait_line(proc, "listening on", occurrences=2)
    clients = await _spread(port, {"wk-w0", "wk-w1"})
    per_node = {n: sum(1 for m, _ in clients if m == n) for n, _ in clients}
    assert all(count >= 1 for count in per_node.values()) and len(per_node) == 2
    http = AsyncHTTPClient(force_instance=True)  # a new TCP connection per scrape
    totals = []
    try:
        for _ in range(6):
            resp = await http.fetch(
                f"http://127.0.0.1:{port}/metrics", headers={"Connection": "close"}
            )
            found = re.search(r"^squall_connections (\S+)$", resp.body.decode(), re.M)
            assert found is not None, resp.body.decode()
            totals.append(float(found.group(1)))
    finally:
        http.close()
    # each worker alone holds fewer than len(clients): only the sum gives this
    assert totals == [float(len(clients))] * 6, (totals, per_node)
    for _, c in clients:
        c.close()
    proc.signal(signal.SIGTERM)
    assert await asyncio.get_running_loop().run_in_executor(None, proc.wait, 20) == 0
