"""HMAC signatures of server-API requests (PROTOCOL.md, "HTTP endpoints").

A backend signs each request with the shared ``api.secret``::

    X-Squall-Timestamp: <Unix ms>
    X-Squall-Nonce:     <16 to 128 of A-Z a-z 0-9 . _ ~ + / = ->
    X-Squall-Signature: hex(HMAC-SHA256(api.secret,
                            METHOD "\\n" PATH "\\n" timestamp "\\n" nonce "\\n" body))

``METHOD`` is upper case, ``PATH`` the URL path without the query string
(``/api/publish``), ``timestamp`` and ``nonce`` exactly as sent in the headers and
``body`` the raw request body bytes (empty for ``GET``).

Guarantees of :meth:`RequestVerifier.verify`, which raises :class:`SignatureError`
on any refusal:

* a missing or malformed header, a timestamp further than ``api.replay_window_s``
  from the server's clock (either direction), or a signature that is not exactly
  64 hex digits is refused before any nonce is consumed;
* the signature is compared with :func:`hmac.compare_digest` (constant time), and
  it covers method, path, timestamp, nonce and body, so none of them can be
  swapped;
* only then is the nonce claimed, cluster-wide, for twice the window
  (:meth:`Backend.claim_nonce`): a nonce already seen is refused, so a captured
  request cannot be replayed inside the window, and outside it the timestamp check
  refuses it. An attacker without the secret cannot burn a legitimate nonce;
* with no ``api.secret`` configured every signed request is refused;
* messages never contain the secret, the expected signature or the body.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping

from core.clock import Clock
from core.errors import SignatureError

__all__ = [
    "NONCE_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "RequestVerifier",
    "SignatureError",
    "sign",
    "signed_headers",
    "string_to_sign",
]

TIMESTAMP_HEADER = "X-Squall-Timestamp"
NONCE_HEADER = "X-Squall-Nonce"
SIGNATURE_HEADER = "X-Squall-Signature"

_TIMESTAMP = re.compile(r"[0-9]{1,16}")
_NONCE = re.compile(r"[A-Za-z0-9._~+/=-]{16,128}")
_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")
# Nonces live in the backend's nonce space next to other users of claim_nonce.
_NONCE_NAMESPACE = "api:"


def string_to_sign(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """The exact bytes the HMAC covers."""
    head = f"{method.upper()}\n{path}\n{timestamp}\n{nonce}\n"
    return head.encode("utf-8") + body


def sign(secret: str, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    """Lower-case hex HMAC-SHA256 of :func:`string_to_sign` under ``secret``."""
    message = string_to_sign(method, path, timestamp, nonce, body)
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signed_headers(
    secret: str,
    method: str,
    path: str,
    body: bytes,
    *,
    now_ms: int,
    nonce: str | None = None,
) -> dict[str, str]:
    """The three headers of a signed request (for backends, clients and tests)."""
    nonce = nonce if nonce is not None else secrets.token_urlsafe(18)
    timestamp = str(now_ms)
    return {
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: sign(secret, method, path, timestamp, nonce, body),
    }


class RequestVerifier:
    """Checks signed requests against one secret, one clock and a nonce store.

    ``claim_nonce`` is :meth:`core.backend.base.Backend.claim_nonce` (or anything
    with its contract); it may raise ``BackendUnavailable``, which propagates so the
    caller can answer 503 (the check fails closed).
    """

    def __init__(
        self,
        secret: str | None,
        window_s: int,
        clock: Clock,
        claim_nonce: Callable[[str, int], Awaitable[bool]],
    ) -> None:
        if window_s <= 0:
            raise ValueError("api.replay_window_s: must be > 0")
        self._key = None if secret is None else secret.encode("utf-8")
        self._window_ms = window_s * 1000
        self._nonce_ttl_s = 2 * window_s
        self._clock = clock
        self._claim = claim_nonce

    @property
    def enabled(self) -> bool:
        """False without ``api.secret``: every signed request is refused."""
        return self._key is not None

    async def verify(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> None:
        """Return when the request is authentic and fresh; raise :class:`SignatureError`."""
        if self._key is None:
            raise SignatureError("disabled", "signed requests are disabled (no api.secret)")
        timestamp = headers.get(TIMESTAMP_HEADER)
        nonce = headers.get(NONCE_HEADER)
        signature = headers.get(SIGNATURE_HEADER)
        if timestamp is None or nonce is None or signature is None:
            raise SignatureError(
                "missing_header",
                f"{TIMESTAMP_HEADER}, {NONCE_HEADER} and {SIGNATURE_HEADER} are required",
            )
        if _TIMESTAMP.fullmatch(timestamp) is None:
            raise SignatureError("bad_timestamp", "timestamp must be Unix milliseconds")
        now_ms = int(self._clock.wall() * 1000)
        if abs(now_ms - int(timestamp)) > self._window_ms:
            raise SignatureError("stale", "timestamp outside the replay window")
        if _NONCE.fullmatch(nonce) is None:
            raise SignatureError("bad_nonce", "nonce must be 16 to 128 URL-safe characters")
        if _SIGNATURE.fullmatch(signature) is None:
            raise SignatureError("bad_signature", "signature must be 64 hex digits")
        expected = hmac.new(
            self._key, string_to_sign(method, path, timestamp, nonce, body), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise SignatureError("bad_signature", "signature does not match")
        if not await self._claim(_NONCE_NAMESPACE + nonce, self._nonce_ttl_s):
            raise SignatureError("replayed", "nonce already used")
