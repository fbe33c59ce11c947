"""Sliding windows of several sizes over per-event feature rows, updated one batch at a time.

Short windows (up to ``block_events``) are evaluated at every event from cumulative sums over a small
ring of recent rows plus the batch; long windows are evaluated when a block of ``block_events``
events completes, as the sum of the most recent blocks. Memory is O(block_events + max_window /
block_events) rows, independent of the number of events seen.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class WindowSums:
    """Sums over one window size at several end positions.

    ``positions`` are 0-based indices into the batch of the event that closes each window;
    ``sums`` is (m, F), ``items`` is (m,) (entities, tokens or documents counted).
    """

    window: int
    positions: npt.NDArray[np.int64]
    sums: Array
    items: Array


class MultiScaleWindow:
    """Sliding sums of feature rows over several window sizes at once.

    ``update`` takes a batch of rows (n, F), item counts (n,) and event times (n,) (seconds, NaN for
    unknown) and returns, per window size, the window sums at every position where that window is
    full (and, with ``max_age``, spans no more than ``max_age`` seconds of event time).
    Pure and deterministic; never blocks.
    """

    def __init__(self, n_features: int, windows: tuple[int, ...], block_events: int,
                 max_age: float | None = None) -> None:
        if not windows:
            raise ValueError("at least one window size is needed")
        self.windows = tuple(sorted(set(int(w) for w in windows)))
        if self.windows[0] < 1:
            raise ValueError("window sizes must be >= 1")
        self.block = int(block_events)
        self.short = tuple(w for w in self.windows if w <= self.block)
        self.long = tuple(w for w in self.windows if w > self.block)
        for w in self.long:
            if w % self.block:
                raise ValueError(f"long window {w} is not a multiple of block_events={self.block}")
        self.n_features = n_features
        self.max_age = max_age
        self.ring = max(self.short, default=0)
        # ring of the last `ring` events (rows, items, times) for short windows
        self._ring_rows = np.zeros((0, n_features))
        self._ring_items = np.zeros(0)
        self._ring_times = np.zeros(0)
        # the block being filled
        self._block_rows = np.zeros(n_features)
        self._block_items = 0.0
        self._block_count = 0
        self._block_t0 = np.nan
        # completed blocks, newest last
        self._max_blocks = max(self.long, default=0) // self.block
        self._blocks: deque[tuple[Array, float, float, float]] = deque(maxlen=max(self._max_blocks, 1))
        self.events_seen = 0

    # -- streaming -------------------------------------------------------------------------------------
    def update(self, rows: Array, items: Array, times: Array) -> list[WindowSums]:
        """Add a batch; return the full windows that close inside it (short: every event, long: per block)."""
        n = rows.shape[0]
        out: list[WindowSums] = []
        if n == 0:
            return out
        rows = np.asarray(rows, dtype=np.float64)
        items = np.asarray(items, dtype=np.float64)
        times = np.asarray(times, dtype=np.float64)
        if self.short:
            out.extend(self._short_windows(rows, items, times))
        if self.long:
            out.extend(self._long_windows(rows, items, times))
        self.events_seen += n
        return out

    def _short_windows(self, rows: Array, items: Array, times: Array) -> list[WindowSums]:
        h = self._ring_rows.shape[0]
        all_rows = np.concatenate([self._ring_rows, rows])
        all_items = np.concatenate([self._ring_items, items])
        all_times = np.concatenate([self._ring_times, times])
        csum = np.zeros((all_rows.shape[0] + 1, self.n_features))
        np.cumsum(all_rows, axis=0, out=csum[1:])
        citems = np.concatenate([[0.0], np.cumsum(all_items)])
        n = rows.shape[0]
        ends = np.arange(h, h + n) + 1  # exclusive end in the concatenated arrays
        out = []
        for w in self.short:
            starts = ends - w
            ok = starts >= 0
            if self.max_age is not None:
                ok &= ~(all_times[ends - 1] - all_times[np.maximum(starts, 0)] > self.max_age)
            if not ok.any():
                continue
            e, s = ends[ok], starts[ok]
            out.append(WindowSums(w, (e - 1 - h).astype(np.int64), csum[e] - csum[s], citems[e] - citems[s]))
        keep = min(self.ring, all_rows.shape[0])
        self._ring_rows = all_rows[all_rows.shape[0] - keep:].copy()
        self._ring_items = all_items[all_items.shape[0] - keep:].copy()
        self._ring_times = all_times[all_times.shape[0] - keep:].copy()
        return out

    def _long_windows(self, rows: Array, items: Array, times: Array) -> list[WindowSums]:
        n = rows.shape[0]
        results: dict[int, tuple[list[int], list[Array], list[float]]] = {w: ([], [], []) for w in self.long}
        i = 0
        while i < n:
            take = min(self.block - self._block_count, n - i)
            if self._block_count == 0:
                self._block_t0 = times[i]
            self._block_rows = self._block_rows + rows[i:i + take].sum(axis=0)
            self._block_items += float(items[i:i + take].sum())
            self._block_count += take
            i += take
            if self._block_count == self.block:
                t1 = float(times[i - 1])
                self._blocks.append((self._block_rows, self._block_items, float(self._block_t0), t1))
                self._block_rows = np.zeros(self.n_features)
                self._block_items = 0.0
                self._block_count = 0
                self._close_long(i - 1, t1, results)
        out = []
        for w, (pos, sums, its) in results.items():
            if pos:
                out.append(WindowSums(w, np.asarray(pos, dtype=np.int64), np.vstack(sums), np.asarray(its)))
        return out

    def _close_long(self, position: int, t_end: float,
                    results: dict[int, tuple[list[int], list[Array], list[float]]]) -> None:
        blocks = list(self._blocks)
        acc = np.zeros(self.n_features)
        acc_items = 0.0
        count = 0
        for w in self.long:  # sorted ascending: extend the same running sum
            need = w // self.block
            while count < need and count < len(blocks):
                b = blocks[-1 - count]
                if self.max_age is not None and t_end - b[2] > self.max_age:
                    break
                acc = acc + b[0]
                acc_items += b[1]
                count += 1
            if count < need:
                break
            pos, sums, its = results[w]
            pos.append(position)
            sums.append(acc.copy())
            its.append(acc_items)

    # -- state -----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to resume exactly (arrays and numbers only)."""
        blocks = list(self._blocks)
        return {
            "ring_rows": self._ring_rows, "ring_items": self._ring_items, "ring_times": self._ring_times,
            "block_rows": self._block_rows, "block_items": self._block_items,
            "block_count": self._block_count, "block_t0": float(self._block_t0),
            "blocks_rows": np.vstack([b[0] for b in blocks]) if blocks else np.zeros((0, self.n_features)),
            "blocks_meta": np.asarray([[b[1], b[2], b[3]] for b in blocks]).reshape(-1, 3),
            "events_seen": self.events_seen,
        }

    def load_state(self, s: dict[str, Any]) -> None:
        self._ring_rows = np.asarray(s["ring_rows"], dtype=np.float64).reshape(-1, self.n_features)
        self._ring_items = np.asarray(s["ring_items"], dtype=np.float64)
        self._ring_times = np.asarray(s["ring_times"], dtype=np.float64)
        self._block_rows = np.asarray(s["block_rows"], dtype=np.float64)
        self._block_items = float(s["block_items"])
        self._block_count = int(s["block_count"])
        self._block_t0 = float(s["block_t0"])
        self._blocks.clear()
        rows = np.asarray(s["blocks_rows"], dtype=np.float64).reshape(-1, self.n_features)
        meta = np.asarray(s["blocks_meta"], dtype=np.float64).reshape(-1, 3)
        for r, m in zip(rows, meta, strict=True):
            self._blocks.append((r.copy(), float(m[0]), float(m[1]), float(m[2])))
        self.events_seen = int(s["events_seen"])

    def current_sums(self, window: int) -> tuple[Array, float] | None:
        """Sums over the most recent ``window`` events (short: from the ring; long: whole blocks)."""
        if window <= self.block:
            if self._ring_rows.shape[0] < window:
                return None
            return self._ring_rows[-window:].sum(axis=0), float(self._ring_items[-window:].sum())
        need = window // self.block
        if len(self._blocks) < need:
            return None
        blocks = list(self._blocks)[-need:]
        return np.sum([b[0] for b in blocks], axis=0), float(sum(b[1] for b in blocks))
