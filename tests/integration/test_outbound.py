"""The outbound path under failure and bursts, through real sockets, on both backends.

* A failure of any kind on one member during a fan-out (its stream closed before
  Tornado's close callback ran, ``OSError`` from the socket, an exception from the
  transport) drops that member only: every other open member gets every message of
  its rooms exactly once, in order.
* A reader that keeps up is never cut as a slow consumer, whatever the burst.
"""

from __future__ import annotations

import asyncio
import random
import socket
import uuid
from collections.abc import Sequence
from typing import Any

import msgpack
import pytest

from core.connection import Connection
from core.outbound import Outbound
from core.protocol import Encoding
from handlers.transport import TornadoTransport
from tests.conftest import NodeFactory
from tests.harness import Client, RunningNode, connect, eventually, token
from tests.redis_server import shared_server

ROOMS = ("r0", "r1", "r2", "r3")


def _backend(kind: str) -> dict[str, Any]:
    if kind == "memory":
        return {}
    return {"backend.url": shared_server().url, "backend.key_prefix": f"sq-out:{uuid.uuid4().hex}:"}


class FailingTransport:
    """Wraps a member's real transport; every write raises (closing goes to the real one)."""

    def __init__(self, real: TornadoTransport) -> None:
        self.real = real

    def write(self, batch: Sequence[Outbound], encoding: Encoding) -> int:
        raise RuntimeError("injected transport failure")

    def close(self, code: int, reason: str) -> None:
        self.real.close(code, reason)

    def abort(self) -> None:
        self.real.abort()


def _inject(conn: Connection, kind: str) -> None:
    transport = conn.transport
    assert isinstance(transport, TornadoTransport)
    stream = transport._stream
    assert stream is not None
    if kind == "closed-stream":
        # as Tornado does on a write error: the stream is closed, the close callback
        # (and with it the node's cleanup) runs only in a later loop iteration
        stream.close()
    elif kind == "oserror":
        stream.socket.shutdown(socket.SHUT_WR)  # the next send raises EPIPE
    else:
        conn.transport = FailingTransport(transport)


async def _drain_msgs(client: Client, want: int, timeout: float) -> list[tuple[str, int, Any]]:
    got: list[tuple[str, int, Any]] = []
    while len(got) < want:
        frame = await client.wait_for(lambda f: f["t"] == "msg", timeout)
        client.backlog.clear()
        got.append((frame["room"], frame["seq"], frame["data"]))
    return got


@pytest.mark.gen_test(timeout=90)
@pytest.mark.parametrize("kind", ["memory", "redis"])
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_failures_injected_into_random_members_during_fanouts(
    nodes: NodeFactory, kind: str, seed: int
) -> None:
    rng = random.Random(seed)
    node = await nodes(
        {**_backend(kind), "rooms.presence_events": False, "ratelimit.messages": 100000}
    )
    clients: list[Client] = []
    rooms_of: list[set[str]] = []
    for i in range(30):
        client = await connect(node, token(f"m{i}"))
        rooms = set(rng.sample(ROOMS, rng.randint(1, 3)))
        for room in sorted(rooms):
            assert (await client.request({"t": "join", "room": room}))["t"] == "ok"
        clients.append(client)
        rooms_of.append(rooms)
    conn_ids = [_conn_id(node, f"m{i}") for i in range(30)]
    broken: set[int] = set()
    published: dict[str, list[int]] = {room: [] for room in ROOMS}
    kinds = ("closed-stream", "oserror", "transport-exception")
    for round_ in range(60):
        room = rng.choice(ROOMS)
        victims = [
            i for i in range(30) if i not in broken and room in rooms_of[i] and rng.random() < 0.08
        ]
        for i in victims:
            conn = node.node.hub.get(conn_ids[i])
            assert conn is not None
            _inject(conn, rng.choice(kinds))
            broken.add(i)
        pub = await node.backend.publish(room, msgpack.packb(round_), None, 0)
        published[room].append(pub.seq)
        if round_ % 7 == 0:
            await asyncio.sleep(0)  # let some close callbacks run between fan-outs
    assert broken, "the seed injected no failure"
    for i, client in enumerate(clients):
        if i in broken:
            continue
        want = sum(len(published[r]) for r in rooms_of[i])
        got = await _drain_msgs(client, want, timeout=20)
        for room in rooms_of[i]:
            seqs = [seq for r, seq, _ in got if r == room]
            assert seqs == published[room], f"member m{i} room {room}"
        # exactly once: a ping round trip proves nothing else is in flight before it
        assert (await client.request({"t": "ping"}))["t"] == "pong"
        assert not [f for f in client.backlog if f["t"] == "msg"]
    for i in broken:
        await clients[i].closed(timeout=10)  # the connection ended (raises on timeout)
    await eventually(lambda: len(node.node.hub) == 30 - len(broken), timeout=10)


def _conn_id(node: RunningNode, uid: str) -> str:
    (conn,) = node.node.hub.of_user(uid)
    return conn.conn_id


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_burst_of_large_pubs_reaches_fast_readers_without_a_cut(
    nodes: NodeFactory, kind: str
) -> None:
    node = await nodes(
        {
            **_backend(kind),
            "limits.outbound_buffer_bytes": 262144,
            "ratelimit.messages": 100000,
            "rooms.presence_events": False,
        }
    )
    publisher = await connect(node, token("pub"))
    readers = [await connect(node, token(f"reader{i}")) for i in range(3)]
    for client in (publisher, *readers):
        assert (await client.request({"t": "join", "room": "burst"}))["t"] == "ok"
    pad = "p" * 30_000
    for k in range(40):  # back to back, without waiting for any ok
        publisher.send({"t": "pub", "id": 1000 + k, "room": "burst", "data": [k, pad]})

    async def read_all(client: Client) -> list[int]:
        got: list[int] = []
        while len(got) < 40:
            frame = await client.wait_for(lambda f: f["t"] == "msg", 20)
            client.backlog[:] = [f for f in client.backlog if f["t"] != "msg"]
            assert frame["data"][1] == pad
            got.append(frame["data"][0])
        return got

    results = await asyncio.gather(*(read_all(c) for c in (publisher, *readers)))
    assert all(r == list(range(40)) for r in results)
    for client in (publisher, *readers):
        assert (await client.request({"t": "ping"}))["t"] == "pong"  # still connected
    cut = node.node.metrics.registry.get_sample_value("squall_closes_total", {"code": "4011"})
    assert not cut
