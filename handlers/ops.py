"""Operational endpoints: ``/healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

import json

from core.node import Node
from handlers.base import SafeRequestMixin

__all__ = ["HealthHandler", "MetricsHandler", "ReadyHandler"]


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
    """Prometheus text format of the node's registry."""

    def initialize(self, node: Node) -> None:
        self.node = node

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.node.metrics.render())
