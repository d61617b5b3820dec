"""JWT access and refresh tokens: verification and issuance (PROTOCOL.md, Authentication).

Pure logic over an injected :class:`~core.clock.Clock`; no I/O after construction (key
files are read by :meth:`JwtSettings.from_auth_config`, keys are parsed once in
``__init__``), no logging, no global state.

Guarantees of :meth:`TokenVerifier.verify`:

* the header ``alg`` must be one of the configured algorithms, and ``none`` is never
  accepted, whatever the configuration says;
* the key is chosen by the header's algorithm family, never by the token's content
  alone: ``HS*`` is checked only with ``secret``, asymmetric algorithms only with the
  public key, so a token HMAC-signed with the public key PEM is refused;
* every time check uses the injected clock with ``leeway_s``; PyJWT's own clock is
  never consulted;
* every refusal is an :class:`AuthError` whose ``reason`` names the failed rule and
  whose message contains neither the token nor any text taken from it.
"""

from __future__ import annotations

import fnmatch
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import (
    EllipticCurvePrivateKey,
    EllipticCurvePublicKey,
)
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey, Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_pem_public_key,
)
from jwt.algorithms import Algorithm, HMACAlgorithm, get_default_algorithms
from jwt.types import Options

from core.clock import Clock
from core.errors import AuthError
from core.jws_fast import HsFastPath

__all__ = [
    "AuthError",
    "Claims",
    "JwtSettings",
    "TokenIssuer",
    "TokenType",
    "TokenVerifier",
    "room_allowed",
]

TokenType: TypeAlias = Literal["access", "refresh"]

_PublicKey: TypeAlias = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey
_PrivateKey: TypeAlias = (
    RSAPrivateKey | EllipticCurvePrivateKey | Ed25519PrivateKey | Ed448PrivateKey
)
_PUBLIC_KEY_TYPES = (RSAPublicKey, EllipticCurvePublicKey, Ed25519PublicKey, Ed448PublicKey)
_PRIVATE_KEY_TYPES = (RSAPrivateKey, EllipticCurvePrivateKey, Ed25519PrivateKey, Ed448PrivateKey)

