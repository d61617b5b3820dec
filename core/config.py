"""Squall's configuration: typed, frozen, parsed and validated once at start-up.

The keys, defaults and environment variables are the run-time contract of
``CONFIG.md``; ``docs/configuration.md`` documents each one.

Sources, later ones winning:

1. the defaults below (``conf/default.yaml`` holds the same values);
2. the YAML file given to :func:`load`;
3. the environment: ``PORT``, ``REDIS_URL``, ``WEB_CONCURRENCY``, ``SQUALL_NODE_ID``,
   ``SQUALL_JWT_SECRET``, ``SQUALL_API_SECRET`` (empty = unset), then
   ``SQUALL_<SECTION>__<KEY>`` (``SQUALL_AUTH__LOCKOUT__FAILURES``), which beats an alias
   naming the same key;
4. the command-line overrides (dotted keys).

Guarantees of :func:`load`:

* It returns a :class:`Settings` only if every rule holds (types, ranges, cross-key
  rules, referenced files exist and load); otherwise it raises :class:`ConfigError`
  naming the dotted key (or the file, for file-level errors). It never prints a secret.
* Paths of files (keys, certificates, users file) come back absolute, resolved against
  the working directory at load time, so the file checked is the file later opened.
* ``log.level`` comes back upper-case; every float key comes back a ``float``.

Building the dataclasses directly skips validation; that is for tests only.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import ssl
import types
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Literal, NoReturn, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import yaml
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

__all__ = [
    "ApiConfig",
    "AuthConfig",
    "BackendConfig",
    "CertReqs",
    "ConfigError",
    "HeartbeatConfig",
    "LimitsConfig",
    "LockoutConfig",
    "LogConfig",
    "LogFormat",
    "LogLevel",
    "OfflineConfig",
    "OnNewLogin",
    "RateLimitConfig",
    "RoomsConfig",
    "SecurityConfig",
    "ServerConfig",
    "Settings",
    "TLSConfig",
    "load",
    "to_dict",
]

OnNewLogin = Literal["kick_oldest", "reject"]
LogFormat = Literal["json", "text"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
CertReqs = Literal["required", "none"]

# Field metadata: "path" = a file name made absolute at load; "mask" = what
# to_dict hides ("all": the whole value, "password": the password of a URL);
# "upper" = compared and stored upper-case.
_PATH: Mapping[str, object] = {"path": True}
_SECRET: Mapping[str, object] = {"mask": "all"}


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """TLS for the listening socket; ``client_ca_file`` set = client certificates required."""

    cert_file: str | None = field(default=None, metadata=_PATH)
    key_file: str | None = field(default=None, metadata=_PATH)
    client_ca_file: str | None = field(default=None, metadata=_PATH)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The listening side of one node."""

    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    node_id: str | None = None
    drain_s: float = 10.0
    trusted_proxies: tuple[str, ...] = ()
    tls: TLSConfig = field(default_factory=TLSConfig)
    websocket_compression: bool = False
    static: bool = True


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """The shared store; ``url`` None = in-process memory backend (single node)."""

    url: str | None = field(default=None, metadata={"mask": "password"})
    key_prefix: str = "squall:"
    ssl_ca_file: str | None = field(default=None, metadata=_PATH)
    ssl_cert_file: str | None = field(default=None, metadata=_PATH)
    ssl_key_file: str | None = field(default=None, metadata=_PATH)
    ssl_cert_reqs: CertReqs = "required"
    probe_interval_s: float = 1.0
    probe_timeout_s: float = 3.0
    socket_timeout_s: float = 2.0


