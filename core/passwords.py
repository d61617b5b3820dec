"""Password hashes for the users file (``auth.users_file``).

Format: ``scrypt$<n>$<r>$<p>$<salt b64>$<key b64>`` (standard base64 with padding),
produced by :func:`hash_password` with n=2**14, r=8, p=1, a 16-byte random salt and
a 32-byte derived key. ``python server.py hash-password`` prints one.

Guarantees:

* :func:`verify_password` never raises on a malformed or tampered hash: it returns
  ``False``. It compares in constant time (:func:`hmac.compare_digest`).
* The cost parameters are read back from the hash so stronger hashes written later
  still verify, but they are bounded, so a hostile users file cannot make one login
  allocate gigabytes or spin for minutes.
* Passwords are normalised to Unicode NFC before hashing so the same password typed
  on two keyboards (composed vs decomposed accents) gives the same key.
* :func:`dummy_hash` is a valid hash of a random password; verifying against it
  costs the same as a real check, so a login for an unknown user takes as long as
  one with a wrong password (no user enumeration by timing).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import secrets
import unicodedata

__all__ = ["dummy_hash", "hash_password", "verify_password"]

_SCHEME = "scrypt"
_N = 2**14
_R = 8
_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32

# Upper bounds for parameters read from a stored hash (see module docstring).
_MAX_N = 2**20
_MAX_R = 32
_MAX_P = 16
_MAX_MEMORY = 256 * 1024 * 1024


def _normalise(password: str) -> bytes:
    return unicodedata.normalize("NFC", password).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _derive(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # scrypt needs about 128 * n * r bytes; give it exactly what the parameters
    # require (plus slack) instead of the 32 MiB library default.
    maxmem = 128 * n * r * (p + 1) + 1024 * 1024
    return hashlib.scrypt(
        _normalise(password), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length
    )


def hash_password(password: str) -> str:
    """Return the encoded scrypt hash of ``password`` with a fresh random salt."""
    salt = os.urandom(_SALT_BYTES)
    key = _derive(password, salt, _N, _R, _P, _KEY_BYTES)
    return f"{_SCHEME}${_N}${_R}${_P}${_b64(salt)}${_b64(key)}"


def _parse_int(text: str, low: int, high: int) -> int | None:
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if low <= value <= high else None


def verify_password(password: str, encoded: str) -> bool:
    """Return whether ``password`` matches ``encoded``; ``False`` for any malformed hash."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        return False
    n = _parse_int(parts[1], 2, _MAX_N)
    r = _parse_int(parts[2], 1, _MAX_R)
    p = _parse_int(parts[3], 1, _MAX_P)
    if n is None or r is None or p is None or n & (n - 1) or 128 * n * r * p > _MAX_MEMORY:
        return False
    try:
        salt = base64.b64decode(parts[4], validate=True)
        expected = base64.b64decode(parts[5], validate=True)
    except (binascii.Error, ValueError):
        return False
    if not salt or not 16 <= len(expected) <= 64:
        return False
    actual = _derive(password, salt, n, r, p, len(expected))
    return hmac.compare_digest(actual, expected)


@functools.cache
def dummy_hash() -> str:
    """A valid hash of a random, never-revealed password, computed once per process.

    Verify the submitted password against it when the user does not exist.
    """
    return hash_password(secrets.token_urlsafe(32))