# JOSE algorithm names are case-sensitive, but no spelling of "none" may ever slip
# through a configuration, so it is dropped case-insensitively.
_NONE = "none"
# RFC 7518 section 3.2: an HMAC key MUST be at least as long as the hash output.
_MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified claims of a token that Squall relies on.

    ``exp``, ``iat`` and ``nbf`` are whole Unix seconds (fractions dropped).
    ``rooms`` is ``None`` when the token has no ``rooms`` claim (any public room).
    ``family`` is the ``fam`` claim: required in refresh tokens, present in access
    tokens issued by ``/auth/login`` and ``/auth/refresh``.
    """

    sub: str
    exp: int
    jti: str
    iat: int | None = None
    nbf: int | None = None
    rooms: tuple[str, ...] | None = None
    role: str | None = None
    typ: str | None = None
    family: str | None = None
    #: ``rooms_auto``: rooms the connection joins at ``welcome`` without a ``join``
    rooms_auto: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JwtSettings:
    """What token verification and issuance need from the ``auth:`` config section.

    Keys are PEM text, not file names. ``secret`` and ``private_key`` are kept out of
    ``repr`` so a logged settings object never leaks them.
    """

    algorithms: tuple[str, ...] = ("HS256",)
    secret: str | None = field(default=None, repr=False)
    public_key: str | None = None
    private_key: str | None = field(default=None, repr=False)
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 5.0
    access_ttl_s: int = 900
    refresh_ttl_s: int = 2_592_000

    def __post_init__(self) -> None:
        if not self.algorithms:
            raise ValueError("auth.algorithms: must list at least one algorithm")
        if not (self.leeway_s >= 0 and math.isfinite(self.leeway_s)):
            raise ValueError("auth.leeway_s: must be a finite number >= 0")
        if self.access_ttl_s <= 0:
            raise ValueError("auth.access_ttl_s: must be > 0")
        if self.refresh_ttl_s <= 0:
            raise ValueError("auth.refresh_ttl_s: must be > 0")

    @classmethod
    def from_auth_config(cls, cfg: Any) -> JwtSettings:
        """Build settings from an object with the ``AuthConfig`` fields.

        Reads the PEM files named by ``public_key_file`` / ``private_key_file``;
        an unreadable file raises :class:`ValueError` naming the config key.
        """
        return cls(
            algorithms=tuple(cfg.algorithms),
            secret=cfg.secret,
            public_key=_read_pem(cfg.public_key_file, "auth.public_key_file"),
            private_key=_read_pem(cfg.private_key_file, "auth.private_key_file"),
            audience=cfg.audience,
            issuer=cfg.issuer,
            leeway_s=float(cfg.leeway_s),
            access_ttl_s=int(cfg.access_ttl_s),
            refresh_ttl_s=int(cfg.refresh_ttl_s),
        )


class TokenVerifier:
    """Verifies access and refresh tokens against :class:`JwtSettings`.

    Construction raises :class:`ValueError` (naming the config key) when an allowed
    algorithm has no usable key: an ``HS*`` algorithm without a secret at least as long
    as its hash (32, 48, 64 bytes; RFC 7518 section 3.2), an asymmetric one without a
    public key of the matching type and curve. The public key defaults to the one
    derived from ``private_key`` when only that is set.
    """

    def __init__(self, settings: JwtSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        public: _PublicKey | None = None
        if settings.public_key is not None:
            public = _load_public_key(settings.public_key)
        elif settings.private_key is not None:
            public = _load_private_key(settings.private_key).public_key()
        # One key per accepted algorithm: the lookup by header alg is both the
        # allowlist check and the family-based key choice.
        self._keys: dict[str, str | _PublicKey] = {}
        for name, impl in _allowed(settings.algorithms):
            key: str | _PublicKey
            if isinstance(impl, HMACAlgorithm):
                key = _require_secret(settings.secret, name)
            elif public is None:
                raise ValueError(f"auth.public_key_file: required for algorithm {name}")
            else:
                key = public
            key_name = "auth.secret" if isinstance(impl, HMACAlgorithm) else "auth.public_key_file"
            _check_key_fits(impl, key, name, key_name)
            self._keys[name] = key
        if not self._keys:
            raise ValueError("auth.algorithms: no usable algorithm ('none' is never accepted)")
        self._fast = HsFastPath({a: k for a, k in self._keys.items() if isinstance(k, str)})
        self._options: Options = {
            "verify_signature": True,
            # Time, audience, issuer and claim types are checked below, against the
            # injected clock and with our own reasons.
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": False,
            "verify_iss": False,
            "verify_sub": False,
            "verify_jti": False,
            "require": [],
        }

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms actually accepted (the configured ones minus ``none``)."""
        return tuple(self._keys)

    def verify(self, token: str, expected_type: TokenType = "access") -> Claims:
        """Return the claims of ``token`` or raise :class:`AuthError`.

        An ``access`` check accepts ``typ`` absent or ``"access"``; a ``refresh``
        check requires ``typ == "refresh"`` and a ``fam`` claim.
        """
        return self._check_claims(self._payload(token), expected_type)

    def verify_room(self, token: str, room: str, uid: str) -> int:
        """Check a room token (claims ``sub``, ``room``, ``exp``; ``typ`` absent or
        ``"room"``) for ``uid`` joining ``room``; its ``exp`` in seconds, or
        :class:`AuthError`. Same keys, algorithms and clock as :meth:`verify`.
        """
        payload = self._payload(token)
        if _optional_str(payload, "typ") not in (None, "room"):
            raise AuthError("wrong_type", "expected a room token")
        if _required_str(payload, "sub") != uid:
            raise AuthError("wrong_user", "room token is for another user")
        if payload.get("room") != room:
            raise AuthError("wrong_room", "room token is for another room")
        exp = _number(payload.get("exp"))
        if exp is None:
            raise AuthError("missing_claim", "claim 'exp' must be a number")
        if self._clock.wall() > exp + self._settings.leeway_s:
            raise AuthError("expired", "room token has expired")
        return math.floor(exp)

    def _payload(self, token: str) -> Mapping[str, Any]:
        """The payload of ``token`` once its signature verifies (claims not checked)."""
        if not isinstance(token, str) or not token:
            raise AuthError("malformed", "token is not a non-empty string")
        if self._fast:
            fast = self._fast.decode(token)
            if fast is not None:
                return fast
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            # from None: PyJWT messages may quote parts of the token.
            raise AuthError("malformed", "token is not a JWS compact serialization") from None
        alg = header.get("alg")
        # "none" is never a key of _keys; the explicit test keeps that visible here.
        if not isinstance(alg, str) or alg.lower() == _NONE or alg not in self._keys:
            raise AuthError("algorithm", "token algorithm is not accepted")
        key = self._keys[alg]
        try:
            # Only the header's algorithm is allowed, so PyJWT checks the signature
            # with exactly the algorithm the key above was chosen for.
            payload = jwt.decode(token, key, algorithms=[alg], options=self._options)
        except jwt.InvalidSignatureError:
            raise AuthError("bad_signature", "token signature does not verify") from None
        except (jwt.InvalidAlgorithmError, jwt.InvalidKeyError):
            raise AuthError("algorithm", "token algorithm is not accepted") from None
        except jwt.PyJWTError:
            raise AuthError("malformed", "token cannot be decoded") from None
        return payload

    def _check_claims(self, payload: Mapping[str, Any], expected_type: TokenType) -> Claims:
        sub = _required_str(payload, "sub")
        jti = _required_str(payload, "jti")
        exp = _number(payload.get("exp"))
        if exp is None:
            raise AuthError("missing_claim", "claim 'exp' must be a number")
        iat = _optional_number(payload, "iat")
        nbf = _optional_number(payload, "nbf")
        typ = _optional_str(payload, "typ")
        family = _optional_str(payload, "fam")
        role = _optional_str(payload, "role")
        rooms = _optional_rooms(payload)
        rooms_auto = _optional_rooms(payload, "rooms_auto") or ()

        if expected_type == "refresh":
            if typ != "refresh":
                raise AuthError("wrong_type", "expected a refresh token")
            if not family:
                raise AuthError("missing_claim", "refresh token needs a 'fam' claim")
        elif typ not in (None, "access"):
            raise AuthError("wrong_type", "expected an access token")

        settings = self._settings
        if settings.issuer is not None and payload.get("iss") != settings.issuer:
            raise AuthError("issuer", "token issuer is not accepted")
        if settings.audience is not None and settings.audience not in _audiences(payload):
            raise AuthError("audience", "token audience is not accepted")

        now = self._clock.wall()
        leeway = settings.leeway_s
        if now > exp + leeway:
            raise AuthError("expired", "token has expired")
        if nbf is not None and nbf > now + leeway:
            raise AuthError("not_yet_valid", "token is not valid yet (nbf)")
        if iat is not None and iat > now + leeway:
            raise AuthError("not_yet_valid", "token is issued in the future (iat)")

        return Claims(
            sub=sub,
            exp=math.floor(exp),
            jti=jti,
            iat=None if iat is None else math.floor(iat),
            nbf=None if nbf is None else math.floor(nbf),
            rooms=rooms,
            role=role,
            typ=typ,
            family=family,
            rooms_auto=rooms_auto,
        )


