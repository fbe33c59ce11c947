"""Cluster of outliers: do the recent events outside the reference point the same way?

A new sub-population of a few percent of the traffic dilutes a mean-type statistic, and a count of events
outside the reference misses the new events that happen to lie inside it (texts of a new domain that
resemble some reference texts). What the new events have that reference outliers have not is that they
resemble *each other*: reference outliers scatter in every direction, a new sub-population is a cluster.

Each item (document embedding) is **marked** at level ``q`` when its out-of-reference score (the one of
``embedding_outliers``, ``EmbeddingFeaturizer.transform_scored``) reaches ``tau_q``, the reference's
out-of-sample ``1 - q`` quantile (``q`` much wider than ``embedding_outliers``' 0.5 %: the direction test
below, not the count, separates the cluster from the reference's own outliers). A marked item contributes
``u``, the unit direction of its whitened principal coordinates ``z / ||z||``. Per item and level the row
block is ``[m, m * u (k), m * ||u||^2]`` (``m`` = 1 when marked at that level, else 0; ``||u||^2`` is 1,
or 0 for an item without a direction); a window's sums give, per level, its marked count ``c``, the sum
``S`` of the marked directions and ``Q = sum ||u||^2``, and the level's statistic is

    cluster_pairs@q = (||S||^2 - Q) / max(n * q, 1)     (n: items in the window)

``||S||^2 - Q = sum over ordered pairs i != j of marked items of <u_i, u_j>``: the pairwise agreement of
the marked directions (a U-statistic, no self-pairs), per marked item the reference predicts. It grows
with the square of the number of new events that point one way, and with their count.

**A ladder of levels.** Which level sees a sub-population first depends on where it lies, which no
reference tells: one far outside the reference is marked at any level, and a narrow level keeps out the
reference's own outliers (their pairs are the noise); one that only partly leaves the reference is
marked at a wide level only. The signal therefore judges several levels at once, each one a statistic
with its own calibrated thresholds (the false-alarm budget split over windows and levels, Bonferroni),
and its score is the largest statistic/threshold over windows and levels, as for any signal with several
statistics.

Calibration is the one of the mean-type signals (``nlpmon.drift.signal.calibrate_cluster_signal``):
random halvings of the reference; the embedding featurizer and the marking thresholds are fitted on one
half, windows are resampled from the other half's rows, and each (window, level)'s threshold is the null
quantile at ``false_alarm_rate / (windows * levels)`` (a generalised-Pareto tail beyond the samples'
reach). So the thresholds carry the error of estimating the marking thresholds and the principal axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

#: Marking levels of ``embedding_clusters`` (the reference's 98th and 95th percentiles of out-of-sample
#: scores); docs/drift.md, "embedding_clusters", says why these two.
CLUSTER_LEVELS = (0.02, 0.05)
#: A level narrower than the widest is judged only when the held-out half of a calibration split is expected
#: to hold at least this many events marked at it: below that, the null of its pair statistic would be
#: resampled from a handful of directions.
MIN_MARKED_HELD_OUT = 20


def marking_threshold(reference_scores: F64, level: float) -> float:
    """The ``k``-th largest of ``m`` out-of-sample reference scores, ``k = ceil(level * (m + 1))``.
    Raises ValueError with fewer than 20 scores."""
    s = np.sort(np.asarray(reference_scores, np.float64))[::-1]
    m = int(s.size)
    if m < 20:
        raise ValueError(f"need at least 20 reference embeddings scored out of sample, got {m}")
    return float(s[min(m, max(1, math.ceil(level * (m + 1)))) - 1])


def usable_levels(levels: tuple[float, ...], n_events: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(judged, not judged) marking levels, each sorted, for a reference of ``n_events`` events: the widest
    level always; a narrower one when ``level * held-out half >= MIN_MARKED_HELD_OUT``."""
    ordered = tuple(sorted(set(float(q) for q in levels)))
    if not ordered:
        raise ValueError("embedding_clusters needs at least one marking level")
    held_out = n_events - n_events // 2
    ok = tuple(q for q in ordered if q == ordered[-1] or q * held_out >= MIN_MARKED_HELD_OUT)
    return ok, tuple(q for q in ordered if q not in ok)


