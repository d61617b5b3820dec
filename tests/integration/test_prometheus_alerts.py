"""The alerting rules of conf/prometheus/: promtool checks and unit tests, and a real
Prometheus scraping a two-node cluster that fires the connections alert.

``promtool`` and ``prometheus`` are Debian's ``prometheus`` package
(scripts/ensure-browser.sh installs it when missing).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.harness import Client, RunningNode, connect, token
from tests.node_procs import ROOT, ServerProcess
from tests.redis_server import free_port, shared_server

RULES = ROOT / "conf" / "prometheus" / "squall-alerts.yml"
SCRAPE = ROOT / "conf" / "prometheus" / "prometheus.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "squall-alerts.test.yml"
MAX = 10


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is required: run scripts/ensure-browser.sh"
    return path


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_promtool_checks_the_rules_and_the_scrape_config() -> None:
    promtool = _tool("promtool")
    done = _run(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0 and "SUCCESS: 5 rules found" in done.stdout, done.stderr
    done = _run(promtool, "check", "config", str(SCRAPE))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    done = _run(_tool("promtool"), "test", "rules", str(RULE_TESTS))
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


@pytest.fixture
def two_nodes() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env = {
        "REDIS_URL": shared_server().url,
        "SQUALL_BACKEND__KEY_PREFIX": f"squall-prom:{uuid.uuid4().hex}:",
        "SQUALL_LIMITS__MAX_CONNECTIONS": str(MAX),
        "SQUALL_SERVER__METRICS_PUBLIC": "true",  # scraped on the main port here
    }
    a, b = ServerProcess("prom-a", env), ServerProcess("prom-b", env)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()
    assert a.log_problems() == [] and b.log_problems() == []


@pytest.fixture
def prometheus(tmp_path: Path, two_nodes: tuple[ServerProcess, ServerProcess]) -> Iterator[str]:
    """A real Prometheus scraping both nodes every second with the shipped rules; the
    only change is ``for: 0s`` (the rules' own durations are covered by promtool)."""
    rules = tmp_path / "squall-alerts.yml"
    rules.write_text(re.sub(r"(?m)^(\s+)for: \S+$", r"\1for: 0s", RULES.read_text()))
    targets = [f"127.0.0.1:{node.port}" for node in two_nodes]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "squall", "static_configs": [{"targets": targets}]}],
    }
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            _tool("prometheus"),
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def _get(url: str) -> Any:
    resp = await AsyncHTTPClient().fetch(url, raise_error=False, request_timeout=5)
    return json.loads(resp.body) if resp.code == 200 else None


async def _until(url: str, pred: Any, timeout: float = 30.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            body = await _get(url)
        except OSError:
            body = None
        if body is not None and pred(body):
            return body
        assert loop.time() < deadline, f"not reached: {url} -> {body}"
        await asyncio.sleep(0.25)


def _alerts(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [a for a in body["data"]["alerts"] if a["labels"]["alertname"] == name]


@pytest.mark.gen_test(timeout=90)
async def test_real_prometheus_fires_the_connections_alert_on_a_full_node(
    prometheus: str, two_nodes: tuple[ServerProcess, ServerProcess]
) -> None:
    a, _b = two_nodes
    query = prometheus + "/api/v1/query?query="
    # both nodes scraped, max_connections known, nothing firing yet
    await _until(query + "squall_max_connections", lambda r: len(r["data"]["result"]) == 2)
    await _until(
        query + "up", lambda r: sorted(x["value"][1] for x in r["data"]["result"]) == ["1", "1"]
    )
    rules = await _get(prometheus + "/api/v1/rules")
    names = [r["name"] for g in rules["data"]["groups"] for r in g["rules"]]
    assert "SquallConnectionsNearMax" in names and len(names) == 5
    assert _alerts(await _get(prometheus + "/api/v1/alerts"), "SquallConnectionsNearMax") == []

    target = RunningNode.__new__(RunningNode)
    target.port = a.port
    clients: list[Client] = []
    try:
        for i in range(MAX):  # 10 of 10: over 90 %
            clients.append(await connect(target, token(f"filler-{i}")))
        body = await _until(
            prometheus + "/api/v1/alerts",
            lambda r: any(x["state"] == "firing" for x in _alerts(r, "SquallConnectionsNearMax")),
        )
        firing = _alerts(body, "SquallConnectionsNearMax")
        assert [x["labels"]["instance"] for x in firing] == [f"127.0.0.1:{a.port}"]
        assert firing[0]["labels"]["severity"] == "page"
        assert "100% of max_connections" in firing[0]["annotations"]["summary"]
    finally:
        for c in clients:
            c.close()
    # emptied again: the alert resolves
    await _until(
        prometheus + "/api/v1/alerts", lambda r: _alerts(r, "SquallConnectionsNearMax") == []
    )
