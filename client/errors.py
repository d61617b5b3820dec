"""The errors of the Squall Python client; every one derives from :class:`SquallError`.

Which call raises which, and when, is stated in :mod:`client.connection`;
:mod:`client` re-exports the classes. The two functions turn a refused WebSocket
handshake into an :class:`AuthRefused` and tell whether reconnecting may pay off.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "AuthRefused",
    "Closed",
    "ConnectionLost",
    "GaveUp",
    "RequestFailed",
    "SquallError",
    "refusal_from_response",
    "refusal_is_transient",
]


class SquallError(Exception):
    """Base class of every error this client raises."""


class AuthRefused(SquallError):
    """The server refused the WebSocket upgrade with an HTTP status (401, 403, 429, 503...).

    ``body`` is the server's JSON error body (``{"error", "message"}``, empty when
    absent); ``retry_after`` the ``Retry-After`` header in seconds, if any.
    """

    def __init__(self, status: int, body: Mapping[str, Any], retry_after: float | None) -> None:
        super().__init__(f"handshake refused: {status} {dict(body)}")
        self.status = status
        self.body = dict(body)
        self.retry_after = retry_after


class RequestFailed(SquallError):
    """The server answered a request with ``err``."""

    def __init__(self, code: int, reason: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.retry_after = retry_after


class Closed(SquallError):
    """The client is closed for good: a non-reconnectable close code, or :meth:`close`.

    ``code`` is the WebSocket close code (``None`` when unknown).
    """

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed: {code} {reason}")
        self.code = code
        self.reason = reason


class ConnectionLost(SquallError):
    """The connection dropped while a request was in flight; the client reconnects.

    The request may or may not have taken effect; it is not resent.
    """

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection lost: {code} {reason}")
        self.code = code
        self.reason = reason


class GaveUp(Closed):
    """The client stopped reconnecting: ``attempts`` consecutive tries failed
    (``Backoff.max_attempts``). ``code``/``reason`` describe the last failure."""

    def __init__(self, attempts: int, code: int | None, reason: str) -> None:
        super().__init__(code, reason)
        self.args = (f"gave up after {attempts} tries: {code} {reason}",)
        self.attempts = attempts


def refusal_from_response(status: int, body: bytes | None, retry_after: str | None) -> AuthRefused:
    """The :class:`AuthRefused` for a handshake answered with HTTP ``status``.

    ``body`` that is not a JSON object counts as empty; a ``Retry-After`` that is not
    a number of seconds as absent. Never raises.
    """
    parsed: Any = {}
    if body:
        with contextlib.suppress(ValueError):
            parsed = json.loads(body)
    after: float | None = None
    if retry_after:
        with contextlib.suppress(ValueError):
            after = float(retry_after)
    return AuthRefused(status, parsed if isinstance(parsed, dict) else {}, after)


def refusal_is_transient(e: AuthRefused) -> bool:
    """Whether reconnecting may succeed later: 503 (draining, full, backend down) and an
    IP lockout (429) pass; bad tokens and the per-user connection limit do not."""
    if e.status == 503:
        return True
    return e.status == 429 and e.body.get("error") != "too_many_connections"
