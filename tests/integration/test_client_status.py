"""Status events of the Python client and its command line, against real nodes.

Every state change is an event (connecting, open, retry N in X s, recovered, gave
up, closed); a 1012 restart close waits a short jittered delay without inheriting
the attempt count; ``max_attempts`` consecutive failures end the client with
``GaveUp``; the CLI prints each event to stderr and exits 3 on a failed login.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from client import Backoff, GaveUp, SquallClient, StatusEvent
from tests.conftest import NodeFactory
from tests.harness import RunningNode, eventually, token
from tests.security import users_file

ROOT = Path(__file__).resolve().parents[2]


class Events:
    def __init__(self) -> None:
        self.seen: list[StatusEvent] = []
        self.changed = asyncio.Event()

    def __call__(self, event: StatusEvent) -> None:
        self.seen.append(event)
        self.changed.set()

    def states(self) -> list[str]:
        return [e.state for e in self.seen]

    async def until(self, state: str, count: int = 1, timeout: float = 10.0) -> None:
        async def watch() -> None:
            while self.states().count(state) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(watch(), timeout)


def drop_all(node: RunningNode, code: int, reason: str) -> None:
    for conn in node.node.hub:
        conn.close(code, reason)


@pytest.mark.gen_test(timeout=20)
async def test_every_state_change_is_an_event_and_1012_starts_the_count_over(
    nodes: NodeFactory,
) -> None:
    node = await nodes()
    events = Events()
    # rng 0.5: every delay is half its ceiling, so the attempt count shows in it
    policy = Backoff(base=0.2, cap=5, jitter=1.0, reset_after=60, restart_delay=0.1)
    client = SquallClient(
        node.url, token("alice"), backoff=policy, rng=lambda: 0.5, on_status=events
    )
    await client.connect()
    await client.join("lobby")
    assert events.states() == ["connecting", "open"]
    assert client.status is not None and client.status.state == "open"

    drop_all(node, 4408, "no pong")  # a failure: the count goes on
    await events.until("recovered")
    drop_all(node, 4408, "no pong")  # up for less than reset_after: still counting
    await events.until("recovered", 2)
    retries = [e for e in events.seen if e.state == "retry"]
    assert [(e.attempt, e.delay, e.code) for e in retries] == [(1, 0.1, 4408), (1, 0.2, 4408)]

    drop_all(node, 1012, "service restart")  # not a failure: short delay, count over
    await events.until("recovered", 3)
    retry = [e for e in events.seen if e.state == "retry"][-1]
    assert (retry.attempt, retry.delay, retry.code) == (1, 0.05, 1012)
    assert retry.describe() == "retry 1 in 0.1 s (1012 service restart)"
    drop_all(node, 4408, "no pong")  # the count restarted at the 1012 (try 1 of it)
    await events.until("recovered", 4)
    assert [e for e in events.seen if e.state == "retry"][-1].delay == 0.2  # not 0.4

    assert events.states()[2:6] == ["retry", "connecting", "recovered", "retry"]
    connecting = [e for e in events.seen if e.state == "connecting"]
    assert [e.attempt for e in connecting] == [0, 1, 1, 1, 1]
    recovered = [e for e in events.seen if e.state == "recovered"]
    assert [e.describe() for e in recovered] == ["recovered after 1 try"] * 4
    assert client.rooms["lobby"].joined
    await client.close()
    assert events.seen[-1] == StatusEvent("closed", code=1000, reason="closed by the client")


@pytest.mark.gen_test(timeout=20)
async def test_gives_up_after_max_attempts_with_an_event(nodes: NodeFactory) -> None:
    node = await nodes()
    events = Events()
    policy = Backoff(base=0.01, cap=0.02, max_attempts=3)
    client = SquallClient(node.url, token("alice"), backoff=policy, on_status=events)
    await client.connect()
    await node.stop()  # 1001 (a restart: try 1), then the closed port refuses every try
    await events.until("gave_up")
    await eventually(lambda: client.closed)
    states = events.states()
    assert states[:2] == ["connecting", "open"]
    assert states[2:8] == ["retry", "connecting"] * 3
    assert states[8:] == ["gave_up", "closed"]
    assert [e.attempt for e in events.seen if e.state == "retry"] == [1, 2, 3]
    gave_up = events.seen[8]
    assert gave_up.attempt == 3 and gave_up.describe().startswith("gave up after 3 tries")
    assert isinstance(client.error, GaveUp) and client.error.attempts == 3
    with pytest.raises(GaveUp):
        await client.ping()


async def _cli(*args: str, timeout: float = 20) -> tuple[int, str, str]:
    env = {**os.environ, "SQUALL_PASSWORD": "wrong-password"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.gen_test(timeout=30)
async def test_cli_login_failure_exits_3_with_one_line(nodes: NodeFactory, tmp_path: Path) -> None:
    node = await nodes({"auth.users_file": users_file(tmp_path, {"alice": "alice-password"})})
    status, out, err = await _cli("--url", node.url, "--username", "alice", "ping")
    assert status == 3 and out == ""
    assert err.strip().splitlines() == ["login failed: HTTP 401 invalid username or password"]


@pytest.mark.gen_test(timeout=30)
async def test_cli_prints_every_state_change_to_stderr(nodes: NodeFactory) -> None:
    node = await nodes()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client",
        "--url",
        node.url,
        "--token",
        token("alice"),
        "join",
        "lobby",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    lines: list[str] = []

    async def line_matching(prefix: str) -> str:
        while True:
            raw = await asyncio.wait_for(proc.stderr.readline(), 10)  # type: ignore[union-attr]
            assert raw, f"stderr ended before {prefix!r}: {lines}"
            lines.append(raw.decode().rstrip())
            if lines[-1].startswith(prefix):
                return lines[-1]

    try:
        await line_matching("# open")
        await eventually(lambda: node.node.hub.room_count() == 1, timeout=10)
        drop_all(node, 1012, "service restart")
        retry = await line_matching("# retry")
        assert retry.startswith("# retry 1 in ") and retry.endswith(" s (1012 service restart)")
        await line_matching("# recovered after 1 try")
        assert lines[0] == "# connecting"
        assert "# connecting (retry 1)" in lines
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


@pytest.mark.gen_test(timeout=30)
async def test_cli_gives_up_after_max_attempts_and_exits_3(nodes: NodeFactory) -> None:
    node = await nodes()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client",
        "--url",
        node.url,
        "--token",
        token("alice"),
        "--max-attempts",
        "2",
        "join",
        "lobby",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    while not any(line.startswith("# open") for line in seen):
        raw = await asyncio.wait_for(proc.stderr.readline(), 10)
        assert raw, seen
        seen.append(raw.decode().rstrip())
    await eventually(lambda: node.node.hub.room_count() == 1, timeout=10)
    await node.stop()  # 1001, then the port refuses: try 1 (the restart's), try 2, give up
    rest = await asyncio.wait_for(proc.stderr.read(), 20)
    assert await asyncio.wait_for(proc.wait(), 10) == 3
    lines = [line for line in rest.decode().splitlines() if line.startswith("#")]
    assert [line.split(" in ")[0] for line in lines if line.startswith("# retry")] == [
        "# retry 1",
        "# retry 2",
    ]
    assert lines[-2].startswith("# gave up after 2 tries")
    assert lines[-1].startswith("# closed")
    assert "gave up after 2 tries" in rest.decode().splitlines()[-1]


# squall.js under Node.js against a real node: every status event, then giving up.
JS_GIVE_UP = r"""
const Squall = require(process.argv[2]);
const [url, tok] = process.argv.slice(3);
const out = (obj) => console.log(JSON.stringify(obj));
(async () => {
  const client = new Squall.SquallClient(url, {
    token: tok,
    backoff: { base: 0.01, cap: 0.02, maxAttempts: 2, restartDelay: 0.02 },
  });
  const events = [];
  client.on("status", (e) => {
    events.push([e.state, e.attempt, e.code]);
    console.error(JSON.stringify(e)); // shown when the test times out
  });
  const ended = new Promise((resolve) => client.on("closed", resolve));
  await client.connect();
  await client.join("js");
  out({ t: "ready", events });
  const err = await ended;
  out({
    t: "ended", events, gaveUp: err instanceof Squall.GaveUp, closed: err instanceof Squall.Closed,
    attempts: err.attempts, line: Squall.describeStatus(client.status),
  });
  process.exit(0);
})().catch((e) => { out({ t: "failed", error: String(e && e.stack) }); process.exit(1); });
"""


@pytest.mark.gen_test(timeout=30)
async def test_browser_client_reports_each_state_and_gives_up(
    nodes: NodeFactory, tmp_path: Path
) -> None:
    import json
    import shutil
    import subprocess

    node_bin = shutil.which("node")
    assert node_bin is not None, "node is required: run scripts/ensure-browser.sh"
    flags: list[str] | None = None
    for candidate in ([], ["--experimental-websocket"]):
        probe = "if (typeof WebSocket !== 'function') process.exit(3)"
        done = subprocess.run([node_bin, *candidate, "-e", probe], capture_output=True, timeout=20)
        if done.returncode == 0:
            flags = candidate
            break
    assert flags is not None, "this node has no WebSocket (Node 20+ needed)"
    node = await nodes()
    script = tmp_path / "give_up.js"
    script.write_text(JS_GIVE_UP)
    proc = await asyncio.create_subprocess_exec(
        node_bin,
        *flags,
        str(script),
        str(ROOT / "static" / "squall.js"),
        node.url,
        token("alice"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None

    async def event() -> dict[str, object]:
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 15)  # type: ignore[union-attr]
        except TimeoutError:
            proc.kill()
            raise AssertionError((await proc.stderr.read()).decode()) from None  # type: ignore[union-attr]
        assert line, await proc.stderr.read()  # type: ignore[union-attr]
        return json.loads(line)  # type: ignore[no-any-return]

    try:
        ready = await event()
        assert ready == {"t": "ready", "events": [["connecting", 0, None], ["open", 0, None]]}
        await node.stop()  # 1001: a restart (try 1), then the closed port: try 2, give up
        ended = await event()
        assert ended["gaveUp"] is True and ended["closed"] is True and ended["attempts"] == 2
        states = [e[0] for e in ended["events"]]  # type: ignore[union-attr]
        assert states == [
            "connecting",
            "open",
            "retry",
            "connecting",
            "retry",
            "connecting",
            "gave_up",
            "closed",
        ]
        assert ended["events"][2] == ["retry", 1, 1001]  # type: ignore[index]
        assert ended["events"][6][:2] == ["gave_up", 2]  # type: ignore[index]
        assert str(ended["line"]).startswith("closed")
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
