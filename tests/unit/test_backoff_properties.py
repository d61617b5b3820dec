"""Property tests of the client backoff policy (client/backoff.py).

Hypothesis runs derandomized (the same cases every run). The same properties are
tested for the browser client in tests/js/backoff.test.js (node --test, run by
tests/unit/test_js_client.py): bounds, give-up after ``max_attempts``, and the reset
rules.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from client.backoff import REFERENCE, Attempts, Backoff

unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@st.composite
def policies(draw: st.DrawFn) -> Backoff:
    base = draw(st.floats(min_value=0.001, max_value=100.0))
    cap = draw(st.floats(min_value=base, max_value=10_000.0))
    return Backoff(
        base=base,
        cap=cap,
        jitter=draw(st.floats(min_value=0.0, max_value=1.0)),
        max_attempts=draw(st.none() | st.integers(min_value=1, max_value=30)),
        reset_after=draw(st.floats(min_value=0.0, max_value=1000.0)),
        restart_delay=draw(st.floats(min_value=0.0, max_value=10.0)),
    )


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(policies(), st.integers(min_value=0, max_value=10_000), unit)
def test_every_delay_lies_in_the_jitter_window_below_the_cap(
    policy: Backoff, attempt: int, r: float
) -> None:
    top = policy.ceiling(attempt)
    assert top <= policy.cap
    assert top == min(policy.cap, policy.base * 2.0 ** min(attempt, 64))
    delay = policy.delay(attempt, lambda: r)
    assert top * (1 - policy.jitter) - 1e-9 <= delay <= top + 1e-9
    assert 0 <= delay <= policy.cap + 1e-9


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(policies(), st.integers(min_value=0, max_value=200))
def test_ceilings_never_decrease(policy: Backoff, attempt: int) -> None:
    assert policy.ceiling(attempt) <= policy.ceiling(attempt + 1)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(policies(), st.lists(unit, min_size=1, max_size=50))
def test_gives_up_exactly_after_max_attempts(policy: Backoff, draws: list[float]) -> None:
    values = iter(draws * 3)
    a = Attempts(policy, rng=lambda: next(values, 0.5))
    limit = policy.max_attempts
    delays = [a.next_delay() for _ in range(len(draws) + 2)]
    if limit is None:
        assert None not in delays and not a.exhausted
    else:
        given_ = [d for d in delays if d is not None]
        assert len(given_) == min(limit, len(delays))
        assert delays[: len(given_)] == given_  # None only after the last delay
        if len(delays) > limit:
            assert a.exhausted and a.next_delay() is None


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    policies(),
    st.integers(min_value=0, max_value=40),
    st.floats(min_value=0.0, max_value=2000.0),
    st.floats(min_value=0.0, max_value=1e6),
)
def test_a_drop_resets_the_count_exactly_after_reset_after_seconds_up(
    policy: Backoff, failures: int, uptime: float, at: float
) -> None:
    a = Attempts(policy, rng=lambda: 0.5)
    for _ in range(failures):
        a.next_delay()
    before = a.attempt
    a.connected(at)
    a.disconnected(at + uptime)
    stayed = (at + uptime) - at  # as the client computes it (float rounding included)
    assert a.attempt == (0 if stayed >= policy.reset_after else before)
    a.disconnected(at + uptime + 10_000)  # no connected() in between: nothing changes
    assert a.attempt == (0 if stayed >= policy.reset_after else before)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(policies(), st.integers(min_value=0, max_value=40), unit)
def test_a_restart_close_never_inherits_the_count(policy: Backoff, failures: int, r: float) -> None:
    a = Attempts(policy, rng=lambda: r)
    for _ in range(failures):
        a.next_delay()
    delay = a.restart()
    assert 0 <= delay <= policy.restart_delay
    assert a.attempt == 1  # the restart's try is try 1 of a new count
    following = a.next_delay()
    if policy.max_attempts == 1:
        assert following is None
    else:
        assert following is not None and following <= policy.ceiling(1)


def test_reference_preset_is_1s_doubling_to_30s_ten_tries() -> None:
    a = Attempts(REFERENCE, rng=lambda: 1.0 - 1e-12)
    delays = [a.next_delay() for _ in range(11)]
    assert [round(d) for d in delays[:10] if d is not None] == [1, 2, 4, 8, 16, 30, 30, 30, 30, 30]
    assert delays[10] is None
    low = Attempts(REFERENCE, rng=lambda: 0.0)
    assert low.next_delay() == 0.8  # 20 % jitter
