"""Sequential change detectors behind one small protocol, wrapping river (pinned: river==0.26.1).

``AdwinDetector`` feeds river's ADWIN one value per block of events (the block mean of a per-item
value in [0, 1], e.g. the reference percentile of each entity's confidence), and reports the event
positions where ADWIN found a change in the mean. ADWIN's ``delta`` bounds its false detections per
check (a Hoeffding/Bernstein bound, conservative rather than resampled). river's detector state is
not serialisable, so the block values are kept (the last 10,000 blocks) and replayed into a fresh
detector on restore: deterministic, so the restored detector equals the original while fewer than
10,000 blocks have been seen, and approximates it after.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from river import drift

F64 = npt.NDArray[np.float64]

MAX_HISTORY = 10_000  # blocks kept for restore


class AdwinDetector:
    """ADWIN on per-block weighted means. ``update`` returns batch positions of detected changes."""

    def __init__(self, delta: float) -> None:
        self.delta = delta
        self._adwin = self._new()
        self._history: list[float] = []
        self._sum = 0.0
        self._weight = 0.0
        self._count = 0
        self.last_change: dict[str, float] = {}

    def _new(self) -> drift.ADWIN:
        return drift.ADWIN(delta=self.delta, clock=1, grace_period=10, min_window_length=5)

    def update(self, values: npt.NDArray[Any], weights: npt.NDArray[Any], block: int) -> list[int]:
        """``values``: per-event sums of the item values; ``weights``: items per event.

        Returns the batch positions of the events that closed a block in which ADWIN saw a change.
        """
        n = int(values.shape[0])
        first = block - self._count
        ends = np.arange(first, n + 1, block)
        cv = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
        cw = np.concatenate([[0.0], np.cumsum(weights, dtype=np.float64)])
        out: list[int] = []
        prev = 0
        for e in ends.tolist():  # one step per block
            s = self._sum + cv[e] - cv[prev]
            w = self._weight + cw[e] - cw[prev]
            self._sum = self._weight = 0.0
            self._count = 0
            prev = e
            if w > 0 and self._step(s / w):
                out.append(e - 1)
        self._sum += float(cv[n] - cv[prev])
        self._weight += float(cw[n] - cw[prev])
        self._count += n - prev
        return out

    def _step(self, x: float) -> bool:
        before = float(self._adwin.estimation) if self._history else x
        self._adwin.update(x)
        self._history.append(x)
        if len(self._history) > MAX_HISTORY:
            self._history = self._history[-MAX_HISTORY:]
        if self._adwin.drift_detected:
            self.last_change = {"mean_before": before, "mean_after": float(self._adwin.estimation)}
            return True
        return False

    def state(self) -> dict[str, Any]:
        return {"delta": self.delta, "history": np.asarray(self._history), "sum": self._sum,
                "weight": self._weight, "count": self._count, "last_change": self.last_change}

    def load_state(self, s: dict[str, Any]) -> None:
        self.delta = float(s["delta"])
        self._adwin = self._new()
        self._history = []
        for x in np.asarray(s["history"], np.float64).tolist():
            self._adwin.update(x)
            self._history.append(x)
        self._sum, self._weight, self._count = float(s["sum"]), float(s["weight"]), int(s["count"])
        self.last_change = dict(s["last_change"])
