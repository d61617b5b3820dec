"""Binding the listening socket(s), and the HTTP server's TLS, with one-line failures.

Guarantees: :func:`listen` returns bound, listening sockets or raises
:class:`~core.startup.StartupError` naming the key to change: a port already in use
(``server.port``), a port the process may not bind (``server.port``), an address
not on this machine (``server.host``). :func:`load_tls` does the same for the
certificate files of ``server.tls`` (missing, unreadable, not matching). Neither
ever lets a traceback out for these causes.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Callable

from tornado.netutil import bind_sockets

from core.config import Settings
from core.startup import StartupError

__all__ = ["bind", "listen", "load_tls"]


def listen(settings: Settings, reuse_port: bool) -> list[socket.socket]:
    """``bind_sockets`` on ``server.host:server.port``; see the module docstring."""
    server = settings.server
    return bind(server.host, server.port, reuse_port, "server.port", server.backlog)


def bind(
    host: str, port: int, reuse_port: bool, key: str, backlog: int = 128
) -> list[socket.socket]:
    """``bind_sockets`` on ``host:port`` with a listen queue of ``backlog`` (the kernel
    caps it at ``net.core.somaxconn``); a failure names ``key`` (the port's config key)."""
    try:
        return bind_sockets(port, host, reuse_port=reuse_port, backlog=backlog)
    except PermissionError as exc:
        raise StartupError(
            key,
            f"not allowed to listen on {host}:{port} ({exc.strerror}): use a port above 1023 "
            "(PORT / --port) or give the process the right to bind it",
        ) from None
    except socket.gaierror as exc:
        raise StartupError("server.host", f"cannot resolve {host!r}: {exc.strerror}") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                key,
                f"{host}:{port} is already in use by another process: stop it or choose "
                "another port (PORT / --port)",
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise StartupError(
                "server.host", f"{host} is not an address of this machine: use 0.0.0.0"
            ) from None
        raise StartupError(key, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def load_tls(build: Callable[[], ssl.SSLContext | None]) -> ssl.SSLContext | None:
    """Run ``build`` (the server's TLS context factory), turning file errors into one line."""
    try:
        return build()
    except FileNotFoundError as exc:
        raise StartupError("server.tls.cert_file", f"file not found: {exc.filename}") from None
    except PermissionError as exc:
        raise StartupError("server.tls.cert_file", f"file not readable: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise StartupError(
            "server.tls.key_file", f"cannot load the certificate and key: {exc}"
        ) from None
