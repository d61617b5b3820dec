"""Squall's configuration: typed, frozen, parsed and validated once at start-up.

The keys, defaults and environment variables are the run-time contract of
``CONFIG.md``; ``docs/configuration.md`` documents each one.

Sources, later ones winning:

1. the defaults below (``conf/default.yaml`` holds the same values);
2. the YAML file given to :func:`load`;
3. the environment: ``PORT``, ``REDIS_URL``, ``WEB_CONCURRENCY``, ``SQUALL_NODE_ID``,
   ``SQUALL_JWT_SECRET``, ``SQUALL_API_SECRET``, ``SQUALL_METRICS_TOKEN`` (empty = unset), then
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

Building the dataclasses directly skips validation; that is for tests only. The rules
applied to the typed values live in :mod:`core.config_rules`.
"""

from __future__ import annotations

import difflib
import math
import os
import types
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Literal, NoReturn, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import yaml

from core.config_rules import validate
from core.errors import ConfigError
from core.namespaces import Namespace, parse_namespaces

__all__ = [
    "ApiConfig",
    "AuthConfig",
    "BackendConfig",
    "CertReqs",
    "ConfigError",
    "HeartbeatConfig",
    "HookConfig",
    "HookFail",
    "HooksConfig",
    "LimitsConfig",
    "LockoutConfig",
    "LogConfig",
    "LogFormat",
    "LogLevel",
    "OfflineConfig",
    "OnNewLogin",
    "RateLimitConfig",
    "Recipients",
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
Recipients = Literal["any", "known"]

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
    #: the listen queue: connections the kernel holds until the node accepts them
    #: (capped by net.core.somaxconn); a reconnect storm's SYNs beyond it are dropped
    #: and retried by the clients a second or more later
    backlog: int = 4096
    node_id: str | None = None
    drain_s: float = 10.0
    backend_wait_s: float = 20.0
    trusted_proxies: tuple[str, ...] = ()
    tls: TLSConfig = field(default_factory=TLSConfig)
    websocket_compression: bool = False
    #: serve the demo pages of static/ (index.html, squall.js); off in production
    static: bool = False
    #: serve static/dashboard.html; off in production
    dashboard: bool = False
    #: serve /metrics on this port only (not on ``port``); None = on ``port``
    metrics_port: int | None = None
    #: bearer token /metrics requires (env SQUALL_METRICS_TOKEN); None = none
    metrics_token: str | None = field(default=None, metadata=_SECRET)
    #: without a token or a port of its own, /metrics is served on ``port`` only if true
    metrics_public: bool = False
    stats_interval_s: float = 2.0


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
    #: IPv6 clients are counted per network of this prefix length (IPv4: per address)
    ipv6_prefix: int = 64
    #: logins of one address whose password is being checked at once, cluster-wide
    max_in_flight: int = 2


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
    #: handshakes doing backend work at once (the rest wait in a FIFO queue)
    handshake_concurrency: int = 32
    #: handshakes that may wait; beyond: 503 with a jittered Retry-After at once
    handshake_queue: int = 5000
    #: longest wait in the queue; then 503 with a jittered Retry-After
    handshake_wait_s: float = 8.0


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
    """Room presence and recovery history; ``namespaces`` override them per pattern."""

    presence_events: bool = True
    history_size: int = 100
    history_ttl_s: int = 3600
    namespaces: tuple[Namespace, ...] = field(default=(), metadata={"parse": parse_namespaces})


HookFail = Literal["open", "closed"]


@dataclass(frozen=True, slots=True)
class HookConfig:
    """One hook: ``url`` set = HTTP hook (else the module's function, if any)."""

    url: str | None = None
    timeout_s: float = 1.0
    fail: HookFail = "closed"
    batch: bool = False


@dataclass(frozen=True, slots=True)
class HooksConfig:
    """Application hooks (docs/hooks.md): HTTP endpoints or an in-process module."""

    module: str | None = None
    max_concurrency: int = 64
    retries: int = 1
    breaker_failures: int = 5
    breaker_reset_s: float = 5.0
    connect: HookConfig = field(default_factory=HookConfig)
    refresh: HookConfig = field(default_factory=HookConfig)
    join: HookConfig = field(default_factory=HookConfig)
    pub: HookConfig = field(default_factory=HookConfig)
    send: HookConfig = field(default_factory=HookConfig)
    rpc: HookConfig = field(default_factory=HookConfig)


@dataclass(frozen=True, slots=True)
class OfflineConfig:
    """The per-user offline inbox."""

    max_messages: int = 1000
    ttl_s: int = 604800
    #: bytes of queued data one recipient's inbox holds at most (oldest dropped beyond)
    max_bytes: int = 1048576
    #: unacked messages one sender may have in one recipient's inbox; 0 = no quota
    max_per_sender: int = 100
    #: ``any``: send to any user id; ``known``: only to users seen connected (or listed
    #: in auth.users_file), others get err 404
    recipients: Recipients = "any"


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
    hooks: HooksConfig = field(default_factory=HooksConfig)


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
    ("SQUALL_METRICS_TOKEN", "server.metrics_token"),
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
        parse = leaf.meta.get("parse")
        if callable(parse):
            try:
                return parse([] if value is None else value)
            except ValueError as exc:
                self.fail(key, str(exc))
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
    validate(settings, loader.fail)
    return settings


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
            out[f.name] = [_section_dict(v, mask) if is_dataclass(v) else v for v in value]
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