class TokenIssuer:
    """Issues tokens signed with the first accepted algorithm of the settings.

    ``HS*`` signs with ``secret``; asymmetric algorithms with ``private_key``. A
    missing key is not an error at construction (a node may only verify): issuing then
    raises ``AuthError("no_signing_key")``. A key that is present but unusable for the
    algorithm (bad PEM, wrong type or curve, short secret) raises :class:`ValueError`
    at construction. Every token carries ``sub``, ``iat``, ``exp = iat + ttl``, a
    fresh random ``jti``, ``typ`` and, when configured, ``aud`` and ``iss``.
    """

    def __init__(self, settings: JwtSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        allowed = _allowed(settings.algorithms)
        if not allowed:
            raise ValueError("auth.algorithms: no algorithm to sign with ('none' never is)")
        self._alg, impl = allowed[0]
        self._key: str | _PrivateKey | None = None
        if isinstance(impl, HMACAlgorithm):
            if settings.secret is not None:
                self._key = _require_secret(settings.secret, self._alg)
        elif settings.private_key is not None:
            self._key = _load_private_key(settings.private_key)
        if self._key is not None:
            key_name = "auth.secret" if isinstance(impl, HMACAlgorithm) else "auth.private_key_file"
            _check_key_fits(impl, self._key, self._alg, key_name)

    @property
    def algorithm(self) -> str:
        """The algorithm tokens are signed with."""
        return self._alg

    def issue_access(
        self,
        sub: str,
        *,
        rooms: Sequence[str] | None = None,
        role: str | None = None,
        ttl_s: int | None = None,
        family: str | None = None,
    ) -> tuple[str, Claims]:
        """Return a new access token for ``sub`` and its claims.

        ``ttl_s`` defaults to ``access_ttl_s``. ``rooms`` are ``fnmatch`` patterns
        (see :func:`room_allowed`); ``None`` leaves the claim out. ``family`` (claim
        ``fam``) names the refresh family the token was issued with, so a logout can
        revoke that family; ``None`` leaves the claim out.
        """
        if isinstance(rooms, str) or (
            rooms is not None and not all(isinstance(r, str) for r in rooms)
        ):
            raise ValueError("rooms must be a sequence of str patterns")
        ttl = self._settings.access_ttl_s if ttl_s is None else ttl_s
        extra: dict[str, Any] = {}
        if rooms is not None:
            extra["rooms"] = list(rooms)
        if role is not None:
            extra["role"] = role
        if family is not None:
            if not isinstance(family, str) or not family:
                raise ValueError("family must be a non-empty str")
            extra["fam"] = family
        return self._issue(sub, "access", ttl, extra)

    def issue_refresh(self, sub: str, family: str) -> tuple[str, Claims]:
        """Return a new refresh token of ``family`` (claim ``fam``) for ``sub``.

        Each call has a new random ``jti``, so the caller can spend tokens one by one
        while revoking a whole family at once.
        """
        if not isinstance(family, str) or not family:
            raise ValueError("family must be a non-empty str")
        return self._issue(sub, "refresh", self._settings.refresh_ttl_s, {"fam": family})

    def _issue(
        self, sub: str, typ: TokenType, ttl: int, extra: dict[str, Any]
    ) -> tuple[str, Claims]:
        if not isinstance(sub, str) or not sub:
            raise ValueError("sub must be a non-empty str")
        if ttl <= 0:
            raise ValueError("ttl must be > 0 seconds")
        if self._key is None:
            raise AuthError("no_signing_key", f"no key configured to sign {self._alg} tokens")
        # JWT NumericDate in whole seconds; flooring never issues a token from the future.
        now = math.floor(self._clock.wall())
        jti = secrets.token_urlsafe(16)
        payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl, "jti": jti}
        payload["typ"] = typ
        payload.update(extra)
        if self._settings.audience is not None:
            payload["aud"] = self._settings.audience
        if self._settings.issuer is not None:
            payload["iss"] = self._settings.issuer
        token = jwt.encode(payload, self._key, algorithm=self._alg)
        rooms = extra.get("rooms")
        claims = Claims(
            sub=sub,
            exp=now + ttl,
            jti=jti,
            iat=now,
            rooms=None if rooms is None else tuple(rooms),
            role=extra.get("role"),
            typ=typ,
            family=extra.get("fam"),
        )
        return token, claims


