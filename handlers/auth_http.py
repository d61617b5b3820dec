"""``POST /auth/login``, ``/auth/refresh``, ``/auth/logout``: thin adapters over
:class:`core.tokens.TokenService`, plus :class:`JsonBodyHandler`, the base of every
JSON endpoint (the server API too).

Guarantees of :class:`JsonBodyHandler`:

* a request body is never held beyond ``max_body_bytes``: a larger
  ``Content-Length`` is answered 413 without reading the body (the connection is
  closed), a chunked body growing past it is cut by Tornado;
* a ``Content-Length`` that is not 1 to 19 ASCII digits (``²``, ``-1``, ``1_0``,
  `` 5``) is answered 400 before anything else, never a 500;
* every answer, errors included (405, 500), is PROTOCOL.md's JSON with
  ``Cache-Control: no-store``, so no token or error page lands in a cache;
* the client address is the socket peer, or ``X-Forwarded-For`` only when the peer
  is one of ``server.trusted_proxies`` (:func:`core.netaddr.client_ip`);
* the bearer token is read from the ``Authorization`` header only, never from the
  query string (URLs end up in logs and browser histories).
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import tornado.web
from tornado.http1connection import HTTP1Connection

from core.auth import JwtSettings, TokenIssuer
from core.netaddr import TrustedProxies, client_ip
from core.node import Node
from core.tokens import TokenRefused, TokenService
from core.users import load_users
from handlers.base import SafeRequestMixin, write_json_error

__all__ = [
    "JsonBodyHandler",
    "LoginHandler",
    "LogoutHandler",
    "RefreshHandler",
    "auth_routes",
    "build_token_service",
]

_AUTH_BODY_BYTES = 16 * 1024


def _ascii_digits(text: str) -> bool:
    """True for 1 to 19 ASCII digits only (no sign, space, Unicode digit or underscore)."""
    return 0 < len(text) < 20 and text.isascii() and text.isdigit()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@tornado.web.stream_request_body
class JsonBodyHandler(SafeRequestMixin):
    """Bounded JSON request bodies and JSON answers (see the module docstring)."""

    max_body_bytes = _AUTH_BODY_BYTES
    trusted: TrustedProxies

    def prepare(self) -> None:
        self._body = bytearray()
        length = self.request.headers.get("Content-Length")
        if length is not None and not _ascii_digits(length):
            # str.isdigit() alone accepts "²" or "٣", which int() then refuses (or reads).
            write_json_error(self, 400, "bad_request", "Content-Length must be ASCII digits")
            return
        if length is not None and int(length) > self.max_body_bytes:
            # Finishing before the body is read makes Tornado close the connection
            # instead of reading it.
            write_json_error(self, 413, "too_large", "request body too large")
            return
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection):
            connection.set_max_body_size(self.max_body_bytes)

    def data_received(self, chunk: bytes) -> None:
        if len(self._body) + len(chunk) <= self.max_body_bytes:
            self._body += chunk

    @property
    def body(self) -> bytes:
        """The raw request body (at most ``max_body_bytes``)."""
        return bytes(self._body)

    def json_object(self) -> dict[str, Any] | None:
        """The body as a JSON object; otherwise answers 400 and returns None."""
        try:
            value = json.loads(self._body or b"null", parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            write_json_error(self, 400, "bad_request", "body must be a JSON object")
            return None
        return value

    def client_address(self) -> str:
        peer = self.request.remote_ip or "unknown"
        return client_ip(peer, self.request.headers.get("X-Forwarded-For"), self.trusted)

    def bearer(self) -> str | None:
        """``Authorization: Bearer <token>``, or None."""
        scheme, _, value = self.request.headers.get("Authorization", "").partition(" ")
        return value.strip() or None if scheme.lower() == "bearer" else None

    def write_json(self, body: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Pragma", "no-cache")
        self.finish(json.dumps(body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        try:
            phrase = HTTPStatus(status_code).phrase
        except ValueError:
            phrase = "error"
        error = phrase.lower().replace(" ", "_").replace("-", "_")
        write_json_error(self, status_code, error, phrase)


class _TokenHandler(JsonBodyHandler):
    SUPPORTED_METHODS = ("POST",)

    def initialize(self, tokens: TokenService, trusted: TrustedProxies) -> None:
        self.tokens = tokens
        self.trusted = trusted

    def refuse(self, e: TokenRefused) -> None:
        write_json_error(self, e.status, e.error, e.message, e.retry_after)


class LoginHandler(_TokenHandler):
    """``{"username", "password"}`` -> a token pair; 404 without ``auth.users_file``."""

    async def post(self) -> None:
        if not self.tokens.login_enabled:
            return self.refuse(
                TokenRefused(404, "login_disabled", "login is not enabled on this server")
            )
        body = self.json_object()
        if body is None:
            return None
        try:
            pair = await self.tokens.login(
                body.get("username"), body.get("password"), self.client_address()
            )
        except TokenRefused as e:
            return self.refuse(e)
        self.write_json(pair.to_json())
        return None


class RefreshHandler(_TokenHandler):
    """``{"refresh_token"}`` -> a new pair; the presented token is spent."""

    async def post(self) -> None:
        body = self.json_object()
        if body is None:
            return None
        try:
            pair = await self.tokens.refresh(body.get("refresh_token"), self.client_address())
        except TokenRefused as e:
            return self.refuse(e)
        self.write_json(pair.to_json())
        return None


class LogoutHandler(_TokenHandler):
    """``Authorization: Bearer <access token>`` -> revoked, its connections closed 4010."""

    async def post(self) -> None:
        try:
            nodes = await self.tokens.logout(self.bearer(), self.client_address())
        except TokenRefused as e:
            return self.refuse(e)
        self.write_json({"logged_out": True, "nodes": nodes})
        return None


def build_token_service(node: Node) -> TokenService:
    """The node's token service; reads ``auth.users_file`` (ValueError naming it if bad)."""
    settings = node.settings
    jwt_settings = JwtSettings.from_auth_config(settings.auth)
    users = None if settings.auth.users_file is None else load_users(settings.auth.users_file)
    return TokenService(
        node.backend,
        jwt_settings,
        TokenIssuer(jwt_settings, node.clock),
        node.verifier,
        users,
        settings.auth.lockout,
        node.metrics,
    )


def auth_routes(node: Node, trusted: TrustedProxies) -> list[Any]:
    """The ``/auth/*`` routes of one node."""
    deps = {"tokens": build_token_service(node), "trusted": trusted}
    return [
        (r"/auth/login", LoginHandler, deps),
        (r"/auth/refresh", RefreshHandler, deps),
        (r"/auth/logout", LogoutHandler, deps),
    ]
