"""Who is the client, and may this browser page open a socket here?

``client_ip`` believes ``X-Forwarded-For`` only when the socket peer is a trusted
proxy (Heroku's router, a load balancer): it walks the header from the right and
returns the first address that is not itself a trusted proxy, so a client cannot
pick its own address by sending the header. ``origin_allowed`` implements the
``security.allowed_origins`` rule of CONFIG.md.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = ["TrustedProxies", "client_ip", "origin_allowed"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """A set of CIDRs parsed once."""

    def __init__(self, cidrs: Sequence[str]) -> None:
        self._nets: tuple[Network, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in cidrs
        )

    def __bool__(self) -> bool:
        return bool(self._nets)

    def contains(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr.strip())
        except ValueError:
            return False
        return any(ip in net for net in self._nets)


def client_ip(peer: str, forwarded_for: str | None, trusted: TrustedProxies) -> str:
    """The address that counts for lockouts and logs."""
    if not forwarded_for or not trusted or not trusted.contains(peer):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            # A malformed hop was written by someone we do not trust: stop there.
            return peer
        if not trusted.contains(hop):
            return hop
    return hops[0] if hops else peer


def _origin_tuple(value: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    if port is None:
        port = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(scheme)
    return scheme, parts.hostname.lower(), port


def origin_allowed(origin: str | None, host: str | None, allowed: Sequence[str]) -> bool:
    """True when a browser upgrade from ``origin`` may proceed.

    No ``Origin`` header (a non-browser client) is allowed. With an allowlist the
    origin must equal one entry exactly (scheme, host and port; no suffix or
    prefix matching, so ``https://app.example.com.evil.example`` never matches
    ``https://app.example.com``). With an empty list the origin's host[:port] must
    be the request's ``Host``.
    """
    if origin is None:
        return True
    got = _origin_tuple(origin)
    if got is None:
        return False
    if allowed:
        return any(_origin_tuple(a) == got for a in allowed)
    if not host:
        return False
    _scheme, o_host, o_port = got
    h = _origin_tuple(f"{got[0]}://{host}")
    return h is not None and h[1] == o_host and h[2] == o_port
