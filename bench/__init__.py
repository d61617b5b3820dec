"""Squall's benchmarks: ``python -m bench.run [--short]`` (see docs/benchmarks.md).

Layout, so that scenarios and peers plug in without touching each other:

* ``bench/__init__.py`` (this module): process plumbing shared by every scenario:
  CPU pinning, per-process CPU time from ``/proc``, JSON-line child processes.
* ``bench/peers/``: the servers under test. ``bench.peers.TARGETS`` names each one
  and says how to start it and which client handshake it speaks; a peer is a module
  started as ``python -m bench.peers.<name> --port N``.
* ``bench/wire.py``: RFC 6455 framing, the one frame scanner of every client.
* ``bench/loadgen.py``: the raw-socket load generator (``WsClient``, one
  ``asyncio.Protocol`` per connection) and its processes; ``bench/conn.py``'s client
  processes use the same ``WsClient`` (subclassed for private messages).
* ``bench/fanout.py``: a scenario (one room, M members, N messages); a scenario
  exposes ``run_once(target, params, workdir)`` returning one JSON-able result and
  ``summarize(results)``; ``bench/fanout_cluster.py``, ``laggards.py``, ``conn.py``
  (heartbeat, idle, handshake, dm) and ``scaling.py`` are the others.
* ``bench/run.py``: the one command line (``python -m bench.run [<scenario>]``).
* ``bench/results.py``: the one result envelope and writer, and the docs sections
  generated from results.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "LOCK_PATH",
    "REPO",
    "Child",
    "CpuTimes",
    "bench_lock",
    "cpu_busy",
    "cpu_seconds",
    "free_port",
    "machine_info",
    "pinned",
    "source_digest",
    "source_hashes",
    "wait_port",
]

REPO = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")


#: every measured phase (server start -> numbers) holds an exclusive flock on this file,
#: so that two benchmarks sharing the machine never measure at the same time
LOCK_PATH = Path("/tmp/squall-bench.lock")


@contextlib.contextmanager
def bench_lock(timeout: float = 1800.0, poll: float = 0.2) -> Iterator[float]:
    """Hold the machine-wide benchmark lock; yields the seconds spent waiting for it.

    Blocking in the caller's thread is deliberate: nothing else should run meanwhile.
    """
    started = time.monotonic()
    with open(LOCK_PATH, "a+") as f:
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"{LOCK_PATH} held by another benchmark") from None
                time.sleep(poll)
        try:
            yield time.monotonic() - started
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pinned(cpu: int | None, argv: Sequence[str]) -> list[str]:
    """``argv`` run under ``taskset -c cpu`` (unpinned when ``cpu`` is None)."""
    if cpu is None:
        return list(argv)
    return ["taskset", "-c", str(cpu), *argv]


def can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


class CpuTimes(NamedTuple):
    """CPU time of one process, in seconds."""

    user: float  # utime, clock-tick resolution (10 ms at USER_HZ=100)
    system: float  # stime, same resolution
    sched: float  # on-CPU time from schedstat, nanosecond resolution, all threads
    waited: float  # time runnable but waiting for a CPU (schedstat run_delay), all threads

    @property
    def total(self) -> float:
        return self.user + self.system

    def since(self, start: CpuTimes) -> CpuTimes:
        """The CPU time spent between ``start`` and this reading."""
        return CpuTimes(*(a - b for a, b in zip(self, start, strict=True)))


def cpu_seconds(pid: int) -> CpuTimes:
    """``/proc/<pid>/stat`` utime and stime, and the schedstat cross-check."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    user, system = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    sched_ns = waited_ns = 0
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                on_cpu, run_delay, _slices = f.read().split()
            sched_ns += int(on_cpu)
            waited_ns += int(run_delay)
    return CpuTimes(user / _CLK_TCK, system / _CLK_TCK, sched_ns / 1e9, waited_ns / 1e9)


def cpu_busy() -> dict[int, float]:
    """Seconds each CPU spent not idle since boot (``/proc/stat``), steal included.

    Compared with the CPU time of our own processes on that CPU, it tells how much
    of the machine someone else was using during a measurement.
    """
    busy: dict[int, float] = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            busy[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK
    return busy


async def wait_port(port: int, timeout: float, proc: asyncio.subprocess.Process) -> None:
    """Until 127.0.0.1:``port`` accepts a connection; fails early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.returncode is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on port {port} after {timeout}s") from None
            await asyncio.sleep(0.05)
            continue
        w.close()
        with contextlib.suppress(OSError):
            await w.wait_closed()
        return


class Child:
    """A subprocess speaking JSON lines: commands on stdin, events on stdout."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log

    @classmethod
    async def start(
        cls,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        json_io: bool = True,
    ) -> Child:
        with open(log, "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=REPO,
                env=env,
                stdin=asyncio.subprocess.PIPE if json_io else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if json_io else err,
                stderr=err,
                limit=64 * 1024 * 1024,  # reports carry latency samples
            )
        return cls(name, proc, log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, cmd: str) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.write(json.dumps({"cmd": cmd}).encode() + b"\n")

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next event line, which must be ``event``; raises with the log tail."""
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise TimeoutError(f"{self.name}: no {event!r} within {timeout:.0f}s") from None
        if not line:
            await asyncio.sleep(0.2)
            raise RuntimeError(f"{self.name} exited before {event!r}:\n{self.tail()}")
        msg: dict[str, Any] = json.loads(line)
        if msg.get("event") != event:
            raise RuntimeError(f"{self.name}: expected {event!r}, got {msg.get('event')!r}")
        return msg

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, timeout: float = 10.0, signal_first: bool = True) -> None:
        """``exit`` command (or SIGTERM), then SIGKILL after ``timeout``."""
        proc = self.proc
        if proc.returncode is not None:
            return
        if proc.stdin is not None:
            self.send("exit")
            with contextlib.suppress(OSError):
                proc.stdin.close()
        elif signal_first:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def source_hashes() -> dict[str, str]:
    """Hash of each server source file (server.py, core/, handlers/, bench/peers/).

    Taken before and after a benchmark: the working tree may change while it runs.
    """
    files = [REPO / "server.py"]
    for folder in ("core", "handlers", "bench/peers"):
        files += sorted((REPO / folder).rglob("*.py"))
    out: dict[str, str] = {}
    for path in files:
        with contextlib.suppress(OSError):
            out[str(path.relative_to(REPO))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def source_digest(hashes: dict[str, str] | None = None) -> str:
    """One short hash over :func:`source_hashes`."""
    h = hashlib.sha256()
    for name, digest in sorted((hashes or source_hashes()).items()):
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()[:12]


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "not installed"


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = dirty = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        # What a benchmark writes itself (results, the docs' results sections) does
        # not make the measured tree dirty.
        status = subprocess.run(
            [
                *("git", "status", "--porcelain", "--untracked-files=no", "--"),
                *(".", ":!bench/results", ":!docs"),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
        dirty = "yes" if status.strip() else "no"
    # No path of this machine is recorded (results are committed and compared).
    return {
        "nproc": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tornado": _version("tornado"),
        "msgpack": _version("msgpack"),
        "uvloop (load generator)": _version("uvloop"),
        "libs": {
            name: _version(name)
            for name in ("tornado", "msgpack", "redis", "hiredis", "PyJWT", "uvloop")
        },
        "git_commit": commit,
        "git_dirty": dirty,
        "source_digest": source_digest(),
    }
