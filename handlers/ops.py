"""Operational endpoints: ``/healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

import hmac
import json

from core.config import ServerConfig
from core.node import Node
from handlers.base import SafeRequestMixin, write_json_error

__all__ = [
    "HealthHandler",
    "MetricsElsewhereHandler",
    "MetricsHandler",
    "ReadyHandler",
    "metrics_exposure",
]


class HealthHandler(SafeRequestMixin):
    """Liveness: 200 while the process serves HTTP."""

    def initialize(self, node: Node) -> None:
        self.node = node

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": "ok", "node": self.node.node_id}))


class ReadyHandler(SafeRequestMixin):
    """Readiness: 503 while draining or while the backend is unreachable."""

    def initialize(self, node: Node) -> None:
        self.node = node

    def get(self) -> None:
        node = self.node
        backend_ok = node.backend.available
        ready = backend_ok and not node.draining
        self.set_status(200 if ready else 503)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(
            json.dumps(
                {
                    "ready": ready,
                    "node": node.node_id,
                    "backend": "up" if backend_ok else "down",
                    "draining": node.draining,
                    "connections": len(node.hub),
                }
            )
        )


class MetricsHandler(SafeRequestMixin):
    """Prometheus text format of the node's registry.

    With ``server.metrics_token`` the request must carry ``Authorization: Bearer
    <token>`` (compared in constant time); otherwise 401 with ``WWW-Authenticate``.
    Where it is routed (main port, own port, nowhere) is :func:`metrics_exposure`'s call.
    """

    def initialize(self, node: Node) -> None:
        self.node = node

    def get(self) -> None:
        expected = self.node.settings.server.metrics_token
        if expected is not None:
            scheme, _, value = self.request.headers.get("Authorization", "").partition(" ")
            given = value.strip().encode("utf-8") if scheme.lower() == "bearer" else b""
            if not hmac.compare_digest(given, expected.encode("utf-8")):
                self.set_header("WWW-Authenticate", 'Bearer realm="metrics"')
                write_json_error(self, 401, "unauthorized", "/metrics needs its bearer token")
                return
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(self.node.metrics.render())


class MetricsElsewhereHandler(SafeRequestMixin):
    """``/metrics`` on the main port when it is not served there: 404, saying why."""

    def initialize(self, node: Node) -> None:
        self.node = node

    def get(self) -> None:
        write_json_error(
            self,
            404,
            "not_found",
            "/metrics is not served on this port (server.metrics_port, "
            "server.metrics_token or server.metrics_public)",
        )


def metrics_exposure(server: ServerConfig) -> str:
    """Where ``/metrics`` is served: ``main`` port, its ``own`` port, or ``none``.

    Its own port when ``server.metrics_port`` is set; else the main port when a
    token guards it or ``server.metrics_public`` says it may be public; else nowhere
    (the production default: a node's internals are not for the Internet).
    """
    if server.metrics_port is not None:
        return "own"
    if server.metrics_token is not None or server.metrics_public:
        return "main"
    return "none"
