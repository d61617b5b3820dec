"""Squall's composition root: read the configuration, build every object, serve.

    python server.py [--config PATH] [--port N] [--workers N] [--node-id ID]
    python server.py hash-password
    python server.py check-config [--config PATH]
    python server.py issue-token --sub UID [--ttl S] [--role R] [--rooms P ...]

This is the only module that names concrete classes (MemoryBackend, RedisBackend).
SIGTERM / SIGINT: stop accepting, close every connection with 1012 spread over
``server.drain_s``, deregister from the backend, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
from collections.abc import Coroutine, Mapping
from typing import Any

from tornado.httpserver import HTTPServer

from core.auth import JwtSettings, TokenIssuer, TokenVerifier
from core.backend.base import Backend, BackendOptions, BackendUnavailable
from core.backend.memory import MemoryBackend
from core.cli import cli_overrides, parse_args, run_check_config, run_hash_password
from core.clock import Clock, SystemClock
from core.config import ConfigError, Settings, load
from core.logs import configure as configure_logging
from core.metrics import Metrics, enable_multiprocess, mark_worker_dead, multiprocess_dir
from core.namespaces import rules_for
from core.node import Node
from core.protocol import CloseCode
from core.shutdown import finish
from core.startup import StartupError, check_backend, connect_backend
from core.users import load_users
from core.workers import Supervisor
from handlers.app import make_app, make_metrics_app, start_heartbeat
from handlers.listen import bind, listen, load_tls
from handlers.tornado_private import accept_in_batches_of

log = logging.getLogger("squall.server")


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def build_backend(settings: Settings, node_id: str, clock: Clock) -> Backend:
    """MemoryBackend without a URL, RedisBackend with one."""
    options = BackendOptions(
        key_prefix=settings.backend.key_prefix,
        history_size=settings.rooms.history_size,
        history_ttl_s=settings.rooms.history_ttl_s,
        offline_max_messages=settings.offline.max_messages,
        offline_ttl_s=settings.offline.ttl_s,
        offline_max_bytes=settings.offline.max_bytes,
        offline_max_per_sender=settings.offline.max_per_sender,
        session_ttl_s=2 * settings.heartbeat.interval_s,
        presence_events=settings.rooms.presence_events,
        room_history=rules_for(settings.rooms).history if settings.rooms.namespaces else None,
    )
    if settings.backend.url is None:
        return MemoryBackend(node_id, options, clock)
    from core.backend.redis import RedisBackend

    b = settings.backend
    assert b.url is not None
    return RedisBackend(
        node_id,
        options,
        clock,
        b.url,
        ssl_ca_file=b.ssl_ca_file,
        ssl_cert_file=b.ssl_cert_file,
        ssl_key_file=b.ssl_key_file,
        ssl_cert_reqs=b.ssl_cert_reqs,
        probe_interval_s=b.probe_interval_s,
        probe_timeout_s=b.probe_timeout_s,
        socket_timeout_s=b.socket_timeout_s,
    )


def build_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS 1.2+ for wss://; with ``client_ca_file`` a client certificate is required."""
    tls = settings.server.tls
    if tls.cert_file is None or tls.key_file is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(tls.client_ca_file)
    return ctx


def http_server_options(settings: Settings) -> dict[str, Any]:
    """HTTPServer keyword arguments: TLS, and a body cap for the HTTP endpoints."""
    return {
        "ssl_options": load_tls(lambda: build_ssl_context(settings)),
        # The largest legitimate body is a server-API publish of one max-size frame.
        "max_body_size": 2 * settings.limits.max_frame_bytes + 65536,
    }


