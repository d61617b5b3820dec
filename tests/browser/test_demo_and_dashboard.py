"""End to end in a real browser: two users chat across a two-node cluster, one loses
its connection (its node restarts) and recovers what it missed; the dashboard shows
both nodes, marks the restarting one stale, and its charts move.

Debian's Chromium, driven by selenium through chromedriver; the nodes are real
``server.py`` processes on one real redis-server. With ``SQUALL_SCREENSHOTS=1``
(``make screenshots``) the pages under load are saved to docs/img/.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import Browser
from tests.node_procs import ROOT, ServerProcess
from tests.redis_server import shared_server
from tests.security import users_file
from tests.tokens import good_claims, make_token

pytestmark = pytest.mark.timeout(120)

IMG = ROOT / "docs" / "img"
SCREENSHOTS = os.environ.get("SQUALL_SCREENSHOTS") == "1"


def wait(driver: WebDriver, pred: Callable[[WebDriver], Any], timeout: float = 15) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(pred)


def lines(driver: WebDriver, kind: str) -> list[str]:
    script = "return [...document.querySelectorAll(arguments[0])].map(l => l.textContent)"
    return list(driver.execute_script(script, f"#log .line.{kind}"))


def texts(driver: WebDriver) -> list[str]:
    """Texts of the chat lines (without the time/meta prefix)."""
    script = (
        "return [...document.querySelectorAll('#log .line.msg')].map(l => l.lastChild.textContent)"
    )
    return list(driver.execute_script(script))


def no_sideways_scroll(driver: WebDriver) -> bool:
    return bool(
        driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
            " && document.body.scrollWidth <= window.innerWidth"
        )
    )


def say(driver: WebDriver, text: str) -> None:
    box = driver.find_element(By.ID, "chat-text")
    box.send_keys(text)
    driver.find_element(By.CSS_SELECTOR, "#chat-form button").click()
    wait(driver, lambda d: d.find_element(By.ID, "chat-text").get_attribute("value") == "")


def join_lobby(driver: WebDriver) -> None:
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#join-form button").is_enabled())
    driver.find_element(By.CSS_SELECTOR, "#join-form button").click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#rooms li"))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    users = users_file(tmp_path, {"alice": "alice-password"})
    env = {
        "REDIS_URL": shared_server().url,
        "SQUALL_BACKEND__KEY_PREFIX": f"squall-e2e:{uuid.uuid4().hex}:",
        "SQUALL_AUTH__USERS_FILE": users,
        "SQUALL_SERVER__STATS_INTERVAL_S": "0.5",
        # the demo and dashboard pages are off by default (production): on here
        "SQUALL_SERVER__STATIC": "true",
        "SQUALL_SERVER__DASHBOARD": "true",
    }
    a = ServerProcess("node-a", env)
    b = ServerProcess("node-b", env)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()
    for node in (a, b):
        assert node.log_problems() == [], node.node_id
        not_found = [line for line in node.lines if " 404 " in f" {line} "]
        assert not_found == [], not_found  # favicon included


def test_chat_reconnect_recovery_and_dashboard(
    browser: Browser, cluster: tuple[ServerProcess, ServerProcess]
) -> None:
    a, b = cluster
    alice, bob, board = browser(), browser(), browser(1920, 1080)  # a 1080p screen

    # alice logs in on node A: the sign-in panel goes away
    alice.get(a.http + "/")
    alice.find_element(By.ID, "password").send_keys("alice-password")
    alice.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait(alice, lambda d: d.find_element(By.ID, "state").text == "open")
    assert not alice.find_element(By.ID, "login-form").is_displayed()
    assert not alice.find_element(By.ID, "token-form").is_displayed()
    assert alice.find_element(By.ID, "disconnect").is_displayed()
    join_lobby(alice)

    # bob pastes a token on node B
    bob.get(b.http + "/")
    bob.find_element(By.ID, "token").send_keys(make_token(good_claims("bob")))
    bob.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait(bob, lambda d: d.find_element(By.ID, "state").text == "open")
    assert "node node-b" in bob.find_element(By.ID, "who").text
    join_lobby(bob)

    say(bob, "hello from bob")
    wait(alice, lambda d: "hello from bob" in texts(d))
    say(alice, "hi bob")
    wait(bob, lambda d: "hi bob" in texts(d))

    # the dashboard (served by node B) with an admin token pasted once
    board.get(b.http + "/dashboard.html")
    board.find_element(By.ID, "token").send_keys(make_token(good_claims("ops", role="admin")))
    board.find_element(By.CSS_SELECTOR, "#auth button").click()
    rows = "#nodes tr"

    def nodes_shown(d: WebDriver) -> list[tuple[str, bool]]:
        script = (
            "return [...document.querySelectorAll(arguments[0])]"
            ".map(r => [r.dataset.node, r.classList.contains('stale'), r.textContent])"
        )
        found = d.execute_script(script, rows)
        return [(node, stale and "stale" in text) for node, stale, text in found]

    wait(board, lambda d: nodes_shown(d) == [("node-a", False), ("node-b", False)])
    assert board.execute_script("return sessionStorage.getItem('squall.adminToken') !== null")
    points_before = board.execute_script("return squallDashboard.points()")

    # node A restarts: alice loses her connection, bob goes on talking
    assert a.stop() == 0
    wait(alice, lambda d: any("retry 1 in" in line for line in lines(d, "status")))
    wait(board, lambda d: ("node-a", True) in nodes_shown(d))  # row marked and badged
    for i in range(1, 4):
        say(bob, f"missed {i}")
    a.start()
    wait(alice, lambda d: any(line.endswith(("1 try", "tries")) for line in lines(d, "status")), 30)
    wait(alice, lambda d: texts(d).count("missed 3") == 1)
    assert [t for t in texts(alice) if t.startswith("missed")] == [
        "missed 1",
        "missed 2",
        "missed 3",
    ]
    assert any("missed messages recovered" in line for line in lines(alice, "system"))
    assert lines(alice, "error") == []

    # traffic until the dashboard saw it: both nodes live again, charts moved
    load = Load(b)
    load.start()
    try:
        wait(board, lambda d: nodes_shown(d) == [("node-a", False), ("node-b", False)], 20)

        def series_max(d: WebDriver, name: str) -> float:
            data = d.execute_script("return squallDashboard.series(arguments[0])", name)
            return max((v for v in (data or [[], []])[1] if v is not None), default=0)

        # the cluster line: alice, bob and the load client connected, frames flowing
        wait(board, lambda d: series_max(d, "connections") >= 3, 20)
        wait(board, lambda d: series_max(d, "frames_in") > 5, 20)
        if SCREENSHOTS:
            time.sleep(12)  # let the charts fill for the picture
    finally:
        load.stop.set()
        load.join(10)
    assert board.execute_script("return squallDashboard.points()") >= points_before + 2
    for name in ("connections", "frames_in", "frames_out", "handshakes", "rtt"):
        assert board.find_elements(By.CSS_SELECTOR, f"[data-chart='{name}'] canvas"), name
    assert board.find_elements(By.CSS_SELECTOR, "[data-chart='closes']")
    assert no_sideways_scroll(board)
    if SCREENSHOTS:
        IMG.mkdir(exist_ok=True)
        board.save_screenshot(str(IMG / "dashboard.png"))
        alice.save_screenshot(str(IMG / "demo.png"))

    # narrow screens: nothing scrolls sideways
    for driver in (alice, board):
        driver.set_window_size(420, 900)
        wait(driver, no_sideways_scroll, 5)
    if SCREENSHOTS:
        board.save_screenshot(str(IMG / "dashboard-420.png"))

    # a bad token: exactly one clear error line
    alice.get(a.http + "/")
    alice.find_element(By.ID, "token").send_keys("not-a-token")
    alice.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait(alice, lambda d: lines(d, "error"))
    time.sleep(0.3)  # a second, muddled line would come right after the first
    errors = lines(alice, "error")
    assert len(errors) == 1 and "Could not connect: the token was refused" in errors[0]
    assert alice.find_element(By.ID, "login-form").is_displayed()


class Load(threading.Thread):
    """Publishes ~50 messages/s to a room on ``node`` with the Python client until
    ``stop`` is set (at most 60 s)."""

    def __init__(self, node: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.stop = threading.Event()

    def run(self) -> None:
        import asyncio

        from client import SquallClient

        async def main() -> None:
            url = f"ws://127.0.0.1:{self.node.port}/ws"
            async with SquallClient(url, make_token(good_claims("loadgen"))) as c:
                await c.join("load")
                end = time.monotonic() + 60
                while time.monotonic() < end and not self.stop.is_set():
                    await c.publish("load", {"n": 1})
                    await asyncio.sleep(0.02)

        asyncio.run(main())
