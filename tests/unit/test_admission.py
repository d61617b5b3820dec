"""The admission gate: bounded concurrency, FIFO, bounded wait, nothing left behind."""

from __future__ import annotations

import asyncio
import random

import pytest

from core.admission import AdmissionGate


def test_holders_never_exceed_concurrency_and_waiters_are_served_in_order() -> None:
    async def run() -> list[int]:
        gate = AdmissionGate(concurrency=2, max_waiting=10, max_wait_s=5)
        order: list[int] = []
        peak = 0

        async def one(i: int) -> None:
            nonlocal peak
            assert await gate.enter()
            peak = max(peak, gate.holders)
            order.append(i)
            await asyncio.sleep(0.01)
            gate.leave()

        await asyncio.gather(*(one(i) for i in range(8)))
        assert peak == 2 and gate.holders == 0 and gate.waiting == 0
        return order

    assert asyncio.run(run()) == list(range(8))


def test_a_full_queue_refuses_at_once_and_a_long_wait_is_refused_in_time() -> None:
    async def run() -> None:
        gate = AdmissionGate(concurrency=1, max_waiting=1, max_wait_s=0.1)
        assert await gate.enter()  # the only slot, never given back here
        waiter = asyncio.ensure_future(gate.enter())
        await asyncio.sleep(0)
        assert gate.waiting == 1
        assert not await gate.enter()  # queue full: no wait at all
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert not await waiter  # waited max_wait_s, then refused
        assert 0.09 <= loop.time() - start < 1.0
        assert gate.waiting == 0 and gate.refused == 2
        gate.leave()
        assert gate.holders == 0

    asyncio.run(run())


def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    async def run() -> None:
        gate = AdmissionGate(concurrency=1, max_waiting=5, max_wait_s=5)
        assert await gate.enter()
        waiter = asyncio.ensure_future(gate.enter())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert gate.waiting == 0
        gate.leave()
        assert gate.holders == 0
        assert await gate.enter()  # the slot is free again
        gate.leave()

    asyncio.run(run())


def test_retry_after_is_jittered_within_its_bounds() -> None:
    gate = AdmissionGate(concurrency=1, max_waiting=100, max_wait_s=5, rng=random.Random(1))
    values = {gate.retry_after() for _ in range(50)}
    assert len(values) > 5 and all(0.5 <= v <= 1.5 for v in values)
    with pytest.raises(ValueError):
        AdmissionGate(concurrency=0)


def test_retry_after_is_the_queue_ahead_at_the_recent_rate() -> None:
    async def run() -> float:
        gate = AdmissionGate(concurrency=1, max_waiting=1000, max_wait_s=5, rng=random.Random(2))
        for _ in range(6):  # ~50 handshakes/s
            assert await gate.enter()
            await asyncio.sleep(0.02)
            gate.leave()
        assert await gate.enter()
        waiters = [asyncio.ensure_future(gate.enter()) for _ in range(300)]
        await asyncio.sleep(0)
        retry = gate.retry_after()  # 300 ahead at <= 50/s: >= 6 s, jittered +-50 %
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        gate.leave()
        return retry

    retry = asyncio.run(run())
    assert 3.0 <= retry <= 15.0


def test_a_storm_of_waiters_with_cancellations_is_served_in_order_then_expires() -> None:
    async def run() -> None:
        gate = AdmissionGate(concurrency=1, max_waiting=2000, max_wait_s=0.3)
        assert await gate.enter()
        waiters = [asyncio.ensure_future(gate.enter()) for _ in range(1000)]
        await asyncio.sleep(0)
        assert gate.waiting == 1000
        for w in waiters[::2]:
            w.cancel()  # handshakes that went away while queued
        await asyncio.sleep(0)
        assert gate.waiting == 500
        gate.leave()  # the slot goes to the oldest waiter still there
        await asyncio.sleep(0)
        assert waiters[1].done() and waiters[1].result() is True
        assert not any(w.done() for w in waiters[3::2])
        loop = asyncio.get_running_loop()
        start = loop.time()
        rest = await asyncio.gather(*waiters[3::2])
        assert rest == [False] * 499  # refused together when their wait ran out
        assert 0.25 <= loop.time() - start < 1.0
        assert gate.waiting == 0 and gate.refused == 499
        gate.leave()
        assert gate.holders == 0 and await gate.enter()
        gate.leave()

    asyncio.run(run())
