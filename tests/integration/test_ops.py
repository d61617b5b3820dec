"""Operations: health, readiness, metrics, SIGTERM drain, secrets kept out of logs."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from tests.conftest import NodeFactory
from tests.harness import RunningNode, connect, refused, token
from tests.procs import ServerProcess
from tests.tokens import SECRET

ROOT = Path(__file__).resolve().parents[2]


async def _get(url: str) -> tuple[int, bytes]:
    try:
        resp = await AsyncHTTPClient().fetch(url, raise_error=False)
    except HTTPClientError as e:  # pragma: no cover - raise_error=False
        return e.code, b""
    return resp.code, resp.body


@pytest.mark.gen_test(timeout=15)
async def test_health_ready_and_metrics(nodes: NodeFactory) -> None:
    node = await nodes({"server.metrics_public": True})
    assert (await _get(node.http + "/healthz"))[0] == 200
    code, body = await _get(node.http + "/readyz")
    assert code == 200 and b'"ready": true' in body
    c = await connect(node, token("alice"))
    await c.request({"t": "join", "room": "m"})
    await c.request({"t": "pub", "room": "m", "data": 1})
    await refused(node, "garbage")
    code, text = await _get(node.http + "/metrics")
    assert code == 200
    metrics = text.decode()
    for needle in (
        "squall_connections 1.0",
        "squall_rooms 1.0",
        'squall_frames_in_total{type="pub"} 1.0',
        'squall_frames_out_total{type="msg"} 1.0',
        'squall_auth_failures_total{reason="malformed"} 1.0',
        "squall_handshake_seconds_count 1.0",
        "squall_fanout_seconds_count 1.0",
    ):
        assert needle in metrics, needle
    node.node.life.draining = True
    code, body = await _get(node.http + "/readyz")
    assert code == 503 and b'"draining": true' in body


@pytest.mark.gen_test(timeout=15)
async def test_query_token_never_logged_in_process(
    nodes: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    from core.logs import install_redaction

    install_redaction()
    node = await nodes()
    secret_token = token("alice")
    c = await connect(node, secret_token, via="query")
    c.close()
    await refused(node, secret_token + "x", via="query")  # a refused one is logged
    assert await _get(node.http + f"/nope?token={secret_token}")
    await node.stop()
    assert caplog.records, "nothing was logged at all"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert secret_token not in text
    assert secret_token.split(".")[1] not in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(
    server_procs: Callable[..., ServerProcess], tmp_path: Path, extra: str = ""
) -> tuple[ServerProcess, int]:
    port = _free_port()
    cfg = tmp_path / "squall.yaml"
    cfg.write_text(
        "server:\n  host: 127.0.0.1\n  drain_s: 2\nlog:\n  level: DEBUG\n  format: json\n" + extra
    )
    proc = server_procs(["--config", str(cfg), "--port", str(port)], {"SQUALL_LOG__FORMAT": "json"})
    proc.wait_for_line("listening", timeout=15)
    return proc, port


@pytest.mark.gen_test(timeout=30)
async def test_sigterm_drains_with_1012_and_keeps_tokens_out_of_logs(
    server_procs: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    proc, port = _start_server(server_procs, tmp_path)
    fake = RunningNode.__new__(RunningNode)
    fake.port = port  # only .url is used by connect()
    secret_token = token("alice")
    clients = [await connect(fake, secret_token, via="query") for _ in range(3)]
    clients.append(await connect(fake, token("bob")))
    await refused(fake, secret_token + "tampered", via="query")
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    codes = await asyncio.gather(*(c.closed(timeout=10) for c in clients))
    assert codes == [1012] * 4
    rc = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 10)
    assert rc == 0
    assert time.monotonic() - started < 2 + 5
    logs = proc.log
    assert "draining" in logs
    assert secret_token not in logs
    assert secret_token.split(".")[1] not in logs


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("limits:\n  max_connections: lots\n")
    env = {**os.environ, "SQUALL_JWT_SECRET": SECRET}
    out = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--config", str(cfg)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert b"limits.max_connections" in out.stderr
    assert len(out.stderr.decode().strip().splitlines()) == 1


def test_workers_refused_on_memory_backend(tmp_path: Path) -> None:
    env = {**os.environ, "SQUALL_JWT_SECRET": SECRET}
    out = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--workers", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert b"server.workers" in out.stderr


def test_check_config_and_hash_password_subcommands(tmp_path: Path) -> None:
    env = {**os.environ, "SQUALL_JWT_SECRET": SECRET}
    out = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "check-config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert SECRET.encode() not in out.stdout
    assert b"max_connections" in out.stdout
    out = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "hash-password"],
        cwd=ROOT,
        input=b"correct horse\n",
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 0
    from core.passwords import verify_password

    assert verify_password("correct horse", out.stdout.decode().strip())


def test_malformed_users_file_exits_2(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text("alice: not-a-hash\n")
    env = {**os.environ, "SQUALL_JWT_SECRET": SECRET, "SQUALL_AUTH__USERS_FILE": str(users)}
    out = subprocess.run(
        [sys.executable, str(ROOT / "server.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert b"auth.users_file" in out.stderr
    assert len(out.stderr.decode().strip().splitlines()) == 1