@dataclass(frozen=True, slots=True)
class LockoutConfig:
    """Login lockout: ``failures`` within ``window_s`` block the account for ``block_s``."""

    failures: int = 5
    window_s: float = 60.0
    block_s: float = 300.0


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Token verification and issuing, and the optional users file for ``/auth/login``."""

    algorithms: tuple[str, ...] = ("HS256",)
    secret: str | None = field(default=None, metadata=_SECRET)
    public_key_file: str | None = field(default=None, metadata=_PATH)
    private_key_file: str | None = field(default=None, metadata=_PATH)
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 5.0
    access_ttl_s: int = 900
    refresh_ttl_s: int = 2592000
    timeout_s: float = 5.0
    users_file: str | None = field(default=None, metadata=_PATH)
    lockout: LockoutConfig = field(default_factory=LockoutConfig)


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The HMAC-signed server API."""

    secret: str | None = field(default=None, metadata=_SECRET)
    replay_window_s: int = 300


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """Browser origin policy; ``()`` = same host only."""

    allowed_origins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Connection and size limits."""

    max_connections: int = 20000
    max_connections_per_user: int = 5
    on_new_login: OnNewLogin = "kick_oldest"
    max_frame_bytes: int = 65536
    max_rooms_per_connection: int = 100
    outbound_buffer_bytes: int = 1048576


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """Per-user sliding-window rate limit on inbound frames."""

    messages: int = 50
    window_s: float = 1.0
    strikes: int = 20


@dataclass(frozen=True, slots=True)
class HeartbeatConfig:
    """Server pings every ``interval_s``; ``misses`` unanswered ones close the connection."""

    interval_s: float = 25.0
    misses: int = 3


@dataclass(frozen=True, slots=True)
class RoomsConfig:
    """Room presence and recovery history."""

    presence_events: bool = True
    history_size: int = 100
    history_ttl_s: int = 3600


@dataclass(frozen=True, slots=True)
class OfflineConfig:
    """The per-user offline inbox."""

    max_messages: int = 1000
    ttl_s: int = 604800


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Logging."""

    level: LogLevel = field(default="INFO", metadata={"upper": True})
    format: LogFormat = "json"


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration, one field per YAML section."""

    server: ServerConfig = field(default_factory=ServerConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    heartbeat: HeartbeatConfig = field(default_factory=HeartbeatConfig)
    rooms: RoomsConfig = field(default_factory=RoomsConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    log: LogConfig = field(default_factory=LogConfig)


class ConfigError(Exception):
    """A configuration problem; ``key`` is the dotted key (or the file) at fault."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem)
        self.key = key
        self.problem = problem

    def __str__(self) -> str:
        return f"config error: {self.key}: {self.problem}"


# ---------------------------------------------------------------------------
# Schema: walked from the dataclasses so the defaults and types live in one place.


@dataclass(frozen=True, slots=True)
class _Leaf:
    type: Any
    meta: Mapping[str, object]


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and is_dataclass(tp)


def _schema(cls: type[Any], prefix: str, leaves: dict[str, _Leaf], sections: set[str]) -> None:
    hints = get_type_hints(cls)
    for f in fields(cls):
        dotted = prefix + f.name
        tp = hints[f.name]
        if _is_section(tp):
            sections.add(dotted)
            _schema(tp, dotted + ".", leaves, sections)
        else:
            leaves[dotted] = _Leaf(tp, f.metadata)


def _split_optional(tp: Any) -> tuple[bool, Any]:
    """``str | None`` -> (True, str); anything else -> (False, tp)."""
    if isinstance(tp, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return True, args[0]
    return False, tp


def _is_text(tp: Any) -> bool:
    return tp is str or get_origin(tp) is Literal


def _expected(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(tp))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, "a list of strings")


