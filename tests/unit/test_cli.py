"""core.cli: argument parsing, overrides, check-config and hash-password (in process)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from core.cli import (
    DEFAULT_CONFIG_PATH,
    cli_overrides,
    parse_args,
    run_check_config,
    run_hash_password,
)
from core.passwords import verify_password

REPO = Path(__file__).resolve().parents[2]
SECRET = "cli-test-secret-" + "q" * 20
ENV = {"SQUALL_JWT_SECRET": SECRET}


def check(argv: list[str], environ: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run_check_config(parse_args(argv), environ, out, err)
    return status, out.getvalue(), err.getvalue()


def hash_pw(text: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run_hash_password(io.StringIO(text), out, err)
    return status, out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------- parsing


def test_default_config_is_the_repository_default_yaml() -> None:
    assert Path(DEFAULT_CONFIG_PATH) == REPO / "conf" / "default.yaml"
    assert Path(DEFAULT_CONFIG_PATH).is_file()


def test_run_the_server_with_no_arguments() -> None:
    ns = parse_args([])
    assert (ns.command, ns.config, ns.port, ns.workers, ns.node_id) == (
        None,
        DEFAULT_CONFIG_PATH,
        None,
        None,
        None,
    )
    assert cli_overrides(ns) == {}


def test_server_options_become_overrides() -> None:
    ns = parse_args(["--config", "x.yaml", "--port", "9000", "--workers", "2", "--node-id", "n1"])
    assert ns.config == "x.yaml"
    assert cli_overrides(ns) == {"server.port": 9000, "server.workers": 2, "server.node_id": "n1"}


def test_check_config_takes_config_before_or_after_the_command() -> None:
    assert parse_args(["check-config"]).config == DEFAULT_CONFIG_PATH
    assert parse_args(["check-config", "--config", "b.yaml"]).config == "b.yaml"
    ns = parse_args(["--config", "a.yaml", "--port", "1", "check-config"])
    assert (ns.command, ns.config, cli_overrides(ns)) == (
        "check-config",
        "a.yaml",
        {"server.port": 1},
    )


def test_hash_password_command() -> None:
    assert parse_args(["hash-password"]).command == "hash-password"


def test_issue_token_command() -> None:
    ns = parse_args(
        ["issue-token", "--sub", "u1", "--ttl", "60", "--role", "admin", "--rooms", "a", "b.*"]
    )
    assert (ns.command, ns.sub, ns.ttl, ns.role, ns.rooms) == (
        "issue-token",
        "u1",
        60,
        "admin",
        ["a", "b.*"],
    )
    ns = parse_args(["issue-token", "--sub", "u2", "--config", "c.yaml"])
    assert (ns.ttl, ns.role, ns.rooms, ns.config) == (None, None, None, "c.yaml")


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "abc"],
        ["--workers", "two"],
        ["--verbose"],
        ["frobnicate"],
        ["issue-token"],
        ["issue-token", "--sub", "u", "--ttl", "0"],
        ["issue-token", "--sub", "u", "--rooms"],
        ["hash-password", "extra"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


# --------------------------------------------------------------------------- check-config


def test_check_config_prints_the_effective_config_masked() -> None:
    env = {**ENV, "REDIS_URL": "redis://:hunter2@r:6379/0", "WEB_CONCURRENCY": "2"}
    status, out, err = check(["--port", "9100", "check-config"], env)
    assert (status, err) == (0, "")
    assert out.startswith("# effective configuration from ")
    shown = yaml.safe_load(out)
    assert shown["server"]["port"] == 9100
    assert shown["server"]["workers"] == 2
    assert shown["auth"]["secret"] == "***"
    assert shown["api"]["secret"] is None
    assert shown["backend"]["url"] == "redis://:***@r:6379/0"
    assert SECRET not in out
    assert "hunter2" not in out


def test_check_config_reads_the_given_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("limits: {max_connections: 7}\n")
    status, out, _ = check(["check-config", "--config", str(path)], ENV)
    assert status == 0
    assert yaml.safe_load(out)["limits"]["max_connections"] == 7


def test_check_config_error_is_one_line_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("limits: {max_connections: abc}\n")
    status, out, err = check(["check-config", "--config", str(path)], ENV)
    assert (status, out) == (2, "")
    assert err == "config error: limits.max_connections: expected an integer, got 'abc'\n"


def test_check_config_missing_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.yaml")
    status, out, err = check(["check-config", "--config", missing], ENV)
    assert (status, out) == (2, "")
    assert err.startswith(f"config error: {missing}: cannot read the file")
    assert err.count("\n") == 1


def test_check_config_applies_command_line_overrides_last() -> None:
    status, _, err = check(["--workers", "3", "check-config"], ENV)
    assert status == 2
    assert err.startswith("config error: server.workers: more than one worker requires")


def test_default_config_needs_the_jwt_secret_from_the_environment() -> None:
    status, _, err = check(["check-config"], {})
    assert status == 2
    assert err.startswith("config error: auth.secret: required when HS256")


# --------------------------------------------------------------------------- hash-password


def test_hash_password_prints_a_verifiable_hash() -> None:
    status, out, err = hash_pw("s3cret pass\n")
    assert (status, err) == (0, "")
    assert out.endswith("\n") and out.count("\n") == 1
    assert verify_password("s3cret pass", out.strip())


def test_hash_password_reads_one_line_and_strips_only_the_line_end() -> None:
    status, out, _ = hash_pw(" padded \r\nsecond line\n")
    assert status == 0
    assert verify_password(" padded ", out.strip())
    assert not verify_password("padded", out.strip())


def test_hash_password_without_newline_at_eof() -> None:
    status, out, _ = hash_pw("no-newline")
    assert status == 0
    assert verify_password("no-newline", out.strip())


@pytest.mark.parametrize("text", ["", "\n", "\r\n"])
def test_hash_password_refuses_empty(text: str) -> None:
    status, out, err = hash_pw(text)
    assert (status, out) == (2, "")
    assert "empty password" in err
