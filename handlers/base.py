"""Shared bits of every Squall HTTP handler: safe request summaries, JSON errors."""

from __future__ import annotations

import json
import math
from typing import Any

import tornado.web

__all__ = ["SafeRequestMixin", "write_json_error"]


class SafeRequestMixin(tornado.web.RequestHandler):
    """Never puts the query string (which may hold ``?token=``) in a log line."""

    def _request_summary(self) -> str:
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"


def write_json_error(
    handler: tornado.web.RequestHandler,
    status: int,
    error: str,
    message: str,
    retry_after: float | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Finish ``handler`` with PROTOCOL.md's JSON error body and status.

    ``extra`` adds fields to the body (never ``error`` or ``message``)."""
    handler.clear()
    handler.set_status(status)
    handler.set_header("Content-Type", "application/json")
    handler.set_header("Cache-Control", "no-store")
    if retry_after is not None:
        handler.set_header("Retry-After", str(max(1, math.ceil(retry_after))))
    body: dict[str, Any] = {**(extra or {}), "error": error, "message": message}
    handler.finish(json.dumps(body))