def _describe(value: object, secret: bool) -> str:
    """How an offending value is shown; a secret's value never is."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    if secret:
        return {str: "a string", int: "an integer", float: "a number"}.get(type(value), "a value")
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _suggest(name: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


# ---------------------------------------------------------------------------
# Reading the file.


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a second ``server:`` would silently win)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Hashable, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_file(path: str) -> Mapping[Any, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(path, f"cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "the file is not UTF-8 text") from None
    try:
        tree = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(path, f"invalid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"invalid YAML: {exc}") from None
    if tree is None:  # an empty or all-comments file sets nothing
        return {}
    if not isinstance(tree, Mapping):
        got = _describe(tree, secret=True)
        raise ConfigError(path, f"the top level must be a mapping of sections, got {got}")
    return tree


# ---------------------------------------------------------------------------
# Loading.

_ALIASES = (
    ("PORT", "server.port"),
    ("REDIS_URL", "backend.url"),
    ("WEB_CONCURRENCY", "server.workers"),
    ("SQUALL_NODE_ID", "server.node_id"),
    ("SQUALL_JWT_SECRET", "auth.secret"),
    ("SQUALL_API_SECRET", "api.secret"),
)
_ENV_PREFIX = "SQUALL_"


class _Loader:
    """One load: the merged raw values, where each came from, then conversion."""

    def __init__(self) -> None:
        self.leaves: dict[str, _Leaf] = {}
        self.sections: set[str] = set()
        _schema(Settings, "", self.leaves, self.sections)
        self.raw: dict[str, object] = {}
        self.sources: dict[str, str] = {}

    def fail(self, key: str, problem: str) -> NoReturn:
        source = self.sources.get(key)
        raise ConfigError(key, f"{problem} ({source})" if source else problem)

    def set(self, key: str, value: object, source: str | None) -> None:
        self.raw[key] = value
        if source is None:
            self.sources.pop(key, None)
        else:
            self.sources[key] = source

    def add_file(self, tree: Mapping[Any, Any], prefix: str = "") -> None:
        for name, value in tree.items():
            dotted = f"{prefix}{name}"
            if dotted in self.sections:
                if value is None:  # a section whose keys are all commented out
                    continue
                if not isinstance(value, Mapping):
                    self.fail(dotted, f"expected a mapping of keys, got {_describe(value, True)}")
                self.add_file(value, dotted + ".")
            elif dotted in self.leaves:
                self.set(dotted, value, None)
            else:
                self._unknown(dotted, prefix)

    def _unknown(self, dotted: str, prefix: str) -> NoReturn:
        siblings = [
            k[len(prefix) :] for k in (*self.leaves, *self.sections) if k.startswith(prefix)
        ]
        siblings = [s for s in siblings if "." not in s]
        what = "unknown section" if not prefix else "unknown key"
        self.fail(dotted, what + _suggest(dotted[len(prefix) :], siblings))

    def add_environ(self, environ: Mapping[str, str]) -> None:
        for var, key in _ALIASES:
            text = environ.get(var, "")
            if text:  # `export REDIS_URL=` means unset, as in most shells' scripts
                self.set(key, self._from_env(key, text), f"from environment variable {var}")
        for var in sorted(environ):
            if not var.startswith(_ENV_PREFIX) or "__" not in var:
                continue
            key = var[len(_ENV_PREFIX) :].lower().replace("__", ".")
            if key in self.sections:
                self.fail(key, f"is a section; set its keys one by one (from {var})")
            if key not in self.leaves:
                names = [_ENV_PREFIX + k.upper().replace(".", "__") for k in self.leaves]
                self.fail(
                    key, f"unknown key (from environment variable {var}){_suggest(var, names)}"
                )
            self.set(key, self._from_env(key, environ[var]), f"from environment variable {var}")

    def _from_env(self, key: str, text: str) -> object:
        """Environment text -> raw value: YAML scalar, but text keys verbatim.

        A secret such as ``abc #1`` or ``'x'`` must not be altered by YAML rules, so
        text keys take the value as written; ``null`` or empty sets a nullable one to null.
        """
        nullable, tp = _split_optional(self.leaves[key].type)
        if _is_text(tp):
            return None if nullable and text in ("", "null") else text
        if get_origin(tp) is tuple:
            stripped = text.strip()
            if stripped.startswith("["):
                try:
                    return yaml.safe_load(stripped)
                except yaml.YAMLError:
                    self.fail(key, "not a valid YAML list")
            return [part.strip() for part in stripped.split(",") if part.strip()]
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text

    def add_overrides(self, overrides: Mapping[str, object]) -> None:
        for key, value in overrides.items():
            if key not in self.leaves:
                raise ConfigError(key, "unknown key (from the command line)")
            self.set(key, value, "from the command line")

    def convert(self, key: str, value: object) -> object:
        leaf = self.leaves[key]
        nullable, tp = _split_optional(leaf.type)
        secret = "mask" in leaf.meta
        if value is None:
            if nullable:
                return None
            self.fail(key, f"expected {_expected(tp)}, got null")
        bad = f"expected {_expected(tp)}, got {_describe(value, secret)}"
        if tp is bool:
            if not isinstance(value, bool):
                self.fail(key, bad)
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail(key, bad)
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.fail(key, bad)
            if not math.isfinite(value):
                self.fail(key, f"expected a finite number, got {value!r}")
            return float(value)
        if get_origin(tp) is tuple:
            if not isinstance(value, list | tuple):
                self.fail(key, bad)
            for index, item in enumerate(value):
                if not isinstance(item, str):
                    self.fail(
                        key, f"item {index}: expected a string, got {_describe(item, secret)}"
                    )
            return tuple(value)
        if not isinstance(value, str):
            self.fail(key, bad)
        if leaf.meta.get("upper"):
            value = value.upper()
        if get_origin(tp) is Literal and value not in get_args(tp):
            self.fail(key, bad)
        if leaf.meta.get("path"):
            if not value:
                self.fail(key, "expected a file name, got an empty string")
            return os.path.abspath(os.path.expanduser(value))
        return value

    def build(self, cls: type[Any], prefix: str = "") -> Any:
        hints = get_type_hints(cls)
        kwargs: dict[str, object] = {}
        for f in fields(cls):
            dotted = prefix + f.name
            if _is_section(hints[f.name]):
                kwargs[f.name] = self.build(hints[f.name], dotted + ".")
            elif dotted in self.raw:
                kwargs[f.name] = self.convert(dotted, self.raw[dotted])
        return cls(**kwargs)


def load(
    path: str | os.PathLike[str] | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Read ``path`` (None = defaults only), apply ``environ`` then ``overrides``, validate.

    ``overrides`` maps dotted keys to typed values, e.g. ``{"server.port": 9000}``.
    Raises :class:`ConfigError` on the first problem found.
    """
    loader = _Loader()
    if path is not None:
        loader.add_file(_read_file(os.fspath(path)))
    loader.add_environ(environ)
    loader.add_overrides(overrides or {})
    settings: Settings = loader.build(Settings)
    _Validator(settings, loader.fail).run()
    return settings


