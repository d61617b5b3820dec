"""core.config: defaults, sources and their precedence, every validation rule."""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from core.config import (
    AuthConfig,
    ConfigError,
    ServerConfig,
    Settings,
    load,
    to_dict,
)
from core.passwords import verify_password

REPO = Path(__file__).resolve().parents[2]
SECRET = "k" * 32
ENV = {"SQUALL_JWT_SECRET": SECRET}


def write(tmp_path: Path, text: str, name: str = "squall.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def fails(
    path: str | None = None,
    environ: dict[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(path, ENV if environ is None else environ, overrides)
    return info.value


def part(tree: Mapping[str, object], name: str) -> dict[str, object]:
    section = tree[name]
    assert isinstance(section, dict)
    return section


def flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{name}."))
        else:
            out[prefix + name] = value
    return out


# --------------------------------------------------------------------------- keys


def pem_private(key: Any) -> bytes:
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data


def pem_public(key: Any) -> bytes:
    data: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files: RSA 2048 / 1024, EC P-256, Ed25519, a self-signed certificate."""
    folder = tmp_path_factory.mktemp("keys")
    made: dict[str, Any] = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa1024": rsa.generate_private_key(public_exponent=65537, key_size=1024),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "ed": ed25519.Ed25519PrivateKey.generate(),
    }
    files: dict[str, str] = {}
    for name, key in made.items():
        for kind, data in (("pub", pem_public(key)), ("priv", pem_private(key))):
            path = folder / f"{name}.{kind}.pem"
            path.write_bytes(data)
            files[f"{name}.{kind}"] = str(path)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(made["ec"].public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(made["ec"], hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["cert"] = str(folder / "cert.pem")
    (folder / "junk.pem").write_text("not a key\n")
    files["junk"] = str(folder / "junk.pem")
    return files


# --------------------------------------------------------------------------- defaults

CONTRACT_DEFAULTS: dict[str, object] = {
    "server.host": "0.0.0.0",
    "server.port": 8080,
    "server.workers": 1,
    "server.backlog": 4096,
    "server.node_id": None,
    "server.drain_s": 10,
    "server.backend_wait_s": 20,
    "server.trusted_proxies": [],
    "server.tls.cert_file": None,
    "server.tls.key_file": None,
    "server.tls.client_ca_file": None,
    "server.websocket_compression": False,
    "server.static": False,
    "server.dashboard": False,
    "server.metrics_port": None,
    "server.metrics_token": None,
    "server.metrics_public": False,
    "server.stats_interval_s": 2.0,
    "backend.url": None,
    "backend.key_prefix": "squall:",
    "backend.ssl_ca_file": None,
    "backend.ssl_cert_file": None,
    "backend.ssl_key_file": None,
    "backend.ssl_cert_reqs": "required",
    "backend.probe_interval_s": 1.0,
    "backend.probe_timeout_s": 3.0,
    "backend.socket_timeout_s": 2.0,
    "auth.algorithms": ["HS256"],
    "auth.secret": None,
    "auth.public_key_file": None,
    "auth.private_key_file": None,
    "auth.audience": None,
    "auth.issuer": None,
    "auth.leeway_s": 5,
    "auth.access_ttl_s": 900,
    "auth.refresh_ttl_s": 2592000,
    "auth.timeout_s": 5,
    "auth.users_file": None,
    "auth.lockout.failures": 5,
    "auth.lockout.window_s": 60,
    "auth.lockout.block_s": 300,
    "auth.lockout.ipv6_prefix": 64,
    "auth.lockout.max_in_flight": 2,
    "api.secret": None,
    "api.replay_window_s": 300,
    "security.allowed_origins": [],
    "limits.max_connections": 20000,
    "limits.max_connections_per_user": 5,
    "limits.on_new_login": "kick_oldest",
    "limits.max_frame_bytes": 65536,
    "limits.max_rooms_per_connection": 100,
    "limits.outbound_buffer_bytes": 1048576,
    "limits.handshake_concurrency": 32,
    "limits.handshake_queue": 5000,
    "limits.handshake_wait_s": 8,
    "ratelimit.messages": 50,
    "ratelimit.window_s": 1,
    "ratelimit.strikes": 20,
    "heartbeat.interval_s": 25,
    "heartbeat.misses": 3,
    "rooms.presence_events": True,
    "rooms.history_size": 100,
    "rooms.history_ttl_s": 3600,
    "rooms.namespaces": [],
    "offline.max_messages": 1000,
    "offline.ttl_s": 604800,
    "offline.max_bytes": 1048576,
    "offline.max_per_sender": 100,
    "offline.recipients": "any",
    "log.level": "INFO",
    "log.format": "json",
    # issue 14 (docs/hooks.md): an extension of CONFIG.md
    "hooks.module": None,
    "hooks.max_concurrency": 64,
    "hooks.retries": 1,
    "hooks.breaker_failures": 5,
    "hooks.breaker_reset_s": 5.0,
    "hooks.connect.url": None,
    "hooks.connect.timeout_s": 1.0,
    "hooks.connect.fail": "closed",
    "hooks.connect.batch": False,
    "hooks.refresh.url": None,
    "hooks.refresh.timeout_s": 1.0,
    "hooks.refresh.fail": "closed",
    "hooks.refresh.batch": False,
    "hooks.join.url": None,
    "hooks.join.timeout_s": 1.0,
    "hooks.join.fail": "closed",
    "hooks.join.batch": False,
    "hooks.pub.url": None,
    "hooks.pub.timeout_s": 1.0,
    "hooks.pub.fail": "closed",
    "hooks.pub.batch": False,
    "hooks.send.url": None,
    "hooks.send.timeout_s": 1.0,
    "hooks.send.fail": "closed",
    "hooks.send.batch": False,
    "hooks.rpc.url": None,
    "hooks.rpc.timeout_s": 1.0,
    "hooks.rpc.fail": "closed",
    "hooks.rpc.batch": False,
}


def test_code_defaults_are_the_contract() -> None:
    assert flat(to_dict(Settings(), mask_secrets=False)) == CONTRACT_DEFAULTS


def test_default_yaml_lists_every_key_with_the_code_default() -> None:
    with open(REPO / "conf" / "default.yaml", encoding="utf-8") as handle:
        assert flat(yaml.safe_load(handle)) == CONTRACT_DEFAULTS
    assert load(REPO / "conf" / "default.yaml", ENV) == load(None, ENV)


def test_defaults_only_need_the_jwt_secret() -> None:
    assert load(None, ENV) == Settings(auth=AuthConfig(secret=SECRET))
    assert fails(environ={}).key == "auth.secret"


def test_dev_yaml_runs_from_the_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    settings = load("conf/dev.yaml", {})
    assert settings.auth.secret is not None and settings.api.secret is not None
    assert settings.auth.secret.startswith("dev-only-secret-change-me-")
    assert len(settings.auth.secret) == len(settings.api.secret) == 48
    assert settings.log.format == "text"
    # the demo may be opened as localhost or 127.0.0.1 and connect to either
    assert settings.security.allowed_origins == ("http://localhost:8080", "http://127.0.0.1:8080")
    assert settings.auth.users_file == str(REPO / "conf" / "dev-users.yaml")
    with open(settings.auth.users_file, encoding="utf-8") as handle:
        users = yaml.safe_load(handle)
    assert set(users) == {"alice", "bob"}
    assert verify_password("alice-password", users["alice"])
    assert verify_password("bob-password", users["bob"])
    assert not verify_password("bob-password", users["alice"])


def test_settings_are_frozen() -> None:
    settings = load(None, ENV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.server.port = 1  # type: ignore[misc]


def test_error_text_names_the_key() -> None:
    error = ConfigError("limits.max_connections", "expected an integer, got 'abc'")
    assert str(error) == "config error: limits.max_connections: expected an integer, got 'abc'"
    assert (error.key, error.problem) == (
        "limits.max_connections",
        "expected an integer, got 'abc'",
    )


# --------------------------------------------------------------------------- the file


def test_file_values_apply_and_missing_keys_keep_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "server: {port: 9001, trusted_proxies: [10.0.0.0/8]}\n"
        "limits:\n  on_new_login: reject\nrooms:\n",
    )
    settings = load(path, ENV)
    assert settings.server.port == 9001
    assert settings.server.trusted_proxies == ("10.0.0.0/8",)
    assert settings.limits.on_new_login == "reject"
    assert settings.server.host == "0.0.0.0"
    assert settings.rooms == Settings().rooms


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, "# nothing set\n"), ENV) == load(None, ENV)


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yaml")
    error = fails(path)
    assert error.key == path
    assert "No such file" in error.problem


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert "cannot read" in fails(str(tmp_path)).problem


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"log: {level: \xe9}\n")
    assert "UTF-8" in fails(str(path)).problem


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    error = fails(write(tmp_path, "server:\n  port: 80\n  host: [unclosed\n"))
    assert error.problem.startswith("invalid YAML at line")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    error = fails(write(tmp_path, "server: {port: 1}\nlimits: {}\nserver: {port: 2}\n"))
    assert "duplicate key 'server'" in error.problem
    assert "line 3" in error.problem


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- server\n- port\n")
    error = fails(path)
    assert error.key == path
    assert "top level must be a mapping" in error.problem


def test_unknown_section(tmp_path: Path) -> None:
    error = fails(write(tmp_path, "sever: {port: 1}\n"))
    assert error.key == "sever"
    assert error.problem == "unknown section; did you mean 'server'?"


def test_unknown_key(tmp_path: Path) -> None:
    error = fails(write(tmp_path, "limits: {max_conections: 3}\n"))
    assert error.key == "limits.max_conections"
    assert error.problem == "unknown key; did you mean 'max_connections'?"


def test_unknown_nested_key(tmp_path: Path) -> None:
    assert fails(write(tmp_path, "auth: {lockout: {tries: 3}}\n")).key == "auth.lockout.tries"


def test_section_must_be_a_mapping(tmp_path: Path) -> None:
    error = fails(write(tmp_path, "server: 8080\n"))
    assert (error.key, error.problem) == ("server", "expected a mapping of keys, got an integer")


# --------------------------------------------------------------------------- types


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (
            "limits: {max_connections: abc}",
            "limits.max_connections",
            "expected an integer, got 'abc'",
        ),
        ("limits: {max_connections: true}", "limits.max_connections",
         "expected an integer, got true"),
        ("limits: {max_connections: 2.5}", "limits.max_connections",
         "expected an integer, got 2.5"),
        ("limits: {max_connections: null}", "limits.max_connections",
         "expected an integer, got null"),
        ("heartbeat: {interval_s: fast}", "heartbeat.interval_s", "expected a number, got 'fast'"),
        ("heartbeat: {interval_s: false}", "heartbeat.interval_s", "expected a number, got false"),
        ("heartbeat: {interval_s: .nan}", "heartbeat.interval_s",
         "expected a finite number, got nan"),
        ("rooms: {presence_events: 1}", "rooms.presence_events", "expected true or false, got 1"),
        ("server: {host: 127}", "server.host", "expected a string, got 127"),
        ("server: {host: null}", "server.host", "expected a string, got null"),
        ("server: {trusted_proxies: 10.0.0.0/8}", "server.trusted_proxies",
         "expected a list of strings, got '10.0.0.0/8'"),
        ("auth: {algorithms: [HS256, 5]}", "auth.algorithms", "item 1: expected a string, got 5"),
        ("limits: {on_new_login: kick_newest}", "limits.on_new_login",
         "expected one of kick_oldest, reject, got 'kick_newest'"),
        ("log: {format: xml}", "log.format", "expected one of json, text, got 'xml'"),
        ("log: {level: LOUD}", "log.level",
         "expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'"),
        ("backend: {ssl_cert_reqs: optional}", "backend.ssl_cert_reqs",
         "expected one of required, none, got 'optional'"),
        ("server: {tls: {cert_file: ''}}", "server.tls.cert_file",
         "expected a file name, got an empty string"),
    ],
)  # fmt: skip
def test_wrong_types(tmp_path: Path, text: str, key: str, problem: str) -> None:
    error = fails(write(tmp_path, text + "\n"))
    assert (error.key, error.problem) == (key, problem)


def test_wrong_type_of_a_secret_does_not_show_it(tmp_path: Path) -> None:
    error = fails(write(tmp_path, "api: {secret: 1234567890123456789012345678901234}\n"))
    assert (error.key, error.problem) == ("api.secret", "expected a string, got an integer")


def test_int_accepted_where_float_expected(tmp_path: Path) -> None:
    settings = load(write(tmp_path, "heartbeat: {interval_s: 7}\nserver: {drain_s: 0.5}\n"), ENV)
    assert settings.heartbeat.interval_s == 7.0
    assert isinstance(settings.heartbeat.interval_s, float)
    assert settings.server.drain_s == 0.5


def test_null_where_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {node_id: null}\nauth: {audience: null}\n")
    assert load(path, ENV).server.node_id is None


def test_log_level_any_case_is_stored_upper(tmp_path: Path) -> None:
    assert load(write(tmp_path, "log: {level: warning}\n"), ENV).log.level == "WARNING"


def test_extra_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "server: {websocket_compression: true, static: false}\n"
        "backend: {url: 'rediss://h:6380', ssl_cert_reqs: none}\n",
    )
    settings = load(path, ENV)
    assert settings.server.websocket_compression is True
    assert settings.server.static is False
    assert settings.backend.ssl_cert_reqs == "none"


# --------------------------------------------------------------------------- ranges


NUMERIC_KEYS = [k for k, v in CONTRACT_DEFAULTS.items() if type(v) is int]


@pytest.mark.parametrize("key", NUMERIC_KEYS)
def test_every_number_refuses_negative(key: str) -> None:
    error = fails(overrides={key: -1})
    assert error.key == key
    assert error.problem.endswith("(from the command line)")


@pytest.mark.parametrize(
    "key",
    [
        "server.workers",
        "server.backlog",
        "auth.access_ttl_s",
        "auth.refresh_ttl_s",
        "auth.timeout_s",
        "auth.lockout.failures",
        "auth.lockout.window_s",
        "auth.lockout.block_s",
        "api.replay_window_s",
        "limits.max_connections",
        "limits.max_connections_per_user",
        "limits.max_frame_bytes",
        "limits.max_rooms_per_connection",
        "limits.outbound_buffer_bytes",
        "limits.handshake_concurrency",
        "limits.handshake_wait_s",
        "ratelimit.messages",
        "ratelimit.window_s",
        "ratelimit.strikes",
        "heartbeat.interval_s",
        "heartbeat.misses",
        "rooms.history_ttl_s",
        "offline.ttl_s",
        "offline.max_bytes",
        "auth.lockout.ipv6_prefix",
        "auth.lockout.max_in_flight",
    ],
)
def test_sizes_and_intervals_refuse_zero(key: str) -> None:
    assert fails(overrides={key: 0}).key == key


@pytest.mark.parametrize(
    "key",
    [
        "server.port",
        "server.drain_s",
        "server.backend_wait_s",
        "auth.leeway_s",
        "rooms.history_size",
        "offline.max_messages",
    ],
)
def test_zero_allowed(key: str) -> None:
    assert flat(to_dict(load(None, ENV, {key: 0})))[key] == 0


def test_port_range() -> None:
    assert load(None, ENV, {"server.port": 65535}).server.port == 65535
    error = fails(overrides={"server.port": 65536})
    assert error.key == "server.port"
    assert error.problem.startswith("must be between 0 and 65535, got 65536")


def test_heartbeat_misses_at_least_one() -> None:
    error = fails(overrides={"heartbeat.misses": 0})
    assert error.problem.startswith("must be at least 1, got 0")


def test_outbound_buffer_must_hold_a_maximal_frame() -> None:
    overrides = {"limits.max_frame_bytes": 2048, "limits.outbound_buffer_bytes": 1024}
    assert fails(overrides=overrides).key == "limits.outbound_buffer_bytes"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("server.host", ""),
        ("server.node_id", ""),
        ("server.node_id", "node 1"),
        ("server.node_id", "n" * 129),
        ("backend.key_prefix", ""),
        ("backend.key_prefix", "squall :"),
        ("auth.audience", ""),
        ("auth.issuer", ""),
    ],
)
def test_bad_strings(key: str, value: str) -> None:
    assert fails(overrides={key: value}).key == key


def test_good_node_ids() -> None:
    for node_id in ("web.1", "ip-10-0-0-1:4242", "n" * 128):
        assert load(None, ENV, {"server.node_id": node_id}).server.node_id == node_id


# --------------------------------------------------------------------------- proxies, origins


def test_trusted_proxies_cidrs() -> None:
    good = ("10.0.0.0/8", "192.168.1.7", "::1/128", "2001:db8::/32")
    settings = load(None, ENV, {"server.trusted_proxies": list(good)})
    assert settings.server.trusted_proxies == good
    for bad in ("10.0.0.0/33", "10.0.0.1/8", "example.com", ""):
        error = fails(overrides={"server.trusted_proxies": ["10.0.0.0/8", bad]})
        assert error.key == "server.trusted_proxies"
        assert error.problem.startswith("item 1: not a valid CIDR")


def test_allowed_origins_good() -> None:
    good = ["https://app.example.com", "http://localhost:8080", "http://[::1]:3000"]
    settings = load(None, ENV, {"security.allowed_origins": good})
    assert settings.security.allowed_origins == tuple(good)


@pytest.mark.parametrize(
    ("origin", "words"),
    [
        ("https://app.example.com/", "no path"),
        ("https://app.example.com/chat", "no path"),
        ("app.example.com", "scheme://host"),
        ("*", "wildcards"),
        ("https://*.example.com", "wildcards"),
        ("https://App.example.com", "lower case"),
        ("https://app.example.com:443", "default port"),
        ("http://app.example.com:80", "default port"),
        ("http://app.example.com:99999", "port out of range"),
        ("null", "scheme://host"),
    ],
)
def test_allowed_origins_bad(origin: str, words: str) -> None:
    error = fails(overrides={"security.allowed_origins": ["https://ok.example.com", origin]})
    assert error.key == "security.allowed_origins"
    assert error.problem.startswith("item 1:")
    assert words in error.problem


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize("name", ["none", "None", "NONE"])
def test_none_algorithm_refused(name: str) -> None:
    error = fails(overrides={"auth.algorithms": ["HS256", name]})
    assert (error.key, error.problem) == (
        "auth.algorithms",
        "'none' (unsigned tokens) is never accepted (from the command line)",
    )


def test_algorithm_list_rules() -> None:
    assert fails(overrides={"auth.algorithms": []}).problem.startswith("must list at least one")
    assert "unknown algorithm 'HS257'" in fails(overrides={"auth.algorithms": ["HS257"]}).problem
    assert "unknown algorithm 'hs256'" in fails(overrides={"auth.algorithms": ["hs256"]}).problem
    assert "listed twice" in fails(overrides={"auth.algorithms": ["HS256", "HS256"]}).problem


def test_every_hmac_algorithm_accepted_with_a_long_enough_secret() -> None:
    algorithms = ["HS256", "HS384", "HS512"]
    env = {"SQUALL_JWT_SECRET": "k" * 64}
    assert load(None, env, {"auth.algorithms": algorithms}).auth.algorithms == tuple(algorithms)


def test_hmac_algorithm_requires_the_secret() -> None:
    error = fails(environ={}, overrides={"auth.algorithms": ["ES256", "HS384"]})
    assert error.key == "auth.secret"
    assert "HS384" in error.problem


def test_secret_length_is_counted_in_bytes_and_never_shown() -> None:
    short = "s3cr3t-value-" + "x" * 18  # 31 bytes
    error = fails(environ={"SQUALL_JWT_SECRET": short})
    assert error.key == "auth.secret"
    assert "at least 32 bytes, got 31 bytes" in error.problem
    assert short not in str(error)
    assert load(None, {"SQUALL_JWT_SECRET": "é" * 16}).auth.secret == "é" * 16


def test_longer_hash_needs_a_longer_secret() -> None:
    error = fails(overrides={"auth.algorithms": ["HS512"]})
    assert error.problem.startswith("must be at least 64 bytes, got 32 bytes")


def test_api_secret_length() -> None:
    error = fails(environ={**ENV, "SQUALL_API_SECRET": "a" * 31})
    assert error.key == "api.secret"
    assert "a" * 31 not in str(error)
    assert load(None, {**ENV, "SQUALL_API_SECRET": "a" * 32}).api.secret == "a" * 32


@pytest.mark.parametrize(
    ("algorithm", "public"),
    [("RS256", "rsa"), ("RS512", "rsa"), ("PS256", "rsa"), ("ES256", "ec"), ("EdDSA", "ed")],
)
def test_asymmetric_algorithm_with_matching_key(
    keys: dict[str, str], algorithm: str, public: str
) -> None:
    overrides = {"auth.algorithms": [algorithm], "auth.public_key_file": keys[f"{public}.pub"]}
    settings = load(None, {}, overrides)
    assert settings.auth.public_key_file == keys[f"{public}.pub"]


def test_asymmetric_algorithm_requires_a_public_key() -> None:
    error = fails(environ={}, overrides={"auth.algorithms": ["ES256"]})
    assert (error.key, error.problem) == (
        "auth.public_key_file",
        "required when ES256 is in auth.algorithms",
    )


def test_public_key_file_must_exist(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    overrides = {"auth.algorithms": ["RS256"], "auth.public_key_file": missing}
    error = fails(overrides=overrides)
    assert error.key == "auth.public_key_file"
    assert "file not found" in error.problem


@pytest.mark.parametrize(
    ("algorithm", "public", "words"),
    [
        ("ES256", "rsa", "an RSA key cannot verify ES256"),
        ("ES384", "ec", "an EC key on secp256r1 cannot verify ES384"),
        ("RS256", "ed", "an EdDSA key cannot verify RS256"),
        ("RS256", "rsa1024", "at least 2048"),
        ("RS256", "junk", "not a PEM public key"),
        ("RS256", "rsa.priv", "not a PEM public key"),
    ],
)
def test_public_key_must_fit(keys: dict[str, str], algorithm: str, public: str, words: str) -> None:
    path = keys[public if public in keys else f"{public}.pub"]
    error = fails(overrides={"auth.algorithms": [algorithm], "auth.public_key_file": path})
    assert error.key == "auth.public_key_file"
    assert words in error.problem


def test_private_key_must_match_the_public_key(keys: dict[str, str]) -> None:
    base = {"auth.algorithms": ["ES256"], "auth.public_key_file": keys["ec.pub"]}
    assert load(None, {}, {**base, "auth.private_key_file": keys["ec.priv"]})
    error = fails(overrides={**base, "auth.private_key_file": keys["ed.priv"]})
    assert (error.key, error.problem) == (
        "auth.private_key_file",
        "does not match auth.public_key_file (from the command line)",
    )
    error = fails(overrides={**base, "auth.private_key_file": keys["junk"]})
    assert "not a PEM private key" in error.problem


def test_login_with_only_asymmetric_algorithms_needs_a_private_key(
    keys: dict[str, str], tmp_path: Path
) -> None:
    users = write(tmp_path, "{}\n", "users.yaml")
    base = {
        "auth.algorithms": ["EdDSA"],
        "auth.public_key_file": keys["ed.pub"],
        "auth.users_file": users,
    }
    assert fails(environ={}, overrides=base).key == "auth.private_key_file"
    assert load(None, {}, {**base, "auth.private_key_file": keys["ed.priv"]})


def test_users_file_must_exist(tmp_path: Path) -> None:
    error = fails(overrides={"auth.users_file": str(tmp_path / "users.yaml")})
    assert error.key == "auth.users_file"


# --------------------------------------------------------------------------- backend, workers


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://:pw@host:6380",
        "redis+cluster://a:7000",
        "rediss+cluster://b:7000",
        "REDIS://upper:1",
    ],
)
def test_backend_schemes_accepted(url: str) -> None:
    assert load(None, {**ENV, "REDIS_URL": url}).backend.url == url


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://:hunter2@host:6379", "got scheme 'http'"),
        ("localhost:6379", "without a scheme"),
        ("https://host", "got scheme 'https'"),
        ("hunter2-no-scheme", "without a scheme"),
        ("redis://host:port", "not a valid URL"),
    ],
)
def test_backend_bad_url_is_not_echoed(url: str, words: str) -> None:
    error = fails(environ={**ENV, "REDIS_URL": url})
    assert error.key == "backend.url"
    assert words in error.problem
    assert "hunter2" not in str(error)
    assert error.problem.endswith("(from environment variable REDIS_URL)")


def test_more_than_one_worker_needs_redis() -> None:
    error = fails(overrides={"server.workers": 2})
    assert error.key == "server.workers"
    assert error.problem == (
        "more than one worker requires the Redis backend (backend.url / REDIS_URL)"
        " (from the command line)"
    )
    settings = load(None, {**ENV, "REDIS_URL": "redis://r:6379"}, {"server.workers": 4})
    assert settings.server.workers == 4


def test_web_concurrency_without_redis_names_the_variable() -> None:
    error = fails(environ={**ENV, "WEB_CONCURRENCY": "3"})
    assert error.key == "server.workers"
    assert error.problem.endswith("(from environment variable WEB_CONCURRENCY)")


def test_backend_tls_files(keys: dict[str, str]) -> None:
    env = {**ENV, "REDIS_URL": "rediss://h:6380"}
    files = {"backend.ssl_ca_file": keys["cert"], "backend.ssl_cert_file": keys["cert"]}
    settings = load(None, env, {**files, "backend.ssl_key_file": keys["ec.priv"]})
    assert settings.backend.ssl_key_file == keys["ec.priv"]
    error = fails(environ=env, overrides={"backend.ssl_key_file": keys["ec.priv"]})
    assert error.key == "backend.ssl_cert_file"
    error = fails(environ={**ENV, "REDIS_URL": "redis://h:6379"}, overrides=files)
    assert (error.key, error.problem) == (
        "backend.ssl_ca_file",
        "only used with a rediss:// URL (TLS to Redis) (from the command line)",
    )
    assert "file not found" in fails(environ=env, overrides={"backend.ssl_ca_file": "/no"}).problem


# --------------------------------------------------------------------------- server TLS


def test_tls_cert_and_key(keys: dict[str, str]) -> None:
    tls = {"server.tls.cert_file": keys["cert"], "server.tls.key_file": keys["ec.priv"]}
    settings = load(None, ENV, {**tls, "server.tls.client_ca_file": keys["cert"]})
    assert settings.server.tls.client_ca_file == keys["cert"]


def test_tls_both_or_neither(keys: dict[str, str]) -> None:
    assert fails(overrides={"server.tls.cert_file": keys["cert"]}).key == "server.tls.key_file"
    assert fails(overrides={"server.tls.key_file": keys["ec.priv"]}).key == "server.tls.cert_file"


def test_tls_files_must_exist_and_match(keys: dict[str, str], tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    error = fails(
        overrides={"server.tls.cert_file": missing, "server.tls.key_file": keys["ec.priv"]}
    )
    assert (error.key, error.problem) == (
        "server.tls.cert_file",
        f"file not found: {missing} (from the command line)",
    )
    error = fails(
        overrides={"server.tls.cert_file": keys["cert"], "server.tls.key_file": keys["rsa.priv"]}
    )
    assert error.key == "server.tls.key_file"
    assert "cannot load the certificate" in error.problem


def test_mtls_requires_a_certificate(keys: dict[str, str]) -> None:
    error = fails(overrides={"server.tls.client_ca_file": keys["cert"]})
    assert error.key == "server.tls.client_ca_file"


def test_mtls_ca_must_be_certificates(keys: dict[str, str]) -> None:
    tls = {"server.tls.cert_file": keys["cert"], "server.tls.key_file": keys["ec.priv"]}
    error = fails(overrides={**tls, "server.tls.client_ca_file": keys["junk"]})
    assert error.key == "server.tls.client_ca_file"


def test_relative_paths_become_absolute(
    keys: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "users.yaml").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    settings = load(write(tmp_path, "auth: {users_file: users.yaml}\n"), ENV)
    assert settings.auth.users_file == str(tmp_path / "users.yaml")
    assert os.path.isabs(settings.auth.users_file)


# --------------------------------------------------------------------------- environment


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "server: {port: 1111, workers: 1, node_id: file-node}\n"
        "backend: {url: 'redis://file:6379'}\n"
        "auth: {secret: '" + "f" * 32 + "'}\napi: {secret: '" + "f" * 32 + "'}\n",
    )
    env = {
        "PORT": "5000",
        "REDIS_URL": "redis://env:6379/1",
        "WEB_CONCURRENCY": "3",
        "SQUALL_NODE_ID": "007",
        "SQUALL_JWT_SECRET": "j" * 40,
        "SQUALL_API_SECRET": "a" * 40,
    }
    settings = load(path, env)
    assert settings.server.port == 5000
    assert settings.backend.url == "redis://env:6379/1"
    assert settings.server.workers == 3
    assert settings.server.node_id == "007"
    assert settings.auth.secret == "j" * 40
    assert settings.api.secret == "a" * 40
    assert load(path, {}).server.port == 1111


def test_empty_alias_is_unset(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {port: 1111}\n")
    env = {**ENV, "PORT": "", "REDIS_URL": "", "SQUALL_API_SECRET": ""}
    settings = load(path, env)
    assert (settings.server.port, settings.backend.url, settings.api.secret) == (1111, None, None)


def test_nested_keys() -> None:
    env = {
        **ENV,
        "SQUALL_LIMITS__MAX_CONNECTIONS_PER_USER": "3",
        "SQUALL_AUTH__LOCKOUT__FAILURES": "7",
        "SQUALL_SERVER__TLS__CLIENT_CA_FILE": "",
        "SQUALL_HEARTBEAT__INTERVAL_S": "2.5",
        "SQUALL_ROOMS__PRESENCE_EVENTS": "false",
        "SQUALL_SERVER__WEBSOCKET_COMPRESSION": "yes",
        "SQUALL_LIMITS__ON_NEW_LOGIN": "reject",
    }
    settings = load(None, env)
    assert settings.limits.max_connections_per_user == 3
    assert settings.auth.lockout.failures == 7
    assert settings.server.tls.client_ca_file is None
    assert settings.heartbeat.interval_s == 2.5
    assert settings.rooms.presence_events is False
    assert settings.server.websocket_compression is True
    assert settings.limits.on_new_login == "reject"


def test_env_values_are_yaml_scalars_checked_like_the_file() -> None:
    error = fails(environ={**ENV, "SQUALL_LIMITS__MAX_CONNECTIONS": "abc"})
    assert (error.key, error.problem) == (
        "limits.max_connections",
        "expected an integer, got 'abc' (from environment variable SQUALL_LIMITS__MAX_CONNECTIONS)",
    )
    error = fails(environ={**ENV, "PORT": "80.5"})
    assert error.problem == "expected an integer, got 80.5 (from environment variable PORT)"
    assert fails(environ={**ENV, "SQUALL_ROOMS__PRESENCE_EVENTS": "maybe"}).key == (
        "rooms.presence_events"
    )


def test_text_values_from_env_are_verbatim(tmp_path: Path) -> None:
    secret = "'quoted' #not-a-comment: [x] " + "z" * 10
    env = {
        "SQUALL_JWT_SECRET": secret,
        "SQUALL_SERVER__HOST": "::",
        "SQUALL_AUTH__ISSUER": "123",
        "SQUALL_BACKEND__KEY_PREFIX": "null",
    }
    settings = load(None, env)
    assert settings.auth.secret == secret
    assert settings.server.host == "::"
    assert settings.auth.issuer == "123"
    assert settings.backend.key_prefix == "null"


def test_env_null_clears_a_nullable_key(tmp_path: Path) -> None:
    path = write(tmp_path, "auth: {audience: squall, issuer: me}\n")
    env = {**ENV, "SQUALL_AUTH__AUDIENCE": "null", "SQUALL_AUTH__ISSUER": ""}
    settings = load(path, env)
    assert (settings.auth.audience, settings.auth.issuer) == (None, None)


def test_env_lists() -> None:
    env = {
        **ENV,
        "SQUALL_SERVER__TRUSTED_PROXIES": "10.0.0.0/8, 172.16.0.0/12",
        "SQUALL_SECURITY__ALLOWED_ORIGINS": "[https://a.example.com, 'http://localhost:8080']",
        "SQUALL_AUTH__ALGORITHMS": "HS256",
    }
    settings = load(None, env)
    assert settings.server.trusted_proxies == ("10.0.0.0/8", "172.16.0.0/12")
    assert settings.security.allowed_origins == ("https://a.example.com", "http://localhost:8080")
    assert settings.auth.algorithms == ("HS256",)
    assert load(None, {**env, "SQUALL_SERVER__TRUSTED_PROXIES": ""}).server.trusted_proxies == ()
    error = fails(environ={**ENV, "SQUALL_SECURITY__ALLOWED_ORIGINS": "[unclosed"})
    assert error.key == "security.allowed_origins"


def test_unknown_env_key_is_named() -> None:
    error = fails(environ={**ENV, "SQUALL_LIMITS__MAX_CONECTIONS": "3"})
    assert error.key == "limits.max_conections"
    assert error.problem == (
        "unknown key (from environment variable SQUALL_LIMITS__MAX_CONECTIONS); "
        "did you mean 'SQUALL_LIMITS__MAX_CONNECTIONS'?"
    )
    assert "SQUALL_NOPE__X" in fails(environ={**ENV, "SQUALL_NOPE__X": "1"}).problem


def test_env_section_is_refused() -> None:
    error = fails(environ={**ENV, "SQUALL_SERVER__TLS": "{}"})
    assert error.key == "server.tls"
    assert "section" in error.problem


def test_other_variables_are_ignored() -> None:
    env = {**ENV, "SQUALL_HOME": "/x", "HOME": "/root", "squall_limits__x": "1", "LIMITS__X": "1"}
    assert load(None, env) == load(None, ENV)


def test_nested_key_beats_its_alias() -> None:
    env = {**ENV, "PORT": "5000", "SQUALL_SERVER__PORT": "6000"}
    assert load(None, env).server.port == 6000


# --------------------------------------------------------------------------- overrides


def test_overrides_beat_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {port: 1111}\n")
    env = {**ENV, "PORT": "5000", "SQUALL_NODE_ID": "env-node"}
    overrides = {"server.port": 9000, "server.node_id": "n1"}
    settings = load(path, env, overrides)
    assert (settings.server.port, settings.server.node_id) == (9000, "n1")


def test_unknown_override() -> None:
    error = fails(overrides={"server.prot": 1})
    assert (error.key, error.problem) == ("server.prot", "unknown key (from the command line)")


def test_override_type_checked() -> None:
    error = fails(overrides={"server.port": "9000"})
    assert error.problem == "expected an integer, got '9000' (from the command line)"


# --------------------------------------------------------------------------- to_dict


def test_to_dict_masks_secrets() -> None:
    env = {**ENV, "SQUALL_API_SECRET": "a" * 32, "REDIS_URL": "redis://user:hunter2@h:6379/0"}
    shown = to_dict(load(None, env))
    assert part(shown, "auth") == {**part(to_dict(Settings()), "auth"), "secret": "***"}
    assert shown["api"] == {"secret": "***", "replay_window_s": 300}
    assert part(shown, "backend")["url"] == "redis://user:***@h:6379/0"
    assert "hunter2" not in yaml.safe_dump(shown)
    assert SECRET not in yaml.safe_dump(shown)


def test_to_dict_mask_keeps_unset_secrets_null_and_urls_without_password() -> None:
    shown = to_dict(load(None, {**ENV, "REDIS_URL": "redis://h:6379"}))
    assert shown["api"] == {"secret": None, "replay_window_s": 300}
    assert part(shown, "backend")["url"] == "redis://h:6379"


def test_to_dict_unmasked_round_trips_through_yaml(tmp_path: Path) -> None:
    settings = load(
        None,
        {**ENV, "REDIS_URL": "rediss://:pw@h:6380", "WEB_CONCURRENCY": "2"},
        {"server.trusted_proxies": ["10.0.0.0/8"], "security.allowed_origins": ["https://a.b"]},
    )
    dumped = yaml.safe_dump(to_dict(settings, mask_secrets=False))
    assert load(write(tmp_path, dumped), {}) == settings


def test_to_dict_follows_the_field_order() -> None:
    shown = to_dict(Settings())
    assert list(shown) == [f.name for f in dataclasses.fields(Settings)]
    assert list(part(shown, "server")) == [f.name for f in dataclasses.fields(ServerConfig)]
