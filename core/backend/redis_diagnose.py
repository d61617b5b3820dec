"""Why a Redis connection failed: a configuration error, or something to wait out.

:func:`diagnose` looks at the exception a connection attempt raised (the whole
cause chain) and answers either ``None`` (transient: refused, unreachable, timed
out, reset: retry) or ``(key, problem)``: a mistake no retry can fix, with the
configuration key to change and what to change it to. Configuration errors:

* the password: ``invalid username-password pair`` (wrong password or user),
  ``Authentication required`` (the URL has none), a password sent to a Redis that
  has none; key ``backend.url`` (``REDIS_URL``);
* TLS verification: ``CERTIFICATE_VERIFY_FAILED`` (unknown CA, self-signed
  certificate, wrong host name); key ``backend.ssl_ca_file`` (or
  ``backend.ssl_cert_reqs: none``, encrypted but unverified, as Heroku Redis needs);
* a client certificate demanded by the server; key ``backend.ssl_cert_file``;
* the wrong scheme: ``redis://`` at a port that speaks TLS, ``rediss://`` at one
  that does not. The symptoms (a reset, a timeout) also have innocent causes, so
  the port is probed once (a TLS handshake, or a plain ``PING``, bounded by
  ``timeout_s``) and only a positive answer makes it a configuration error.

The problem text never contains the URL's password.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from urllib.parse import urlsplit

from redis.exceptions import AuthenticationError, ResponseError

__all__ = ["diagnose", "speaks_plain_redis", "speaks_tls"]


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _text(chain: list[BaseException]) -> str:
    return " | ".join(f"{type(e).__name__}: {e}" for e in chain)


async def speaks_tls(host: str, port: int, timeout_s: float) -> bool:
    """True when ``host:port`` completes a TLS handshake (certificate not checked)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx), timeout_s
        )
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    writer.close()
    with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
        await asyncio.wait_for(writer.wait_closed(), timeout_s)
    return True


async def speaks_plain_redis(host: str, port: int, timeout_s: float) -> bool:
    """True when ``host:port`` answers a plain-text ``PING`` like Redis does."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"PING\r\n")
        reply = await asyncio.wait_for(reader.read(64), timeout_s)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), timeout_s)
    return reply.startswith((b"+PONG", b"-NOAUTH", b"-ERR"))


async def diagnose(exc: BaseException, url: str, timeout_s: float = 1.0) -> tuple[str, str] | None:
    """``(key, problem)`` when ``exc`` (from connecting to ``url``) is a configuration
    error, ``None`` when it may go away by itself; see the module docstring."""
    chain = _chain(exc)
    text = _text(chain)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    tls = scheme.startswith("rediss")
    where = f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
    if any(isinstance(e, AuthenticationError) for e in chain) or "WRONGPASS" in text:
        if "required" in text.lower():
            return (
                "backend.url",
                f"Redis at {where} requires a password and the URL has none: "
                "set REDIS_URL to redis://:PASSWORD@host:port (or rediss://)",
            )
        return (
            "backend.url",
            f"Redis at {where} refused the credentials (invalid username-password pair): "
            "fix the password (and user) in REDIS_URL / backend.url",
        )
    if any(isinstance(e, ResponseError) for e in chain) and "without any password" in text:
        return (
            "backend.url",
            f"the URL carries a password but Redis at {where} has none configured: "
            "remove it from REDIS_URL / backend.url",
        )
    if "CERTIFICATE_VERIFY_FAILED" in text or any(
        isinstance(e, ssl.SSLCertVerificationError) for e in chain
    ):
        reason = next(
            (str(e.verify_message) for e in chain if isinstance(e, ssl.SSLCertVerificationError)),
            "certificate verify failed",
        )
        return (
            "backend.ssl_ca_file",
            f"the certificate of Redis at {where} failed verification "
            f"(CERTIFICATE_VERIFY_FAILED: {reason}): set "
            "backend.ssl_ca_file to the CA that signed it, or backend.ssl_cert_reqs: none "
            "to encrypt without verifying (Heroku Redis)",
        )
    if "CERTIFICATE_REQUIRED" in text or "certificate required" in text:
        return (
            "backend.ssl_cert_file",
            f"Redis at {where} requires a client certificate: set backend.ssl_cert_file "
            "and backend.ssl_key_file",
        )
    host, port = parts.hostname or "localhost", parts.port or 6379
    low = text.lower()
    wrong_scheme = (not tls and ("reset" in low or "closed" in low or "timeout" in low)) and (
        await speaks_tls(host, port, timeout_s)
    )
    if wrong_scheme:
        return (
            "backend.url",
            f"{where} speaks TLS but the URL says redis://: use rediss:// "
            "(with backend.ssl_ca_file or backend.ssl_cert_reqs as needed)",
        )
    plain_port = (
        tls and ("wrong_version_number" in low or "record layer" in low or "timeout" in low)
    ) and await speaks_plain_redis(host, port, timeout_s)
    if plain_port:
        return (
            "backend.url",
            f"{where} does not speak TLS but the URL says rediss://: use redis://",
        )
    return None