# ---------------------------------------------------------------------------
# Validation of values once typed.

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
    "auth.access_ttl_s": 1,
    "auth.refresh_ttl_s": 1,
    "auth.lockout.failures": 1,
    "api.replay_window_s": 1,
    "limits.max_connections": 1,
    "limits.max_connections_per_user": 1,
    "limits.max_frame_bytes": 1,
    "limits.max_rooms_per_connection": 1,
    "limits.outbound_buffer_bytes": 1,
    "ratelimit.messages": 1,
    "ratelimit.strikes": 1,
    "heartbeat.misses": 1,
    "rooms.history_size": 0,  # 0 = no history kept
    "rooms.history_ttl_s": 1,
    "offline.max_messages": 0,  # 0 = no offline inbox
    "offline.ttl_s": 1,
}
# Float keys: True = must be > 0, False = must be >= 0.
_FLOAT_POSITIVE = {
    "server.drain_s": False,
    "auth.leeway_s": False,
    "auth.timeout_s": True,
    "auth.lockout.window_s": True,
    "auth.lockout.block_s": True,
    "ratelimit.window_s": True,
    "heartbeat.interval_s": True,
    "backend.probe_interval_s": True,
    "backend.probe_timeout_s": True,
    "backend.socket_timeout_s": True,
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

    def ranges(self) -> None:
        port = self.s.server.port
        if not 0 <= port <= 65535:
            self.fail("server.port", f"must be between 0 and 65535, got {port}")
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


# ---------------------------------------------------------------------------
# Display.


def _mask_url_password(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "***"
    if password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def _section_dict(section: Any, mask: bool) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in fields(section):
        value = getattr(section, f.name)
        kind = f.metadata.get("mask")
        if is_dataclass(value):
            out[f.name] = _section_dict(value, mask)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        elif mask and value is not None and kind == "all":
            out[f.name] = "***"
        elif mask and isinstance(value, str) and kind == "password":
            out[f.name] = _mask_url_password(value)
        else:
            out[f.name] = value
    return out


def to_dict(settings: Settings, mask_secrets: bool = True) -> dict[str, object]:
    """Plain nested dict (tuples as lists) in YAML key order, for display or dumping.

    With ``mask_secrets`` every secret that is set shows as ``"***"`` and a password
    inside ``backend.url`` is replaced by ``***``.
    """
    return _section_dict(settings, mask_secrets)
