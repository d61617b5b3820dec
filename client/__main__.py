"""Command line client: ``python -m client --url ws://HOST/ws --token T COMMAND ...``.

Commands:

* ``join ROOM [ROOM ...]``: join the rooms and print every msg/dm/presence frame as
  one JSON line until interrupted (Ctrl-C) or the server ends the session.
* ``chat ROOM``: like ``join``, and publish each line read from stdin.
* ``pub ROOM DATA``: join ROOM, publish DATA (parsed as JSON when it is valid JSON,
  sent as a string otherwise), print the assigned ``seq``.
* ``send USER DATA``: private message; prints the ``ok``.
* ``presence ROOM``: print the users in ROOM.
* ``ping``: print the round-trip time in milliseconds.

The token comes from ``--token`` or ``SQUALL_TOKEN``; with ``--username`` the CLI logs
in through ``POST /auth/login`` instead (password from ``SQUALL_PASSWORD`` or a
prompt). Binary data is printed as hex. Every change of the connection state
(connecting, open, retry N in X s, recovered, gave up, closed) is printed to stderr
as a ``# ...`` line. ``--max-attempts N`` gives up after N consecutive failed
reconnect tries; ``--reference-backoff`` uses the reference preset (1 s doubling to
30 s, 10 tries). Exit status: 0 success, 1 the server answered ``err``, 2 usage,
3 refused (login or handshake), ended by the server, or gave up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from client.backoff import DEFAULT, REFERENCE, Backoff
from client.connection import AuthRefused, Closed, RequestFailed, SquallClient
from client.events import StatusEvent

__all__ = ["main"]


def _jsonable(value: object) -> object:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _print(obj: object) -> None:
    print(json.dumps(obj, default=_jsonable, ensure_ascii=False), flush=True)


def _parse_data(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _login_url(ws_url: str) -> str:
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, "/auth/login", "", ""))


class LoginFailed(Exception):
    """``POST /auth/login`` did not give a token; the message says why (one line)."""


async def _login(ws_url: str, username: str) -> str:
    password = os.environ.get("SQUALL_PASSWORD") or getpass.getpass(f"password for {username}: ")
    body = json.dumps({"username": username, "password": password})
    url = _login_url(ws_url)
    try:
        resp = await AsyncHTTPClient().fetch(
            url, method="POST", body=body, headers={"Content-Type": "application/json"}
        )
    except HTTPClientError as e:
        message = ""
        if e.response is not None and e.response.body:
            with contextlib.suppress(ValueError, AttributeError):
                message = str(json.loads(e.response.body).get("message", ""))
        raise LoginFailed(f"HTTP {e.code} {message}".strip()) from None
    except OSError as e:
        raise LoginFailed(f"{url} unreachable: {e}") from None
    return str(json.loads(resp.body)["access_token"])


def _print_status(event: StatusEvent) -> None:
    print(f"# {event.describe()}", file=sys.stderr, flush=True)


def _backoff(args: argparse.Namespace) -> Backoff:
    policy = REFERENCE if args.reference_backoff else DEFAULT
    if args.max_attempts is not None:
        policy = Backoff(
            base=policy.base,
            cap=policy.cap,
            jitter=policy.jitter,
            max_attempts=args.max_attempts,
            reset_after=policy.reset_after,
            restart_delay=policy.restart_delay,
        )
    return policy


async def _follow(client: SquallClient) -> None:
    async for frame in client.messages():
        _print(frame)


async def _publish_stdin(client: SquallClient, room: str) -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        if line.strip():
            await client.publish(room, line.rstrip("\n"))


async def _run(args: argparse.Namespace) -> int:
    tok = args.token or os.environ.get("SQUALL_TOKEN")
    if args.username:
        try:
            tok = await _login(args.url, args.username)
        except LoginFailed as e:
            print(f"login failed: {e}", file=sys.stderr)
            return 3
    if not tok:
        print("a token is required (--token, SQUALL_TOKEN or --username)", file=sys.stderr)
        return 2
    client = SquallClient(
        args.url,
        tok,
        encoding="json" if args.json else "msgpack",
        backoff=_backoff(args),
        on_status=_print_status,
    )
    try:
        welcome = await client.connect()
        print(f"# connected as {welcome['uid']} to node {welcome['node']}", file=sys.stderr)
        if args.command == "join":
            for room in args.rooms:
                await client.join(room)
            await _follow(client)
        elif args.command == "chat":
            await client.join(args.room)
            follower = asyncio.ensure_future(_follow(client))
            await _publish_stdin(client, args.room)
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        elif args.command == "pub":
            await client.join(args.room)
            _print({"seq": await client.publish(args.room, _parse_data(args.data))})
        elif args.command == "send":
            _print(await client.send(args.user, _parse_data(args.data)))
        elif args.command == "presence":
            _print(await client.presence(args.room))
        elif args.command == "ping":
            _print({"rtt_ms": round(await client.ping() * 1000, 3)})
        return 0
    except RequestFailed as e:
        print(f"error {e.code}: {e.reason}", file=sys.stderr)
        return 1
    except AuthRefused as e:
        print(f"refused: HTTP {e.status} {e.body.get('message', '')}", file=sys.stderr)
        return 3
    except Closed as e:
        print(f"ended: {e}", file=sys.stderr)
        return 3
    except (OSError, HTTPClientError, TimeoutError) as e:
        print(f"cannot connect to {args.url}: {e}", file=sys.stderr)
        return 3
    finally:
        await client.close()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="squall-client", description="Squall command line client")
    p.add_argument("--url", default="ws://127.0.0.1:8080/ws", help="WebSocket URL of a node")
    p.add_argument("--token", help="access token (default: $SQUALL_TOKEN)")
    p.add_argument("--username", help="log in through /auth/login instead of --token")
    p.add_argument("--json", action="store_true", help="use the JSON subprotocol")
    p.add_argument(
        "--max-attempts",
        type=_positive_int,
        help="give up after N consecutive failed reconnect tries (default: never)",
    )
    p.add_argument(
        "--reference-backoff",
        action="store_true",
        help="reconnect 1 s doubling to 30 s and give up after 10 tries",
    )
    sub = p.add_subparsers(dest="command", required=True)
    join = sub.add_parser("join", help="join rooms and print their messages")
    join.add_argument("rooms", nargs="+", metavar="ROOM")
    chat = sub.add_parser("chat", help="join a room, print messages, publish stdin lines")
    chat.add_argument("room", metavar="ROOM")
    pub = sub.add_parser("pub", help="publish DATA to ROOM")
    pub.add_argument("room", metavar="ROOM")
    pub.add_argument("data", metavar="DATA")
    send = sub.add_parser("send", help="private message DATA to USER")
    send.add_argument("user", metavar="USER")
    send.add_argument("data", metavar="DATA")
    presence = sub.add_parser("presence", help="list the users in ROOM")
    presence.add_argument("room", metavar="ROOM")
    sub.add_parser("ping", help="measure the round-trip time")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
