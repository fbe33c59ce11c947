"""A circuit breaker on the invalid-event ratio: stop sending everything to the dead-letter topic.

Pure: no Kafka, the clock is injected. The runner feeds it each partition batch's invalid flags (in offset
order), pauses the assigned partitions while it is open and resumes them when it half-opens.

>>> now = [0.0]
>>> breaker = CircuitBreaker(window_events=10, min_events=5, max_invalid_ratio=0.5,
...                          max_consecutive_invalid=100, pause_s=30.0, clock=lambda: now[0])
>>> breaker.observe([True] * 6)
>>> breaker.state
<CircuitState.OPEN: 'open'>
>>> now[0] = 31.0
>>> breaker.state
<CircuitState.HALF_OPEN: 'half_open'>
>>> breaker.observe([False, False, True])
>>> breaker.state
<CircuitState.CLOSED: 'closed'>
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Sequence

_VALID = b"\x00"
_INVALID = b"\x01"


class CircuitState(enum.Enum):
    """CLOSED: normal. OPEN: partitions paused until the pause ends. HALF_OPEN: one trial batch."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens when the invalid ratio of the last ``window_events`` events exceeds ``max_invalid_ratio``
    (once at least ``min_events`` are in the window) or when ``max_consecutive_invalid`` events in a row
    are invalid. Stays open ``pause_s`` seconds, then half-opens; the next observed batch closes it when
    healthy (ratio within the limit and no run of the consecutive limit), else opens it again.

    Costs a few C-level byte operations per batch, not a Python loop per event.
    """

    def __init__(
        self,
        *,
        window_events: int,
        min_events: int,
        max_invalid_ratio: float,
        max_consecutive_invalid: int,
        pause_s: float,
        clock: Callable[[], float],
    ) -> None:
        if window_events < 1 or not 1 <= min_events <= window_events:
            raise ValueError("need 1 <= min_events <= window_events")
        if not 0 < max_invalid_ratio <= 1 or max_consecutive_invalid < 1 or pause_s <= 0:
            raise ValueError("need 0 < max_invalid_ratio <= 1, max_consecutive_invalid >= 1, pause_s > 0")
        self._window_events = window_events
        self._min_events = min_events
        self._max_ratio = max_invalid_ratio
        self._max_run = max_consecutive_invalid
        self._pause_s = pause_s
        self._clock = clock
        self._blocks: deque[bytes] = deque()
        self._window_total = 0
        self._window_invalid = 0
        self._run = 0
        self._open_until: float | None = None
        self._half_open = False
        self.trips = 0
        self.last_reason = ""

    @property
    def state(self) -> CircuitState:
        """The state now (an expired pause reads as HALF_OPEN). Reading it changes nothing: the move from
        OPEN to HALF_OPEN is made by :meth:`observe`, the only method that changes the state."""
        if self._open_until is not None:
            return CircuitState.OPEN if self._clock() < self._open_until else CircuitState.HALF_OPEN
        return CircuitState.HALF_OPEN if self._half_open else CircuitState.CLOSED

    def _end_expired_pause(self) -> None:
        """OPEN -> HALF_OPEN once the pause is over (the next batch is the trial)."""
        if self._open_until is not None and self._clock() >= self._open_until:
            self._open_until = None
            self._half_open = True

    @property
    def is_open(self) -> bool:
        """True while the partitions should stay paused."""
        return self.state is CircuitState.OPEN

    @property
    def invalid_ratio(self) -> float:
        """Invalid share of the events now in the window (0.0 when empty)."""
        return self._window_invalid / self._window_total if self._window_total else 0.0

    @property
    def consecutive_invalid(self) -> int:
        """Length of the current run of invalid events."""
        return self._run

    def seconds_until_retry(self) -> float:
        """Seconds left in the pause (0.0 unless open)."""
        if self._open_until is None:
            return 0.0
        return max(0.0, self._open_until - self._clock())

    def observe(self, invalid_flags: Sequence[bool] | bytes) -> None:
        """Record one batch's events in order (True or 1 = invalid). May open or close the breaker."""
        flags = invalid_flags if isinstance(invalid_flags, bytes) else bytes(map(bool, invalid_flags))
        if not flags:
            return
        self._end_expired_pause()
        state = self.state
        batch_invalid = flags.count(_INVALID)
        leading_run = len(flags) - len(flags.lstrip(_INVALID))
        batch_longest_run = max(map(len, flags.split(_VALID)))
        longest_run = max(batch_longest_run, self._run + leading_run)
        if leading_run == len(flags):
            self._run += len(flags)
        else:
            self._run = len(flags) - len(flags.rstrip(_INVALID))
        if state is CircuitState.HALF_OPEN:
            if batch_invalid / len(flags) <= self._max_ratio and batch_longest_run < self._max_run:
                self._half_open = False
                self._reset_window()
                self._push(flags, batch_invalid)
                self._run = len(flags) - len(flags.rstrip(_INVALID))
                self.last_reason = ""
            else:
                self._trip(f"still {batch_invalid}/{len(flags)} invalid after the pause")
            return
        self._push(flags, batch_invalid)
        if state is CircuitState.OPEN:
            return
        if longest_run >= self._max_run:
            self._trip(f"{longest_run} consecutive invalid events (limit {self._max_run})")
        elif self._window_total >= self._min_events and self.invalid_ratio > self._max_ratio:
            self._trip(
                f"invalid ratio {self.invalid_ratio:.2f} over the last {self._window_total} events "
                f"(limit {self._max_ratio:.2f})"
            )

    def _trip(self, reason: str) -> None:
        self.trips += 1
        self.last_reason = reason
        self._half_open = False
        self._open_until = self._clock() + self._pause_s

    def _reset_window(self) -> None:
        self._blocks.clear()
        self._window_total = self._window_invalid = self._run = 0

    def _push(self, flags: bytes, invalid: int) -> None:
        self._blocks.append(flags)
        self._window_total += len(flags)
        self._window_invalid += invalid
        excess = self._window_total - self._window_events
        while excess > 0:
            oldest = self._blocks[0]
            if len(oldest) <= excess:
                self._blocks.popleft()
                cut = oldest
            else:
                cut = oldest[:excess]
                self._blocks[0] = oldest[excess:]
            self._window_total -= len(cut)
            self._window_invalid -= cut.count(_INVALID)
            excess -= len(cut)
