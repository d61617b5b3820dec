"""Minting good and bad JWTs for tests (unit and integration).

HS* tokens are built by hand (base64url + HMAC), independently of PyJWT, so a test can
sign with any key, including a public key PEM that PyJWT would refuse as an HMAC
secret, and so verification is checked against a second implementation. Asymmetric
tokens are signed with PyJWT. Key pairs are generated once per process.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

__all__ = [
    "SECRET",
    "b64url",
    "ec_keypair",
    "ed25519_keypair",
    "good_claims",
    "make_token",
    "rsa_keypair",
    "tamper_payload",
    "unsigned_none_token",
]

SECRET = "test-secret-" + "x" * 40

_HMAC_DIGESTS: dict[str, Callable[[], Any]] = {
    "HS256": hashlib.sha256,
    "HS384": hashlib.sha384,
    "HS512": hashlib.sha512,
}


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWS uses it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def make_token(
    claims: dict[str, Any],
    secret: str | bytes = SECRET,
    alg: str = "HS256",
    headers: dict[str, Any] | None = None,
) -> str:
    """Sign ``claims`` with ``alg``.

    For HS256/384/512 ``secret`` is the raw HMAC key (any bytes, PEM included) and
    ``headers`` are merged over ``{"alg": alg, "typ": "JWT"}``, so
    ``headers={"alg": "HS512"}`` yields a header that lies about the signing
    algorithm. For asymmetric algorithms ``secret`` is the private key PEM.
    """
    if alg in _HMAC_DIGESTS:
        header = {"alg": alg, "typ": "JWT", **(headers or {})}
        signing_input = f"{b64url(_json(header))}.{b64url(_json(claims))}"
        key = secret.encode("utf-8") if isinstance(secret, str) else secret
        digest = hmac.new(key, signing_input.encode("ascii"), _HMAC_DIGESTS[alg]).digest()
        return f"{signing_input}.{b64url(digest)}"
    return jwt.encode(claims, secret, algorithm=alg, headers=headers)


def good_claims(
    sub: str = "alice", ttl: int = 300, *, now: float | None = None, **extra: Any
) -> dict[str, Any]:
    """Valid access-token claims: ``sub``, ``iat``, ``exp = iat + ttl``, random ``jti``.

    ``now`` defaults to ``time.time()``; pass a ManualClock's ``wall()`` in unit tests.
    ``extra`` claims are added or override the defaults.
    """
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": sub,
        "iat": issued,
        "exp": issued + ttl,
        "jti": secrets.token_urlsafe(12),
    }
    claims.update(extra)
    return claims


def unsigned_none_token(claims: dict[str, Any], *, alg: str = "none") -> str:
    """An unsecured JWS (``alg: none``, empty signature), built by hand."""
    header = {"alg": alg, "typ": "JWT"}
    return f"{b64url(_json(header))}.{b64url(_json(claims))}."


def tamper_payload(token: str, **changes: Any) -> str:
    """``token`` with its payload claims updated by ``changes``, old signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(_b64url_decode(payload))
    claims.update(changes)
    return f"{header}.{b64url(_json(claims))}.{signature}"


def _pem_pair(private: PrivateKeyTypes) -> tuple[str, str]:
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public_pem = (
        private.public_key()
        .public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        .decode("ascii")
    )
    return private_pem, public_pem


@functools.cache
def rsa_keypair() -> tuple[str, str]:
    """(private PEM, public PEM) of an RSA-2048 key, for RS256/PS256."""
    return _pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@functools.cache
def ec_keypair() -> tuple[str, str]:
    """(private PEM, public PEM) of a P-256 key, for ES256."""
    return _pem_pair(ec.generate_private_key(ec.SECP256R1()))


@functools.cache
def ed25519_keypair() -> tuple[str, str]:
    """(private PEM, public PEM) of an Ed25519 key, for EdDSA."""
    return _pem_pair(ed25519.Ed25519PrivateKey.generate())
