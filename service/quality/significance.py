"""When is a quality change more than noise: an F1-drop test and a calibration-gap test. Pure.

Both tests turn a difference into a z statistic and compare it with the one-sided normal quantile of
a false-alarm rate ``alpha`` (:func:`z_threshold`), so a flag is raised by chance with probability
about ``alpha`` per evaluation when nothing changed.

**F1 drop.** Micro F1 over a set of documents is ``2 TP / (2 TP + FP + FN) = 2 p / (1 + p)`` with
``p = TP / (TP + FP + FN)``, a ratio of per-document sums. Spans of one document are not independent
(a model that misreads a text misreads several of its entities), so the standard error of ``p`` is the
ratio estimator's, from per-document sums (cluster-robust): ``var(p) = D / (D - 1) * sum_d (TP_d - p
N_d)^2 / (sum_d N_d)^2`` with ``N_d = TP_d + FP_d + FN_d``; the delta method gives ``se(F1) = 2 / (1 +
p)^2 se(p)``. The statistic is ``(F1_ref - F1_now) / sqrt(se_ref^2 + se_now^2)``. For text
classification micro F1 is the accuracy and the same formula is the two-proportion test.

**Calibration gap.** If the calibration map fitted on the reference still holds, each predicted span
of the labelled window is correct with probability ``c_i`` (its calibrated confidence), so the number
correct has mean ``sum c_i`` and variance ``sum c_i (1 - c_i)``; the map itself was fitted on
``m`` reference spans, which adds about ``e (1 - e) / m`` to the variance of the mean estimate ``e``.
The statistic is ``|realised - estimated| / se``.

Assumptions (docs/quality.md): documents independent of each other; enough documents for the normal
approximation (callers require a minimum); the reference F1 is itself an estimate (its error is in
the statistic); evaluations of a sliding window are correlated, so ``alpha`` is a per-evaluation rate.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.stats import norm

F64 = npt.NDArray[np.float64]

__all__ = ["calibration_gap_score", "f1_drop_score", "micro_f1_with_se", "z_threshold"]


def z_threshold(alpha: float) -> float:
    """The one-sided normal quantile ``z`` with ``P(Z > z) = alpha``.

    >>> round(z_threshold(0.025), 2)
    1.96
    """
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    return float(norm.isf(alpha))


def micro_f1_with_se(doc_tp: F64, doc_n: F64) -> tuple[float, float]:
    """Micro F1 and its cluster-robust standard error from per-document TP and TP+FP+FN.

    Returns ``(nan, nan)`` without any span, and a standard error of ``nan`` with fewer than 2 documents.
    """
    tp = np.asarray(doc_tp, np.float64)
    n = np.asarray(doc_n, np.float64)
    total = float(n.sum())
    if total == 0:
        return math.nan, math.nan
    p = float(tp.sum()) / total
    f1 = 2 * p / (1 + p)
    d = tp.size
    if d < 2:
        return f1, math.nan
    var_p = d / (d - 1) * float(np.sum((tp - p * n) ** 2)) / total**2
    return f1, 2 / (1 + p) ** 2 * math.sqrt(var_p)


def f1_drop_score(ref: tuple[float, float], now: tuple[float, float]) -> float:
    """``(F1_ref - F1_now) / sqrt(se_ref^2 + se_now^2)``; nan when undefined, +-inf for a certain change."""
    (f_ref, se_ref), (f_now, se_now) = ref, now
    if not all(math.isfinite(x) for x in (f_ref, se_ref, f_now, se_now)):
        return math.nan
    se = math.hypot(se_ref, se_now)
    diff = f_ref - f_now
    if se == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / se


def calibration_gap_score(calibrated: F64, correct: npt.NDArray[np.bool_], reference_spans: int) -> float:
    """``|sum(correct) - sum(c)| / sqrt(sum c (1 - c) + n^2 e (1 - e) / m)`` (see the module doc).

    ``calibrated`` are the calibrated confidences of the window's scored spans, ``correct`` whether each
    was right, ``reference_spans`` (m) how many spans the map was fitted on. nan without spans or map.
    """
    c = np.asarray(calibrated, np.float64)
    y = np.asarray(correct, bool)
    n = c.size
    if n == 0 or reference_spans < 1:
        return math.nan
    e = float(c.mean())
    var = float(np.sum(c * (1 - c))) + n * n * e * (1 - e) / reference_spans
    diff = abs(float(y.sum()) - float(c.sum()))
    if var <= 0:
        return 0.0 if diff == 0 else math.inf
    return diff / math.sqrt(var)
