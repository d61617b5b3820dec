"""Prometheus metrics of one node, in a registry of its own (no global state).

Counters are incremented in bulk on the hot path (one ``inc(n)`` per fan-out, not
one per member).

**Several workers** (``server.workers > 1``) use prometheus_client's multiprocess
mode: the parent process makes a fresh directory, and each worker calls
:func:`enable_multiprocess` with it right after the fork, before creating its
:class:`Metrics`. Every worker then writes its values to memory-mapped files there,
and :meth:`Metrics.render` of any worker answers for the whole dyno: counters and
histograms summed over every worker that ever ran, gauges combined by their
``multiprocess_mode`` over the live workers (connections, users, rooms: sum;
backend available: min, so 0 when any worker lost it; draining: max). The parent
calls :func:`mark_worker_dead` when a worker exits, so its gauges stop counting.
A single process (the default) keeps the plain in-memory registry.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

__all__ = ["Metrics", "enable_multiprocess", "mark_worker_dead", "multiprocess_dir"]

_ENV = "PROMETHEUS_MULTIPROC_DIR"
_enabled_dir: str | None = None


def enable_multiprocess(path: str) -> None:
    """Write this process's metrics to ``path`` (a worker, right after the fork)."""
    global _enabled_dir
    os.environ[_ENV] = path
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _enabled_dir = path


def multiprocess_dir() -> str | None:
    """The directory :func:`enable_multiprocess` set up in this process, if any."""
    return _enabled_dir


def mark_worker_dead(pid: int, path: str) -> None:
    """Drop the live gauges of the exited worker ``pid`` (the parent calls this)."""
    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class Metrics:
    """Every metric Squall exports. Names are prefixed ``squall_``."""

    def __init__(self, multiprocess_path: str | None = None) -> None:
        #: set: :meth:`render` aggregates every worker writing to this directory
        self.multiprocess_path = multiprocess_path
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge(
            "squall_connections",
            "Open WebSocket connections on this node",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.users = Gauge(
            "squall_users",
            "Distinct authenticated users on this node",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rooms = Gauge(
            "squall_rooms",
            "Rooms with at least one member on this node",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.frames_in = Counter(
            "squall_frames_in", "Frames received, by type", ["type"], registry=r
        )
        self.frames_out = Counter("squall_frames_out", "Frames sent, by type", ["type"], registry=r)
        self.closes = Counter(
            "squall_closes", "Server-initiated closes, by close code", ["code"], registry=r
        )
        self.auth_failures = Counter(
            "squall_auth_failures", "Authentication failures, by reason", ["reason"], registry=r
        )
        self.handshakes = Counter(
            "squall_handshakes", "Handshake outcomes, by HTTP status", ["status"], registry=r
        )
        self.handshake_seconds = Histogram(
            "squall_handshake_seconds",
            "Time from upgrade request to welcome",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fanout_seconds = Histogram(
            "squall_fanout_seconds",
            "Time to write one room message to every local member",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_available = Gauge(
            "squall_backend_available",
            "1 while the shared backend is reachable",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.backend_errors = Counter(
            "squall_backend_errors",
            "Operations that failed because the backend was down",
            registry=r,
        )
        self.draining = Gauge(
            "squall_draining", "1 while the node drains", registry=r, multiprocess_mode="livemax"
        )
        self.max_connections = Gauge(
            "squall_max_connections",
            "limits.max_connections of this node (summed over a dyno's workers)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.backend_rtt = Gauge(
            "squall_backend_rtt_seconds",
            "Round trip of the node's last stats write to the backend",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.oldest_connection = Gauge(
            "squall_oldest_connection_seconds",
            "Age of the oldest open connection of this node (0 without any)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.errors = Counter("squall_err_replies", "err replies, by code", ["code"], registry=r)
        self.hook_calls = Counter(
            "squall_hook_calls",
            "Application hook calls, by hook and outcome "
            "(allow, refuse, failed_open, failed_closed)",
            ["hook", "outcome"],
            registry=r,
        )

    def count_hook(self, hook: str, outcome: str) -> None:
        self.hook_calls.labels(hook, outcome).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition: this registry, or every worker's together."""
        if self.multiprocess_path is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=self.multiprocess_path)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
