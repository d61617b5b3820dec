"""Prometheus metrics of one node, in a registry of its own (no global state).

Counters are incremented in bulk on the hot path (one ``inc(n)`` per fan-out, not
one per member).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

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

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge(
            "squall_connections", "Open WebSocket connections on this node", registry=r
        )
        self.users = Gauge("squall_users", "Distinct authenticated users on this node", registry=r)
        self.rooms = Gauge(
            "squall_rooms", "Rooms with at least one member on this node", registry=r
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
            "squall_backend_available", "1 while the shared backend is reachable", registry=r
        )
        self.backend_errors = Counter(
            "squall_backend_errors",
            "Operations that failed because the backend was down",
            registry=r,
        )
        self.draining = Gauge("squall_draining", "1 while the node drains", registry=r)
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
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
