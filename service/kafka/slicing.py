"""How many records the runner applies per slice and takes per poll, so that the loop polls again in time."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

#: Records in the first slice, before the cost of a record is known.
FIRST_SLICE = 8
#: Recent slices the slice size is fitted on.
SLICES_KEPT = 8


@dataclass(frozen=True, slots=True)
class SliceTiming:
    """How long one applied slice took."""

    records: int
    seconds: float


@dataclass(frozen=True, slots=True)
class SliceCost:
    """``seconds = per_call + per_record * records``, fitted over the recent slices."""

    per_call: float
    per_record: float

    def records_within(self, seconds: float) -> int:
        """How many records one call applies in ``seconds`` (0: not even one)."""
        if self.per_record <= 0:
            return 0 if self.per_call > seconds else 1 << 62
        return max(0, int((seconds - self.per_call) / self.per_record))


class SliceSizer:
    """Fits ``seconds = per_call + per_record * records`` over the recent slices and sizes the next one to
    take about ``target_s``, or less when less time is left."""

    def __init__(self, target_s: float) -> None:
        self._target_s = target_s
        self._recent: deque[SliceTiming] = deque(maxlen=SLICES_KEPT)

    def observe(self, records: int, seconds: float) -> None:
        self._recent.append(SliceTiming(records, seconds))

    def cost(self) -> SliceCost | None:
        """The least-squares fit over the recent slices (per_call from slices of different sizes; 0 when they
        are all alike); None before the first slice."""
        if not self._recent:
            return None
        sizes = [float(s.records) for s in self._recent]
        times = [s.seconds for s in self._recent]
        mean_n, mean_t = sum(sizes) / len(sizes), sum(times) / len(times)
        spread = sum((n - mean_n) ** 2 for n in sizes)
        if spread > 0:
            per_record = sum((n - mean_n) * (t - mean_t) for n, t in zip(sizes, times, strict=True)) / spread
            return SliceCost(max(0.0, mean_t - per_record * mean_n), per_record)
        return SliceCost(0.0, mean_t / mean_n)

    def next_size(self, remaining: int, within_s: float | None = None) -> int:
        """Records in the next slice: what takes about ``target_s`` by the fit (:meth:`cost`). A processor
        whose per-call cost exceeds that target gets slices of twice its per-call cost: smaller ones would not
        be quicker, only more of them. ``within_s``: the time left before the loop should poll again; the
        slice is sized to end by then, and 0 means that not even one record fits (the caller yields). Before
        anything is measured: ``FIRST_SLICE`` records."""
        cost = self.cost()
        if cost is None:
            return min(remaining, FIRST_SLICE)  # measure before taking more
        if cost.per_record <= 0:
            return remaining if within_s is None or cost.per_call <= within_s else 0
        target = max(self._target_s, 2 * cost.per_call)
        if within_s is not None:
            fits = cost.records_within(min(target, within_s))
            return min(remaining, fits)
        return max(1, min(remaining, cost.records_within(target)))


__all__ = ["FIRST_SLICE", "SliceCost", "SliceSizer", "SliceTiming"]
