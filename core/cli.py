"""The command line of ``server.py`` (CONFIG.md) and its two offline sub-commands.

``server.py`` parses with :func:`parse_args`, turns the options into configuration
overrides with :func:`cli_overrides`, and dispatches on ``ns.command``:

* ``None``: run the server;
* ``"check-config"``: :func:`run_check_config` (with ``--connect``, ``ns.connect``,
  ``server.py`` then connects to the backend: the only network access);
* ``"hash-password"``: :func:`run_hash_password`;
* ``"issue-token"``: parsed here, signed by the caller (``ns.sub``, ``ns.ttl``,
  ``ns.role``, ``ns.rooms``).

Guarantees: a usage error exits with status 2 (argparse); a configuration error is
one line on ``err`` and status 2; nothing here starts a server or touches the network.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import yaml

from core.config import ConfigError, load, to_dict
from core.passwords import hash_password

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "cli_overrides",
    "parse_args",
    "run_check_config",
    "run_hash_password",
]

# The repository root is the directory of server.py, the parent of core/.
DEFAULT_CONFIG_PATH = str(Path(__file__).resolve().parent.parent / "conf" / "default.yaml")

# Option destination -> dotted configuration key.
_OVERRIDES = {"port": "server.port", "workers": "server.workers", "node_id": "server.node_id"}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _config_option(parser: argparse.ArgumentParser, default: str | None) -> None:
    # Sub-commands use SUPPRESS so `server.py --config a.yaml check-config` keeps
    # a.yaml: a sub-parser default would otherwise overwrite the top-level value.
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS if default is None else default,
        help="YAML configuration file (default: conf/default.yaml of the repository)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="server.py",
        description="Squall real-time WebSocket server.",
        epilog="Environment: PORT, REDIS_URL, WEB_CONCURRENCY, SQUALL_NODE_ID, "
        "SQUALL_JWT_SECRET, SQUALL_API_SECRET, SQUALL_<SECTION>__<KEY>.",
    )
    _config_option(parser, DEFAULT_CONFIG_PATH)
    parser.add_argument("--port", type=int, metavar="N", help="server.port")
    parser.add_argument("--workers", type=int, metavar="N", help="server.workers")
    parser.add_argument("--node-id", metavar="ID", help="server.node_id")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    commands.add_parser(
        "hash-password",
        help="read a password on stdin, print its hash for a users file",
        description="Reads one password line on stdin and prints its scrypt hash.",
    )
    check = commands.add_parser(
        "check-config",
        help="validate, print the effective configuration (secrets masked)",
        description="Exit 0 and print the effective configuration, or exit 2 and "
        "print one line naming the key at fault.",
    )
    _config_option(check, None)
    check.add_argument(
        "--connect",
        action="store_true",
        help="also connect to the backend (Redis) and report what is wrong, if anything",
    )

    issue = commands.add_parser(
        "issue-token",
        help="print an access token signed with the configured key",
        description="Prints an access token for testing and operations.",
    )
    issue.add_argument("--sub", required=True, metavar="UID", help="user id (sub claim)")
    issue.add_argument(
        "--ttl", type=_positive_int, metavar="S", help="lifetime in seconds (auth.access_ttl_s)"
    )
    issue.add_argument("--role", metavar="R", help="role claim, e.g. admin")
    issue.add_argument(
        "--rooms", nargs="+", metavar="PATTERN", help="room patterns the token may join"
    )
    _config_option(issue, None)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` (without the program name, i.e. ``sys.argv[1:]``).

    The namespace always has ``command`` (None or the sub-command name), ``config``
    (a path), ``port``, ``workers`` and ``node_id`` (None when not given); issue-token
    adds ``sub``, ``ttl``, ``role`` and ``rooms`` (None or a list). On a usage error
    argparse prints the usage to stderr and raises ``SystemExit(2)``.
    """
    return _build_parser().parse_args(argv)


def cli_overrides(ns: argparse.Namespace) -> dict[str, object]:
    """The options given on the command line as dotted configuration keys."""
    return {
        key: getattr(ns, dest)
        for dest, key in _OVERRIDES.items()
        if getattr(ns, dest, None) is not None
    }


def run_check_config(
    ns: argparse.Namespace, environ: Mapping[str, str], out: TextIO, err: TextIO
) -> int:
    """Validate the configuration ``ns`` and ``environ`` describe; return the exit status.

    0: the effective configuration, secrets masked, is written to ``out`` as YAML.
    2: one line ``config error: <key>: <problem>`` is written to ``err``.
    """
    try:
        settings = load(ns.config, environ, cli_overrides(ns))
    except ConfigError as exc:
        print(exc, file=err)
        return 2
    out.write(f"# effective configuration from {ns.config} (secrets masked)\n")
    out.write(yaml.safe_dump(to_dict(settings), sort_keys=False, default_flow_style=False))
    return 0


def run_hash_password(stdin: TextIO, out: TextIO, err: TextIO) -> int:
    """Hash the first line of ``stdin`` (line ending removed); return the exit status.

    0: the hash is written to ``out``, one line. 2: the password was empty.
    """
    password = stdin.readline().rstrip("\r\n")
    if not password:
        print("hash-password: empty password (write it on stdin, one line)", file=err)
        return 2
    print(hash_password(password), file=out)
    return 0
