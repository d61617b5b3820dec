"""The Python client library against a real node: requests, errors, reconnects, auth."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client import (
    AuthRefused,
    Backoff,
    Closed,
    ConnectionLost,
    Frame,
    RequestFailed,
    SquallClient,
)
from tests.conftest import NodeFactory
from tests.harness import RunningNode, connect, eventually, token
from tests.tokens import make_token

# reconnects in tests wait at most a few milliseconds
FAST = Backoff(base=0.01, cap=0.02, restart_delay=0.02)


async def _next(stream: AsyncIterator[Frame], timeout: float = 5.0) -> Frame:
    return await asyncio.wait_for(anext(stream), timeout)


async def _next_of(stream: AsyncIterator[Frame], t: str, timeout: float = 5.0) -> Frame:
    """The next frame of type ``t`` (presence events and the like are skipped)."""
    while True:
        frame = await _next(stream, timeout)
        if frame["t"] == t:
            return frame


def _client(node: RunningNode, uid: str = "alice", **kw: object) -> SquallClient:
    return SquallClient(node.url, token(uid), backoff=FAST, **kw)  # type: ignore[arg-type]


@pytest.mark.gen_test(timeout=15)
async def test_connect_join_publish_receive_both_encodings(nodes: NodeFactory) -> None:
    node = await nodes()
    alice = _client(node, "alice")
    bob = _client(node, "bob", encoding="json")
    welcome = await alice.connect()
    assert welcome["uid"] == "alice" and welcome["node"] == "n1"
    await bob.connect()
    ok = await alice.join("lobby")
    assert ok["room"] == "lobby" and ok["seq"] == 0 and isinstance(ok["epoch"], str)
    await bob.join("lobby")
    a_msgs, b_msgs = alice.messages(), bob.messages()
    assert await _next(a_msgs) == {"t": "presence", "room": "lobby", "uid": "bob", "event": "join"}
    for i in range(1, 4):
        assert await alice.publish("lobby", {"n": i, "blob": b"\x00\xff"}) == i
    for stream, blob in ((a_msgs, b"\x00\xff"), (b_msgs, None)):
        got = [await _next(stream) for _ in range(3)]
        assert [m["seq"] for m in got] == [1, 2, 3]
        assert all(m["t"] == "msg" and m["from"] == "alice" for m in got)
        if blob is not None:  # msgpack keeps binary data binary
            assert got[0]["data"] == {"n": 1, "blob": blob}
    assert await bob.presence("lobby") == ["alice", "bob"]
    assert 0 <= await bob.ping() < 5
    await bob.leave("lobby")
    assert "lobby" not in bob.rooms
    await alice.close()
    await bob.close()


@pytest.mark.gen_test(timeout=15)
async def test_request_errors_raise_request_failed(nodes: NodeFactory) -> None:
    node = await nodes()
    async with _client(node) as c:
        with pytest.raises(RequestFailed) as e:
            await c.publish("nowhere", 1)
        assert e.value.code == 403
        with pytest.raises(RequestFailed) as e:
            await c.leave("nowhere")
        assert e.value.code == 404
        with pytest.raises(RequestFailed) as e:
            await c.join("bad\x00room")
        assert e.value.code == 400
        assert "bad\x00room" not in c.rooms  # a refused join leaves no state behind
        await c.join("r")
        with pytest.raises(RequestFailed) as e:
            await c.join("r")
        assert e.value.code == 409
        assert await c.publish("r", "still fine") == 1  # errors keep the connection open
        assert c.connections == 1


@pytest.mark.gen_test(timeout=15)
async def test_dm_is_acked_after_the_application_took_it(nodes: NodeFactory) -> None:
    node = await nodes()
    async with _client(node, "alice") as alice, _client(node, "bob") as bob:
        first = await alice.send("bob", {"hello": "bob"})
        assert first["online"] is True
        stream = bob.messages()
        dm = await _next(stream)
        assert dm["t"] == "dm" and dm["mid"] == first["mid"] and dm["data"] == {"hello": "bob"}
        second = await alice.send("bob", "second")
        # taking the next frame acks the previous dm; the second one stays unacked
        assert (await _next(stream))["mid"] == second["mid"]
        await bob.ping()  # the ack was written before this ping, so it was processed
    raw = await connect(node, token("bob"))
    again = await raw.expect("dm")
    assert again["mid"] == second["mid"] and again["offline"] is True
    assert (await raw.request({"t": "ping"}))["t"] == "pong"  # and nothing else before it
    raw.close()


@pytest.mark.gen_test(timeout=15)
async def test_on_message_callback_and_unacked_dm_redelivery(nodes: NodeFactory) -> None:
    node = await nodes()
    got: list[Frame] = []
    seen = asyncio.Event()

    async def handle(frame: Frame) -> None:
        got.append(frame)
        seen.set()

    async with _client(node, "alice") as alice:
        await alice.send("carol", "offline hello")
        async with _client(node, "carol", on_message=handle, auto_ack=False) as carol:
            await asyncio.wait_for(seen.wait(), 5)
            assert got[0]["offline"] is True and got[0]["data"] == "offline hello"
            with pytest.raises(RuntimeError):
                await anext(carol.messages())
        # never acked: the next connection gets it again
        again = await connect(node, token("carol"))
        dm = await again.expect("dm")
        assert dm["mid"] == got[0]["mid"]
        again.close()


@pytest.mark.gen_test(timeout=20)
async def test_reconnect_after_1012_recovers_missed_messages_in_order(
    nodes: NodeFactory,
) -> None:
    node = await nodes()
    gate = asyncio.Event()
    gate.set()
    calls = 0

    async def provider() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return token("alice")

    client = SquallClient(node.url, provider, backoff=FAST)
    await client.connect()
    first_conn = client.welcome and client.welcome["conn"]
    await client.join("room")
    stream = client.messages()
    for i in range(1, 3):
        await client.publish("room", i)
    assert [(await _next(stream))["seq"] for _ in range(2)] == [1, 2]

    gate.clear()  # hold the reconnect until the missed messages exist
    for conn in node.node.hub:
        conn.close(1012, "restart")
    await eventually(lambda: not client.connected and calls == 2)
    publisher = await connect(node, token("bob"))
    assert (await publisher.request({"t": "join", "room": "room"}))["t"] == "ok"
    for i in range(3, 6):
        reply = await publisher.request({"t": "pub", "room": "room", "data": i})
        assert reply["seq"] == i
    publisher.close()
    gate.set()

    missed = [await _next_of(stream, "msg") for _ in range(3)]
    assert [(m["seq"], m["data"]) for m in missed] == [(3, 3), (4, 4), (5, 5)]
    assert client.connections == 2 and client.welcome is not None
    assert client.welcome["conn"] != first_conn
    # live again on the new connection, with no duplicate of what was replayed
    assert await client.publish("room", 6) == 6
    assert client.rooms["room"].recovered is True  # the rejoin's ok came before this pub's
    nxt = await _next_of(stream, "msg")
    assert (nxt["seq"], nxt["data"]) == (6, 6)
    await client.close()
    with pytest.raises(StopAsyncIteration):
        await _next(stream)


@pytest.mark.gen_test(timeout=15)
async def test_requests_wait_for_the_reconnect(nodes: NodeFactory) -> None:
    node = await nodes()
    gate = asyncio.Event()
    gate.set()
    calls = 0

    async def provider() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return token("alice")

    async with SquallClient(node.url, provider, backoff=FAST) as c:
        await c.join("w")
        gate.clear()
        for conn in node.node.hub:
            conn.close(4408, "heartbeat timeout")  # reconnectable
        await eventually(lambda: calls == 2)  # reconnecting, held at the token provider
        assert not c.connected
        # issued while disconnected: waits for the reconnect and the rejoin
        pending = asyncio.ensure_future(c.publish("w", "after"))
        await asyncio.sleep(0)
        assert not pending.done()
        gate.set()
        assert await pending == 1
        assert c.connections == 2


@pytest.mark.gen_test(timeout=15)
async def test_replaced_login_4009_ends_the_client(nodes: NodeFactory) -> None:
    node = await nodes({"limits.max_connections_per_user": 1})
    first = _client(node, "alice")
    await first.connect()
    await first.join("x")
    stream = first.messages()
    reader = asyncio.ensure_future(_next(stream))
    async with _client(node, "alice") as second:
        with pytest.raises(Closed) as e:
            await reader
        assert e.value.code == 4009
        assert first.closed and isinstance(first.error, Closed)
        with pytest.raises(Closed):
            await first.publish("x", "too late")
        # no reconnect: the newer login keeps its connection
        assert first.connections == 1
        await second.join("x")
        assert await second.presence("x") == ["alice"]
        await eventually(lambda: len(node.node.hub) == 1)


@pytest.mark.gen_test(timeout=15)
async def test_kick_4010_fails_pending_requests(nodes: NodeFactory) -> None:
    node = await nodes()
    c = _client(node, "alice")
    await c.connect()
    await c.join("k")
    for conn in node.node.hub:
        conn.close(4010, "kicked")
    with pytest.raises(Closed) as e:
        await anext(c.messages())
    assert (e.value.code, e.value.reason) == (4010, "kicked")
    assert c.connections == 1
    with pytest.raises(Closed):
        await c.ping()


@pytest.mark.gen_test(timeout=15)
async def test_bad_token_raises_auth_refused(nodes: NodeFactory) -> None:
    node = await nodes()
    forged = make_token({"sub": "mallory", "exp": 4_000_000_000}, secret="not-the-secret" * 4)
    with pytest.raises(AuthRefused) as e:
        await SquallClient(node.url, forged).connect()
    assert e.value.status == 401 and e.value.body["error"] == "unauthorized"


@pytest.mark.gen_test(timeout=15)
async def test_refresh_and_close_semantics(nodes: NodeFactory) -> None:
    node = await nodes()
    c = _client(node, "alice")
    await c.connect()
    ok = await c.refresh(token("alice", exp=4_000_000_000))
    assert ok["exp"] > 1_000_000_000
    with pytest.raises(RuntimeError):
        await c.connect()
    await c.close()
    await c.close()  # idempotent
    assert c.closed and c.error is None
    with pytest.raises(Closed):
        await c.join("after")
    await eventually(lambda: len(node.node.hub) == 0)


@pytest.mark.gen_test(timeout=15)
async def test_full_queue_applies_backpressure_and_close_still_returns(
    nodes: NodeFactory,
) -> None:
    node = await nodes()
    c = _client(node, max_queue=1)
    await c.connect()
    await c.join("q")
    assert await c.publish("q", 1) == 1  # its msg fills the queue
    assert await c.publish("q", 2) == 2  # its msg waits: the client stops reading
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(c.ping(), 0.2)
    await asyncio.wait_for(c.close(), 2)
    stream = c.messages()
    assert (await _next(stream))["data"] == 1  # what was received is still handed over
    with pytest.raises(StopAsyncIteration):
        await _next(stream)


@pytest.mark.gen_test(timeout=15)
async def test_in_flight_request_raises_connection_lost(nodes: NodeFactory) -> None:
    node = await nodes()
    async with _client(node) as c:
        await c.join("r")
        [conn] = list(node.node.hub)
        conn.close(1012, "restart")  # the client has not read the close yet...
        with pytest.raises(ConnectionLost) as e:
            await c.presence("r")  # ...so this goes out and is never answered
        assert e.value.code == 1012
        assert await c.publish("r", "back") == 1  # reconnected and rejoined meanwhile
        assert c.connections == 2


# -- the browser client (static/squall.js), run by Node.js when it is installed ----------

STATIC = Path(__file__).resolve().parents[2] / "static"
NODE = shutil.which("node")


def _node_websocket_flags() -> list[str] | None:
    """Node flags giving a global WebSocket (built in from Node 22), or None."""
    if NODE is None:
        return None
    probe = "process.exit(typeof WebSocket === 'function' ? 0 : 1)"
    for flags in ([], ["--experimental-websocket"]):
        done = subprocess.run([NODE, *flags, "-e", probe], capture_output=True, timeout=20)
        if done.returncode == 0:
            return flags
    return None


def test_squall_js_parses() -> None:
    assert NODE is not None, "node is required (make test installs Debian's nodejs)"
    subprocess.run([NODE, "--check", str(STATIC / "squall.js")], check=True, timeout=20)


# Drives squall.js like a page would. Lines out: JSON events; lines in: "go" releases
# the token provider on its second call, so the test controls when it reconnects.
BROWSER_SCRIPT = r"""
const { SquallClient, Closed, RequestFailed } = require(process.argv[2]);
const [url, tok] = process.argv.slice(3);
const out = (obj) => console.log(JSON.stringify(obj));
const lines = require("readline").createInterface({ input: process.stdin });
const next = () => new Promise((resolve) => lines.once("line", resolve));
(async () => {
  let calls = 0;
  const client = new SquallClient(url, {
    token: async () => { if (++calls === 2) { out({ t: "waiting" }); await next(); } return tok; },
    backoff: { base: 0.01, cap: 0.02 },
  });
  const rejoined = new Promise((resolve) => client.on("rejoin", resolve));
  const seen = [];
  let want = 2, release = null;
  client.on("msg", (m) => {
    seen.push([m.seq, m.data]);
    if (seen.length >= want && release) release();
  });
  const upTo = (n) => new Promise((resolve) => {
    want = n;
    release = resolve;
    if (seen.length >= n) resolve();
  });
  const welcome = await client.connect();
  const ok = await client.join("js");
  await client.publish("js", "one");
  await client.publish("js", { two: 2 });
  let code = null;
  try {
    await client.publish("elsewhere", 1);
  } catch (e) {
    code = e instanceof RequestFailed && e.code;
  }
  await upTo(2);
  out({ t: "ready", uid: welcome.uid, joinSeq: ok.seq, errCode: code });
  await upTo(5);
  await rejoined; // the replayed msgs come before the rejoin's ok
  const recovered = client.rooms.js.recovered;
  out({ t: "recovered", seen: seen, connections: client.connections, recovered, calls });
  const closed = new Promise((resolve) => client.on("closed", resolve));
  const other = new SquallClient(url, { token: tok });
  await other.connect();
  const err = await closed;
  let after = null;
  try { await client.ping(); } catch (e) { after = e.name; }
  const isClosed = err instanceof Closed;
  out({ t: "closed", isClosed, code: err.code, after: after, state: client.state });
  other.close();
  process.exit(0);
})().catch((e) => { out({ t: "failed", error: String(e && e.stack) }); process.exit(1); });
"""


@pytest.mark.gen_test(timeout=30)
async def test_browser_client_reconnects_and_recovers(nodes: NodeFactory, tmp_path: Path) -> None:
    flags = _node_websocket_flags()
    assert NODE is not None and flags is not None, (
        "node with a global WebSocket is required (make test installs Debian's nodejs)"
    )
    node = await nodes({"limits.max_connections_per_user": 1})
    script = tmp_path / "drive.js"
    script.write_text(BROWSER_SCRIPT)
    proc = await asyncio.create_subprocess_exec(
        NODE,
        *flags,
        str(script),
        str(STATIC / "squall.js"),
        node.url,
        token("alice"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None

    async def event(t: str) -> dict[str, object]:
        line = await asyncio.wait_for(proc.stdout.readline(), 10)  # type: ignore[union-attr]
        frame = json.loads(line)
        assert frame["t"] == t, frame
        return frame  # type: ignore[no-any-return]

    try:
        ready = await event("ready")
        assert ready == {"t": "ready", "uid": "alice", "joinSeq": 0, "errCode": 403}
        for conn in node.node.hub:
            conn.close(1012, "restart")
        await event("waiting")  # disconnected, held at the token provider
        bob = await connect(node, token("bob"))
        await bob.request({"t": "join", "room": "js"})
        for i in range(3, 6):
            assert (await bob.request({"t": "pub", "room": "js", "data": i}))["seq"] == i
        bob.close()
        proc.stdin.write(b"go\n")
        rec = await event("recovered")
        assert rec["seen"] == [[1, "one"], [2, {"two": 2}], [3, 3], [4, 4], [5, 5]]
        assert (rec["connections"], rec["recovered"], rec["calls"]) == (2, True, 2)
        closed = await event("closed")
        assert closed == {
            "t": "closed",
            "isClosed": True,
            "code": 4009,
            "after": "Closed",
            "state": "closed",
        }
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.gen_test(timeout=15)
async def test_a_new_room_epoch_is_not_mistaken_for_duplicates(nodes: NodeFactory) -> None:
    import msgpack

    from core.backend.base import Publication

    node = await nodes()
    alice = _client(node, "alice")
    await alice.connect()
    ok = await alice.join("e")
    stream = alice.messages()
    for i in range(1, 4):
        await alice.publish("e", i)
    assert [(await _next(stream))["seq"] for _ in range(3)] == [1, 2, 3]
    # What a node delivers after the shared store lost the room: seq restarts at 1
    # under a new epoch.
    node.node.router.on_publication(
        Publication("e", 1, "fresh-epoch", None, 0, msgpack.packb("new"))
    )
    again = await _next(stream)
    assert again["seq"] == 1 and again["data"] == "new" and again["epoch"] == "fresh-epoch"
    assert ok["epoch"] != "fresh-epoch"
    assert alice.rooms["e"].epoch == "fresh-epoch"
    await alice.close()
