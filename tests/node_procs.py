"""Squall nodes as `server.py` processes for the end-to-end tests (browser, packaging,
Prometheus).

:class:`ServerProcess` starts a node with environment overrides on a free loopback
port, waits until ``/readyz`` answers 200, keeps its whole log (stdout and stderr
merged) and can stop (SIGTERM, drain) and start again on the same port.
:meth:`ServerProcess.log_problems` lists the lines a clean node never writes
(tracebacks, ``Exception ignored``, ``never awaited``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from tests.redis_server import free_port
from tests.tokens import SECRET

ROOT = Path(__file__).resolve().parents[1]

BAD_LOG_LINES = ("Traceback", "Exception ignored", "never awaited")


class ServerProcess:
    """One node process; ``env`` overrides (``SQUALL_...``) on top of a loopback base."""

    def __init__(self, node_id: str, env: Mapping[str, str], port: int | None = None) -> None:
        self.node_id = node_id
        self.port = port or free_port()
        self.env = {
            **os.environ,
            "SQUALL_JWT_SECRET": SECRET,
            "SQUALL_SERVER__HOST": "127.0.0.1",
            "SQUALL_LOG__FORMAT": "text",
            "SQUALL_SERVER__DRAIN_S": "0.5",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        """Start the node and wait until it is ready (``/readyz`` 200)."""
        argv = [sys.executable, str(ROOT / "server.py"), "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*argv, "--node-id", self.node_id],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self.ready():
            assert self.proc.poll() is None, f"{self.node_id} exited:\n" + "\n".join(self.lines)
            assert time.monotonic() < deadline, f"{self.node_id} not ready:\n" + "\n".join(
                self.lines
            )
            time.sleep(0.05)
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.http + "/readyz", timeout=1) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (drain), wait for the exit; returns the exit status."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        self.proc = None
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log_problems(self) -> list[str]:
        return [line for line in self.lines if any(bad in line for bad in BAD_LOG_LINES)]