def room_allowed(claims: Claims, room: str) -> bool:
    """Whether the token's ``rooms`` patterns let its user join ``room``.

    No ``rooms`` claim allows every room (public-room rules still apply elsewhere);
    otherwise the room must match at least one pattern with case-sensitive
    :func:`fnmatch.fnmatchcase` (``*``, ``?``, ``[seq]``), so an empty list allows none.
    """
    if claims.rooms is None:
        return True
    return any(fnmatch.fnmatchcase(room, pattern) for pattern in claims.rooms)


# -- helpers -------------------------------------------------------------------------


def _read_pem(path: str | None, key_name: str) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{key_name}: cannot read {path}: {exc}") from exc


def _allowed(names: Sequence[str]) -> list[tuple[str, Algorithm]]:
    """The configured algorithms minus ``none``, each with its PyJWT implementation."""
    known = get_default_algorithms()
    allowed: list[tuple[str, Algorithm]] = []
    for name in names:
        if name.lower() == _NONE:
            continue
        impl = known.get(name)
        if impl is None:
            raise ValueError(f"auth.algorithms: unknown algorithm {name!r}")
        allowed.append((name, impl))
    return allowed


def _require_secret(secret: str | None, alg: str) -> str:
    if secret is None:
        raise ValueError(f"auth.secret: required for algorithm {alg}")
    minimum = _MIN_SECRET_BYTES.get(alg, 32)
    if len(secret.encode("utf-8")) < minimum:
        raise ValueError(f"auth.secret: must be at least {minimum} bytes for {alg}")
    return secret


