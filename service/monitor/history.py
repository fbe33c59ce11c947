"""Each signal's score against its threshold over recent events, for the model pages. In memory only.

``ScoreHistory`` keeps the last ``points`` buckets of ``events_per_point`` monitored events. Bucket
``b`` holds the monitored events ``[b * E, (b + 1) * E)``: its largest score/threshold ratio per signal
(so a short spike is not lost), whether the signal was flagged at any of its events, the index of its
last event and its newest event time. A batch that ends mid-bucket is continued by the next one, so
the history does not depend on how the stream was split into batches. One vectorised update per batch
(``np.maximum.reduceat``); nothing is done per event in Python.

Not part of the snapshot: after a restore the history starts empty.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from .page_view import History, OutlierShareHistory, SignalHistory

F64 = npt.NDArray[np.float64]


class ScoreHistory:
    """Bounded per-bucket signal scores. ``points == 0`` disables it."""

    def __init__(self, signals: tuple[str, ...], points: int, events_per_point: int) -> None:
        if events_per_point < 1:
            raise ValueError("events_per_point must be >= 1")
        self.signals = signals
        self.points = points
        self.events_per_point = events_per_point
        self.bucket: deque[int] = deque(maxlen=max(points, 1))
        self.event: deque[int] = deque(maxlen=max(points, 1))
        self.time: deque[float] = deque(maxlen=max(points, 1))
        self.score: dict[str, deque[float]] = {s: deque(maxlen=max(points, 1)) for s in signals}
        self.drift: dict[str, deque[bool]] = {s: deque(maxlen=max(points, 1)) for s in signals}

    def __len__(self) -> int:
        return len(self.bucket)

    def add(self, first_event: int, times: F64, ratios: Mapping[str, F64],
            flags: Mapping[str, npt.NDArray[np.bool_]]) -> None:
        """Fold one batch: events ``first_event .. first_event + n - 1`` (monitored-event indices) with their
        event times (NaN: unknown) and, per signal, the per-event score/threshold ratio and drift flag."""
        n = int(times.shape[0])
        if self.points == 0 or n == 0:
            return
        idx = first_event + np.arange(n, dtype=np.int64)
        b = idx // self.events_per_point
        starts = np.flatnonzero(np.concatenate([[True], b[1:] != b[:-1]]))
        ends = np.concatenate([starts[1:], [n]]) - 1
        buckets = b[starts].tolist()
        last = idx[ends].tolist()
        t = np.fmax.reduceat(np.asarray(times, np.float64), starts).tolist()
        # every signal's buckets in one reduceat over the signals stacked (max and or: the same values)
        present = [s for s in self.signals if ratios.get(s) is not None and flags.get(s) is not None]
        scores, drifts = [], []
        if present:
            scores = np.maximum.reduceat(np.stack([ratios[s] for s in present]), starts, axis=1).tolist()
            drifts = np.logical_or.reduceat(np.stack([flags[s] for s in present]), starts, axis=1).tolist()
        found = dict(zip(present, zip(scores, drifts, strict=True), strict=True))
        per_signal = {s: found.get(s) or ([math.nan] * len(starts), [False] * len(starts)) for s in self.signals}
        first = 0
        if self.bucket and self.bucket[-1] == buckets[0]:  # the previous batch ended inside this bucket
            self.event[-1] = last[0]
            if not math.isnan(t[0]):
                self.time[-1] = t[0] if math.isnan(self.time[-1]) else max(self.time[-1], t[0])
            for s, (sc, fl) in per_signal.items():
                old = self.score[s][-1]
                self.score[s][-1] = sc[0] if math.isnan(old) else (old if math.isnan(sc[0]) else max(old, sc[0]))
                self.drift[s][-1] = self.drift[s][-1] or fl[0]
            first = 1
        keep = slice(max(first, len(buckets) - self.points), None)  # older ones would fall off at once
        self.bucket.extend(buckets[keep])
        self.event.extend(last[keep])
        self.time.extend(t[keep])
        for s, (sc, fl) in per_signal.items():
            self.score[s].extend(sc[keep])
            self.drift[s].extend(fl[keep])

    def events_per_second(self, span_s: float = 60.0) -> tuple[float | None, float]:
        """Events per second of event time over the newest ``span_s`` seconds of history, and the span used.

        None when fewer than two buckets carry a time or the times do not advance."""
        pts = [(e, t) for e, t in zip(self.event, self.time, strict=True) if not math.isnan(t)]
        if len(pts) < 2:
            return None, 0.0
        e1, t1 = pts[-1]
        e0, t0 = pts[-2]
        for e, t in reversed(pts[:-1]):
            if t1 - t > span_s:
                break
            e0, t0 = e, t
        if t1 <= t0:
            return None, 0.0
        return (e1 - e0) / (t1 - t0), t1 - t0

    def view(self, outlier_share: OutlierShareHistory | None = None) -> History:
        """The columnar history of the page view: ``event`` (last event of each bucket), ``time`` (None:
        unknown) and per signal ``score`` (largest ratio in the bucket; 1.0 is the threshold) and ``drift``;
        ``outlier_share``: ``ShareHistory.view``'s, when the model has that signal."""
        return History(self.events_per_point, len(self.bucket), self.points, tuple(self.event),
                       tuple(None if math.isnan(t) else t for t in self.time),
                       {s: SignalHistory(tuple(None if math.isnan(x) else x for x in self.score[s]),
                                         tuple(self.drift[s])) for s in self.signals},
                       outlier_share)


