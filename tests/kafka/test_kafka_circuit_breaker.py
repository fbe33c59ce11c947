"""The circuit breaker alone, with a fake clock (no broker)."""

from __future__ import annotations

import re

import pytest

from nlpmon.kafka.circuit_breaker import CircuitBreaker, CircuitState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: FakeClock, **overrides: float) -> CircuitBreaker:
    values = {
        "window_events": 100,
        "min_events": 50,
        "max_invalid_ratio": 0.5,
        "max_consecutive_invalid": 30,
        "pause_s": 60.0,
    }
    values.update(overrides)
    return CircuitBreaker(clock=clock, **values)  # type: ignore[arg-type]


def pattern(valid: int, invalid: int, repeat: int) -> list[bool]:
    return ([False] * valid + [True] * invalid) * repeat


def test_stays_closed_on_healthy_and_mildly_bad_traffic() -> None:
    clock = FakeClock()
    b = breaker(clock)
    for _ in range(50):
        b.observe(pattern(3, 1, 25))  # 25 % invalid, runs of 1
    assert b.state is CircuitState.CLOSED and b.trips == 0
    assert b.invalid_ratio == pytest.approx(0.25)


def test_ratio_over_the_window_opens_it() -> None:
    clock = FakeClock()
    b = breaker(clock, max_consecutive_invalid=1000)
    b.observe(pattern(2, 3, 8))  # 40 events, 60 % invalid, but below min_events
    assert b.state is CircuitState.CLOSED
    b.observe(pattern(2, 3, 4))  # 60 events in the window now
    assert b.is_open and b.trips == 1
    assert "invalid ratio 0.60" in b.last_reason


def test_window_forgets_old_events_exactly() -> None:
    clock = FakeClock()
    b = breaker(clock, max_consecutive_invalid=1000, max_invalid_ratio=0.9)
    b.observe([True] * 80)  # below min_events? no: 80 >= 50, ratio 1.0 > 0.9 -> opens
    assert b.is_open
    b2 = breaker(clock, max_consecutive_invalid=1000, max_invalid_ratio=0.9)
    b2.observe([True] * 40)
    b2.observe([False] * 70)  # window = last 100 events: 30 invalid + 70 valid
    assert b2.invalid_ratio == pytest.approx(0.30)
    b2.observe([False] * 100)
    assert b2.invalid_ratio == 0.0


def test_consecutive_invalid_across_batches_opens_it() -> None:
    clock = FakeClock()
    b = breaker(clock, max_invalid_ratio=1.0)
    b.observe([False] * 20 + [True] * 20)
    assert not b.is_open and b.consecutive_invalid == 20
    b.observe([True] * 10 + [False])
    assert b.is_open and "30 consecutive" in b.last_reason


def test_consecutive_run_inside_one_batch_opens_it() -> None:
    clock = FakeClock()
    b = breaker(clock, max_invalid_ratio=1.0)
    b.observe([False] * 5 + [True] * 30 + [False] * 65)
    assert b.is_open


def test_pause_then_half_open_then_closed_on_a_healthy_batch() -> None:
    clock = FakeClock()
    b = breaker(clock)
    b.observe([True] * 60)
    assert b.state is CircuitState.OPEN
    clock.now += 59.9
    assert b.is_open and b.seconds_until_retry() == pytest.approx(0.1)
    clock.now += 0.2
    assert b.state is CircuitState.HALF_OPEN and not b.is_open
    b.observe(pattern(9, 1, 5))
    assert b.state is CircuitState.CLOSED and b.trips == 1
    assert b.invalid_ratio == pytest.approx(0.1) and b.last_reason == ""


def test_half_open_reopens_on_a_bad_trial_batch() -> None:
    clock = FakeClock()
    b = breaker(clock)
    b.observe([True] * 60)
    clock.now += 61
    assert b.state is CircuitState.HALF_OPEN
    b.observe(pattern(1, 3, 5))
    assert b.is_open and b.trips == 2 and "after the pause" in b.last_reason
    clock.now += 61
    b.observe([False] * 3)
    assert b.state is CircuitState.CLOSED


def test_accepts_bytes_and_ignores_empty_batches() -> None:
    clock = FakeClock()
    b = breaker(clock, min_events=1, window_events=10)
    b.observe(b"")
    b.observe([])
    assert b.invalid_ratio == 0.0
    b.observe(bytes([1, 1, 1, 1, 1, 1, 0, 0, 0, 0]))
    assert b.is_open


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"min_events": 200}, "min_events <= window_events"),
        ({"window_events": 0}, "1 <= min_events <= window_events"),
        ({"max_invalid_ratio": 0.0}, "0 < max_invalid_ratio <= 1"),
        ({"pause_s": 0.0}, "pause_s > 0"),
        ({"max_consecutive_invalid": 0}, "max_consecutive_invalid >= 1"),
    ],
)
def test_rejects_bad_limits(overrides: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        breaker(FakeClock(), **overrides)


def test_reading_the_state_changes_nothing() -> None:
    """The getter used to move an expired pause to HALF_OPEN itself; only observe() changes the state."""
    clock = FakeClock()
    b = breaker(clock)
    b.observe([True] * 60)
    clock.now += 61
    before = dict(vars(b))
    assert b.state is CircuitState.HALF_OPEN and not b.is_open and b.seconds_until_retry() == 0.0
    assert dict(vars(b)) == before
    b.observe(pattern(9, 1, 5))  # the trial batch, healthy
    assert b.state is CircuitState.CLOSED and b.trips == 1