def _check_key_fits(impl: Algorithm, key: object, alg: str, key_name: str) -> None:
    # PyJWT's own preparation rejects a key of the wrong type or curve, and a PEM
    # used as an HMAC secret; doing it once here turns that into a config error.
    try:
        impl.prepare_key(key)
    except (TypeError, ValueError, jwt.InvalidKeyError) as exc:
        raise ValueError(f"{key_name}: key does not fit algorithm {alg}: {exc}") from None


def _load_public_key(pem: str) -> _PublicKey:
    try:
        key = load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"auth.public_key_file: not a PEM public key: {exc}") from None
    if not isinstance(key, _PUBLIC_KEY_TYPES):
        raise ValueError("auth.public_key_file: key type is not RSA, EC or EdDSA")
    return key


def _load_private_key(pem: str) -> _PrivateKey:
    try:
        key = load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError) as exc:
        # The message of cryptography never quotes key material.
        raise ValueError(f"auth.private_key_file: not an unencrypted PEM key: {exc}") from None
    if not isinstance(key, _PRIVATE_KEY_TYPES):
        raise ValueError("auth.private_key_file: key type is not RSA, EC or EdDSA")
    return key


def _number(value: object) -> float | None:
    """A finite JSON number as float, else None (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    return result if math.isfinite(result) else None


def _required_str(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise AuthError("missing_claim", f"claim {name!r} must be a non-empty string")
    try:
        # JSON escapes can smuggle lone surrogates in, which no frame could carry.
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise AuthError("malformed", f"claim {name!r} is not valid UTF-8") from None
    return value


def _optional_number(payload: Mapping[str, Any], name: str) -> float | None:
    if name not in payload:
        return None
    value = _number(payload[name])
    if value is None:
        raise AuthError("malformed", f"claim {name!r} must be a number")
    return value


def _optional_str(payload: Mapping[str, Any], name: str) -> str | None:
    if name not in payload:
        return None
    value = payload[name]
    if not isinstance(value, str):
        raise AuthError("malformed", f"claim {name!r} must be a string")
    return value


def _optional_rooms(payload: Mapping[str, Any], name: str = "rooms") -> tuple[str, ...] | None:
    if name not in payload:
        return None
    rooms = payload[name]
    if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
        raise AuthError("malformed", f"claim '{name}' must be a list of strings")
    return tuple(rooms)


def _audiences(payload: Mapping[str, Any]) -> list[str]:
    aud = payload.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []
