"""Outlier share: the share of recent events outside the reference, against the share the reference predicts.

A mean-type statistic dilutes a new sub-population of a few percent of the traffic; a count of events
outside the reference does not. Each event with an embedding gets an out-of-reference score, the one
the pages already show: ``||z||^2 / k + (r - r_mean) / r_scale`` (squared whitened principal coordinates
plus standardised residual energy, both from ``EmbeddingFeaturizer.transform_scored``, *unclipped*).
It is **marked** when its score reaches the marking threshold ``tau``; a window's statistic is its count
of marked events.

Calibration is exact under exchangeability (conformal): every reference event is scored by a PCA
fitted without it (3-fold cross-fitting, ``_out_of_sample``), and ``tau`` is the ``k``-th largest of
those ``m`` scores, ``k = ceil(level * (m + 1))``. For a new event exchangeable with the reference, the
probability ``U`` of reaching the ``k``-th largest of ``m`` scores is itself random over reference
draws, ``U ~ Beta(k, m + 1 - k)`` (mean ``k / (m + 1)``): the estimation error of the reference
quantile. Given ``U`` the events of a window are marked independently, so the count ``C`` of marked
events among ``n`` is beta-binomial ``BB(n, k, m + 1 - k)``. The threshold for ``n`` items is the
smallest count ``c`` with ``P(C >= c) <= alpha / M`` (``M`` window sizes, Bonferroni), exact, with no
tail fit. The deployed scorer is fitted on all ``m`` events while the calibration scores came from
fits on ``2m/3``: new events lie no further from the fuller fit than held-out events from a partial one,
so the realised marking rate is at most the nominal one (conservative).

``statistics`` returns ``count / (c*(n) - 0.5)``: above 1 exactly when the count reaches its threshold,
so the signal's thresholds are all 1.0 and a window with fewer embeddings than events is judged at its
own item count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .shares import beta_binomial_thresholds

F64 = npt.NDArray[np.float64]

#: Nominal marking rate: an event is outside the reference when its score is beyond the reference's
#: 99.5th percentile. Chosen by a power analysis that needs no data (docs/drift.md, "Outlier share"):
#: it minimises the worst-case loss, over sub-populations whose scores sit 1.5 to 6 reference standard
#: deviations out, of the smallest share detectable in windows of 5..1000 events at the default target
#: with a 3,000-event reference.
OUTLIER_LEVEL = 0.005


def count_thresholds(m: int, k: int, max_items: int, tail_probability: float) -> F64:
    """For n = 0..max_items items, the smallest count c with P(BB(n, k, m + 1 - k) >= c) <= tail_probability
    (n + 1 where no count can reach it): ``nlpmon.drift.shares.beta_binomial_thresholds`` with a = k,
    b = m + 1 - k (exact tails, summed from the top count down)."""
    return beta_binomial_thresholds(float(k), float(m + 1 - k), max_items, tail_probability)


@dataclass
class OutlierShareFeaturizer:
    """Marks events whose out-of-reference score reaches ``tau``; judges windows' counts of marks."""

    tau: float  # marking threshold on the unclipped out-of-reference score
    level: float  # nominal marking rate
    exceedances: int  # k: reference out-of-sample scores >= tau
    reference_items: int  # m: reference embeddings scored out of sample
    count_threshold: F64  # (max_items + 1,) smallest alarming count per item count
    tail_probability: float  # alpha / M
    stat_names: tuple[str, ...] = ("outlier_count",)

    @property
    def n_features(self) -> int:
        return 1

    @property
    def expected_share(self) -> float:
        """The share of marked events the reference predicts (the mean of U)."""
        return self.exceedances / (self.reference_items + 1)

    @classmethod
    def fit(cls, reference_scores: F64, level: float, max_items: int,
            tail_probability: float) -> OutlierShareFeaturizer:
        """From out-of-sample reference scores. Raises ValueError with fewer than 20 scores."""
        s = np.sort(np.asarray(reference_scores, np.float64))[::-1]
        m = int(s.size)
        if m < 20:
            raise ValueError(f"need at least 20 reference embeddings scored out of sample, got {m}")
        k = min(m, max(1, math.ceil(level * (m + 1))))
        tau = float(s[k - 1])
        k_eff = int(np.count_nonzero(s >= tau))  # ties at tau are marked too: count them all
        return cls(tau, level, k_eff, m, count_thresholds(m, k_eff, max_items, tail_probability), tail_probability)

    def marks(self, scores: F64) -> F64:
        """1.0 for each score at or beyond the marking threshold, else 0.0 (NaN scores are not marked)."""
        return (np.asarray(scores, np.float64) >= self.tau).astype(np.float64)

    def threshold_counts(self, items: F64) -> F64:
        # np.clip(np.nan_to_num(items, nan=0.0), 0, top): the same values, a fraction of its fixed cost
        n = np.minimum(np.maximum(np.where(np.isnan(items), 0.0, items), 0), self.count_threshold.size - 1)
        return self.count_threshold[n.astype(np.int64)]

    def statistics(self, sums: F64, items: F64) -> F64:
        """(m, 1): marked count / (alarming count - 0.5); above 1 exactly when the count alarms."""
        c = sums[:, 0]
        out = (c / (self.threshold_counts(items) - 0.5))[:, None]
        out[~(items > 0)] = 0.0
        return out

    def share_report(self, sums: F64, items: float) -> dict[str, float | int]:
        """A window's marked share beside the share the reference predicts and the share that alarms."""
        n = int(items)
        c = float(sums[0])
        thr = float(self.threshold_counts(np.array([float(n)]))[0])
        return {"items": n, "marked": round(c), "share": c / n if n else 0.0,
                "expected_share": self.expected_share, "alarm_count": int(thr),
                "threshold_share": thr / n if n else 0.0}

    def state(self) -> dict[str, Any]:
        return {"tau": self.tau, "level": self.level, "exceedances": self.exceedances,
                "reference_items": self.reference_items, "count_threshold": self.count_threshold,
                "tail_probability": self.tail_probability}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> OutlierShareFeaturizer:
        return cls(float(s["tau"]), float(s["level"]), int(s["exceedances"]), int(s["reference_items"]),
                   np.asarray(s["count_threshold"], np.float64), float(s["tail_probability"]))
