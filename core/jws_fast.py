"""A fast path for verifying HMAC-signed JWTs (HS256/384/512), in front of PyJWT.

PyJWT parses a token twice (header, then whole token) and re-examines the key on
every call: about 85 µs per token on the reference machine, a large share of a
handshake. This path does the same checks for the common, well-formed case in a
fraction of that, and declines (returns ``None``) on anything unusual so that PyJWT
decides and reports it.

Guarantee: :meth:`HsFastPath.decode` returns a payload only if the token is three
strict base64url segments (alphabet ``A-Za-z0-9-_``, no padding), its header is a
JSON object holding only ``alg`` (one of the allowed HS algorithms), ``typ`` and
``kid``, the HMAC of ``header.payload`` under the configured secret equals the
signature (constant-time compare), and the payload is a JSON object: a token PyJWT
would also accept. It never raises for a bad token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["HsFastPath"]

_DIGESTS: dict[str, Callable[[], Any]] = {
    "HS256": hashlib.sha256,
    "HS384": hashlib.sha384,
    "HS512": hashlib.sha512,
}
_HEADER_KEYS = frozenset({"alg", "typ", "kid"})
# Strict base64url, no padding: Python's decoder would also take '+', '/' and '=' (and
# map '+' like '-'), which PyJWT refuses; such tokens are left to PyJWT.
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_MAX_HEADERS = 64  # distinct header segments remembered (real deployments have a few)


def _b64url(segment: str) -> bytes:
    """Decode strict, canonical base64url (as PyJWT does): the unused low bits of the
    last character must be zero, so each byte string has exactly one encoding.
    Raises ValueError otherwise."""
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=") != segment.encode("ascii"):
        raise ValueError("non-canonical base64url")
    return data


class HsFastPath:
    """HS* verification for the algorithms in ``secrets`` (alg -> secret)."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._keys = {
            alg: (secret.encode("utf-8"), _DIGESTS[alg])
            for alg, secret in secrets.items()
            if alg in _DIGESTS
        }
        # header segment -> alg, for headers already seen well-formed
        self._headers: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self._keys)

    def _alg_of(self, segment: str) -> str | None:
        alg = self._headers.get(segment)
        if alg is not None:
            return alg
        try:
            header = json.loads(_b64url(segment))
        except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
            return None
        if not isinstance(header, dict) or not set(header) <= _HEADER_KEYS:
            return None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._keys:
            return None
        if "kid" in header and not isinstance(header["kid"], str):
            return None  # PyJWT refuses a non-string key id
        if len(self._headers) < _MAX_HEADERS:
            self._headers[segment] = alg
        return alg

    def decode(self, token: str) -> dict[str, Any] | None:
        """The verified payload, or ``None`` to let PyJWT decide."""
        if _COMPACT.fullmatch(token) is None:
            return None
        head, body, sig = token.split(".")
        if len(head) % 4 == 1 or len(body) % 4 == 1 or len(sig) % 4 == 1:
            return None  # no valid base64 has this length; PyJWT says so
        alg = self._alg_of(head)
        if alg is None:
            return None
        key, digest = self._keys[alg]
        try:
            signature = _b64url(sig)
            expected = hmac.new(key, f"{head}.{body}".encode("ascii"), digest).digest()
        except (ValueError, binascii.Error, UnicodeEncodeError):
            return None
        if not hmac.compare_digest(expected, signature):
            return None
        try:
            payload = json.loads(_b64url(body))
        except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
            return None
        return payload if isinstance(payload, dict) else None