@dataclass
class ClusterFeaturizer:
    """Marks items whose score reaches each level's ``tau``; judges, per level, the pairwise agreement of
    the marked directions. ``levels`` ascending (narrowest first), ``taus`` the matching thresholds."""

    taus: tuple[float, ...]  # marking thresholds on the unclipped out-of-reference score, one per level
    levels: tuple[float, ...]  # nominal marking rates, ascending
    k: int  # whitened principal coordinates per item

    def __post_init__(self) -> None:
        self.taus = tuple(float(t) for t in self.taus)
        self.levels = tuple(float(q) for q in self.levels)
        if not self.levels or len(self.taus) != len(self.levels) or list(self.levels) != sorted(set(self.levels)):
            raise ValueError(f"need one threshold per distinct ascending level, got {self.taus} for {self.levels}")

    @property
    def stat_names(self) -> tuple[str, ...]:
        return tuple(f"cluster_pairs@{q:g}" for q in self.levels)

    @property
    def width(self) -> int:
        """Columns of one level's block: ``[m, m * u (k), m * ||u||^2]``."""
        return self.k + 2

    @property
    def n_features(self) -> int:
        return len(self.levels) * self.width

    @property
    def level(self) -> float:
        """The widest level (the one every reference size judges)."""
        return self.levels[-1]

    @property
    def tau(self) -> float:
        """The widest level's marking threshold."""
        return self.taus[-1]

    def item_rows(self, z: npt.NDArray[Any], scores: F64) -> F64:
        """(n, levels * (k + 2)) rows, per level ``[m, m * u, m * ||u||^2]``, from items' whitened coordinates
        ``z`` (n, >= k; only the direction of the first k counts, so norm-clipped rows do) and their scores
        (NaN: not marked)."""
        return self.event_rows(z, scores, np.arange(np.asarray(scores).shape[0]), np.asarray(scores).shape[0])

    def event_rows(self, z: npt.NDArray[Any], scores: F64, event: npt.NDArray[np.int64], n_events: int) -> F64:
        """(n_events, levels * (k + 2)): the ``item_rows`` of items belonging to events ``event`` (ascending),
        summed per event (``marked_rows`` made dense)."""
        out = np.zeros((n_events, self.n_features))
        positions, values = self.marked_rows(z, scores, event)
        out[positions] = values
        return out

    def marked_rows(self, z: npt.NDArray[Any], scores: F64,
                    event: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], F64]:
        """The non-zero event rows of ``event_rows``: (events with an item marked at the widest level,
        ascending; their rows). Only the marked items (a few percent) are computed."""
        s = np.asarray(scores, np.float64)
        w = self.width
        idx = np.flatnonzero(s >= min(self.taus))
        ev = np.asarray(event, np.int64)[idx]
        positions = np.unique(ev)  # ascending, distinct
        values = np.zeros((positions.size, self.n_features))
        if idx.size:
            zz = np.asarray(z[idx, : self.k], np.float64)
            norm = np.sqrt(np.einsum("ij,ij->i", zz, zz))
            ok = np.isfinite(norm) & (norm > 0)
            block = np.zeros((idx.size, w))
            block[:, 0] = 1.0
            block[ok, 1:-1] = zz[ok] / norm[ok, None]
            block[ok, -1] = 1.0
            distinct = positions.size == idx.size  # one marked item per event (events ascending): assign
            row = np.searchsorted(positions, ev)
            for j, tau in enumerate(self.taus):
                at = s[idx] >= tau
                if distinct:
                    values[row[at], j * w:(j + 1) * w] = block[at]
                else:
                    np.add.at(values, (row[at][:, None], np.arange(j * w, (j + 1) * w)[None, :]), block[at])
        return positions, values

    def statistics(self, sums: F64, items: F64) -> F64:
        """(m, levels): per level ``(||S||^2 - Q) / max(items * level, 1)``; 0 where a window has no item."""
        w = self.width
        out = np.empty((sums.shape[0], len(self.levels)))
        for j, q in enumerate(self.levels):
            s = sums[:, j * w + 1:(j + 1) * w - 1]
            out[:, j] = (np.einsum("ij,ij->i", s, s) - sums[:, (j + 1) * w - 1]) / np.maximum(items * q, 1.0)
        out[~(items > 0)] = 0.0
        return out

    def window_report(self, sums: F64, items: float, level: int | None = None) -> dict[str, float | int]:
        """A window's marked count at one level (index into ``levels``; default the widest) and the mean
        cosine between two of its marked events (0 below 2)."""
        j = len(self.levels) - 1 if level is None else level
        b = np.asarray(sums, np.float64)[j * self.width:(j + 1) * self.width]
        c, q, s = float(b[0]), float(b[-1]), b[1:-1]
        pairs = q * (q - 1.0)
        return {"items": int(items), "marked": round(c), "expected_marked": float(items) * self.levels[j],
                "mean_pair_cosine": float((s @ s - q) / pairs) if pairs > 0 else 0.0}

    def state(self) -> dict[str, Any]:
        return {"taus": list(self.taus), "levels": list(self.levels), "k": self.k}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> ClusterFeaturizer:
        """From ``state()``, or from a one-level state saved before the ladder (``tau``, ``level``)."""
        if "levels" not in s:
            return cls((float(s["tau"]),), (float(s["level"]),), int(s["k"]))
        return cls(tuple(s["taus"]), tuple(s["levels"]), int(s["k"]))
