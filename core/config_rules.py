"""Squall's configuration rules: ranges and cross-key checks over typed settings.

:func:`core.config.load` builds the typed :class:`~core.config.Settings` first, then
calls :func:`validate`; this module holds every rule applied to the typed values and
the tables they use (``docs/configuration.md`` documents each rule).

Guarantees of :func:`validate`:

* It returns only if every rule holds: integer minimums, float signs, the port range,
  the node id, trusted proxy CIDRs, TLS and Redis-TLS file pairs, the Redis URL scheme,
  the JWT algorithms and their keys (files exist, load, fit the algorithms, match each
  other), secret lengths, allowed origins and the outbound buffer size.
* Otherwise it calls ``fail(key, problem)`` (which must raise) for the first rule
  broken, naming the dotted key. The problem text never contains a secret's value
  nor the Redis URL (which may carry a password).
* It reads the referenced key and certificate files and nothing else; it changes
  nothing.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from core.hooks.contract import HOOK_NAMES

if TYPE_CHECKING:
    from core.config import Settings, TLSConfig

__all__ = ["validate"]

_HMAC_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}  # RFC 7518 3.2: key >= hash size
_ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
_MIN_SECRET_BYTES = 32
_MIN_RSA_BITS = 2048
_REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_NODE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_ORIGIN = re.compile(
    r"[a-z][a-z0-9+.-]*://"
    r"(\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*)"
    r"(?::(?P<port>[0-9]{1,5}))?"
)

# Minimum of every integer key; every integer key is listed (a test checks it).
_INT_MIN = {
    "server.workers": 1,
    "server.backlog": 1,
    "auth.access_ttl_s": 1,
    "auth.refresh_ttl_s": 1,
    "auth.lockout.failures": 1,
    "auth.lockout.ipv6_prefix": 1,
    "auth.lockout.max_in_flight": 1,
    "api.replay_window_s": 1,
    "limits.max_connections": 1,
    "limits.max_connections_per_user": 1,
    "limits.max_frame_bytes": 1,
    "limits.max_rooms_per_connection": 1,
    "limits.outbound_buffer_bytes": 1,
    "limits.handshake_concurrency": 1,
    "limits.handshake_queue": 0,  # 0 = no queue: refuse when all slots are busy
    "ratelimit.messages": 1,
    "ratelimit.strikes": 1,
    "heartbeat.misses": 1,
    "rooms.history_size": 0,  # 0 = no history kept
    "rooms.history_ttl_s": 1,
    "offline.max_messages": 0,  # 0 = no offline inbox
    "offline.ttl_s": 1,
    "offline.max_bytes": 1,
    "offline.max_per_sender": 0,  # 0 = no per-sender quota
    "hooks.max_concurrency": 1,
    "hooks.retries": 0,
    "hooks.breaker_failures": 1,
}
# Float keys: True = must be > 0, False = must be >= 0.
_FLOAT_POSITIVE = {
    "server.drain_s": False,
    "server.backend_wait_s": False,
    "server.stats_interval_s": True,
    "auth.leeway_s": False,
    "auth.timeout_s": True,
    "auth.lockout.window_s": True,
    "auth.lockout.block_s": True,
    "ratelimit.window_s": True,
    "limits.handshake_wait_s": True,
    "heartbeat.interval_s": True,
    "backend.probe_interval_s": True,
    "backend.probe_timeout_s": True,
    "backend.socket_timeout_s": True,
    "hooks.breaker_reset_s": True,
    **{f"hooks.{name}.timeout_s": True for name in HOOK_NAMES},
}


def _get(settings: Settings, key: str) -> Any:
    value: Any = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


class _Validator:
    """Range and cross-key rules over typed settings; ``fail`` raises ConfigError."""

    def __init__(self, settings: Settings, fail: Callable[[str, str], NoReturn]) -> None:
        self.s = settings
        self.fail = fail

    def run(self) -> None:
        self.ranges()
        self.server()
        self.backend()
        self.auth()
        self.secrets()
        self.origins()
        self.limits()
        self.hooks()

    def ranges(self) -> None:
        port = self.s.server.port
        if not 0 <= port <= 65535:
            self.fail("server.port", f"must be between 0 and 65535, got {port}")
        prefix = self.s.auth.lockout.ipv6_prefix
        if not 1 <= prefix <= 128:
            self.fail("auth.lockout.ipv6_prefix", f"must be between 1 and 128, got {prefix}")
        for key, low in _INT_MIN.items():
            if _get(self.s, key) < low:
                self.fail(key, f"must be at least {low}, got {_get(self.s, key)}")
        for key, strict in _FLOAT_POSITIVE.items():
            value = _get(self.s, key)
            if value < 0 or (strict and value == 0):
                relation = "greater than 0" if strict else "0 or more"
                self.fail(key, f"must be {relation}, got {_num(value)}")

    def file(self, key: str, path: str | None) -> None:
        if path is None:
            return
        if not os.path.exists(path):
            self.fail(key, f"file not found: {path}")
        if not os.path.isfile(path):
            self.fail(key, f"not a regular file: {path}")
        if not os.access(path, os.R_OK):
            self.fail(key, f"file not readable: {path}")

    def server(self) -> None:
        srv = self.s.server
        if not srv.host:
            self.fail("server.host", "must not be empty")
        if srv.node_id is not None and not _NODE_ID.fullmatch(srv.node_id):
            self.fail("server.node_id", "must be 1 to 128 of A-Z a-z 0-9 . _ : -")
        for index, cidr in enumerate(srv.trusted_proxies):
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                self.fail("server.trusted_proxies", f"item {index}: not a valid CIDR: {exc}")
        if srv.metrics_port is not None:
            if not 1 <= srv.metrics_port <= 65535:
                self.fail(
                    "server.metrics_port", f"must be between 1 and 65535, got {srv.metrics_port}"
                )
            if srv.metrics_port == srv.port:
                self.fail("server.metrics_port", "must differ from server.port (or be null)")
        if srv.workers > 1 and self.s.backend.url is None:
            self.fail(
                "server.workers",
                "more than one worker requires the Redis backend (backend.url / REDIS_URL)",
            )
        self.tls(srv.tls)

    def tls(self, tls: TLSConfig) -> None:
        if tls.cert_file is None and tls.key_file is not None:
            self.fail("server.tls.cert_file", "required when server.tls.key_file is set")
        if tls.key_file is None and tls.cert_file is not None:
            self.fail("server.tls.key_file", "required when server.tls.cert_file is set")
        if tls.client_ca_file is not None and tls.cert_file is None:
            self.fail(
                "server.tls.client_ca_file", "mTLS requires server.tls.cert_file and key_file"
            )
        self.file("server.tls.cert_file", tls.cert_file)
        self.file("server.tls.key_file", tls.key_file)
        self.file("server.tls.client_ca_file", tls.client_ca_file)
        if tls.cert_file is None or tls.key_file is None:
            return
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            # The password callback keeps an encrypted key from prompting on a terminal.
            context.load_cert_chain(tls.cert_file, tls.key_file, password=lambda: b"")
        except (ssl.SSLError, OSError) as exc:
            self.fail(
                "server.tls.key_file",
                f"cannot load the certificate with this key (unencrypted PEM expected): {exc}",
            )
        if tls.client_ca_file is not None:
            try:
                context.load_verify_locations(cafile=tls.client_ca_file)
            except (ssl.SSLError, OSError) as exc:
                self.fail("server.tls.client_ca_file", f"cannot load CA certificates: {exc}")

    def backend(self) -> None:
        be = self.s.backend
        if not be.key_prefix or any(c.isspace() for c in be.key_prefix):
            self.fail("backend.key_prefix", "must be non-empty and contain no whitespace")
        if be.ssl_key_file is not None and be.ssl_cert_file is None:
            self.fail("backend.ssl_cert_file", "required when backend.ssl_key_file is set")
        for key in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
            self.file(f"backend.{key}", getattr(be, key))
        if be.url is None:
            return
        # Never echo the URL: it may carry the Redis password.
        try:
            parts = urlsplit(be.url)
            parts.port  # noqa: B018 (parsing the port is the check)
        except ValueError:
            self.fail("backend.url", "not a valid URL (expected redis://host:port/db)")
        scheme = parts.scheme.lower()
        if "://" not in be.url or scheme not in _REDIS_SCHEMES:
            shown = f"scheme {scheme!r}" if "://" in be.url else "a value without a scheme"
            self.fail(
                "backend.url",
                f"expected redis://, rediss://, redis+cluster:// or rediss+cluster://, got {shown}",
            )
        if not scheme.startswith("rediss"):
            for key in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
                if getattr(be, key) is not None:
                    self.fail(f"backend.{key}", "only used with a rediss:// URL (TLS to Redis)")

    def auth(self) -> None:
        auth = self.s.auth
        if not auth.algorithms:
            self.fail("auth.algorithms", "must list at least one algorithm")
        known = (*_HMAC_KEY_BYTES, *_ASYMMETRIC)
        for alg in auth.algorithms:
            if alg.lower() == "none":
                self.fail("auth.algorithms", "'none' (unsigned tokens) is never accepted")
            if alg not in known:
                self.fail(
                    "auth.algorithms", f"unknown algorithm {alg!r}; known: {', '.join(known)}"
                )
            if auth.algorithms.count(alg) > 1:
                self.fail("auth.algorithms", f"{alg} is listed twice")
        for key in ("audience", "issuer"):
            if getattr(auth, key) == "":
                self.fail(f"auth.{key}", "must not be empty (use null to skip the check)")
        hmac_algs = [a for a in auth.algorithms if a in _HMAC_KEY_BYTES]
        if hmac_algs and auth.secret is None:
            self.fail(
                "auth.secret",
                f"required when {hmac_algs[0]} is in auth.algorithms (or SQUALL_JWT_SECRET)",
            )
        asym = [a for a in auth.algorithms if a in _ASYMMETRIC]
        if asym and auth.public_key_file is None:
            self.fail("auth.public_key_file", f"required when {asym[0]} is in auth.algorithms")
        self.file("auth.public_key_file", auth.public_key_file)
        self.file("auth.private_key_file", auth.private_key_file)
        self.file("auth.users_file", auth.users_file)
        public = self.public_key(auth.public_key_file, asym)
        self.private_key(auth.private_key_file, public)
        if auth.users_file is not None and not hmac_algs and auth.private_key_file is None:
            self.fail(
                "auth.private_key_file",
                "required to sign /auth/login tokens (auth.users_file is set and no HS* "
                "algorithm is listed)",
            )

    def public_key(self, path: str | None, algorithms: list[str]) -> Any:
        if path is None:
            return None
        key = "auth.public_key_file"
        with open(path, "rb") as handle:
            data = handle.read()
        try:
            public = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            self.fail(key, f"not a PEM public key: {path}")
        for alg in algorithms:
            if not _key_fits(alg, public):
                self.fail(key, f"{_key_kind(public)} cannot verify {alg}")
        if isinstance(public, rsa.RSAPublicKey) and public.key_size < _MIN_RSA_BITS:
            self.fail(key, f"RSA key of {public.key_size} bits; at least {_MIN_RSA_BITS} required")
        return public

    def private_key(self, path: str | None, public: Any) -> None:
        if path is None:
            return
        key = "auth.private_key_file"
        with open(path, "rb") as handle:
            data = handle.read()
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            self.fail(key, "encrypted private keys are not supported")
        except (ValueError, UnsupportedAlgorithm):
            self.fail(key, f"not a PEM private key: {path}")
        if public is not None:
            der = serialization.Encoding.DER
            spki = serialization.PublicFormat.SubjectPublicKeyInfo
            if private.public_key().public_bytes(der, spki) != public.public_bytes(der, spki):
                self.fail(key, "does not match auth.public_key_file")

    def secrets(self) -> None:
        auth_min = max(
            [_MIN_SECRET_BYTES]
            + [_HMAC_KEY_BYTES[a] for a in self.s.auth.algorithms if a in _HMAC_KEY_BYTES]
        )
        for key, value, minimum in (
            ("auth.secret", self.s.auth.secret, auth_min),
            ("api.secret", self.s.api.secret, _MIN_SECRET_BYTES),
            ("server.metrics_token", self.s.server.metrics_token, _MIN_SECRET_BYTES),
        ):
            if value is not None and len(value.encode("utf-8")) < minimum:
                size = len(value.encode("utf-8"))
                self.fail(key, f"must be at least {minimum} bytes, got {size} bytes")

    def origins(self) -> None:
        key = "security.allowed_origins"
        for index, origin in enumerate(self.s.security.allowed_origins):
            bad = f"item {index}: {origin!r}"
            if "*" in origin:
                self.fail(key, f"{bad}: wildcards are not supported; list exact origins")
            if origin != origin.lower():
                self.fail(key, f"{bad}: write it in lower case, as browsers send it")
            match = _ORIGIN.fullmatch(origin)
            if match is None:
                self.fail(key, f"{bad}: expected scheme://host[:port], no path or trailing slash")
            port = match.group("port")
            if port is not None and not 1 <= int(port) <= 65535:
                self.fail(key, f"{bad}: port out of range")
            if port is not None and port == _DEFAULT_PORTS.get(origin.partition(":")[0]):
                self.fail(key, f"{bad}: drop the default port; browsers omit it from Origin")

    def limits(self) -> None:
        lim = self.s.limits
        if lim.outbound_buffer_bytes < lim.max_frame_bytes:
            self.fail(
                "limits.outbound_buffer_bytes",
                "must be at least limits.max_frame_bytes, or one maximal message would "
                "overflow every receiver",
            )

    def hooks(self) -> None:
        hooks = self.s.hooks
        for name in HOOK_NAMES:
            if getattr(hooks, name).batch and name != "pub":
                self.fail(f"hooks.{name}.batch", "only the pub hook batches")
            url = getattr(hooks, name).url
            if url is None:
                continue
            key = f"hooks.{name}.url"
            try:
                parts = urlsplit(url)
                parts.port  # noqa: B018 (parsing the port is the check)
            except ValueError:
                self.fail(key, "not a valid URL")
            if parts.scheme not in ("http", "https") or not parts.hostname:
                self.fail(key, "expected http://host[:port]/path or https://...")
            if self.s.api.secret is None:
                self.fail(key, "HTTP hooks are signed with api.secret, which is not set")
        defined: set[str] = set()
        if hooks.module is not None:
            if not _MODULE.fullmatch(hooks.module):
                self.fail("hooks.module", "expected a dotted Python module name")
            # Imported here so a broken module stops the start with exit 2 naming the key.
            from core.hooks.python_hooks import load_module_hooks

            try:
                defined = set(load_module_hooks(hooks.module))
            except ImportError as exc:
                self.fail("hooks.module", f"cannot import {hooks.module!r}: {exc}")
            except ValueError as exc:
                self.fail("hooks.module", str(exc))
        for index, ns in enumerate(self.s.rooms.namespaces):
            if ns.join == "hook" and hooks.join.url is None and "join" not in defined:
                self.fail(
                    "rooms.namespaces",
                    f"item {index}: join: hook needs hooks.join.url or a join function "
                    "in hooks.module",
                )
            if (
                ns.join == "token"
                and not any(a.startswith("HS") for a in self.s.auth.algorithms)
                and self.s.auth.public_key_file is None
            ):
                self.fail("rooms.namespaces", f"item {index}: join: token needs auth keys")


_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _key_fits(alg: str, key: Any) -> bool:
    if alg.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey)
    if alg in ("ES256", "ES384"):
        curve = ec.SECP256R1 if alg == "ES256" else ec.SECP384R1
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, curve)
    return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)


def _key_kind(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "an RSA key"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"an EC key on {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "an EdDSA key"
    return f"a {type(key).__name__}"


def validate(settings: Settings, fail: Callable[[str, str], NoReturn]) -> None:
    """Check every rule over ``settings``; call ``fail(key, problem)`` for the first broken.

    ``fail`` must raise (:func:`core.config.load` passes one raising ``ConfigError``
    with the key's source appended).
    """
    _Validator(settings, fail).run()
