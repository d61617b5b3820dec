"""Refusals of HTTP requests, and counting authentication failures toward lockouts.

Every refused handshake, login, token or server-API request ends as an HTTP answer
with PROTOCOL.md's JSON body ``{"error", "message"}``, a status and, for 429/503, a
``Retry-After``. :class:`Refusal` carries exactly that; the handlers render it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from core.backend.base import Backend, BackendUnavailable
from core.errors import Refusal
from core.metrics import Metrics
from core.netaddr import lockout_key

__all__ = [
    "LockoutSettings",
    "Refusal",
    "count_auth_failure",
    "origin_refusal",
    "token_refusal",
]


class LockoutSettings(Protocol):
    """The ``auth.lockout`` keys."""

    @property
    def failures(self) -> int: ...

    @property
    def window_s(self) -> float: ...

    @property
    def block_s(self) -> float: ...

    @property
    def ipv6_prefix(self) -> int: ...


async def count_auth_failure(
    backend: Backend, metrics: Metrics, lockout: LockoutSettings, ip: str, reason: str
) -> None:
    """Count one authentication failure of ``ip`` (metric and sliding-window lockout).

    The count goes to :func:`core.netaddr.lockout_key` of ``ip`` (canonical IPv4, or
    the IPv6 network of ``lockout.ipv6_prefix``), as every lockout read does.

    The refusal that caused it stands whatever happens here; when the backend is
    down only the count is lost (and ``squall_backend_errors_total`` says so).
    """
    metrics.auth_failures.labels(reason).inc()
    key = lockout_key(ip, lockout.ipv6_prefix)
    try:
        await backend.record_auth_failure(key, lockout.failures, lockout.window_s, lockout.block_s)
    except BackendUnavailable:
        metrics.backend_errors.inc()


def origin_refusal(origin: str | None, host: str | None, allowed: Sequence[str]) -> str:
    """The ``message`` of a refused browser Origin: what was refused, what to change.

    Both values come from request headers (no line breaks possible); they are cut to
    a sane length before they reach a log line.
    """
    shown, host_shown = (origin or "")[:200], (host or "")[:200]
    if allowed:
        return f"origin {shown} not in security.allowed_origins: add it there to allow it"
    return (
        f"origin {shown} not in security.allowed_origins, which is empty (same host "
        f"only) while this request's Host is {host_shown}: add {shown} to "
        "security.allowed_origins, or open the page from the host the socket connects to"
    )


_TOKEN_HINTS = {
    "expired": "get a fresh one (POST /auth/refresh, or log in again)",
    "not_yet_valid": "its nbf/iat is in the future: check the issuer's clock",
    "bad_signature": "not signed with this server's key (auth.secret / auth.public_key_file)",
    "malformed": "not a JWT: send the access token itself",
    "algorithm": "signed with an algorithm not in auth.algorithms",
    "audience": "its aud does not match auth.audience",
    "issuer": "its iss does not match auth.issuer",
    "wrong_type": "a refresh token was sent where an access token is needed",
    "revoked": "it was revoked (logout): log in again",
}


def token_refusal(reason: str) -> str:
    """The ``message`` of a refused token: the reason code and what to do about it."""
    hint = _TOKEN_HINTS.get(reason)
    return f"invalid token: {reason}" + (f": {hint}" if hint else "")
