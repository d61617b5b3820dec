"""The log hygiene watcher sees each kind of problem it promises to see."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from tests.log_hygiene import LogHygiene, problems_in_text


def _watch() -> LogHygiene:
    hygiene = LogHygiene()
    hygiene.start()
    return hygiene


@pytest.mark.log_allows("boom")
def test_a_logged_traceback_is_a_problem() -> None:
    hygiene = _watch()
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("squall.test").exception("handler failed")
    hygiene.stop()
    assert len(hygiene.verdict()) == 1
    assert "ValueError: boom" in hygiene.verdict()[0]


def test_a_coroutine_never_awaited_is_a_problem() -> None:
    async def forgotten() -> None:
        pass

    hygiene = _watch()
    coro = forgotten()
    del coro
    gc.collect()
    hygiene.stop()
    assert any("never awaited" in p for p in hygiene.verdict()), hygiene.problems


@pytest.mark.log_allows("athrow")
def test_an_unraisable_exception_is_a_problem() -> None:
    class Noisy:
        def __del__(self) -> None:
            raise RuntimeError("generator didn't stop after athrow()")

    hygiene = _watch()
    Noisy()
    hygiene.stop()
    assert any("Exception ignored" in p for p in hygiene.verdict()), hygiene.problems


def test_subprocess_output_is_checked_and_allowances_apply() -> None:
    text = (
        "INFO ok\nException ignored in: <coroutine object Node.closed at 0x1>\n"
        "Traceback (most recent call last):"
    )
    assert len(problems_in_text(text)) == 2
    hygiene = LogHygiene(allowed=[r"Node\.closed"])
    hygiene.check_text("node a", text)
    assert [p for p in hygiene.verdict() if "Node.closed" in p] == []
    assert len(hygiene.verdict()) == 1  # the traceback line is not allowed


def test_clean_activity_is_not_a_problem() -> None:
    hygiene = _watch()
    logging.getLogger("squall.test").warning("backend unavailable")
    asyncio.run(asyncio.sleep(0))
    hygiene.stop()
    assert hygiene.verdict() == []


@pytest.mark.log_allows("deliberate")
def test_the_fixture_accepts_what_a_test_declares() -> None:
    try:
        raise KeyError("deliberate")
    except KeyError:
        logging.getLogger("squall.test").exception("deliberate failure")