async def drain(node: Node, drain_s: float) -> None:
    """Close every connection with 1012, spread evenly over half of ``drain_s``, then wait.

    The spread is paced by the clock, not by a per-close sleep: connection ``i`` of
    ``n`` is closed at ``i / n`` of the window whatever ``n`` is (a sleep per close
    would be under the timer resolution at large ``n`` and close everyone at once).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + drain_s
    conns = list(node.hub)
    spread = drain_s / 2
    n = len(conns)
    for i, conn in enumerate(conns):
        due = start + spread * i / n
        if due - loop.time() >= 0.005:
            await asyncio.sleep(due - loop.time())
        conn.close(CloseCode.RESTART, "service restart")
    try:
        await asyncio.wait_for(node.life.wait_empty(), max(0.0, deadline - loop.time()))
    except TimeoutError:
        log.warning("%d connections still open after drain_s", len(node.hub))


async def _keep_connecting(node: Node, url: str | None, stop: asyncio.Event) -> int:
    """After ``backend_wait_s``: retry in the background while serving 503s.

    Returns 2 (and sets ``stop``) on a configuration error, else 0.
    """
    try:
        await connect_backend(node, url, stop, deadline=None, max_delay_s=5.0)
    except StartupError as e:
        log.error("%s", e)
        stop.set()
        return 2
    return 0


async def serve(settings: Settings, node_id: str, reuse_port: bool) -> int:
    """Run one node until SIGTERM/SIGINT, then drain. Returns the exit code.

    Start-up order: the backend first (bounded by ``server.backend_wait_s``), then
    the port: a router that sends traffic as soon as the port accepts finds the
    node ready. A configuration error (bad password, TLS verification, the wrong
    scheme, a taken port, unusable certificate files) ends it with status 2 and one
    line on stderr.
    """
    clock = SystemClock()
    backend = build_backend(settings, node_id, clock)
    verifier = TokenVerifier(JwtSettings.from_auth_config(settings.auth), clock)
    node = Node(settings, backend, verifier, clock, Metrics(multiprocess_dir()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    url = settings.backend.url
    try:
        up = await connect_backend(
            node, url, stop, deadline=loop.time() + settings.server.backend_wait_s
        )
        if stop.is_set():
            await node.stop()
            return 0
        options = http_server_options(settings)
        sockets = listen(settings, reuse_port)
        metrics_server = start_metrics_server(node, reuse_port)
    except StartupError as e:
        print(e, file=sys.stderr)
        await node.stop()
        return 2
    app = make_app(node)
    server = HTTPServer(app, **options)
    accept_in_batches_of(settings.server.backlog)
    server.add_sockets(sockets)
    retry: asyncio.Task[int] | None = None
    if not up:
        retry = asyncio.ensure_future(_keep_connecting(node, url, stop))
    _sweeper, timer = start_heartbeat(node)
    host, port = settings.server.host, sockets[0].getsockname()[1]
    log.info(
        "squall node %s listening on %s:%d%s",
        node_id,
        host,
        port,
        "" if up else " (backend down: /readyz and handshakes answer 503 until it is up)",
    )
    await stop.wait()
    code = 0
    if retry is not None:
        retry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            code = await retry
    log.info("draining %d connections over %.1fs", len(node.hub), settings.server.drain_s)
    node.life.draining = True
    node.metrics.draining.set(1)
    server.stop()
    await drain(node, settings.server.drain_s)
    timer.stop()
    await finish(node)
    await server.close_all_connections()
    if metrics_server is not None:
        metrics_server.stop()
    log.info("node %s stopped", node_id)
    return code


def start_metrics_server(node: Node, reuse_port: bool) -> HTTPServer | None:
    """``/metrics`` on ``server.metrics_port`` (plain HTTP, same host), if configured.

    Raises :class:`StartupError` (one line, exit 2) when the port cannot be bound.
    """
    built = make_metrics_app(node)
    if built is None:
        return None
    app, port = built
    sockets = bind(node.settings.server.host, port, reuse_port, "server.metrics_port")
    server = HTTPServer(app)
    server.add_sockets(sockets)
    log.info("metrics on %s:%d", node.settings.server.host, port)
    return server


def tune_gc() -> None:
    """Keep CPython's cyclic collector off the fan-out path.

    Every write allocates short-lived objects (futures, loop handles); with the
    default thresholds they keep promoting into full collections that walk every
    long-lived connection object (measured: ~30 % of fan-out CPU, 100+ ms pauses;
    docs/benchmarks.md). Objects alive after start-up are frozen out of collection,
    and the young-generation threshold is raised so collections are rarer and cheap.
    Cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop when it is installed, else on the default asyncio loop.

    Tornado runs on any asyncio loop; uvloop's is faster at socket readiness and
    callbacks, which is most of what a node does between fan-outs.
    """
    try:
        import uvloop
    except ImportError:
        log.info("event loop: asyncio")
        return asyncio.run(main)
    log.info("event loop: uvloop")
    result: int = uvloop.run(main)
    return result


def run_node(settings: Settings, node_id: str, reuse_port: bool) -> int:
    configure_logging(settings.log.level, settings.log.format, node_id)
    tune_gc()
    return run_loop(serve(settings, node_id, reuse_port))


def run_workers(settings: Settings, base_id: str | None) -> int:
    """Fork ``server.workers`` nodes sharing the port (SO_REUSEPORT) and supervise them.

    Metrics: prometheus_client's multiprocess mode in a fresh directory (removed at
    exit), so any worker's ``/metrics`` answers for all of them.
    """
    configure_logging(settings.log.level, settings.log.format, f"{base_id or 'squall'}-parent")
    metrics_dir = tempfile.mkdtemp(prefix="squall-metrics-")

    def worker(slot: int) -> int:
        enable_multiprocess(metrics_dir)
        node_id = f"{base_id}-w{slot}" if base_id else default_node_id()
        return run_node(settings, node_id, reuse_port=True)

    try:
        supervisor = Supervisor(
            settings.server.workers, worker, on_exit=lambda pid: mark_worker_dead(pid, metrics_dir)
        )
        return supervisor.run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def check_connection(settings: Settings) -> int:
    """``check-config --connect``: 0 connected, 2 configuration error, 1 unreachable."""
    url = settings.backend.url
    if url is None:
        print("backend: memory (no backend.url): nothing to connect to")
        return 0
    backend = build_backend(settings, f"check-{default_node_id()}", SystemClock())
    try:
        asyncio.run(check_backend(backend, url))
    except StartupError as e:
        print(e, file=sys.stderr)
        return 2
    except BackendUnavailable as e:
        print(f"backend unreachable: {e}", file=sys.stderr)
        return 1
    from core.backend.redis_client import mask_url

    print(f"backend: connected to {mask_url(url)}")
    return 0


def issue_token(
    settings: Settings, sub: str, ttl: int | None, role: str | None, rooms: list[str] | None
) -> str:
    issuer = TokenIssuer(JwtSettings.from_auth_config(settings.auth), SystemClock())
    token, _claims = issuer.issue_access(sub, rooms=rooms, role=role, ttl_s=ttl)
    return token


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    if args.command == "hash-password":
        return run_hash_password(sys.stdin, sys.stdout, sys.stderr)
    if args.command == "check-config":
        code = run_check_config(args, env, sys.stdout, sys.stderr)
        if code == 0 and args.connect:
            code = check_connection(load(args.config, env, cli_overrides(args)))
        return code
    try:
        settings = load(args.config, env, cli_overrides(args))
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    if settings.auth.users_file is not None:
        try:
            load_users(settings.auth.users_file)
        except ValueError as e:
            print(f"config error: {e}", file=sys.stderr)
            return 2
    if args.command == "issue-token":
        print(issue_token(settings, args.sub, args.ttl, args.role, args.rooms))
        return 0
    if settings.server.workers > 1:
        return run_workers(settings, settings.server.node_id)
    return run_node(settings, settings.server.node_id or default_node_id(), reuse_port=False)


if __name__ == "__main__":
    sys.exit(main())
