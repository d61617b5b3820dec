"""The server API: admin bearer tokens, HMAC signatures, replay defences, each operation."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from core.backend.base import BackendOptions, BackendUnavailable
from core.backend.memory import MemoryBackend
from core.clock import SystemClock
from tests.conftest import NodeFactory
from tests.harness import HandshakeRefused, RunningNode, connect, refused, token
from tests.security import Response, http, signed_headers_for, users_file

NO_LOCKOUT = {"auth.lockout.failures": 1000}


async def signed(
    node: RunningNode,
    method: str,
    path: str,
    body: Any = None,
    **sign_kw: Any,
) -> Response:
    """A correctly signed request (``body`` is JSON-encoded for POST)."""
    raw = b"" if method == "GET" else json.dumps(body).encode()
    target = path.split("?", 1)[0]
    headers = signed_headers_for(method, target, raw, **sign_kw)
    return await http(node, method, path, body=raw if method == "POST" else None, headers=headers)


def admin_headers(sub: str = "ops") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, role='admin')}"}


@pytest.mark.gen_test(timeout=15)
async def test_signed_publish_reaches_room_members(nodes: NodeFactory) -> None:
    node = await nodes()
    c = await connect(node, token("alice"))
    await c.request({"t": "join", "room": "news"})
    r = await signed(node, "POST", "/api/publish", {"room": "news", "data": {"x": [1, "two"]}})
    assert r.status == 200 and r.body == {"room": "news", "seq": 1}
    msg = await c.expect("msg")
    assert msg["from"] is None and msg["data"] == {"x": [1, "two"]} and msg["seq"] == 1
    c.close()


@pytest.mark.gen_test(timeout=15)
async def test_admin_bearer_token_and_its_refusals(nodes: NodeFactory) -> None:
    node = await nodes(NO_LOCKOUT)
    r = await http(node, "GET", "/api/stats", headers=admin_headers())
    assert r.status == 200
    r = await http(node, "GET", "/api/stats", headers={"Authorization": f"Bearer {token('u')}"})
    assert r.status == 403 and r.body["error"] == "forbidden"
    r = await http(node, "GET", "/api/stats", headers={"Authorization": "Bearer garbage"})
    assert r.status == 401
    # a bearer token wins over signature headers: a bad token is not rescued by them
    headers = {**signed_headers_for("GET", "/api/stats"), "Authorization": "Bearer garbage"}
    assert (await http(node, "GET", "/api/stats", headers=headers)).status == 401
    # the admin token is never read from the query string
    r = await http(node, "GET", f"/api/stats?token={token('ops', role='admin')}")
    assert r.status == 401
    # a banned admin is refused like at the handshake
    await node.backend.ban("ops", None)
    r = await http(node, "GET", "/api/stats", headers=admin_headers())
    assert r.status == 403 and r.body["error"] == "banned"


@pytest.mark.gen_test(timeout=15)
async def test_send_online_and_offline(nodes: NodeFactory) -> None:
    node = await nodes()
    bob = await connect(node, token("bob"))
    r = await signed(node, "POST", "/api/send", {"to": "bob", "data": "hello"})
    assert r.status == 200 and r.body["online"] is True and r.body["queued"] is True
    dm = await bob.expect("dm")
    assert dm["from"] is None and dm["data"] == "hello" and dm["mid"] == r.body["mid"]
    r = await http(
        node,
        "POST",
        "/api/send",
        json_body={"to": "carol", "data": 1},
        headers=admin_headers(),
    )
    assert r.status == 200 and r.body["online"] is False and r.body["queued"] is True
    carol = await connect(node, token("carol"))
    assert (await carol.expect("dm"))["offline"] is True
    bob.close()
    carol.close()


@pytest.mark.gen_test(timeout=15)
async def test_kick_closes_every_connection_of_the_user_4010(nodes: NodeFactory) -> None:
    node = await nodes()
    a1 = await connect(node, token("alice"))
    a2 = await connect(node, token("alice"))
    bob = await connect(node, token("bob"))
    r = await signed(node, "POST", "/api/kick", {"uid": "alice"})
    assert r.status == 200 and r.body["nodes"] == 1
    for c in (a1, a2):
        assert (await c.expect("bye"))["code"] == 4010
        assert await c.closed() == 4010
    assert (await bob.request({"t": "ping"}))["t"] == "pong"
    # a kick is not a ban: the user may come back
    (await connect(node, token("alice"))).close()
    bob.close()


@pytest.mark.gen_test(timeout=15)
async def test_ban_closes_4003_refuses_403_until_unbanned(nodes: NodeFactory) -> None:
    node = await nodes()
    alice = await connect(node, token("alice"))
    bob = await connect(node, token("bob"))
    r = await signed(node, "POST", "/api/ban", {"uid": "alice"})
    assert r.status == 200 and r.body["ttl_s"] is None
    assert (await alice.expect("bye"))["code"] == 4003
    assert await alice.closed() == 4003
    e = await refused(node, token("alice"))
    assert e.status == 403 and e.body["error"] == "banned"
    assert (await bob.request({"t": "ping"}))["t"] == "pong"
    r = await signed(node, "POST", "/api/unban", {"uid": "alice"})
    assert r.status == 200
    (await connect(node, token("alice"))).close()
    bob.close()


@pytest.mark.gen_test(timeout=15)
async def test_ban_with_ttl_expires(nodes: NodeFactory) -> None:
    node = await nodes()
    r = await signed(node, "POST", "/api/ban", {"uid": "alice", "ttl_s": 1})
    assert r.status == 200 and r.body["ttl_s"] == 1
    assert (await refused(node, token("alice"))).status == 403
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while True:  # an expiry has no event to await: retry the handshake, bounded
        try:
            c = await connect(node, token("alice"))
            break
        except HandshakeRefused as e:
            assert e.status == 403 and loop.time() < deadline
            await asyncio.sleep(0.05)
    c.close()


@pytest.mark.gen_test(timeout=15)
async def test_presence_and_stats(nodes: NodeFactory) -> None:
    node = await nodes()
    a = await connect(node, token("alice"))
    b = await connect(node, token("bob"))
    await a.request({"t": "join", "room": "lobby"})
    await b.request({"t": "join", "room": "lobby"})
    r = await signed(node, "GET", "/api/presence?room=lobby")
    assert r.status == 200 and r.body == {"room": "lobby", "users": ["alice", "bob"]}
    r = await signed(node, "GET", "/api/stats")
    assert r.status == 200
    assert r.body["node"]["id"] == "n1" and r.body["node"]["connections"] == 2
    assert r.body["node"]["rooms"] == 1 and r.body["node"]["users"] == 2
    assert r.body["cluster"] == {"connections": 2, "nodes": {"n1": 2}}
    a.close()
    b.close()


@pytest.mark.gen_test(timeout=15)
async def test_parameters_are_validated(nodes: NodeFactory) -> None:
    node = await nodes({"limits.max_frame_bytes": 1024, "limits.outbound_buffer_bytes": 4096})
    bad_posts: list[tuple[str, Any, int]] = [
        ("/api/publish", {"room": "a\x00b", "data": 1}, 400),
        ("/api/publish", {"room": "r" * 129, "data": 1}, 400),
        ("/api/publish", {"room": 5, "data": 1}, 400),
        ("/api/publish", {"room": "ok"}, 400),
        ("/api/publish", {"room": "ok", "data": "x" * 2000}, 413),
        ("/api/send", {"to": "", "data": 1}, 400),
        ("/api/send", {"to": "u" * 257, "data": 1}, 400),
        ("/api/kick", {}, 400),
        ("/api/ban", {"uid": "x", "ttl_s": 0}, 400),
        ("/api/ban", {"uid": "x", "ttl_s": "60"}, 400),
        ("/api/ban", {"uid": "x", "ttl_s": True}, 400),
        ("/api/unban", {"uid": ["x"]}, 400),
    ]
    for path, body, status in bad_posts:
        r = await signed(node, "POST", path, body)
        assert r.status == status, (path, body, r.body)
        assert set(r.body) == {"error", "message"}
    r = await signed(node, "GET", "/api/presence")
    assert r.status == 400
    raw = b"[1, 2]"
    r = await http(
        node, "POST", "/api/kick", body=raw, headers=signed_headers_for("POST", "/api/kick", raw)
    )
    assert r.status == 400
    r = await signed(node, "GET", "/api/kick")
    assert r.status == 405


@pytest.mark.gen_test(timeout=20)
async def test_every_signature_defect_is_401(nodes: NodeFactory) -> None:
    node = await nodes(NO_LOCKOUT)
    body = json.dumps({"uid": "alice"}).encode()
    now = int(time.time() * 1000)

    async def kick(headers: dict[str, str], path: str = "/api/kick", raw: bytes = body) -> int:
        return (await http(node, "POST", path, body=raw, headers=headers)).status

    good = signed_headers_for("POST", "/api/kick", body)
    assert await kick(good) == 200
    assert await kick(good) == 401, "same nonce twice"
    window = node.settings.api.replay_window_s * 1000
    cases: dict[str, dict[str, str]] = {
        "stale": signed_headers_for("POST", "/api/kick", body, now_ms=now - window - 5000),
        "future": signed_headers_for("POST", "/api/kick", body, now_ms=now + window + 5000),
        "other_body": signed_headers_for("POST", "/api/kick", b'{"uid": "bob"}'),
        "other_path": signed_headers_for("POST", "/api/ban", body),
        "other_method": signed_headers_for("GET", "/api/kick", body),
        "other_secret": signed_headers_for("POST", "/api/kick", body, secret="z" * 40),
        "short_nonce": signed_headers_for("POST", "/api/kick", body, nonce="short-nonce"),
        "nothing": {},
    }
    fresh = signed_headers_for("POST", "/api/kick", body)
    cases["truncated"] = {**fresh, "X-Squall-Signature": fresh["X-Squall-Signature"][:-2]}
    cases["empty_signature"] = {**fresh, "X-Squall-Signature": ""}
    for header in ("X-Squall-Timestamp", "X-Squall-Nonce", "X-Squall-Signature"):
        h = signed_headers_for("POST", "/api/kick", body)
        del h[header]
        cases[f"missing_{header}"] = h
    for name, headers in cases.items():
        assert await kick(headers) == 401, name
    # the failures above consumed no nonce: a good request with a fresh nonce passes
    assert await kick(signed_headers_for("POST", "/api/kick", body)) == 200


@pytest.mark.gen_test(timeout=15)
async def test_signature_failures_count_toward_the_lockout(nodes: NodeFactory) -> None:
    node = await nodes({"auth.lockout.failures": 2})
    for _ in range(2):
        r = await http(node, "GET", "/api/stats", headers={"X-Squall-Signature": "0" * 64})
        assert r.status == 401
    r = await signed(node, "GET", "/api/stats")
    assert r.status == 429 and int(r.headers["Retry-After"]) > 0


@pytest.mark.gen_test(timeout=15)
async def test_signed_requests_refused_without_api_secret(nodes: NodeFactory) -> None:
    node = await nodes({"api.secret": None})
    r = await signed(node, "GET", "/api/stats")
    assert r.status == 401 and "disabled" in r.body["message"]
    assert (await http(node, "GET", "/api/stats", headers=admin_headers())).status == 200


class FlakyBackend(MemoryBackend):
    """A memory backend whose security questions fail while ``down`` is set."""

    down = False

    async def lockout_remaining(self, ip: str) -> float:
        if self.down:
            raise BackendUnavailable("down")
        return await super().lockout_remaining(ip)

    async def claim_nonce(self, nonce: str, ttl_s: int) -> bool:
        if self.down:
            raise BackendUnavailable("down")
        return await super().claim_nonce(nonce, ttl_s)

    async def is_revoked(self, jti: str) -> bool:
        if self.down:
            raise BackendUnavailable("down")
        return await super().is_revoked(jti)


@pytest.mark.gen_test(timeout=15)
async def test_security_checks_fail_closed_when_the_backend_is_down(
    nodes: NodeFactory, tmp_path: Path
) -> None:
    backend = FlakyBackend("n1", BackendOptions(), SystemClock())
    node = await nodes(
        {"auth.users_file": users_file(tmp_path, {"alice": "pw-alice-123"})}, backend=backend
    )
    r = await http(
        node, "POST", "/auth/login", json_body={"username": "alice", "password": "pw-alice-123"}
    )
    assert r.status == 200
    pair = r.body
    backend.down = True
    r = await http(
        node, "POST", "/auth/login", json_body={"username": "alice", "password": "pw-alice-123"}
    )
    assert r.status == 503 and "Retry-After" in r.headers
    r = await http(
        node, "POST", "/auth/refresh", json_body={"refresh_token": pair["refresh_token"]}
    )
    assert r.status == 503
    bearer = {"Authorization": f"Bearer {pair['access_token']}"}
    assert (await http(node, "POST", "/auth/logout", headers=bearer)).status == 503
    assert (await signed(node, "GET", "/api/stats")).status == 503
    assert (await http(node, "GET", "/api/stats", headers=admin_headers())).status == 503
    backend.down = False
    assert (await http(node, "POST", "/auth/logout", headers=bearer)).status == 200
