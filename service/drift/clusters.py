"""Cluster of outliers: do the recent events outside the reference point the same way?

A new sub-population of a few percent of the traffic dilutes a mean-type statistic, and a count of events
outside the reference misses the new events that happen to lie inside it (texts of a new domain that
resemble some reference texts). What the new events have that reference outliers have not is that they
resemble *each other*: reference outliers scatter in every direction, a new sub-population is a cluster.

Each item (document embedding) is **marked** when its out-of-reference score (the one of
``embedding_outliers``, ``EmbeddingFeaturizer.transform_scored``) reaches ``tau``, the reference's
out-of-sample ``1 - level`` quantile (``level`` much wider than ``embedding_outliers``' 0.5 %: the
direction test below, not the count, separates the cluster from the reference's own outliers). A marked
item contributes ``u``, the unit direction of its whitened principal coordinates ``z / ||z||``. Per
item the row is ``[m, m * u (k), m * ||u||^2]`` (``m`` = 1 when marked, else 0; ``||u||^2`` is 1, or 0
for an item without a direction); a window's sums give its marked count ``c``, the sum ``S`` of the
marked directions and ``Q = sum ||u||^2``, and its statistic is

    cluster_pairs = (||S||^2 - Q) / max(n * level, 1)     (n: items in the window)

``||S||^2 - Q = sum over ordered pairs i != j of marked items of <u_i, u_j>``: the pairwise agreement of
the marked directions (a U-statistic, no self-pairs), per marked item the reference predicts. It grows
with the square of the number of new events that point one way, and with their count.

Calibration is the one of the mean-type signals (``nlpmon.drift.signal.calibrate_cluster_signal``):
random halvings of the reference; the embedding featurizer and the marking threshold are fitted on one
half, windows are resampled from the other half's rows, and each window's threshold is the null
quantile at ``false_alarm_rate / windows`` (a generalised-Pareto tail beyond the samples' reach). So the
threshold carries the error of estimating the marking threshold and the principal axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

#: Marking level of ``embedding_clusters`` (the reference's 95th percentile of out-of-sample scores).
CLUSTER_LEVEL = 0.05


def marking_threshold(reference_scores: F64, level: float) -> float:
    """The ``k``-th largest of ``m`` out-of-sample reference scores, ``k = ceil(level * (m + 1))``.
    Raises ValueError with fewer than 20 scores."""
    s = np.sort(np.asarray(reference_scores, np.float64))[::-1]
    m = int(s.size)
    if m < 20:
        raise ValueError(f"need at least 20 reference embeddings scored out of sample, got {m}")
    return float(s[min(m, max(1, math.ceil(level * (m + 1)))) - 1])


@dataclass
class ClusterFeaturizer:
    """Marks items whose score reaches ``tau``; judges the pairwise agreement of the marked directions."""

    tau: float  # marking threshold on the unclipped out-of-reference score
    level: float  # nominal marking rate
    k: int  # whitened principal coordinates per item
    stat_names: tuple[str, ...] = ("cluster_pairs",)

    @property
    def n_features(self) -> int:
        return self.k + 2

    def item_rows(self, z: npt.NDArray[Any], scores: F64) -> F64:
        """(n, k + 2) rows ``[m, m * u, m * ||u||^2]`` from items' whitened coordinates ``z`` (n, >= k; only
        the direction of the first k counts, so norm-clipped rows do) and their scores (NaN: not marked).
        Only the marked rows (a few percent) are computed."""
        s = np.asarray(scores, np.float64)
        out = np.zeros((s.shape[0], self.k + 2))
        idx = np.flatnonzero(s >= self.tau)
        if idx.size:
            zz = np.asarray(z[idx, : self.k], np.float64)
            norm = np.sqrt(np.einsum("ij,ij->i", zz, zz))
            ok = np.isfinite(norm) & (norm > 0)
            out[idx, 0] = 1.0
            out[idx[ok], 1:-1] = zz[ok] / norm[ok, None]
            out[idx[ok], -1] = 1.0
        return out

    def statistics(self, sums: F64, items: F64) -> F64:
        """(m, 1): ``(||S||^2 - Q) / max(items * level, 1)``; 0 where a window has no item."""
        s = sums[:, 1:-1]
        u = np.einsum("ij,ij->i", s, s) - sums[:, -1]
        out = (u / np.maximum(items * self.level, 1.0))[:, None]
        out[~(items > 0)] = 0.0
        return out

    def window_report(self, sums: F64, items: float) -> dict[str, float | int]:
        """A window's marked count and the mean cosine between two of its marked events (0 below 2)."""
        c = float(sums[0])
        q = float(sums[-1])
        s = sums[1:-1]
        pairs = q * (q - 1.0)
        return {"items": int(items), "marked": round(c), "expected_marked": float(items) * self.level,
                "mean_pair_cosine": float((s @ s - q) / pairs) if pairs > 0 else 0.0}

    def state(self) -> dict[str, Any]:
        return {"tau": self.tau, "level": self.level, "k": self.k}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> ClusterFeaturizer:
        return cls(float(s["tau"]), float(s["level"]), int(s["k"]))
