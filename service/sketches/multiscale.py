"""Sliding windows of several sizes over per-event feature rows, updated one batch at a time.

Short windows (up to ``block_events``) are evaluated at every event from cumulative sums over a small
ring of recent rows plus the batch; long windows are evaluated when a block of ``block_events``
events completes, as the sum of the most recent blocks. Memory is O(block_events + max_window /
block_events) rows, independent of the number of events seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class WindowSums:
    """Sums over one window size at several end positions.

    ``positions`` are 0-based indices into the batch of the event that closes each window;
    ``sums`` is (m, F), ``items`` is (m,) (entities, tokens or documents counted). A long window that
    is full but spans more than ``max_age`` of event time has NaN sums and items.
    """

    window: int
    positions: npt.NDArray[np.int64]
    sums: Array
    items: Array


@dataclass(frozen=True, slots=True)
class _SparseRows:
    """A batch of ``n`` rows that are zero except at ``positions`` (ascending, distinct): ``values``."""

    n: int
    positions: npt.NDArray[np.int64]
    values: Array

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.values.shape[1]

    def sum(self, axis: int) -> Array:
        return self.values.sum(axis=axis)

    def block_sums(self, ends: npt.NDArray[np.int64]) -> tuple[Array, Array]:
        """Sums of the rows of each block ending (exclusive) at ``ends`` (the first starting at 0), and of
        the rows after the last end; zero rows are skipped, which changes no float sum."""
        out = np.zeros((ends.shape[0] + 1, self.values.shape[1]))
        np.add.at(out, np.searchsorted(ends, self.positions, side="right"), self.values)
        return out[:-1], out[-1]


class MultiScaleWindow:
    """Sliding sums of feature rows over several window sizes at once.

    ``update`` takes a batch of rows (n, F), item counts (n,) and event times (n,) (seconds, NaN for
    unknown) and returns, per window size, the window sums at every position where that window is
    full (and, with ``max_age``, spans no more than ``max_age`` seconds of event time).
    Pure and deterministic; never blocks.
    """

    def __init__(self, n_features: int, windows: tuple[int, ...], block_events: int,
                 max_age: float | None = None, every_event: bool = True) -> None:
        """``every_event=False``: every window (each a multiple of ``block_events``) is evaluated only
        when a block closes, as the long ones are."""
        if not windows:
            raise ValueError("at least one window size is needed")
        self.windows = tuple(sorted(set(int(w) for w in windows)))
        if self.windows[0] < 1:
            raise ValueError("window sizes must be >= 1")
        self.block = int(block_events)
        cut = self.block if every_event else 0
        self.short = tuple(w for w in self.windows if w <= cut)
        self.long = tuple(w for w in self.windows if w > cut)
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
        # completed blocks, newest last: sums, items, first and last event time
        self._max_blocks = max(self.long, default=0) // self.block
        self._hist_rows = np.zeros((0, n_features))
        self._hist_items = np.zeros(0)
        self._hist_t0 = np.zeros(0)
        self._hist_t1 = np.zeros(0)
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

    def update_sparse(self, n: int, positions: npt.NDArray[np.int64], values: Array, items: Array,
                      times: Array) -> list[WindowSums]:
        """``update`` of a batch of ``n`` rows that are zero except at ``positions`` (ascending, distinct),
        where they are ``values`` (m, F): the same windows and sums. When every window is judged per block
        the work is in the non-zero rows only (no (n, F) array); with windows judged at every event the rows
        are made dense first."""
        if n == 0:
            return []
        if self.short:
            rows = np.zeros((n, self.n_features))
            rows[positions] = values
            return self.update(rows, items, times)
        items = np.asarray(items, dtype=np.float64)
        times = np.asarray(times, dtype=np.float64)
        out = self._long_windows(_SparseRows(n, np.asarray(positions, np.int64), np.asarray(values, np.float64)),
                                 items, times)
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
        out = []
        # the window closing at batch event i ends (exclusive) at h + i + 1 of the concatenated arrays; the full
        # ones (start >= 0) are a suffix, their sums differences of two slices (no gathered copies), written one
        # window after the other into one array (``stacked_rows``: the statistics read them without a copy)
        full = [(w, max(0, w - h - 1)) for w in self.short if max(0, w - h - 1) < n]
        stacked = np.empty((sum(n - first for _, first in full), self.n_features))
        stacked_items = np.empty(stacked.shape[0])
        at = 0
        for w, first in full:
            lo, hi = h + first + 1, h + n + 1
            positions = np.arange(first, n, dtype=np.int64)
            sums = np.subtract(csum[lo:hi], csum[lo - w:hi - w], out=stacked[at:at + n - first])
            its = np.subtract(citems[lo:hi], citems[lo - w:hi - w], out=stacked_items[at:at + n - first])
            at += n - first
            if self.max_age is not None:
                ok = ~(all_times[lo - 1:hi - 1] - all_times[lo - w:hi - w] > self.max_age)
                if not ok.all():
                    if not ok.any():
                        continue
                    positions, sums, its = positions[ok], sums[ok], its[ok]
            out.append(WindowSums(w, positions, sums, its))
        keep = min(self.ring, all_rows.shape[0])
        self._ring_rows = all_rows[all_rows.shape[0] - keep:].copy()
        self._ring_items = all_items[all_items.shape[0] - keep:].copy()
        self._ring_times = all_times[all_times.shape[0] - keep:].copy()
        return out

    def _long_windows(self, rows: Array | _SparseRows, items: Array, times: Array) -> list[WindowSums]:
        """Close the blocks completed in this batch; long windows are sliding sums over block sums."""
        n = rows.shape[0]
        b = self.block
        first = b - self._block_count  # events of this batch that complete the open block
        ends = np.arange(first, n + 1, b)  # exclusive batch ends of completed blocks
        if ends.size == 0:
            if self._block_count == 0:
                self._block_t0 = times[0]
            self._block_rows = self._block_rows + rows.sum(axis=0)
            self._block_items += float(items.sum())
            self._block_count += n
            return []
        starts = np.concatenate([[0], ends[:-1]])
        rest = int(ends[-1])  # events after the last completed block start the next open block
        if isinstance(rows, _SparseRows):
            new_rows, tail = rows.block_sums(ends)
        else:
            new_rows = np.add.reduceat(rows[:rest], starts, axis=0)
            tail = rows[rest:].sum(axis=0) if rest < n else np.zeros(self.n_features)
        new_rows[0] += self._block_rows
        new_items = np.add.reduceat(items[:rest], starts)
        new_items[0] += self._block_items
        t0 = times[starts].copy()
        if self._block_count:
            t0[0] = self._block_t0
        t1 = times[ends - 1]
        # the open block after this batch
        self._block_rows = tail
        self._block_items = float(items[rest:].sum()) if rest < n else 0.0
        self._block_count = n - rest
        self._block_t0 = times[rest] if rest < n else np.nan
        # sliding sums over (kept blocks + new blocks)
        h = self._hist_rows.shape[0]
        all_rows = np.concatenate([self._hist_rows, new_rows])
        all_items = np.concatenate([self._hist_items, new_items])
        all_t0 = np.concatenate([self._hist_t0, t0])
        all_t1 = np.concatenate([self._hist_t1, t1])
        csum = np.zeros((all_rows.shape[0] + 1, self.n_features))
        np.cumsum(all_rows, axis=0, out=csum[1:])
        citems = np.concatenate([[0.0], np.cumsum(all_items)])
        stop = np.arange(h, h + ends.size) + 1
        out = []
        for w in self.long:
            need = w // b
            # stop is consecutive, so the full windows (begin >= 0) are a suffix and their sums differences
            # of two slices of the cumulative sums (no gathered copies)
            first = max(0, need - h - 1)
            if first < stop.size:
                lo, hi = int(stop[first]), int(stop[-1]) + 1
                sums, its = csum[lo:hi] - csum[lo - need:hi - need], citems[lo:hi] - citems[lo - need:hi - need]
                if self.max_age is not None:
                    # a full window spanning too much event time is reported as NaN, so that its last
                    # value stops standing in for it
                    stale = all_t1[lo - 1:hi - 1] - all_t0[lo - need:hi - need] > self.max_age
                    sums[stale], its[stale] = np.nan, np.nan
                out.append(WindowSums(w, (ends[first:] - 1).astype(np.int64), sums, its))
        keep = min(self._max_blocks, all_rows.shape[0])
        cut = all_rows.shape[0] - keep
        self._hist_rows, self._hist_items = all_rows[cut:].copy(), all_items[cut:].copy()
        self._hist_t0, self._hist_t1 = all_t0[cut:].copy(), all_t1[cut:].copy()
        return out

    # -- state -----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to resume exactly (arrays and numbers only)."""
        return {
            "ring_rows": self._ring_rows, "ring_items": self._ring_items, "ring_times": self._ring_times,
            "block_rows": self._block_rows, "block_items": self._block_items,
            "block_count": self._block_count, "block_t0": float(self._block_t0),
            "blocks_rows": self._hist_rows,
            "blocks_meta": np.stack([self._hist_items, self._hist_t0, self._hist_t1], axis=1),
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
        self._hist_rows = np.asarray(s["blocks_rows"], dtype=np.float64).reshape(-1, self.n_features)
        meta = np.asarray(s["blocks_meta"], dtype=np.float64).reshape(-1, 3)
        self._hist_items, self._hist_t0, self._hist_t1 = meta[:, 0].copy(), meta[:, 1].copy(), meta[:, 2].copy()
        self.events_seen = int(s["events_seen"])

    def current_sums(self, window: int) -> tuple[Array, float] | None:
        """Sums over the most recent ``window`` events (short: from the ring; long: whole blocks)."""
        if window in self.short:
            if self._ring_rows.shape[0] < window:
                return None
            return self._ring_rows[-window:].sum(axis=0), float(self._ring_items[-window:].sum())
        need = window // self.block
        if self._hist_rows.shape[0] < need:
            return None
        return self._hist_rows[-need:].sum(axis=0), float(self._hist_items[-need:].sum())


def stacked_rows(parts: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    """``np.concatenate(parts)``: without a copy when the parts (non-empty) lie one after the other in one
    C-contiguous array, as ``MultiScaleWindow`` writes its short windows' sums and items; the same values."""
    first = parts[0]
    base = first.base
    if len(parts) > 1 and isinstance(base, np.ndarray) and base.flags.c_contiguous and first.size:
        addr = first.__array_interface__["data"][0]
        end = addr
        for p in parts:
            if (p.base is not base or not p.flags.c_contiguous or not p.size or p.shape[1:] != first.shape[1:]
                    or p.__array_interface__["data"][0] != end):
                break
            end += p.nbytes
        else:
            rows = (end - addr) // (first.nbytes // first.shape[0])
            offset = addr - base.__array_interface__["data"][0]
            return np.ndarray((rows, *first.shape[1:]), first.dtype, buffer=base, offset=offset)
    return np.concatenate(parts)
