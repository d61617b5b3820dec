"""Application hooks through a real example application (examples/hooks_app.py).

The example application runs as its own process on a loopback port and checks
every hook request's signature; nodes run on the memory backend and on a real
redis-server. Each hook is covered allowed, refused and (pub/send) rewritten; the
pub hook timed out fail-open and fail-closed; the application down (circuit open,
then recovered); and the example application refusing unsigned and replayed
requests. In-process hooks (examples/squall_hooks.py) run the same rules.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from core.hooks.http_pool import HttpPool
from core.signing import signed_headers
from tests.conftest import NodeFactory
from tests.harness import BASE, HandshakeRefused, RunningNode, connect, eventually, token
from tests.redis_server import free_port, shared_server

ROOT = Path(__file__).resolve().parents[2]
API_SECRET = str(BASE["api.secret"])
HOOKS = ("connect", "refresh", "join", "pub", "send", "rpc")


class HookApp:
    """examples/hooks_app.py as a subprocess on a fixed loopback port."""

    def __init__(self, slow_s: float = 1.5) -> None:
        self.port = free_port()
        self.slow_s = slow_s
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, hook: str) -> str:
        return f"http://127.0.0.1:{self.port}/squall/{hook}"

    def conf(self, *hooks: str, **policy: Any) -> dict[str, object]:
        conf: dict[str, object] = {f"hooks.{h}.url": self.url(h) for h in hooks or HOOKS}
        conf.update(policy)
        return conf

    def start(self) -> None:
        env = {**os.environ, "SQUALL_API_SECRET": API_SECRET, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "examples" / "hooks_app.py"),
                "--port",
                str(self.port),
                "--slow-s",
                str(self.slow_s),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                assert self.proc.poll() is None, "the example application exited"
                assert time.monotonic() < deadline, "the example application did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def app() -> Iterator[HookApp]:
    hook_app = HookApp()
    hook_app.start()
    yield hook_app
    hook_app.stop()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, object]:
    """Overrides selecting the backend: memory, or the shared redis-server."""
    if request.param == "memory":
        return {}
    return {"backend.url": shared_server().url, "backend.key_prefix": f"sq-hk:{uuid.uuid4().hex}:"}


async def start(
    nodes: NodeFactory, backend: dict[str, object], conf: dict[str, object]
) -> RunningNode:
    return await nodes({**backend, **conf})


# -- each hook: allowed, refused, rewritten ---------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_connect_hook_refuses_allows_and_joins_server_side_rooms(
    nodes: NodeFactory, backend: dict[str, object], app: HookApp
) -> None:
    node = await start(nodes, backend, app.conf("connect"))
    refused = None
    try:
        await connect(node, token("mallory"))
    except HandshakeRefused as e:
        refused = e
    assert refused is not None and refused.status == 403
    assert refused.body["message"] == "mallory is banned by the app"

    # the connect hook's rooms and the rooms_auto claim: joined at welcome, no `join`
    for attempt in range(2):  # and again on a reconnection
        vip = await connect(node, token("vip-ann", rooms_auto=["news"]), welcome=False)
        welcome = await vip.expect("welcome")
        assert welcome["rooms"] == ["news", "vip-lounge"], attempt
        joined = [await vip.expect("joined"), await vip.expect("joined")]
        assert [j["room"] for j in joined] == ["news", "vip-lounge"]
        assert all(isinstance(j["seq"], int) and j["epoch"] for j in joined)
        pub = await vip.request({"t": "pub", "room": "vip-lounge", "data": {"n": attempt}})
        assert pub["t"] == "ok"
        msg = await vip.expect("msg")
        assert msg["room"] == "vip-lounge" and msg["data"] == {"n": attempt}
        vip.close()
    # a plain user gets no server-side room
    alice = await connect(node, token("alice"), welcome=False)
    assert "rooms" not in await alice.expect("welcome")


@pytest.mark.gen_test(timeout=30)
async def test_join_hook_sees_connection_meta(
    nodes: NodeFactory, backend: dict[str, object], app: HookApp
) -> None:
    node = await start(nodes, backend, app.conf("connect", "join"))
    free = await connect(node, token("alice"))
    no = await free.request({"t": "join", "room": "pro:charts"})
    assert (no["t"], no["code"], no["reason"]) == ("err", 403, "this room needs the pro plan")
    assert (await free.request({"t": "join", "room": "lobby"}))["t"] == "ok"
    vip = await connect(node, token("vip-bo"))
    assert (await vip.request({"t": "join", "room": "pro:charts"}))["t"] == "ok"


@pytest.mark.gen_test(timeout=30)
async def test_pub_hook_allows_refuses_and_rewrites(
    nodes: NodeFactory, backend: dict[str, object], app: HookApp
) -> None:
    node = await start(nodes, backend, app.conf("pub"))
    a = await connect(node, token("alice"))
    b = await connect(node, token("bob"))
    for c in (a, b):
        await c.request({"t": "join", "room": "loud:x"})
    await a.expect("presence")
    bad = await a.request({"t": "pub", "room": "loud:x", "data": {"text": "darn it"}})
    assert (bad["t"], bad["code"], bad["reason"]) == ("err", 400, "mind your language")
    # pipelined: three pubs in a row, answered in order, the rewrite applied to each
    for i in range(3):
        a.send({"t": "pub", "id": 50 + i, "room": "loud:x", "data": {"text": f"hi {i}"}})
    frames = [await a.recv() for _ in range(6)]
    order = [(f["t"], f["id"] - 50 if f["t"] == "ok" else f["seq"] - 1) for f in frames if f]
    assert sorted(order) == [(t, i) for t in ("msg", "ok") for i in range(3)]
    for i in range(3):  # oks in order, each before its own msg
        assert order.index(("ok", i)) < order.index(("msg", i))
        assert frames[order.index(("msg", i))] is not None
    for i in range(3):
        msg = await b.expect("msg")
        assert msg["data"] == {"text": f"HI {i}"} and msg["seq"] == i + 1
    assert (await node.node.backend.recover("loud:x", 0, None)).publications[0].seq == 1


@pytest.mark.gen_test(timeout=30)
async def test_batched_pub_hook_one_request_per_batch(
    nodes: NodeFactory, backend: dict[str, object], app: HookApp
) -> None:
    node = await start(nodes, backend, app.conf("pub", **{"hooks.pub.batch": True}))
    a = await connect(node, token("alice"))
    await a.request({"t": "join", "room": "loud:b"})
    texts = ["one", "darn", "three", "four"]
    for i, text in enumerate(texts):
        a.send({"t": "pub", "id": 70 + i, "room": "loud:b", "data": {"text": text}})
    answers = {}
    msgs = []
    while len(answers) < 4 or len(msgs) < 3:
        f = await a.recv()
        assert f is not None
        if f["t"] == "msg":
            msgs.append(f["data"]["text"])
        else:
            answers[f["id"] - 70] = f["t"]
    assert answers == {0: "ok", 1: "err", 2: "ok", 3: "ok"}
    assert msgs == ["ONE", "THREE", "FOUR"]  # in order, rewritten, the refused one left out
    samples = node.node.metrics.registry.get_sample_value
    assert samples("squall_hook_calls_total", {"hook": "pub", "outcome": "refuse"}) == 1
    assert samples("squall_hook_calls_total", {"hook": "pub", "outcome": "allow"}) == 3
    stats = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{app.port}/stats")
    assert json.loads(stats.body) == {"pub": 4}


@pytest.mark.gen_test(timeout=30)
async def test_send_hook_refuses_and_rewrites(
    nodes: NodeFactory, backend: dict[str, object], app: HookApp
) -> None:
    node = await start(nodes, backend, app.conf("send"))
    a = await connect(node, token("alice"))
    b = await connect(node, token("bob"))
    no = await a.request({"t": "send", "to": "nobody", "data": 1})
    assert (no["t"], no["code"], no["reason"]) == ("err", 404, "no such user")
    sent = await a.request({"t": "send", "to": "bob", "data": {"hello": 1}})
    assert sent["t"] == "ok" and sent["online"] is True
    dm = await b.expect("dm")
    assert dm["data"] == {"hello": 1, "checked": True} and dm["from"] == "alice"


@pytest.mark.gen_test(timeout=30)
async def test_rpc_and_refresh_hooks(
    nodes: NodeFactory, backend: dict[str, object], app: HookApp
) -> None:
    node = await start(nodes, backend, app.conf("connect", "refresh", "rpc"))
    a = await connect(node, token("alice"), json_mode=True)
    added = await a.request({"t": "rpc", "method": "add", "data": {"a": 2, "b": 40}})
    assert added == {"t": "ok", "id": added["id"], "data": {"sum": 42}}
    unknown = await a.request({"t": "rpc", "method": "nope"})
    assert (unknown["t"], unknown["code"], unknown["reason"]) == ("err", 404, "unknown method")
    assert (await a.request({"t": "refresh", "token": token("alice")}))["t"] == "ok"
    who = await a.request({"t": "rpc", "method": "whoami", "data": None})
    assert who["data"] == {"uid": "alice", "meta": {"plan": "free", "refreshed": True}}
    other = await nodes(backend)  # no rpc hook configured
    c = await connect(other, token("carol"))
    none = await c.request({"t": "rpc", "method": "add", "data": {}})
    assert (none["code"], none["reason"]) == (404, "no rpc handler")


# -- failures: timeout, application down --------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_pub_hook_timeout_fail_closed_and_fail_open(
    nodes: NodeFactory, backend: dict[str, object], app: HookApp
) -> None:
    closed = await start(nodes, backend, app.conf("pub", **{"hooks.pub.timeout_s": 0.3}))
    opened = await start(
        nodes, backend, app.conf("pub", **{"hooks.pub.timeout_s": 0.3, "hooks.pub.fail": "open"})
    )
    a = await connect(closed, token("alice"))
    await a.request({"t": "join", "room": "slow:r"})
    started = time.monotonic()
    late = await a.request({"t": "pub", "room": "slow:r", "data": {"text": "darn"}})
    assert (late["t"], late["code"], late["reason"]) == ("err", 503, "application unavailable")
    assert time.monotonic() - started < 1.4  # not the application's 1.5 s
    b = await connect(opened, token("bob"))
    await b.request({"t": "join", "room": "slow:r2"})
    allowed = await b.request({"t": "pub", "room": "slow:r2", "data": {"text": "darn"}})
    assert allowed["t"] == "ok"  # fail-open: published as sent, unchecked
    assert (await b.expect("msg"))["data"] == {"text": "darn"}
    samples = closed.node.metrics.registry.get_sample_value
    assert samples("squall_hook_calls_total", {"hook": "pub", "outcome": "failed_closed"}) == 1
    samples = opened.node.metrics.registry.get_sample_value
    assert samples("squall_hook_calls_total", {"hook": "pub", "outcome": "failed_open"}) == 1


@pytest.mark.gen_test(timeout=40)
async def test_application_down_opens_the_circuit_then_recovers(
    nodes: NodeFactory, backend: dict[str, object], app: HookApp, caplog: pytest.LogCaptureFixture
) -> None:
    conf = app.conf("connect", "pub", **{"hooks.breaker_failures": 2, "hooks.breaker_reset_s": 0.5})
    node = await start(nodes, backend, conf)
    hooks = node.node.hooks
    a = await connect(node, token("alice"))
    await a.request({"t": "join", "room": "r"})
    assert (await a.request({"t": "pub", "room": "r", "data": 1}))["t"] == "ok"
    app.stop()
    for _ in range(2):
        down = await a.request({"t": "pub", "room": "r", "data": 2})
        assert (down["t"], down["code"]) == ("err", 503)
    assert hooks.breaker_state("pub") == "open"
    # open: refused at once, nothing is sent to the application
    caplog.clear()
    assert (await a.request({"t": "pub", "room": "r", "data": 3}))["code"] == 503
    assert "hook pub: circuit open (fail-closed)" in caplog.text
    # the connect hook is fail-closed too: handshakes get 503 while the app is down
    with pytest.raises(HandshakeRefused) as refused:
        await connect(node, token("bob"))
    assert refused.value.status == 503
    app.start()  # same port
    await eventually(lambda: hooks.breaker_state("pub") == "half_open", timeout=5)
    back = await a.request({"t": "pub", "room": "r", "data": 4})
    assert back["t"] == "ok"
    assert hooks.breaker_state("pub") == "closed"
    assert (await a.expect("msg"))["data"] == 1
    assert (await a.expect("msg"))["data"] == 4


# -- the example application's own checks -------------------------------------------------


@pytest.mark.gen_test(timeout=20)
async def test_example_app_refuses_unsigned_forged_and_replayed_requests(app: HookApp) -> None:
    client = AsyncHTTPClient(force_instance=True)
    body = b'{"hook":"rpc","uid":"eve","conn":"c","method":"add","data":{"a":1,"b":1},"meta":{}}'

    async def post(headers: dict[str, str], raw: bytes = body) -> tuple[int, bytes]:
        try:
            r = await client.fetch(app.url("rpc"), method="POST", body=raw, headers=headers)
            return r.code, r.body
        except HTTPClientError as e:
            assert e.response is not None
            return e.code, e.response.body

    try:
        assert (await post({}))[0] == 401
        now = int(time.time() * 1000)
        headers = signed_headers(API_SECRET, "POST", "/squall/rpc", body, now_ms=now)
        assert await post(headers) == (200, b'{"data": {"sum": 2}}')
        status, answer = await post(headers)  # the very same request again
        assert (status, answer) == (401, b'{"error": "replayed"}')
        forged = signed_headers("z" * 48, "POST", "/squall/rpc", body, now_ms=now)
        assert (await post(forged))[0] == 401
        swapped = signed_headers(API_SECRET, "POST", "/squall/rpc", body, now_ms=now)
        assert (await post(swapped, body.replace(b"eve", b"bob")))[0] == 401
        stale = signed_headers(API_SECRET, "POST", "/squall/rpc", body, now_ms=now - 600_000)
        assert await post(stale) == (401, b'{"error": "stale"}')
    finally:
        client.close()


@pytest.mark.gen_test(timeout=20)
async def test_hook_requests_reuse_one_keep_alive_connection(app: HookApp) -> None:
    pool = HttpPool(max_connections=4)
    try:
        for i in range(20):
            body = (
                b'{"hook":"rpc","uid":"u","conn":"c","method":"add","data":{"a":%d,"b":1},"meta":{}}'
                % i
            )
            headers = signed_headers(
                API_SECRET, "POST", "/squall/rpc", body, now_ms=int(time.time() * 1000)
            )
            response = await pool.post(app.url("rpc"), body, headers)
            assert response.status == 200 and response.body == b'{"data": {"sum": %d}}' % (i + 1)
        assert pool.opened == 1
    finally:
        await pool.close()


# -- in-process hooks ---------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_in_process_module_hooks(nodes: NodeFactory, backend: dict[str, object]) -> None:
    node = await nodes({**backend, "hooks.module": "examples.squall_hooks"})
    with pytest.raises(HandshakeRefused) as refused:
        await connect(node, token("mallory"))
    assert refused.value.status == 403
    vip = await connect(node, token("vip-cy"), welcome=False)
    assert (await vip.expect("welcome"))["rooms"] == ["vip-lounge"]
    assert (await vip.expect("joined"))["room"] == "vip-lounge"
    assert (await vip.request({"t": "join", "room": "pro:x"}))["t"] == "ok"
    a = await connect(node, token("alice"))
    assert (await a.request({"t": "join", "room": "pro:x"}))["code"] == 403
    await a.request({"t": "join", "room": "loud:y"})
    assert (await a.request({"t": "pub", "room": "loud:y", "data": {"text": "yo"}}))["t"] == "ok"
    assert (await a.expect("msg"))["data"] == {"text": "YO"}
    await a.request({"t": "join", "room": "broken:z"})
    failed = await a.request({"t": "pub", "room": "broken:z", "data": 1})
    assert (failed["code"], failed["reason"]) == (503, "application unavailable")
    added = await a.request({"t": "rpc", "method": "add", "data": {"a": 1, "b": 2}})
    assert added["data"] == {"sum": 3}


@pytest.mark.gen_test(timeout=30)
async def test_in_process_connect_after_first_frame_auth_and_refresh(
    nodes: NodeFactory, backend: dict[str, object]
) -> None:
    node = await nodes({**backend, "hooks.module": "examples.squall_hooks"})
    late = await connect(node)  # no token at the handshake: first-frame auth
    late.send({"t": "auth", "token": token("mallory")})
    assert await late.closed() == 4003  # refused by the connect hook, do not reconnect
    ok = await connect(node)
    ok.send({"t": "auth", "token": token("vip-fi")})
    assert (await ok.expect("welcome"))["rooms"] == ["vip-lounge"]
    lapsed = await connect(node, token("lapsed"))
    no = await lapsed.request({"t": "refresh", "token": token("lapsed")})
    assert (no["t"], no["code"], no["reason"]) == ("err", 403, "subscription lapsed")
    assert (await ok.request({"t": "refresh", "token": token("vip-fi")}))["t"] == "ok"


@pytest.mark.gen_test(timeout=30)
async def test_pubs_refused_by_the_hook_still_count_toward_the_rate_limit(
    nodes: NodeFactory,
) -> None:
    node = await nodes(
        {"hooks.module": "examples.squall_hooks", "ratelimit.messages": 5, "ratelimit.window_s": 60}
    )
    a = await connect(node, token("alice"))
    await a.request({"t": "join", "room": "r"})  # 1 of 5
    codes = [
        (await a.request({"t": "pub", "room": "r", "data": {"text": "darn"}}))["code"]
        for _ in range(6)
    ]
    assert codes == [400, 400, 400, 400, 429, 429]


@pytest.mark.gen_test(timeout=30)
async def test_connect_hook_fail_open_admits_while_the_application_is_down(
    nodes: NodeFactory, app: HookApp
) -> None:
    node = await nodes(app.conf("connect", "rpc", **{"hooks.connect.fail": "open"}))
    app.stop()
    c = await connect(node, token("mallory"), welcome=False)  # unchecked: allowed
    assert "rooms" not in await c.expect("welcome")
    down = await c.request({"t": "rpc", "method": "add", "data": {"a": 1, "b": 1}})
    assert (down["code"], down["reason"]) == (503, "application unavailable")  # rpc: closed
