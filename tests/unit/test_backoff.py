"""Reconnect delays (core/backend/backoff.py): capped full-jitter backoff, bounded retries.

Jitter is pinned through the injectable ``uniform`` (its bounds, or a seeded
generator), so every assertion is deterministic.
"""

from __future__ import annotations

import random

import pytest

from core.backend.backoff import FullJitterBackoff, RetryPolicy


def _top(lo: float, hi: float) -> float:
    return hi


def _bottom(lo: float, hi: float) -> float:
    return lo


def test_full_jitter_backoff_is_capped_and_retry_policy_bounded() -> None:
    top = FullJitterBackoff(base=0.1, cap=2.0, uniform=_top)
    assert [top.compute(n) for n in (0, 1, 2, 4, 5, 10_000)] == [0.1, 0.2, 0.4, 1.6, 2.0, 2.0]
    assert FullJitterBackoff(uniform=_bottom).compute(3) == 0.0
    policy = RetryPolicy(top, max_attempts=3)
    assert [policy.delay(n) for n in (1, 2, 3)] == [0.1, 0.2, None]
    assert RetryPolicy(top).delay(10_000) == 2.0
    with pytest.raises(ValueError):
        FullJitterBackoff(base=1.0, cap=0.5)


def test_delay_stays_within_zero_and_the_ceiling() -> None:
    rng = random.Random(1234)
    backoff = FullJitterBackoff(base=0.05, cap=2.0, uniform=rng.uniform)
    for n in range(0, 200):
        assert 0.0 <= backoff.compute(n) <= backoff.ceiling(n) <= 2.0


def test_a_misbehaving_uniform_is_clamped() -> None:
    assert FullJitterBackoff(base=0.1, cap=1.0, uniform=lambda lo, hi: -5.0).compute(2) == 0.0
    assert FullJitterBackoff(base=0.1, cap=1.0, uniform=lambda lo, hi: 99.0).compute(2) == 0.4


def test_ceiling_has_no_overflow_and_ignores_negative_failures() -> None:
    backoff = FullJitterBackoff(base=0.1, cap=3.0)
    assert backoff.ceiling(-7) == backoff.ceiling(0) == 0.1
    assert backoff.ceiling(10**9) == 3.0


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.5)])
def test_bad_base_or_cap_is_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        FullJitterBackoff(base=base, cap=cap)


def test_retry_policy_counts_the_first_attempt_and_needs_one() -> None:
    once = RetryPolicy(FullJitterBackoff(uniform=_top), max_attempts=1)
    assert once.delay(1) is None
    with pytest.raises(ValueError):
        RetryPolicy(FullJitterBackoff(), max_attempts=0)


def test_first_retry_waits_at_most_base() -> None:
    policy = RetryPolicy(FullJitterBackoff(base=0.05, cap=2.0, uniform=_top))
    assert policy.delay(0) == policy.delay(1) == 0.05
    assert policy.delay(2) == 0.1
