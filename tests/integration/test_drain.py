"""Drain: a node that stops releases everything of its own before it exits, cleanly.

Two nodes on one real Redis: the drained one is a real ``server.py`` process (its
log is checked by ``server_procs``), the other runs in the test.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable

import pytest

from core.wsframe import OP_CLOSE, OP_TEXT
from tests.conftest import NodeFactory
from tests.harness import connect, refused, token
from tests.procs import ServerProcess
from tests.rawws import RawClient
from tests.redis_server import free_port, shared_server


async def _json_frame(raw: RawClient) -> dict[str, object]:
    while True:
        frame = await raw.next_frame()
        assert frame is not None, "closed early"
        opcode, _fin, payload = frame
        if opcode == OP_TEXT:
            out = json.loads(payload)
            assert isinstance(out, dict)
            return out


@pytest.mark.gen_test(timeout=60)
async def test_drain_that_runs_out_frees_the_slot_and_presence_with_a_clean_log(
    nodes: NodeFactory, server_procs: Callable[..., ServerProcess]
) -> None:
    prefix = f"squall-drain:{uuid.uuid4().hex}:"
    limits = {"limits.max_connections_per_user": 1, "limits.on_new_login": "reject"}
    port = free_port()
    drained = server_procs(
        ["--port", str(port), "--node-id", "drained"],
        {
            "REDIS_URL": shared_server().url,
            "SQUALL_BACKEND__KEY_PREFIX": prefix,
            "SQUALL_SERVER__HOST": "127.0.0.1",
            "SQUALL_SERVER__DRAIN_S": "1",
            "SQUALL_LIMITS__MAX_CONNECTIONS_PER_USER": "1",
            "SQUALL_LIMITS__ON_NEW_LOGIN": "reject",
        },
        name="drained",
    )
    await asyncio.get_running_loop().run_in_executor(None, drained.wait_for_line, "listening on")
    other = await nodes(
        {"backend.url": shared_server().url, "backend.key_prefix": prefix, **limits},
        node_id="other",
    )
    bob = await connect(other, token("bob"))
    assert (await bob.request({"t": "join", "room": "lobby"}))["t"] == "ok"

    # alice on the drained node: a peer that never answers the close handshake
    raw, status, _head = await RawClient.connect(
        port,
        headers={
            "Authorization": f"Bearer {token('alice')}",
            "Sec-WebSocket-Protocol": "squall.v1.json",
        },
    )
    assert status == 101
    assert (await _json_frame(raw))["t"] == "welcome"
    raw.send(OP_TEXT, json.dumps({"t": "join", "room": "lobby", "id": 1}).encode())
    while (await _json_frame(raw)).get("id") != 1:
        pass
    await bob.wait_for(lambda f: f["t"] == "presence" and f.get("uid") == "alice")
    assert sorted(await other.backend.presence_members("lobby")) == ["alice", "bob"]
    assert (await refused(other, token("alice"))).status == 429

    drained.signal()
    assert await asyncio.get_running_loop().run_in_executor(None, drained.wait, 10) == 0
    assert "still open after" in drained.log  # the drain ran out

    # right after the exit: alice's slot, membership and presence are gone
    assert await other.backend.presence_members("lobby") == ["bob"]
    assert await other.backend.sessions_of("alice") == []
    left = await bob.wait_for(lambda f: f["t"] == "presence" and f.get("event") == "leave")
    assert left["uid"] == "alice"
    again = await connect(other, token("alice"))
    assert (await again.request({"t": "ping"}))["t"] == "pong"
    # what the peer saw: bye + 1012 before the drop
    frames = []
    while (frame := await raw.next_frame()) is not None:
        frames.append(frame)
    assert any(op == OP_CLOSE and payload[:2] == b"\x03\xf4" for op, _fin, payload in frames)
    raw.close()
