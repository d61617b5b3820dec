"""Refusals of HTTP requests, and counting authentication failures toward lockouts.

Every refused handshake, login, token or server-API request ends as an HTTP answer
with PROTOCOL.md's JSON body ``{"error", "message"}``, a status and, for 429/503, a
``Retry-After``. :class:`Refusal` carries exactly that; the handlers render it.
"""

from __future__ import annotations

from typing import Protocol

from core.backend.base import Backend, BackendUnavailable
from core.errors import Refusal
from core.metrics import Metrics
from core.netaddr import lockout_key

__all__ = ["LockoutSettings", "Refusal", "count_auth_failure"]


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
