"""Shared bits of every Squall HTTP handler: safe request summaries, JSON errors."""

from __future__ import annotations

import json
import logging
import math
from types import TracebackType
from typing import Any

import tornado.web

app_log = logging.getLogger("tornado.application")
gen_log = logging.getLogger("tornado.general")

__all__ = ["SafeRequestMixin", "write_json_error"]

log = logging.getLogger("squall.refusal")


class SafeRequestMixin(tornado.web.RequestHandler):
    """Never puts the query string (which may hold ``?token=``) in a log line."""

    def request_summary(self) -> str:
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Tornado's uncaught-exception log, without the query string or the request repr."""
        if isinstance(value, tornado.web.HTTPError):
            message = value.get_message()
            if message:
                gen_log.warning("%d %s: %s", value.status_code, self.request_summary(), message)
        else:
            app_log.error("Uncaught exception %s", self.request_summary(), exc_info=value)


def write_json_error(
    handler: tornado.web.RequestHandler,
    status: int,
    error: str,
    message: str,
    retry_after: float | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Finish ``handler`` with PROTOCOL.md's JSON error body and status.

    Every refusal (handshake, login, token, server API) passes here and is logged at
    INFO on ``squall.refusal`` with its status, reason code and message (which says
    what to change); the path is logged without its query string (no token).
    ``extra`` adds fields to the body (never ``error`` or ``message``).
    """
    req = handler.request
    log.info(
        "refused %s %s (%s): %d %s: %s",
        req.method,
        req.path,
        req.remote_ip,
        status,
        error,
        message,
    )
    handler.clear()
    handler.set_status(status)
    handler.set_header("Content-Type", "application/json")
    handler.set_header("Cache-Control", "no-store")
    if retry_after is not None:
        handler.set_header("Retry-After", str(max(1, math.ceil(retry_after))))
    body: dict[str, Any] = {**(extra or {}), "error": error, "message": message}
    handler.finish(json.dumps(body))
