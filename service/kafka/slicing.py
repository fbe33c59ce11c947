"""How many records the runner applies per slice, so a batch yields to the next poll in time."""

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


class SliceSizer:
    """Fits ``seconds = per_call + per_record * records`` over the recent slices and sizes the next one to
    take about ``target_s`` (an eighth of ``max_batch_s``)."""

    def __init__(self, target_s: float) -> None:
        self._target_s = target_s
        self._recent: deque[SliceTiming] = deque(maxlen=SLICES_KEPT)

    def observe(self, records: int, seconds: float) -> None:
        self._recent.append(SliceTiming(records, seconds))

    def next_size(self, remaining: int) -> int:
        """Records in the next slice: what takes about ``target_s`` by a least-squares fit over the recent
        slices (per_call from slices of different sizes; 0 when they are all alike). A processor whose
        per-call cost exceeds that target gets slices of twice its per-call cost: smaller ones would not be
        quicker, only more of them."""
        if not self._recent:
            return min(remaining, FIRST_SLICE)  # measure before taking more
        sizes = [float(s.records) for s in self._recent]
        times = [s.seconds for s in self._recent]
        mean_n, mean_t = sum(sizes) / len(sizes), sum(times) / len(times)
        spread = sum((n - mean_n) ** 2 for n in sizes)
        if spread > 0:
            per_record = sum((n - mean_n) * (t - mean_t) for n, t in zip(sizes, times, strict=True)) / spread
            per_call = max(0.0, mean_t - per_record * mean_n)
        else:
            per_record, per_call = mean_t / mean_n, 0.0
        if per_record <= 0:
            return remaining
        target = max(self._target_s, 2 * per_call)
        return max(1, min(remaining, int((target - per_call) / per_record)))


__all__ = ["SliceSizer", "SliceTiming"]