class ShareHistory:
    """Bounded per-bucket counts of the events ``embedding_outliers`` marked, for the model page.

    Bucket ``b`` holds the monitored events ``[b * E, (b + 1) * E)``: marked events and scored items.
    The report turns them into the marked share over the trailing ``window`` events at each bucket end,
    beside the share the reference predicts and the share that alarms at that many items. In memory
    only, like ``ScoreHistory``; independent of how the stream was split into batches.
    """

    def __init__(self, points: int, events_per_point: int, window: int = 200) -> None:
        if events_per_point < 1:
            raise ValueError("events_per_point must be >= 1")
        self.points = points
        self.events_per_point = events_per_point
        self.per_share = max(1, window // events_per_point)  # buckets per plotted share
        cap = max(points, 1) + self.per_share
        self.bucket: deque[int] = deque(maxlen=cap)
        self.marked: deque[float] = deque(maxlen=cap)
        self.items: deque[float] = deque(maxlen=cap)

    def add(self, first_event: int, marks: F64, items: F64) -> None:
        """Fold one batch: per-event marked counts and scored items of monitored events from ``first_event``."""
        n = int(marks.shape[0])
        if self.points == 0 or n == 0:
            return
        b = (first_event + np.arange(n, dtype=np.int64)) // self.events_per_point
        starts = np.flatnonzero(np.concatenate([[True], b[1:] != b[:-1]]))
        buckets = b[starts].tolist()
        mk = np.add.reduceat(np.asarray(marks, np.float64), starts).tolist()
        it = np.add.reduceat(np.asarray(items, np.float64), starts).tolist()
        if self.bucket and self.bucket[-1] == buckets[0]:
            self.marked[-1] += mk[0]
            self.items[-1] += it[0]
            buckets, mk, it = buckets[1:], mk[1:], it[1:]
        self.bucket.extend(buckets)
        self.marked.extend(mk)
        self.items.extend(it)

    def view(self, featurizer: Any) -> OutlierShareHistory:
        """``event`` (last event of each bucket), ``share`` over the trailing window, ``threshold_share``
        at that window's item count, ``expected_share``; only buckets with a full trailing window.
        ``featurizer``: the ``OutlierShareFeaturizer`` (expected share, threshold counts)."""
        w = self.per_share
        mk, it, bk = np.asarray(self.marked), np.asarray(self.items), list(self.bucket)
        expected = float(featurizer.expected_share)
        if len(bk) < w:
            return OutlierShareHistory(w * self.events_per_point, (), (), (), expected)
        cm, ci = np.concatenate([[0.0], np.cumsum(mk)]), np.concatenate([[0.0], np.cumsum(it)])
        ends = np.arange(w, len(bk) + 1)
        contiguous = np.asarray([bk[e - 1] - bk[e - w] == w - 1 for e in ends])
        ends = ends[contiguous][-self.points:]
        m, n = cm[ends] - cm[ends - w], ci[ends] - ci[ends - w]
        thr = featurizer.threshold_counts(n)
        safe = np.maximum(n, 1.0)
        return OutlierShareHistory(w * self.events_per_point,
                                   tuple((bk[e - 1] + 1) * self.events_per_point - 1 for e in ends.tolist()),
                                   tuple(np.where(n > 0, m / safe, 0.0).tolist()),
                                   tuple(np.where(n > 0, thr / safe, 0.0).tolist()), expected)
