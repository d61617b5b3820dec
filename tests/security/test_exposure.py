"""Finding 7 of issue 10: what a production node exposes, and a missing API secret.

* Without ``api.secret`` the node says so at start ("signed server API calls
  disabled: set SQUALL_API_SECRET") and a signed call is told the same (not a bare
  401, not counted toward the lockout); admin bearer tokens keep working.
* The production defaults serve no demo page, no dashboard and no public
  ``/metrics``; each can be switched on, ``/metrics`` behind a bearer token or on a
  port of its own.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import load
from tests.conftest import NodeFactory
from tests.harness import token
from tests.redis_server import free_port
from tests.security import http, signed_headers_for
from tests.tokens import SECRET

ROOT = Path(__file__).resolve().parents[2]
WARNING = "signed server API calls disabled: set SQUALL_API_SECRET"
METRICS_TOKEN = "metrics-token-" + "m" * 30


@pytest.mark.gen_test(timeout=30)
async def test_missing_api_secret_is_a_warning_and_a_clear_answer(
    nodes: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    node = await nodes({"api.secret": None, "auth.lockout.failures": 2})
    assert any(r.levelno == logging.WARNING and r.getMessage() == WARNING for r in caplog.records)
    body = b'{"uid": "alice"}'
    for _ in range(4):  # more than the lockout allows: none of them counts
        r = await http(
            node,
            "POST",
            "/api/kick",
            body=body,
            headers=signed_headers_for("POST", "/api/kick", body),
        )
        assert r.status == 401
        assert r.body == {"error": "signatures_disabled", "message": WARNING}
    admin = token("ops", role="admin")
    r = await http(node, "GET", "/api/stats", headers={"Authorization": f"Bearer {admin}"})
    assert r.status == 200


@pytest.mark.gen_test(timeout=30)
async def test_no_warning_with_an_api_secret(
    nodes: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await nodes()
    assert WARNING not in caplog.text


@pytest.mark.gen_test(timeout=30)
async def test_production_defaults_serve_no_demo_no_dashboard_no_metrics(
    nodes: NodeFactory,
) -> None:
    node = await nodes()
    for path in ("/", "/index.html", "/squall.js", "/dashboard.html"):
        assert (await http(node, "GET", path)).status == 404, path
    r = await http(node, "GET", "/metrics")
    assert r.status == 404 and "server.metrics_port" in r.body["message"]
    assert b"squall_" not in r.raw


@pytest.mark.gen_test(timeout=30)
async def test_demo_and_dashboard_switch_on_separately(nodes: NodeFactory) -> None:
    demo = await nodes({"server.static": True})
    assert (await http(demo, "GET", "/")).status == 200
    assert (await http(demo, "GET", "/squall.js")).status == 200
    assert (await http(demo, "GET", "/dashboard.html")).status == 404
    board = await nodes({"server.dashboard": True})
    assert (await http(board, "GET", "/dashboard.html")).status == 200
    assert (await http(board, "GET", "/")).status == 404
    assert (await http(board, "GET", "/index.html")).status == 404


@pytest.mark.gen_test(timeout=30)
async def test_metrics_behind_a_bearer_token(nodes: NodeFactory) -> None:
    node = await nodes({"server.metrics_token": METRICS_TOKEN})
    assert (await http(node, "GET", "/metrics")).status == 401
    wrong = {"Authorization": f"Bearer {METRICS_TOKEN[:-1]}x"}
    assert (await http(node, "GET", "/metrics", headers=wrong)).status == 401
    right = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    r = await http(node, "GET", "/metrics", headers=right)
    assert r.status == 200 and b"squall_connections" in r.raw


@pytest.mark.gen_test(timeout=30)
async def test_metrics_public_switch(nodes: NodeFactory) -> None:
    node = await nodes({"server.metrics_public": True})
    r = await http(node, "GET", "/metrics")
    assert r.status == 200 and b"squall_connections" in r.raw


def test_dev_yaml_keeps_the_demo() -> None:
    settings = load(ROOT / "conf" / "dev.yaml", {})
    assert settings.server.static and settings.server.dashboard
    defaults = load(ROOT / "conf" / "default.yaml", {"SQUALL_JWT_SECRET": SECRET})
    assert not defaults.server.static and not defaults.server.dashboard
    assert not defaults.server.metrics_public and defaults.server.metrics_port is None


def _get(port: int, path: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_metrics_on_a_port_of_its_own_and_the_start_warning(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "SQUALL_API_SECRET"},
        "SQUALL_JWT_SECRET": SECRET,
        "SQUALL_SERVER__HOST": "127.0.0.1",
        "SQUALL_SERVER__METRICS_PORT": str(metrics_port),
        "SQUALL_LOG__FORMAT": "text",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "server.py"), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines: list[bytes] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if b"listening" in line:
                break
        assert any(b"listening" in line for line in lines), lines
        assert any(WARNING.encode() in line for line in lines), lines
        assert _get(port, "/metrics") == 404
        assert _get(metrics_port, "/metrics") == 200
        assert _get(metrics_port, "/healthz") == 404  # only /metrics there
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("SQUALL_SERVER__METRICS_PORT", "8080", "server.metrics_port"),
        ("SQUALL_SERVER__METRICS_PORT", "70000", "server.metrics_port"),
        ("SQUALL_METRICS_TOKEN", "short", "server.metrics_token"),
    ],
)
def test_bad_metrics_settings_exit_2_naming_the_key(variable: str, value: str, key: str) -> None:
    env = {**os.environ, "SQUALL_JWT_SECRET": SECRET, variable: value}
    out = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--port", "8080"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert key.encode() in out.stderr
    assert value.encode() not in out.stderr or key != "server.metrics_token"
