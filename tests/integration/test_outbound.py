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

from core.backend.base import BackendOptions, PublishOutcome, PublishRequest
from core.backend.redis import RedisBackend
from core.clock import SystemClock
from core.connection import Connection
from core.outbound import Outbound
from core.protocol import Encoding
from core.session import MAX_PUBS_IN_FLIGHT
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


class _CountingRedis(RedisBackend):
    """A real Redis backend that counts publish round trips (and can be slowed down)."""

    delay_s = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []

    async def publish_many(self, requests: Sequence[PublishRequest]) -> list[PublishOutcome]:
        self.batches.append(len(requests))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return await super().publish_many(requests)


def _counting_redis(delay_s: float = 0.0) -> _CountingRedis:
    backend = _CountingRedis(
        "n1",
        BackendOptions(key_prefix=f"sq-pipe:{uuid.uuid4().hex}:"),
        SystemClock(),
        shared_server().url,
    )
    backend.delay_s = delay_s
    return backend


@pytest.mark.gen_test(timeout=60)
async def test_a_connections_pubs_are_pipelined_in_order(nodes: NodeFactory) -> None:
    backend = _counting_redis()
    node = await nodes(
        {"ratelimit.messages": 100000, "rooms.presence_events": False}, backend=backend
    )
    publisher = await connect(node, token("pipe-pub"))
    member = await connect(node, token("pipe-member"))
    for client in (publisher, member):
        assert (await client.request({"t": "join", "room": "pipe"}))["t"] == "ok"
    for k in range(300):  # back to back: the node pipelines them
        publisher.send({"t": "pub", "id": 10_000 + k, "room": "pipe", "data": k})
    oks: dict[int, int] = {}
    while len(oks) < 300:
        frame = await publisher.wait_for(lambda f: f["t"] in ("ok", "err"), 20)
        publisher.backlog[:] = [f for f in publisher.backlog if f["t"] == "msg"]
        assert frame["t"] == "ok", frame
        oks[frame["id"] - 10_000] = frame["seq"]
    assert [oks[k] for k in range(300)] == list(range(1, 301))  # published in arrival order
    got = [f["data"] for f in [await member.expect("msg", 20) for _ in range(300)]]
    assert got == list(range(300))
    assert sum(backend.batches) == 300 and len(backend.batches) < 300  # fewer round trips


@pytest.mark.gen_test(timeout=60)
async def test_pubs_beyond_the_in_flight_bound_get_429_and_the_connection_stays(
    nodes: NodeFactory,
) -> None:
    backend = _counting_redis(delay_s=0.5)  # a slow store: pubs pile up meanwhile
    node = await nodes(
        {"ratelimit.messages": 100000, "rooms.presence_events": False}, backend=backend
    )
    publisher = await connect(node, token("pile-pub"))
    assert (await publisher.request({"t": "join", "room": "pile"}))["t"] == "ok"
    total = MAX_PUBS_IN_FLIGHT + 40
    for k in range(total):
        publisher.send({"t": "pub", "id": 10_000 + k, "room": "pile", "data": k})
    answers: dict[int, dict[str, Any]] = {}
    while len(answers) < total:
        frame = await publisher.wait_for(lambda f: f["t"] in ("ok", "err"), 30)
        publisher.backlog[:] = [f for f in publisher.backlog if f["t"] == "msg"]
        answers[frame["id"] - 10_000] = frame
    refused = [k for k, f in answers.items() if f["t"] == "err"]
    assert refused and all(answers[k]["code"] == 429 for k in refused)
    assert all(answers[k]["t"] == "ok" for k in range(MAX_PUBS_IN_FLIGHT))
    assert (await publisher.request({"t": "ping"}))["t"] == "pong"  # not closed
