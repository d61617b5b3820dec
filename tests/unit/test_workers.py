"""The worker supervisor with real forked processes (workers that exit at once)."""

from __future__ import annotations

import logging
import time

import pytest

from core.workers import RestartPolicy, Supervisor

FAST = RestartPolicy(max_deaths=3, window_s=60.0, base_s=0.01, cap_s=0.05)


def test_delay_doubles_and_is_capped() -> None:
    policy = RestartPolicy(base_s=0.5, cap_s=10.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5, 6, 50)] == [0.5, 1, 2, 4, 8, 10, 10]


def test_workers_that_keep_dying_are_replaced_then_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="squall.workers")
    exits: list[int] = []
    started = time.monotonic()
    result = Supervisor(2, lambda slot: 1, FAST, on_exit=exits.append).run()
    assert result == 1
    assert time.monotonic() - started < 10
    text = caplog.text
    # 3 deaths are replaced (each after its backoff); the 4th within the window gives up
    assert text.count("replacing worker") == 3
    assert "workers keep dying (4 exits within 60 s): giving up" in text
    starts = text.count("started: pid")
    assert starts in (4, 5)  # a replacement still waiting for its backoff is dropped
    assert len(exits) == starts  # every worker started was reaped and reported
    assert text.count("exited with status 1") == starts


def test_a_configuration_error_in_a_worker_is_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="squall.workers")
    result = Supervisor(1, lambda slot: 2, FAST).run()
    assert result == 2
    assert caplog.text.count("started: pid") == 1
    assert "reported a configuration error" in caplog.text
