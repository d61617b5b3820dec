"""The Python and browser clients' side of issue 14: rpc, room tokens, server-side rooms."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest

from client import Backoff, RequestFailed, SquallClient
from tests.conftest import NodeFactory
from tests.harness import eventually, token
from tests.integration.test_client import NODE, STATIC, _node_websocket_flags
from tests.tokens import make_token

FAST = Backoff(base=0.01, cap=0.02)
CONF = {
    "hooks.module": "examples.squall_hooks",
    "rooms.namespaces": [{"pattern": "private:*", "join": "token"}],
}


@pytest.mark.gen_test(timeout=20)
async def test_python_client_rpc_room_token_and_server_side_rooms(nodes: NodeFactory) -> None:
    node = await nodes(CONF)
    client = SquallClient(node.url, token("vip-di", rooms_auto=["news"]), backoff=FAST)
    welcome = await client.connect()
    assert welcome["rooms"] == ["news", "vip-lounge"]
    await eventually(lambda: {"news", "vip-lounge"} <= set(client.rooms))
    assert client.rooms["news"].server_side and client.rooms["news"].joined
    assert await client.publish("vip-lounge", "hello") == 1
    assert await client.rpc("add", {"a": 20, "b": 22}) == {"sum": 42}
    with pytest.raises(RequestFailed) as refused:
        await client.rpc("nope")
    assert (refused.value.code, str(refused.value.reason)) == (404, "unknown method")
    with pytest.raises(RequestFailed) as no_token:
        await client.join("private:1")
    assert no_token.value.code == 403
    room_token = make_token({"sub": "vip-di", "room": "private:1", "exp": int(time.time()) + 60})
    assert (await client.join("private:1", token=room_token))["room"] == "private:1"
    # a reconnect: the server rejoins the server-side rooms, the client the token room
    for conn in node.node.hub:
        conn.close(1012, "restart")
    await eventually(lambda: client.connections == 2 and client.connected)
    await eventually(lambda: {"news", "vip-lounge", "private:1"} <= set(client.rooms))
    await eventually(lambda: all(s.joined for s in client.rooms.values()))
    rooms = {c.conn_id: set(c.rooms) for c in node.node.hub}
    assert list(rooms.values()) == [{"news", "vip-lounge", "private:1"}]
    await client.close()


BROWSER_SCRIPT = r"""
const { SquallClient, RequestFailed } = require(process.argv[2]);
const [url, tok, roomTok] = process.argv.slice(3);
(async () => {
  const client = new SquallClient(url, { token: tok });
  const welcome = await client.connect();
  const sum = await client.rpc("add", { a: 1, b: 2 });
  let code = null;
  try { await client.rpc("nope"); } catch (e) { code = e instanceof RequestFailed && e.code; }
  const joined = await client.join("private:1", roomTok);
  while (!client.rooms["vip-lounge"] || !client.rooms["vip-lounge"].joined) {
    await new Promise((r) => setTimeout(r, 10));
  }
  console.log(JSON.stringify({ rooms: welcome.rooms, sum, code, joined: joined.room }));
  client.close();
  process.exit(0);
})().catch((e) => {
  console.log(JSON.stringify({ failed: String(e && e.stack) }));
  process.exit(1);
});
"""


@pytest.mark.gen_test(timeout=30)
async def test_browser_client_rpc_room_token_and_server_side_rooms(
    nodes: NodeFactory, tmp_path: Path
) -> None:
    flags = _node_websocket_flags()
    assert NODE is not None and flags is not None, (
        "node with a global WebSocket is required (make test installs Debian's nodejs)"
    )
    node = await nodes(CONF)
    script = tmp_path / "drive.js"
    script.write_text(BROWSER_SCRIPT)
    room_token = make_token({"sub": "vip-ed", "room": "private:1", "exp": int(time.time()) + 60})
    proc = await asyncio.create_subprocess_exec(
        NODE,
        *flags,
        str(script),
        str(STATIC / "squall.js"),
        node.url,
        token("vip-ed"),
        room_token,
        stdout=subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert json.loads(out) == {
        "rooms": ["vip-lounge"],
        "sum": {"sum": 3},
        "code": 404,
        "joined": "private:1",
    }
