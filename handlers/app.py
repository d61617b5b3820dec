"""Builds the Tornado application: routes, handler dependencies, access log.

Dependencies reach handlers through the URLSpec kwargs (``initialize``), never
through module globals.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import tornado.web
from tornado.ioloop import PeriodicCallback

from core.heartbeat import Sweeper
from core.netaddr import TrustedProxies
from core.node import Node
from core.session import Session
from handlers.api import api_routes
from handlers.auth_http import auth_routes
from handlers.ops import (
    HealthHandler,
    MetricsElsewhereHandler,
    MetricsHandler,
    ReadyHandler,
    metrics_exposure,
)
from handlers.ws import SquallSocket

__all__ = ["make_app", "make_metrics_app", "start_heartbeat"]

access_log = logging.getLogger("tornado.access")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Access log without the query string: ``?token=`` never reaches a log line."""
    status = handler.get_status()
    if status < 400:
        log_method = access_log.info
    elif status < 500:
        log_method = access_log.warning
    else:
        log_method = access_log.error
    req = handler.request
    log_method(
        "%d %s %s (%s) %.2fms",
        status,
        req.method,
        req.path,
        req.remote_ip,
        1000.0 * req.request_time(),
    )


def make_app(node: Node, extra_routes: list[Any] | None = None) -> tornado.web.Application:
    """The application serving one node.

    Raises ValueError naming ``auth.users_file`` when that file is malformed.
    """
    session = Session(node)
    trusted = TrustedProxies(node.settings.server.trusted_proxies)
    deps = {"node": node}
    routes: list[Any] = [
        (
            r"/ws",
            SquallSocket,
            {
                "node": node,
                "session": session,
                "trusted": trusted,
            },
        ),
        (r"/healthz", HealthHandler, deps),
        (r"/readyz", ReadyHandler, deps),
        (r"/metrics", _metrics_handler(node), deps),
        *auth_routes(node, trusted),
        *api_routes(node, trusted),
    ]
    routes.extend(extra_routes or [])
    routes.extend(_static_routes(node.settings.server.static, node.settings.server.dashboard))
    return tornado.web.Application(
        routes,
        log_function=_log_request,
        websocket_max_message_size=node.settings.limits.max_frame_bytes,
    )


def _metrics_handler(node: Node) -> type[tornado.web.RequestHandler]:
    """``/metrics`` on the main port: served, or 404 saying where it went."""
    if metrics_exposure(node.settings.server) == "main":
        return MetricsHandler
    return MetricsElsewhereHandler


def _static_routes(demo: bool, dashboard: bool) -> list[Any]:
    """``static/``: the dashboard (``dashboard.*``) and the demo (everything else),
    each only when switched on (``server.dashboard``, ``server.static``)."""
    if not STATIC_DIR.is_dir():
        return []
    files = {"path": str(STATIC_DIR), "default_filename": "index.html"}
    routes: list[Any] = []
    if dashboard:
        routes.append((r"/(dashboard\.[A-Za-z0-9.]+)", tornado.web.StaticFileHandler, files))
    if demo:
        routes.append((r"/((?!dashboard\.).*)", tornado.web.StaticFileHandler, files))
    return routes


def make_metrics_app(node: Node) -> tuple[tornado.web.Application, int] | None:
    """The application of ``server.metrics_port`` (``/metrics`` only) and its port,
    or None when /metrics is not served on a port of its own."""
    port = node.settings.server.metrics_port
    if port is None:
        return None
    app = tornado.web.Application(
        [(r"/metrics", MetricsHandler, {"node": node})], log_function=_log_request
    )
    return app, port


def start_heartbeat(node: Node) -> tuple[Sweeper, PeriodicCallback]:
    """The node's ONE heartbeat timer: a PeriodicCallback driving the sweeper."""
    sweeper = Sweeper(node)
    timer = PeriodicCallback(sweeper.sweep, node.settings.heartbeat.interval_s * 1000)
    timer.start()
    return sweeper, timer
