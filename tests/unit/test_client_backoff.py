"""Reconnect backoff of the Python client: capped exponential ceiling, full jitter, reset."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from client.backoff import Attempts, Backoff


def _fixed(*values: float) -> Callable[[], float]:
    """A random source returning ``values`` in turn (then repeating the last)."""
    it = iter(values)
    last = values[-1]

    def rng() -> float:
        nonlocal last
        last = next(it, last)
        return last

    return rng


def _delays(attempts: Attempts, n: int) -> list[float]:
    return [attempts.next_delay() for _ in range(n)]


def test_ceiling_doubles_until_the_cap() -> None:
    b = Backoff(base=0.5, cap=30)
    assert [b.ceiling(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_ceiling_stays_finite_for_huge_attempt_counts() -> None:
    assert Backoff(base=0.5, cap=30).ceiling(10_000) == 30


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    b = Backoff(base=1, cap=8)
    assert b.delay(3, lambda: 0.0) == 0.0
    assert b.delay(3, lambda: 0.5) == 4.0
    assert b.delay(3, lambda: 0.999) == pytest.approx(7.992)


def test_attempts_use_the_injected_random_source() -> None:
    a = Attempts(Backoff(base=1, cap=10), rng=_fixed(1.0, 0.5, 0.25, 0.5, 0.5, 0.5))
    assert _delays(a, 6) == [1.0, 1.0, 1.0, 4.0, 5.0, 5.0]
    assert a.attempt == 6


def test_delays_never_exceed_the_cap_with_a_real_generator() -> None:
    rng = random.Random(1234)  # seeded: deterministic
    a = Attempts(Backoff(base=0.5, cap=3), rng=rng.random)
    delays = _delays(a, 200)
    assert all(0 <= d <= 3 for d in delays)
    assert max(delays[10:]) > 2  # the cap is actually reached, jitter spreads below it
    assert len(set(delays)) == len(delays)  # jittered, no synchronised waves


def test_reset_after_a_connection_that_stayed_up() -> None:
    a = Attempts(Backoff(base=1, cap=100, reset_after=10), rng=lambda: 1.0)
    assert _delays(a, 4) == [1, 2, 4, 8]
    a.connected(now=100.0)
    a.disconnected(now=103.0)  # short-lived: keeps growing
    assert a.next_delay() == 16
    a.connected(now=200.0)
    a.disconnected(now=210.0)  # stayed up reset_after seconds: back to base
    assert a.next_delay() == 1
    a.disconnected(now=500.0)  # no matching connected(): nothing to reset
    assert a.next_delay() == 2


def test_explicit_reset() -> None:
    a = Attempts(Backoff(base=2, cap=64), rng=lambda: 1.0)
    _delays(a, 5)
    a.reset()
    assert a.next_delay() == 2


def test_policy_is_immutable_and_shareable() -> None:
    policy = Backoff()
    one, two = Attempts(policy, rng=lambda: 1.0), Attempts(policy, rng=lambda: 1.0)
    _delays(one, 5)
    assert two.next_delay() == policy.base  # state is per client, not in the policy
    with pytest.raises(AttributeError):
        policy.base = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [{"base": 0}, {"cap": -1}, {"base": 5, "cap": 1}, {"reset_after": -1}],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_negative_attempt_is_refused() -> None:
    with pytest.raises(ValueError):
        Backoff().ceiling(-1)
