"""Real Squall nodes as ``server.py`` subprocesses, and what the chaos suite reads off them.

:class:`NodeProc` starts ``server.py`` on a free loopback port with configuration
from the environment (``SQUALL_<SECTION>__<KEY>``, as in production), logs to a file,
and offers the faults the suite needs: SIGTERM (drain), SIGKILL, RSS and fd counts
from ``/proc``. :meth:`NodeProc.log_problems` lists the lines that fail a scenario:
a traceback, ``Exception ignored`` or ``never awaited`` anywhere in the node's log.
Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.redis_server import free_port
from tests.tokens import SECRET

__all__ = ["BAD_LOG_MARKERS", "ROOT", "NodeProc"]

ROOT = Path(__file__).resolve().parents[2]

#: a node log line containing one of these fails the scenario
BAD_LOG_MARKERS = ("Traceback", "Exception ignored", "never awaited")


class NodeProc:
    """One ``server.py`` process; ``start()``, then ``term()`` / ``kill()``."""

    def __init__(
        self,
        node_id: str,
        redis_url: str | None,
        prefix: str,
        workdir: Path,
        config: dict[str, object] | None = None,
        port: int | None = None,
    ) -> None:
        self.node_id = node_id
        self.redis_url = redis_url
        self.prefix = prefix
        self.port = port or free_port()
        self.config = dict(config or {})
        self.log_path = workdir / f"node-{node_id}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "SQUALL_JWT_SECRET": SECRET,
            "SQUALL_API_SECRET": "api-secret-" + "y" * 40,
            "SQUALL_BACKEND__KEY_PREFIX": self.prefix,
            "SQUALL_SERVER__HOST": "127.0.0.1",
            "SQUALL_LOG__FORMAT": "text",
            "SQUALL_SERVER__METRICS_PUBLIC": "true",  # the suite reads /metrics
            "PYTHONWARNINGS": "default",
        }
        env.pop("REDIS_URL", None)
        if self.redis_url is not None:
            env["REDIS_URL"] = self.redis_url
        for key, value in self.config.items():
            section, _, name = key.partition(".")
            env[f"SQUALL_{section.upper()}__{name.upper()}"] = (
                json.dumps(value) if not isinstance(value, str) else value
            )
        return env

    def start(self, timeout: float = 20.0) -> NodeProc:
        """Start (again, same port) and return once the node logs that it listens."""
        assert self.proc is None or self.proc.poll() is not None
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "--port", str(self.port),
             "--node-id", self.node_id],
            cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                if b"listening on" in f.read():
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.node_id} exited:\n{self.log_tail()}")
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"node {self.node_id} not listening within {timeout} s")

    def term(self) -> None:
        """SIGTERM: the node drains (1012 closes over ``server.drain_s``) and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait (SIGKILL after ``timeout``)."""
        if not self.running:
            return
        self.term()
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    # -- what the suite reads ----------------------------------------------------

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.http + path, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as ``{name{labels}: value}``."""
        _, text = self.get("/metrics")
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    continue
        return out

    def metric(self, name: str, default: float = 0.0) -> float:
        return self.metrics().get(name, default)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def log_problems(self) -> list[str]:
        """Log lines that fail a scenario (with a little context)."""
        lines = self.log_text().splitlines()
        bad = []
        for i, line in enumerate(lines):
            if any(m in line for m in BAD_LOG_MARKERS):
                bad.append("\n".join(lines[i : i + 6]))
        return bad

    def count_in_log(self, needle: str) -> int:
        return self.log_text().count(needle)


def wait_until(pred: Any, timeout: float, what: str, step: float = 0.05) -> float:
    """Poll ``pred()`` until true (effects with no event to wait on); returns seconds taken."""
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(step)
    return time.monotonic() - start
