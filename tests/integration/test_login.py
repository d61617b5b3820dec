"""/auth/login, /auth/refresh, /auth/logout and the per-IP lockout, over real sockets."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.conftest import NodeFactory
from tests.harness import RunningNode, connect, refused, token
from tests.security import http, raw_status, users_file

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}


def _claims(tok: str) -> dict[str, Any]:
    out: dict[str, Any] = jwt.decode(tok, options={"verify_signature": False})
    return out


async def _node(nodes: NodeFactory, tmp_path: Path, **over: object) -> RunningNode:
    return await nodes({"auth.users_file": users_file(tmp_path, PASSWORDS), **over})


async def _login(node: RunningNode, user: str = "alice", **headers: str) -> dict[str, Any]:
    r = await http(
        node,
        "POST",
        "/auth/login",
        json_body={"username": user, "password": PASSWORDS[user]},
        headers=headers,
    )
    assert r.status == 200, r.body
    assert isinstance(r.body, dict)
    return r.body


async def _refresh(node: RunningNode, refresh_token: str) -> Any:
    return await http(node, "POST", "/auth/refresh", json_body={"refresh_token": refresh_token})


@pytest.mark.gen_test(timeout=30)
async def test_login_issues_a_pair_that_opens_a_socket(nodes: NodeFactory, tmp_path: Path) -> None:
    node = await _node(
        nodes, tmp_path, **{"auth.audience": "squall", "auth.issuer": "https://idp.example"}
    )
    body = await _login(node)
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    access, refresh = _claims(body["access_token"]), _claims(body["refresh_token"])
    assert access["typ"] == "access" and refresh["typ"] == "refresh"
    assert access["sub"] == refresh["sub"] == "alice"
    assert access["aud"] == "squall" and access["iss"] == "https://idp.example"
    assert access["fam"] == refresh["fam"] and access["jti"] != refresh["jti"]
    assert access["exp"] - access["iat"] == 900
    assert {"exp", "iat", "jti"} <= set(refresh)
    c = await connect(node, body["access_token"])
    assert (await c.request({"t": "ping"}))["t"] == "pong"
    c.close()


@pytest.mark.gen_test(timeout=30)
async def test_wrong_password_and_unknown_user_look_the_same(
    nodes: NodeFactory, tmp_path: Path
) -> None:
    node = await _node(nodes, tmp_path, **{"auth.lockout.failures": 1000})

    async def attempt(user: str) -> tuple[float, Any]:
        started = time.perf_counter()
        r = await http(
            node, "POST", "/auth/login", json_body={"username": user, "password": "guess"}
        )
        assert r.status == 401
        return time.perf_counter() - started, r.body

    wrong, unknown = [], []
    for _ in range(3):
        t_wrong, body_wrong = await attempt("alice")
        t_unknown, body_unknown = await attempt("nobody-" + str(len(wrong)))
        wrong.append(t_wrong)
        unknown.append(t_unknown)
        assert (
            body_wrong
            == body_unknown
            == {
                "error": "unauthorized",
                "message": "invalid username or password",
            }
        )
    # Both run one scrypt (tens of ms); skipping it for unknown users would make
    # them several times faster than a wrong password.
    assert statistics.median(unknown) > 0.6 * statistics.median(wrong)


@pytest.mark.gen_test(timeout=15)
async def test_login_disabled_without_users_file(nodes: NodeFactory) -> None:
    node = await nodes()
    r = await http(node, "POST", "/auth/login", json_body={"username": "a", "password": "b"})
    assert r.status == 404 and r.body["error"] == "login_disabled"


@pytest.mark.gen_test(timeout=15)
async def test_bad_bodies(nodes: NodeFactory, tmp_path: Path) -> None:
    node = await _node(nodes, tmp_path)
    for raw in (
        b"",
        b"not json",
        b"[1]",
        b'{"username": "alice"}',
        b'{"username": 1, "password": "x"}',
    ):
        r = await http(node, "POST", "/auth/login", body=raw)
        assert r.status == 400 and r.body["error"] == "bad_request", raw
    r = await http(node, "POST", "/auth/refresh", json_body={"refresh": "x"})
    assert r.status == 400
    r = await http(node, "GET", "/auth/login")
    assert r.status == 405 and r.body["error"] == "method_not_allowed"
    # an oversized body is refused from its Content-Length, without being read
    status = await raw_status(node.port, "POST", "/auth/login", {"Content-Length": str(10**8)})
    assert status == 413


@pytest.mark.gen_test(timeout=15)
async def test_access_and_refresh_tokens_are_not_interchangeable(
    nodes: NodeFactory, tmp_path: Path
) -> None:
    node = await _node(nodes, tmp_path, **{"auth.lockout.failures": 1000})
    body = await _login(node)
    e = await refused(node, body["refresh_token"])
    assert e.status == 401
    r = await _refresh(node, body["access_token"])
    assert r.status == 401 and "wrong_type" in r.body["message"]
    r = await http(
        node, "POST", "/auth/logout", headers={"Authorization": f"Bearer {body['refresh_token']}"}
    )
    assert r.status == 401
    assert (await _refresh(node, body["refresh_token"])).status == 200


@pytest.mark.gen_test(timeout=15)
async def test_refresh_rotates_and_reuse_revokes_the_family(
    nodes: NodeFactory, tmp_path: Path
) -> None:
    node = await _node(nodes, tmp_path, **{"auth.lockout.failures": 1000})
    first = await _login(node)
    r = await _refresh(node, first["refresh_token"])
    assert r.status == 200
    second = r.body
    assert _claims(second["refresh_token"])["fam"] == _claims(first["refresh_token"])["fam"]
    c = await connect(node, second["access_token"])
    c.close()
    # the spent token again: 401, and the whole family is gone
    r = await _refresh(node, first["refresh_token"])
    assert r.status == 401 and "already used" in r.body["message"]
    r = await _refresh(node, second["refresh_token"])
    assert r.status == 401
    # another login starts a new, independent family
    third = await _login(node)
    assert (await _refresh(node, third["refresh_token"])).status == 200


@pytest.mark.gen_test(timeout=15)
async def test_two_simultaneous_refreshes_at_most_one_wins(
    nodes: NodeFactory, tmp_path: Path
) -> None:
    node = await _node(nodes, tmp_path, **{"auth.lockout.failures": 1000})
    pair = await _login(node)
    results = await asyncio.gather(*(_refresh(node, pair["refresh_token"]) for _ in range(2)))
    statuses = sorted(r.status for r in results)
    assert statuses == [200, 401]
    winner = next(r.body for r in results if r.status == 200)
    # the loser presented a spent token: the family (the winner's token too) is revoked
    assert (await _refresh(node, winner["refresh_token"])).status == 401


@pytest.mark.gen_test(timeout=20)
async def test_logout_revokes_and_closes_that_tokens_connections(
    nodes: NodeFactory, tmp_path: Path
) -> None:
    node = await _node(nodes, tmp_path, **{"auth.lockout.failures": 1000})
    pair = await _login(node)
    access = pair["access_token"]
    by_header = await connect(node, access)
    by_frame = await connect(node, None)
    by_frame.send({"t": "auth", "token": access})
    await by_frame.expect("welcome")
    other_token = await connect(node, token("alice"))  # same user, another token
    other_user = await connect(node, (await _login(node, "bob"))["access_token"])

    started = time.monotonic()
    r = await http(node, "POST", "/auth/logout", headers={"Authorization": f"Bearer {access}"})
    assert r.status == 200 and r.body["logged_out"] is True
    for c in (by_header, by_frame):
        bye = await c.expect("bye", timeout=1)
        assert bye["code"] == 4010
        assert await c.closed(timeout=1) == 4010
    assert time.monotonic() - started < 1.0
    for c in (other_token, other_user):
        assert (await c.request({"t": "ping"}))["t"] == "pong"
    # the blacklisted token is refused everywhere afterwards
    e = await refused(node, access)
    assert e.status == 401 and "revoked" in e.body["message"]
    r = await http(node, "POST", "/auth/logout", headers={"Authorization": f"Bearer {access}"})
    assert r.status == 401
    assert (await _refresh(node, pair["refresh_token"])).status == 401
    r = await http(node, "POST", "/auth/logout")
    assert r.status == 401
    other_token.close()
    other_user.close()


@pytest.mark.gen_test(timeout=20)
async def test_login_failures_lock_out_the_client_ip_behind_a_trusted_proxy(
    nodes: NodeFactory, tmp_path: Path
) -> None:
    node = await _node(
        nodes,
        tmp_path,
        **{
            "server.trusted_proxies": ["127.0.0.1/32"],
            "auth.lockout.failures": 3,
            "auth.lockout.block_s": 120,
        },
    )
    mallory = {"X-Forwarded-For": "203.0.113.7"}
    honest = {"X-Forwarded-For": "198.51.100.9"}
    earlier = await _login_from(node, mallory)  # a session from before the lockout
    for _ in range(3):
        r = await http(
            node,
            "POST",
            "/auth/login",
            json_body={"username": "alice", "password": "nope"},
            headers=mallory,
        )
        assert r.status == 401
    # locked out: even the right password, even a valid token on the socket
    r = await http(
        node,
        "POST",
        "/auth/login",
        json_body={"username": "alice", "password": PASSWORDS["alice"]},
        headers=mallory,
    )
    assert r.status == 429 and r.body["error"] == "locked_out"
    assert 115 <= int(r.headers["Retry-After"]) <= 120
    e = await refused(node, token("alice"), headers=mallory)
    assert e.status == 429 and 115 <= int(e.headers["Retry-After"]) <= 120
    # logging out only removes access: allowed even from a locked-out IP
    bearer = {"Authorization": f"Bearer {earlier['access_token']}", **mallory}
    assert (await http(node, "POST", "/auth/logout", headers=bearer)).status == 200
    # another client IP behind the same proxy is unaffected
    await _login_from(node, honest)
    c = await connect(node, token("alice"), headers=honest)
    c.close()


async def _login_from(node: RunningNode, headers: dict[str, str]) -> dict[str, Any]:
    r = await http(
        node,
        "POST",
        "/auth/login",
        json_body={"username": "alice", "password": PASSWORDS["alice"]},
        headers=headers,
    )
    assert r.status == 200
    assert isinstance(r.body, dict)
    return r.body


@pytest.mark.gen_test(timeout=20)
async def test_forwarded_for_is_ignored_without_trusted_proxies(
    nodes: NodeFactory, tmp_path: Path
) -> None:
    node = await _node(nodes, tmp_path, **{"auth.lockout.failures": 2})
    for ip in ("203.0.113.7", "203.0.113.8"):  # spoofed header, same real peer
        r = await http(
            node,
            "POST",
            "/auth/login",
            json_body={"username": "alice", "password": "nope"},
            headers={"X-Forwarded-For": ip},
        )
        assert r.status == 401
    e = await refused(node, token("alice"), headers={"X-Forwarded-For": "198.51.100.9"})
    assert e.status == 429


@pytest.mark.gen_test(timeout=15)
async def test_banned_user_cannot_login_or_refresh(nodes: NodeFactory, tmp_path: Path) -> None:
    node = await _node(nodes, tmp_path)
    pair = await _login(node)
    await node.backend.ban("alice", None)
    r = await http(
        node,
        "POST",
        "/auth/login",
        json_body={"username": "alice", "password": PASSWORDS["alice"]},
    )
    assert r.status == 403 and r.body["error"] == "banned"
    assert (await _refresh(node, pair["refresh_token"])).status == 403
    await node.backend.unban("alice")
    assert (await _refresh(node, pair["refresh_token"])).status == 200
