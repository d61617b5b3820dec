"""Room namespaces and room tokens through real nodes, on memory and on a real Redis.

Each option of ``rooms.namespaces`` changes what a client sees: who may publish,
whether presence answers and join/leave events go out, whether ``join`` recovers,
and whether ``join`` needs a room token. Unmatched rooms keep the defaults.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from tests.conftest import NodeFactory
from tests.harness import connect, token
from tests.redis_server import shared_server
from tests.security import http, signed_headers_for
from tests.tokens import make_token

NAMESPACES: list[dict[str, Any]] = [
    {"pattern": "feed:*", "publish": "server", "presence": False},
    {"pattern": "frozen:*", "publish": "nobody"},
    {"pattern": "quiet:*", "presence_events": False, "recovery": False},
    {"pattern": "private:*", "join": "token"},
]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, object]:
    if request.param == "memory":
        return {}
    return {"backend.url": shared_server().url, "backend.key_prefix": f"sq-ns:{uuid.uuid4().hex}:"}


async def api_publish(node: Any, room: str, data: Any) -> tuple[int, Any]:
    raw = json.dumps({"room": room, "data": data}).encode()
    headers = signed_headers_for("POST", "/api/publish", raw)
    r = await http(node, "POST", "/api/publish", body=raw, headers=headers)
    return r.status, r.body


@pytest.mark.gen_test(timeout=30)
async def test_publish_rules_and_presence_off(
    nodes: NodeFactory, backend: dict[str, object]
) -> None:
    node = await nodes({**backend, "rooms.namespaces": NAMESPACES})
    a = await connect(node, token("alice"))
    await a.request({"t": "join", "room": "feed:x"})
    no = await a.request({"t": "pub", "room": "feed:x", "data": 1})
    assert (no["code"], no["reason"]) == (403, "only the server publishes in this room")
    assert await api_publish(node, "feed:x", {"news": 1}) == (200, {"room": "feed:x", "seq": 1})
    assert (await a.expect("msg"))["data"] == {"news": 1}
    off = await a.request({"t": "presence", "room": "feed:x"})
    assert (off["code"], off["reason"]) == (403, "presence is off in this room")

    await a.request({"t": "join", "room": "frozen:x"})
    assert (await a.request({"t": "pub", "room": "frozen:x", "data": 1}))["code"] == 403
    status, body = await api_publish(node, "frozen:x", 1)
    assert status == 403 and body["error"] == "forbidden"

    await a.request({"t": "join", "room": "plain"})  # unmatched: today's defaults
    assert (await a.request({"t": "pub", "room": "plain", "data": 1}))["t"] == "ok"
    assert (await a.request({"t": "presence", "room": "plain"}))["users"] == ["alice"]


@pytest.mark.gen_test(timeout=30)
async def test_presence_events_and_recovery_off(
    nodes: NodeFactory, backend: dict[str, object]
) -> None:
    node = await nodes({**backend, "rooms.namespaces": NAMESPACES})
    a = await connect(node, token("alice"))
    b = await connect(node, token("bob"))
    for room in ("quiet:x", "plain"):
        await a.request({"t": "join", "room": room})
        await b.request({"t": "join", "room": room})
    # only the unmatched room announces bob
    assert (await a.expect("presence"))["room"] == "plain"
    first = await b.request({"t": "pub", "room": "quiet:x", "data": 1})
    assert first["t"] == "ok"
    await a.expect("msg")
    b.close()
    c = await connect(node, token("carol"))
    again = await c.request({"t": "join", "room": "quiet:x", "since": 0})
    assert again["recovered"] is False and again["seq"] == 1  # no recovery here
    again_plain = await c.request({"t": "join", "room": "plain", "since": 0})
    assert again_plain["recovered"] is True
    left = await a.wait_for(lambda f: f["t"] == "presence" and f["event"] == "leave")
    assert left["room"] == "plain"  # bob left both rooms; quiet:x said nothing


@pytest.mark.gen_test(timeout=30)
async def test_room_token_is_required_and_checked(
    nodes: NodeFactory, backend: dict[str, object]
) -> None:
    node = await nodes({**backend, "rooms.namespaces": NAMESPACES})
    # the access token's rooms claim does not open a token room
    a = await connect(node, token("alice", rooms=["*"]))
    missing = await a.request({"t": "join", "room": "private:1"})
    assert (missing["code"], missing["reason"]) == (403, "this room needs a room token")
    now = int(time.time())

    def room_token(**claims: Any) -> str:
        return make_token({"sub": "alice", "room": "private:1", "exp": now + 60, **claims})

    for bad, reason in (
        (room_token(room="private:2"), "wrong_room"),
        (room_token(sub="bob"), "wrong_user"),
        (room_token(exp=now - 60), "expired"),
        (room_token(typ="access"), "wrong_type"),
        (make_token({"sub": "alice", "room": "private:1", "exp": now + 60}, "x" * 40), None),
    ):
        e = await a.request({"t": "join", "room": "private:1", "token": bad})
        assert e["code"] == 403 and e["reason"].startswith("invalid room token")
        if reason is not None:
            assert e["reason"] == f"invalid room token: {reason}"
    no_peek = await a.request({"t": "presence", "room": "private:1"})
    assert (no_peek["code"], no_peek["reason"]) == (403, "room not allowed")
    ok = await a.request({"t": "join", "room": "private:1", "token": room_token()})
    assert ok["t"] == "ok" and ok["room"] == "private:1"
    assert (await a.request({"t": "presence", "room": "private:1"}))["users"] == ["alice"]
