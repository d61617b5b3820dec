"""Who is the client, and may this browser page open a socket here?

``client_ip`` believes ``X-Forwarded-For`` only when the socket peer is a trusted
proxy (Heroku's router, a load balancer): it walks the header from the right and
returns the first address that is not itself a trusted proxy, so a client cannot
pick its own address by sending the header. ``origin_allowed`` implements the
``security.allowed_origins`` rule of CONFIG.md.

Addresses are normalised with :mod:`ipaddress` before anything keys on them
(:func:`canonical_ip`): one address has one spelling whatever the proxy wrote
(``::FFFF:10.0.0.1``, ``[2001:db8::1]:443``, ``10.0.0.1:5678`` and ``2001:DB8:0::1``
are ``10.0.0.1`` and ``2001:db8::1``). :func:`lockout_key` then groups IPv6
addresses by a prefix (``auth.lockout.ipv6_prefix``, /64 by default): one host
usually owns a whole /64, so counting single IPv6 addresses would let it rotate
through 2**64 lockout buckets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = ["TrustedProxies", "canonical_ip", "client_ip", "lockout_key", "origin_allowed"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _port(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit()


def canonical_ip(text: str) -> str | None:
    """The canonical text of an address as a client or proxy wrote it; None if it is none.

    Accepted spellings: ``a.b.c.d``, ``a.b.c.d:port``, an IPv6 address in any case
    and compression, ``[v6]``, ``[v6]:port``, a zone id (``fe80::1%eth0``, dropped).
    IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``) become the IPv4 address.
    """
    s = text.strip()
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep or (rest and not (rest[0] == ":" and _port(rest[1:]))):
            return None
    elif s.count(":") == 1:
        host, _, port = s.partition(":")
        if not _port(port):
            return None
    else:
        host = s
    host = host.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def lockout_key(addr: str, ipv6_prefix: int) -> str:
    """What a lockout counts: the IPv4 address, or the IPv6 ``/ipv6_prefix`` network.

    ``addr`` is normalised first (:func:`canonical_ip`); a value that is no address
    at all (``unknown``) is its own key.
    """
    canon = canonical_ip(addr)
    if canon is None:
        return addr
    ip = ipaddress.ip_address(canon)
    if ip.version == 6 and ipv6_prefix < 128:
        return str(ipaddress.ip_network(f"{canon}/{ipv6_prefix}", strict=False))
    return canon


class TrustedProxies:
    """A set of CIDRs parsed once."""

    def __init__(self, cidrs: Sequence[str]) -> None:
        self._nets: tuple[Network, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in cidrs
        )

    def __bool__(self) -> bool:
        return bool(self._nets)

    def contains(self, addr: str) -> bool:
        canon = canonical_ip(addr)
        if canon is None:
            return False
        ip = ipaddress.ip_address(canon)
        return any(ip in net for net in self._nets)


def client_ip(peer: str, forwarded_for: str | None, trusted: TrustedProxies) -> str:
    """The address that counts for lockouts and logs, in its canonical spelling.

    Hops may carry ports (``10.0.0.1:5678``, ``[2001:db8::1]:443``): a proxy that
    appends them must not put every client in the proxy's own bucket.
    """
    peer = canonical_ip(peer) or peer
    if not forwarded_for or not trusted or not trusted.contains(peer):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        canon = canonical_ip(hop)
        if canon is None:
            # A malformed hop was written by someone we do not trust: stop there.
            return peer
        if not trusted.contains(canon):
            return canon
    return canonical_ip(hops[0]) or peer if hops else peer


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
