"""Start-up: backend first, then the port; failures that say what to fix.

Every test runs ``server.py`` as a real process (``server_procs``: its log is checked
for tracebacks afterwards) against real redis-server processes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.harness import HandshakeRefused, RunningNode, connect, token
from tests.procs import ROOT, ServerProcess
from tests.redis_server import RedisServer, free_port, shared_server
from tests.tokens import SECRET

Procs = Callable[..., ServerProcess]


def _target(port: int) -> RunningNode:
    node = RunningNode.__new__(RunningNode)
    node.port = port
    return node


def _env(url: str | None, **extra: str) -> dict[str, str]:
    env = {
        "SQUALL_SERVER__HOST": "127.0.0.1",
        "SQUALL_SERVER__DRAIN_S": "1",
        "SQUALL_BACKEND__KEY_PREFIX": f"squall-start:{uuid.uuid4().hex}:",
        **extra,
    }
    if url is not None:
        env["REDIS_URL"] = url
    return env


def _config_error(proc: ServerProcess) -> str:
    """The process exits 2 with exactly one ``config error:`` line; that line."""
    assert proc.wait(30) == 2, proc.log
    lines = [line for line in proc.log.splitlines() if line.startswith("config error:")]
    assert len(lines) == 1, proc.log
    return lines[0]


@pytest.mark.gen_test(timeout=60)
async def test_a_handshake_the_moment_the_port_accepts_is_served(server_procs: Procs) -> None:
    port = free_port()
    proc = server_procs(["--port", str(port)], _env(shared_server().url))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        assert loop.time() < deadline, proc.log
        try:
            client = await connect(_target(port), token("first"))
            break
        except ConnectionRefusedError:
            await asyncio.sleep(0.002)  # nothing listens yet: no event to await
        except HandshakeRefused as e:
            raise AssertionError(f"first handshake refused {e.status}: {e.body}") from None
    assert (await client.request({"t": "ping"}))["t"] == "pong"
    client.close()
    log = proc.log
    assert log.index("connected to") < log.index("listening on"), log
    assert " 503 " not in log


@pytest.mark.gen_test(timeout=60)
async def test_redis_down_longer_than_the_wait_binds_and_answers_503_then_recovers(
    server_procs: Procs,
) -> None:
    redis = RedisServer()
    try:
        port = free_port()
        proc = server_procs(
            ["--port", str(port)],
            _env(redis.url, SQUALL_SERVER__BACKEND_WAIT_S="0.5"),
        )
        await asyncio.get_running_loop().run_in_executor(
            None, proc.wait_for_line, "listening on", 20
        )
        assert "Connection refused" in proc.log or "Connect call failed" in proc.log, proc.log
        http = AsyncHTTPClient()
        health = await http.fetch(f"http://127.0.0.1:{port}/healthz", raise_error=False)
        ready = await http.fetch(f"http://127.0.0.1:{port}/readyz", raise_error=False)
        assert (health.code, ready.code) == (200, 503)
        with pytest.raises(HandshakeRefused) as refused:
            await connect(_target(port), token("early"))
        assert refused.value.status == 503
        redis.start()
        deadline = time.monotonic() + 20
        while (await http.fetch(f"http://127.0.0.1:{port}/readyz", raise_error=False)).code != 200:
            assert time.monotonic() < deadline, "never became ready"
            await asyncio.sleep(0.05)
        client = await connect(_target(port), token("late"))
        client.close()
    finally:
        redis.cleanup()


def test_wrong_password_exits_2_naming_the_url(server_procs: Procs) -> None:
    with RedisServer(extra_args=("--requirepass", "right-pass")) as redis:
        url = f"redis://:wrong-pass@127.0.0.1:{redis.port}/0"
        line = _config_error(server_procs(["--port", str(free_port())], _env(url)))
        assert line.startswith("config error: backend.url:")
        assert "invalid username-password pair" in line
        proc = server_procs(["--port", str(free_port())], _env(url.replace(":wrong-pass@", "")))
        assert "requires a password" in _config_error(proc)
    assert "wrong-pass" not in proc.log


def test_tls_verification_failure_exits_2_naming_the_ca_file(server_procs: Procs) -> None:
    with RedisServer(tls=True) as redis:
        assert redis.tls is not None
        proc = server_procs(["--port", str(free_port())], _env(redis.url))
        line = _config_error(proc)
        assert line.startswith("config error: backend.ssl_ca_file:")
        assert "CERTIFICATE_VERIFY_FAILED" in line and "ssl_cert_reqs" in line
        # the CA is right but this server also wants a client certificate
        env = _env(redis.url, SQUALL_BACKEND__SSL_CA_FILE=str(redis.tls.ca))
        line = _config_error(server_procs(["--port", str(free_port())], env))
        assert line.startswith("config error: backend.ssl_cert_file:")


def test_plain_url_at_a_tls_port_and_tls_url_at_a_plain_port_exit_2(server_procs: Procs) -> None:
    with RedisServer(tls=True) as tls_redis:
        url = f"redis://127.0.0.1:{tls_redis.port}/0"
        line = _config_error(server_procs(["--port", str(free_port())], _env(url)))
        assert line.startswith("config error: backend.url:") and "use rediss://" in line
    plain = shared_server()
    url = f"rediss://127.0.0.1:{plain.port}/0"
    env = _env(url, SQUALL_BACKEND__SSL_CERT_REQS="none", SQUALL_BACKEND__SOCKET_TIMEOUT_S="0.5")
    line = _config_error(server_procs(["--port", str(free_port())], env))
    assert line.startswith("config error: backend.url:") and "use redis://" in line


def test_a_taken_port_exits_2_in_one_line(server_procs: Procs) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _config_error(server_procs(["--port", str(port)], _env(None)))
    assert line == (
        f"config error: server.port: 127.0.0.1:{port} is already in use by another "
        "process: stop it or choose another port (PORT / --port)"
    )


def test_a_missing_certificate_file_exits_2_in_one_line(
    server_procs: Procs, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.pem"
    env = _env(
        None,
        SQUALL_SERVER__TLS__CERT_FILE=str(missing),
        SQUALL_SERVER__TLS__KEY_FILE=str(missing),
    )
    line = _config_error(server_procs(["--port", str(free_port())], env))
    assert line == (
        f"config error: server.tls.cert_file: file not found: {missing} "
        "(from environment variable SQUALL_SERVER__TLS__CERT_FILE)"
    )


def test_a_port_the_process_may_not_bind_exits_2_in_one_line() -> None:
    # An unprivileged user may not bind ports below 1024 (unless the kernel allows it).
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        assert int(f.read()) > 80, "this machine lets anyone bind port 80"
    env = {**os.environ, "SQUALL_JWT_SECRET": SECRET, **_env(None)}
    # as root, without the capability to bind low ports; otherwise unprivileged already
    drop = ["setpriv", "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service"]
    argv = [sys.executable, str(ROOT / "server.py"), "--port", "80"]
    out = subprocess.run(
        [*(drop if os.geteuid() == 0 else []), *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=30,
    )
    err = out.stderr.decode()
    assert out.returncode == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("config error:")]
    assert lines == [
        "config error: server.port: not allowed to listen on 127.0.0.1:80 (Permission denied): "
        "use a port above 1023 (PORT / --port) or give the process the right to bind it"
    ]


def test_check_config_connect_reports_like_the_server(tmp_path: Path) -> None:
    def check(url: str) -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, "SQUALL_JWT_SECRET": SECRET, "REDIS_URL": url}
        return subprocess.run(
            [sys.executable, str(ROOT / "server.py"), "check-config", "--connect"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=30,
        )

    with RedisServer(extra_args=("--requirepass", "right-pass")) as redis:
        bad = check(f"redis://:wrong-pass@127.0.0.1:{redis.port}/0")
        assert bad.returncode == 2
        assert bad.stderr.decode().strip().startswith("config error: backend.url:")
        assert "invalid username-password pair" in bad.stderr.decode()
        assert b"wrong-pass" not in bad.stdout + bad.stderr
        good = check(f"redis://:right-pass@127.0.0.1:{redis.port}/0")
        assert good.returncode == 0, good.stderr
        assert f"connected to redis://:***@127.0.0.1:{redis.port}/0".encode() in good.stdout
    down = check(f"redis://127.0.0.1:{free_port()}/0")
    assert down.returncode == 1
    assert b"backend unreachable" in down.stderr and b"Traceback" not in down.stderr
