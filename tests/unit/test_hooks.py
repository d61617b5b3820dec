"""Hook contract, circuit breaker, hook policy, configuration keys and the rpc frame."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from core.cli import parse_args, run_check_config
from core.clock import ManualClock
from core.config import ConfigError, load
from core.hooks.breaker import CircuitBreaker
from core.hooks.contract import (
    UNCHANGED,
    ConnectAnswer,
    HookFailed,
    PubAnswer,
    PubRequest,
    Refuse,
    RpcAnswer,
    answer_from_json,
    request_to_json,
)
from core.hooks.http_pool import HttpError, HttpPool
from core.hooks.runner import HookPolicy, Hooks
from core.namespaces import RoomRules
from core.protocol import Encoding, JoinFrame, RequestError, RpcFrame, decode, pack_data

SECRET = "k" * 32
ENV = {"SQUALL_JWT_SECRET": SECRET}


# -- contract ------------------------------------------------------------------------------


def test_answers_parse_exactly_the_documented_fields() -> None:
    assert answer_from_json("pub", {}) == PubAnswer(UNCHANGED)
    assert answer_from_json("pub", {"data": None}) == PubAnswer(None)  # rewrite to null
    assert answer_from_json("rpc", {"data": [1]}) == RpcAnswer([1])
    assert answer_from_json("connect", {"rooms": ["a"], "meta": {"k": 1}}) == ConnectAnswer(
        ("a",), {"k": 1}
    )
    assert answer_from_json("join", {"refuse": {"code": 404, "message": "no"}}) == Refuse(404, "no")
    assert answer_from_json("join", {"refuse": {}}) == Refuse()
    for bad in (
        [],
        "allow",
        {"refuse": {"code": 500}},
        {"refuse": {"code": True}},
        {"refuse": {"message": 3}},
        {"refuse": "no"},
    ):
        with pytest.raises(HookFailed) as info:
            answer_from_json("join", bad)
        assert info.value.reason == "bad_answer"
    for bad_connect in ({"rooms": "a"}, {"rooms": [""]}, {"meta": []}, {"meta": {1: 2}}):
        with pytest.raises(HookFailed):
            answer_from_json("connect", bad_connect)
    with pytest.raises(ValueError):
        Refuse(503, "not a refusal code")


def test_request_json_carries_the_hook_name_and_fields() -> None:
    body = request_to_json("pub", PubRequest("u", "c", "r", {"x": 1}, {"plan": "pro"}))
    assert body == {
        "hook": "pub",
        "uid": "u",
        "conn": "c",
        "room": "r",
        "data": {"x": 1},
        "meta": {"plan": "pro"},
    }


# -- breaker -------------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_and_trials_once() -> None:
    clock = ManualClock()
    b = CircuitBreaker(3, 5.0, clock)
    b.failure()
    b.failure()
    b.success()  # resets the count
    b.failure()
    b.failure()
    assert b.state == "closed" and b.allow()
    b.failure()
    assert b.state == "open" and not b.allow()
    clock.advance(4.9)
    assert not b.allow()
    clock.advance(0.2)
    assert b.state == "half_open"
    assert b.allow() and not b.allow()  # exactly one trial
    b.failure()  # the trial failed: open for another reset_s
    assert b.state == "open"
    clock.advance(5.0)
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow() and b.allow()


# -- policy ----------------------------------------------------------------------------------


class Flaky:
    """A hook transport that fails ``failures`` times (as unreachable), then answers."""

    def __init__(self, failures: int, retry_safe: bool, delay: float = 0.0) -> None:
        self.failures = failures
        self.retry_safe = retry_safe
        self.delay = delay
        self.calls = 0
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, request: Any) -> Any:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if self.calls <= self.failures:
                raise HookFailed("unreachable", "down")
            return PubAnswer(UNCHANGED) if not self.retry_safe else ConnectAnswer()
        finally:
            self.in_flight -= 1


REQ = PubRequest("u", "c", "r", 1)


@pytest.mark.gen_test
async def test_retries_only_for_retry_safe_hooks() -> None:
    safe = Flaky(1, retry_safe=True)
    unsafe = Flaky(1, retry_safe=False)
    policy = HookPolicy(retries=2)
    hooks = Hooks(
        {"connect": safe, "pub": unsafe}, {"connect": policy, "pub": policy}, ManualClock()
    )
    assert await hooks.call("connect", REQ) == ConnectAnswer()  # type: ignore[arg-type]
    assert safe.calls == 2
    with pytest.raises(HookFailed):
        await hooks.call("pub", REQ)
    assert unsafe.calls == 1  # never retried: a message must not go out twice


@pytest.mark.gen_test
async def test_fail_open_allows_and_concurrency_is_bounded() -> None:
    slow = Flaky(0, retry_safe=False, delay=0.05)
    hooks = Hooks({"pub": slow}, {"pub": HookPolicy(timeout_s=5, max_concurrency=3)}, ManualClock())
    answers = await asyncio.gather(*(hooks.call("pub", REQ) for _ in range(10)))
    assert answers == [PubAnswer(UNCHANGED)] * 10 and slow.peak == 3
    down = Flaky(100, retry_safe=False)
    opened = Hooks({"pub": down}, {"pub": HookPolicy(fail_open=True)}, ManualClock())
    assert await opened.call("pub", REQ) == PubAnswer(UNCHANGED)
    assert await Hooks({}, {}, ManualClock()).call("rpc", REQ) == RpcAnswer(None)


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key", "text"),
    [
        ({"hooks.pub.url": "ftp://x/y", "api.secret": SECRET}, "hooks.pub.url", "expected http"),
        ({"hooks.join.url": "http://127.0.0.1:1/j"}, "hooks.join.url", "api.secret"),
        ({"hooks.rpc.timeout_s": 0}, "hooks.rpc.timeout_s", "greater than 0"),
        ({"hooks.rpc.fail": "maybe"}, "hooks.rpc.fail", "one of open, closed"),
        ({"hooks.max_concurrency": 0}, "hooks.max_concurrency", "at least 1"),
        ({"hooks.rpc.batch": True}, "hooks.rpc.batch", "only the pub hook batches"),
        ({"hooks.module": "no_such_module_x"}, "hooks.module", "cannot import"),
        ({"hooks.module": "1bad"}, "hooks.module", "dotted Python module"),
        ({"rooms.namespaces": {"pattern": "a"}}, "rooms.namespaces", "a list"),
        (
            {"rooms.namespaces": [{"pattern": "a", "publish": "all"}]},
            "rooms.namespaces",
            "item 0.publish",
        ),
        ({"rooms.namespaces": [{"history_size": 1}]}, "rooms.namespaces", "item 0.pattern"),
        ({"rooms.namespaces": [{"pattern": "a", "history_size": -1}]}, "rooms.namespaces", ">= 0"),
        ({"rooms.namespaces": [{"pattern": "a"}, {"pattern": "a"}]}, "rooms.namespaces", "twice"),
        (
            {"rooms.namespaces": [{"pattern": "a", "join": "hook"}]},
            "rooms.namespaces",
            "hooks.join.url",
        ),
    ],
)
def test_bad_hook_and_namespace_keys_are_named(
    overrides: dict[str, object], key: str, text: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, ENV, overrides)
    assert info.value.key == key and text in info.value.problem


def test_bad_namespace_in_a_file_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "squall.yaml"
    path.write_text("rooms:\n  namespaces:\n    - pattern: 'a:*'\n      presence: maybe\n")
    out, err = io.StringIO(), io.StringIO()
    status = run_check_config(parse_args(["check-config", "--config", str(path)]), ENV, out, err)
    assert status == 2
    assert err.getvalue().startswith("config error: rooms.namespaces: item 0.presence")


def test_namespaces_resolve_first_match_and_defaults() -> None:
    settings = load(
        None,
        ENV,
        {
            "rooms.history_size": 7,
            "rooms.namespaces": [
                {"pattern": "a:b*", "history_size": 1, "join": "token"},
                {"pattern": "a:*", "presence_events": False, "publish": "server"},
            ],
            "hooks.module": "examples.squall_hooks",
        },
    )
    rules = RoomRules(settings.rooms)
    assert rules.history("a:bc") == (1, 3600) and rules.of("a:bc").join == "token"
    assert rules.of("a:x").publish == "server" and rules.history("a:x") == (7, 3600)
    assert rules.of("a:x").presence_events is False
    plain = rules.of("zzz")
    assert (plain.publish, plain.join, plain.presence, plain.recovery) == (
        "members",
        "claim",
        True,
        True,
    )


# -- protocol --------------------------------------------------------------------------------


def test_rpc_frame_and_join_token_decode() -> None:
    frame = decode('{"t":"rpc","id":3,"method":"add","data":{"a":1}}', Encoding.JSON)
    assert frame == RpcFrame(3, "add", pack_data({"a": 1}))
    assert decode('{"t":"rpc","id":3,"method":"m"}', Encoding.JSON) == RpcFrame(
        3, "m", pack_data(None)
    )
    for bad in ('{"t":"rpc","id":3}', '{"t":"rpc","id":3,"method":""}', '{"t":"rpc","method":"m"}'):
        with pytest.raises(RequestError):
            decode(bad, Encoding.JSON)
    join = decode('{"t":"join","id":1,"room":"r","token":"abc"}', Encoding.JSON)
    assert join == JoinFrame(1, "r", None, None, "abc")
    with pytest.raises(RequestError):
        decode('{"t":"join","id":1,"room":"r","token":5}', Encoding.JSON)


class Batcher:
    """A pub transport with ``call_batch``: counts the requests it receives."""

    retry_safe = False

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.fail = fail

    async def __call__(self, request: Any) -> Any:
        raise AssertionError("a batch transport gets batches")

    async def call_batch(self, requests: list[Any]) -> list[Any]:
        self.batches.append(len(requests))
        if self.fail:
            raise HookFailed("unreachable", "down")
        return [Refuse(400, "no") if r.data == "bad" else PubAnswer(r.data) for r in requests]


@pytest.mark.gen_test
async def test_call_many_batches_in_one_request_and_fails_as_one() -> None:
    t = Batcher()
    hooks = Hooks({"pub": t}, {"pub": HookPolicy(batch=True)}, ManualClock())
    reqs = [PubRequest("u", "c", "r", d) for d in ("a", "bad", "c")]
    assert await hooks.call_many("pub", reqs) == [PubAnswer("a"), Refuse(400, "no"), PubAnswer("c")]
    assert t.batches == [3]
    down = Batcher(fail=True)
    closed = Hooks({"pub": down}, {"pub": HookPolicy(batch=True)}, ManualClock())
    results = await closed.call_many("pub", reqs)
    assert all(isinstance(r, HookFailed) for r in results) and down.batches == [3]
    opened = Hooks(
        {"pub": Batcher(fail=True)}, {"pub": HookPolicy(batch=True, fail_open=True)}, ManualClock()
    )
    assert await opened.call_many("pub", reqs) == [PubAnswer(UNCHANGED)] * 3
    # without batch: one call per request, concurrently
    single = Flaky(0, retry_safe=False, delay=0.01)
    plain = Hooks({"pub": single}, {"pub": HookPolicy()}, ManualClock())
    assert await plain.call_many("pub", reqs) == [PubAnswer(UNCHANGED)] * 3 and single.calls == 3


# -- the HTTP pool against a raw loopback server ---------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_http_pool_refuses_unframed_responses_and_reconnects_after_close() -> None:
    replies = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nok",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    ]
    served: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while replies:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                served.append(1)
                reply = replies.pop(0)
                writer.write(reply)
                await writer.drain()
                if b"Content-Length" not in reply or b"close" in reply:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/h"
    pool = HttpPool(max_connections=1)
    try:
        assert (await pool.post(url, b"{}", {})).body == b"ok"
        # a malformed answer closes its connection (never retried); the next request
        # opens a new one
        for problem in ("chunked", "without Content-Length", "malformed status line"):
            with pytest.raises(HttpError) as info:
                await pool.post(url, b"{}", {})
            assert problem in str(info.value)
        closing = await pool.post(url, b"{}", {})
        assert closing.status == 200 and closing.headers["connection"] == "close"
        assert len(served) == 5 and pool.opened == 4
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()


@pytest.mark.gen_test(timeout=10)
async def test_http_pool_resends_once_when_the_server_closed_an_idle_connection() -> None:
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        requests.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # says keep-alive...
        await writer.drain()
        writer.close()  # ...but closes, as an idle timeout would

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/h"
    pool = HttpPool()
    try:
        assert (await pool.post(url, b"1", {"X-Squall-Nonce": "n1"})).body == b"ok"
        # whether the close reached the idle connection yet or not, the resend happens
        assert (await pool.post(url, b"2", {"X-Squall-Nonce": "n2"})).body == b"ok"
        assert pool.opened == 2 and len(requests) == 2
        assert requests[1].endswith(b"2") and b"X-Squall-Nonce: n2" in requests[1]
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()


def test_namespaces_from_the_environment() -> None:
    env = {**ENV, "SQUALL_ROOMS__NAMESPACES": '[{pattern: "feed:*", publish: server}]'}
    settings = load(None, env)
    assert RoomRules(settings.rooms).of("feed:1").publish == "server"
    with pytest.raises(ConfigError) as info:
        load(None, {**ENV, "SQUALL_ROOMS__NAMESPACES": "[{pattern: 1}]"})
    assert info.value.key == "rooms.namespaces"
    assert "SQUALL_ROOMS__NAMESPACES" in str(info.value)
