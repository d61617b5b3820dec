"""``server.py`` as a real subprocess, its output read continuously and kept.

:class:`ServerProcess` starts ``python server.py ...`` with the test secrets and
``PYTHONUNBUFFERED``, and a reader thread that keeps every output line (stdout and
stderr merged), so the pipe never fills and a test can wait for a line
(:meth:`ServerProcess.wait_for_line`, bounded) or read the whole log.

The ``server_procs`` fixture (``tests/conftest.py``) starts them and, after the
test, kills any still running and hands every process's log to the log hygiene
check (a traceback, ``Exception ignored`` or ``never awaited`` fails the test).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.tokens import SECRET

__all__ = ["ROOT", "ServerProcess"]

ROOT = Path(__file__).resolve().parents[1]


class ServerProcess:
    """One ``server.py`` process; see the module docstring."""

    def __init__(
        self,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        name: str = "server",
    ) -> None:
        self.name = name
        full_env = {
            **os.environ,
            "SQUALL_JWT_SECRET": SECRET,
            "PYTHONUNBUFFERED": "1",
            "SQUALL_LOG__FORMAT": "text",
            **(env or {}),
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), *args],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() reaches its workers
        )
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._changed:
                self._lines.append(raw.decode(errors="replace"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log(self) -> str:
        """Everything the process wrote so far."""
        with self._changed:
            return "".join(self._lines)

    def count(self, needle: str) -> int:
        with self._changed:
            return sum(needle in line for line in self._lines)

    def wait_for_line(self, needle: str, timeout: float = 20.0, occurrences: int = 1) -> str:
        """Block until ``needle`` appeared in ``occurrences`` lines; returns the last one.

        Raises AssertionError (with the log) on timeout or when the process ended first.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [line for line in self._lines if needle in line]
                if len(found) >= occurrences:
                    return found[occurrences - 1]
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "exited" if self._eof else "timed out"
                    log = "".join(self._lines)[-4000:]
                    raise AssertionError(f"{self.name} {why} before {needle!r}:\n{log}")
                self._changed.wait(left)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for the exit (bounded) and for the rest of its output; the exit status."""
        rc = self.proc.wait(timeout)
        self._reader.join(timeout)
        return rc

    def kill(self) -> None:
        """SIGKILL the process and everything in its process group (its workers)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)
