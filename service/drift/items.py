"""Flat per-item columns: the input of every signal, for a batch of events or for a reference.

An ``ItemColumn`` holds one value per item (a document embedding, an entity label, a token tag, a
confidence, a length) and the position of the event it came from. Events may have no item (no
entities) or many; ``event`` is non-decreasing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class ItemColumn:
    event: I64  # (n_items,) event position, non-decreasing
    values: Any  # (n_items,) float64 | (n_items, d) float32 | list[str] | tuple[str, ...] (string items kept long)

    def __len__(self) -> int:
        return int(self.event.shape[0])

    def select_events(self, positions: I64, n_events: int) -> ItemColumn:
        """Items of the events at ``positions`` (sorted or not), renumbered 0..len(positions)-1 in that order."""
        new_pos = np.full(n_events, -1, dtype=np.int64)
        new_pos[positions] = np.arange(positions.shape[0])
        mapped = new_pos[self.event]
        keep = np.nonzero(mapped >= 0)[0]
        order = keep[np.argsort(mapped[keep], kind="stable")]
        if isinstance(self.values, list):
            vals: Any = [self.values[i] for i in order]
        elif isinstance(self.values, tuple):  # string items kept long (``ReferenceSample``): stay a tuple
            vals = tuple([self.values[i] for i in order])
        else:
            vals = self.values[order]
        return ItemColumn(mapped[order], vals)

    @staticmethod
    def concat(columns: list[ItemColumn], sizes: list[int]) -> ItemColumn:
        """Concatenate columns of consecutive event ranges of the given sizes."""
        offset = 0
        events = []
        vals: list[Any] = []
        for c, n in zip(columns, sizes, strict=True):
            events.append(c.event + offset)
            vals.append(c.values)
            offset += n
        ev = np.concatenate(events) if events else np.zeros(0, np.int64)
        if vals and isinstance(vals[0], tuple):
            flat: Any = tuple([v for vs in vals for v in vs])
        elif vals and isinstance(vals[0], list):
            flat = [v for vs in vals for v in vs]
        elif vals:
            flat = np.concatenate(vals)
        else:
            flat = []
        return ItemColumn(ev.astype(np.int64), flat)


def per_event_sums(item_rows: npt.NDArray[Any], event: I64, n_events: int) -> npt.NDArray[np.float64]:
    """Sum item rows (n_items, F) into event rows (n_events, F); events without items get zeros."""
    out = np.zeros((n_events, item_rows.shape[1]))
    if event.shape[0] == 0:
        return out
    if event.shape[0] == n_events and event[-1] == n_events - 1 and np.all(np.diff(event) == 1):
        out[:] = item_rows
        return out
    starts = np.concatenate([[0], np.nonzero(np.diff(event))[0] + 1])
    out[event[starts]] = np.add.reduceat(item_rows.astype(np.float64), starts, axis=0)
    return out


def per_event_counts(event: I64, n_events: int) -> npt.NDArray[np.float64]:
    return np.bincount(event, minlength=n_events).astype(np.float64)
