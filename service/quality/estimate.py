"""Label-free estimate of precision per label from the model's own confidences (CBPE-style).

Confidence-based performance estimation (NannyML's CBPE for classifiers) applied to spans: if a
predicted span with calibrated confidence ``c`` is correct with probability ``c``, the expected
precision of a label over a set of its predicted spans is the mean of their calibrated confidences.
Labels are not needed, so the estimate is available at once, for every prediction, long before
human review catches up.

Calibration: a monotone map ``confidence -> P(correct)`` fitted on **reference** predictions that
carry ground truth (``split: "reference"`` events, once their labels are joined): isotonic regression
(pool-adjacent-violators, linear interpolation between the fitted points, constant beyond them) or
histogram binning (equal-width bins, the observed precision of each bin; empty bins take the raw
confidence). One map per label with at least ``min_per_label`` reference spans, else the map fitted on
all labels. Without any reference with ground truth the raw confidences are used and every result
is flagged ``calibrated: False``.

What the estimate assumes, and therefore cannot see:

* the calibration transfers from the reference to production: ``P(correct | confidence, label)`` is
  the same in both (covariate shift in the inputs is fine, as long as the model stays calibrated on
  the shifted inputs);
* no concept shift: if what counts as correct changes (new annotation guidelines, a new meaning of
  a label) or the model becomes confidently wrong on a new domain, the confidences do not move and
  neither does the estimate. The **calibration gap** (realised precision - estimated precision over
  the same labelled predictions) is the check: it is near 0 while the assumption holds and moves away
  when it breaks (negative: the model is over-confident).
* predicted spans only: it estimates precision, not recall (missed entities have no confidence).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Method = Literal["isotonic", "histogram"]

__all__ = ["Calibrator", "ScoreWindow", "calibration_gap", "estimated_precision", "fit_curve"]


def _pav(y: F64, w: F64) -> F64:
    """Pool adjacent violators: the non-decreasing fit of ``y`` (weights ``w``), least squares."""
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for yi, wi in zip(y.tolist(), w.tolist(), strict=True):
        means.append(yi)
        weights.append(wi)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            m2, w2, s2 = means.pop(), weights.pop(), sizes.pop()
            total = weights[-1] + w2
            means[-1] = (means[-1] * weights[-1] + m2 * w2) / total
            weights[-1] = total
            sizes[-1] += s2
    return np.repeat(np.asarray(means), sizes)


def fit_curve(scores: F64, correct: npt.NDArray[np.bool_], method: Method = "isotonic",
              bins: int = 10) -> tuple[F64, F64]:
    """Fit ``confidence -> P(correct)``; returns knots ``(x, y)`` evaluated with ``np.interp``.

    Histogram binning is returned as knots too (two per bin, at its edges, so the map is a step).
    """
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(correct, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no calibration data")
    if method == "isotonic":
        xs, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
        ys = np.bincount(inverse, weights=c) / counts
        return xs, _pav(ys, counts.astype(np.float64))
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, bins - 1)
    n = np.bincount(which, minlength=bins)
    hits = np.bincount(which, weights=c, minlength=bins)
    centre = (edges[:-1] + edges[1:]) / 2
    value = np.where(n > 0, hits / np.maximum(n, 1), centre)
    eps = 1e-12
    x = np.column_stack([edges[:-1], edges[1:] - eps]).reshape(-1)
    x[-1] = 1.0
    return x, np.repeat(value, 2)


class Calibrator:
    """Per-label calibration maps with a global fallback; identity (flagged) before any fit."""

    def __init__(self, method: Method = "isotonic", bins: int = 10, min_per_label: int = 50) -> None:
        self.method: Method = method
        self.bins = bins
        self.min_per_label = min_per_label
        self.global_curve: tuple[F64, F64] | None = None
        self.curves: dict[int, tuple[F64, F64]] = {}
        self.fitted_on = 0

    @property
    def calibrated(self) -> bool:
        return self.global_curve is not None

    def fit(self, labels: I64, scores: F64, correct: npt.NDArray[np.bool_]) -> Calibrator:
        """Fit on reference predicted spans with a confidence: label ids, confidences, correctness."""
        labels = np.asarray(labels, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float64)
        correct = np.asarray(correct, dtype=bool)
        ok = np.isfinite(scores)
        labels, scores, correct = labels[ok], scores[ok], correct[ok]
        self.curves = {}
        self.fitted_on = int(scores.size)
        if scores.size == 0:
            self.global_curve = None
            return self
        self.global_curve = fit_curve(scores, correct, self.method, self.bins)
        for lab in np.unique(labels).tolist():
            mine = labels == lab
            if int(mine.sum()) >= self.min_per_label:
                self.curves[int(lab)] = fit_curve(scores[mine], correct[mine], self.method, self.bins)
        return self

    def apply(self, labels: I64, scores: F64) -> F64:
        """Calibrated confidences (raw ones before any fit)."""
        scores = np.asarray(scores, dtype=np.float64)
        if self.global_curve is None:
            return scores.copy()
        labels = np.asarray(labels, dtype=np.int64)
        out = np.interp(scores, *self.global_curve)
        for lab, curve in self.curves.items():
            mine = labels == lab
            if mine.any():
                out[mine] = np.interp(scores[mine], *curve)
        return out

    def state(self) -> dict[str, Any]:
        return {
            "method": self.method, "bins": self.bins, "min_per_label": self.min_per_label,
            "fitted_on": self.fitted_on,
            "global": None if self.global_curve is None else list(self.global_curve),
            "labels": [int(k) for k in self.curves], "curves": [list(v) for v in self.curves.values()],
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Calibrator:
        c = cls(s["method"], int(s["bins"]), int(s["min_per_label"]))
        c.fitted_on = int(s["fitted_on"])
        g = s["global"]
        c.global_curve = None if g is None else (np.asarray(g[0], np.float64), np.asarray(g[1], np.float64))
        c.curves = {int(k): (np.asarray(v[0], np.float64), np.asarray(v[1], np.float64))
                    for k, v in zip(s["labels"], s["curves"], strict=True)}
        return c


def estimated_precision(calibrator: Calibrator, labels: I64, scores: F64, n_labels: int) -> tuple[F64, I64]:
    """Mean calibrated confidence per label id (NaN where no scored span) and the span counts."""
    ok = np.isfinite(scores)
    labels, scores = np.asarray(labels)[ok], np.asarray(scores)[ok]
    n = np.bincount(labels, minlength=n_labels)
    total = np.bincount(labels, weights=calibrator.apply(labels, scores), minlength=n_labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / n, n.astype(np.int64)


def calibration_gap(calibrator: Calibrator, labels: I64, scores: F64, correct: npt.NDArray[np.bool_],
                    n_labels: int) -> tuple[F64, F64, I64]:
    """Per label id: realised precision - estimated precision over the same scored predicted spans.

    Returns ``(gap, overall, n)``: the gap per label id (NaN where a label has no scored span), the
    pooled ``[realised, estimated, gap]`` over all scored spans (NaN when none) and the span counts.
    """
    est, n = estimated_precision(calibrator, labels, scores, n_labels)
    ok = np.isfinite(scores)
    hits = np.bincount(np.asarray(labels)[ok], weights=np.asarray(correct, dtype=np.float64)[ok],
                       minlength=n_labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        realised = hits / n
    total = int(n.sum())
    if total:
        r = float(hits.sum() / total)
        e = float(np.nansum(est * n) / total)
        overall = np.array([r, e, r - e])
    else:
        overall = np.full(3, np.nan)
    return realised - est, overall, n


class ScoreWindow:
    """Confidences of the predicted spans of the last ``max_documents`` predictions (labelled or not),
    at most ``max_age`` seconds old: the population of the label-free estimate."""

    def __init__(self, max_documents: int, max_age: float | None = None) -> None:
        self.max_documents = int(max_documents)
        self.max_age = max_age
        self.next_seq = 0
        self._doc = np.zeros((0, 2))  # [seq, time]
        self._rows = np.zeros((0, 3))  # [seq, label_id, score]

    def add(self, times: F64, doc: I64, labels: I64, scores: F64) -> None:
        """Add ``len(times)`` predictions; their spans as doc index (into this batch), label id, score."""
        n = len(times)
        seq = self.next_seq + np.arange(n, dtype=np.float64)
        self.next_seq += n
        self._doc = np.concatenate([self._doc, np.column_stack([seq, np.asarray(times, np.float64)])])
        rows = np.column_stack([seq[np.asarray(doc, np.int64)], np.asarray(labels, np.float64),
                                np.asarray(scores, np.float64)]).reshape(-1, 3)
        self._rows = np.concatenate([self._rows, rows])
        excess = self._doc.shape[0] - self.max_documents
        if excess > 0:
            first = self._doc[excess, 0]
            self._doc = self._doc[excess:]
            self._rows = self._rows[self._rows[:, 0] >= first]

    def expire(self, now: float) -> None:
        if self.max_age is None:
            return
        drop = self._doc[:, 1] < now - self.max_age
        if drop.any():
            gone = self._doc[drop, 0]
            self._doc = self._doc[~drop]
            self._rows = self._rows[~np.isin(self._rows[:, 0], gone)]

    def __len__(self) -> int:
        return int(self._doc.shape[0])

    def spans(self) -> tuple[I64, F64]:
        return self._rows[:, 1].astype(np.int64), self._rows[:, 2].copy()

    def state(self) -> dict[str, Any]:
        return {"max_documents": self.max_documents, "max_age": self.max_age, "next_seq": self.next_seq,
                "doc": self._doc, "rows": self._rows}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> ScoreWindow:
        w = cls(int(s["max_documents"]), None if s["max_age"] is None else float(s["max_age"]))
        w.next_seq = int(s["next_seq"])
        w._doc = np.asarray(s["doc"], np.float64).reshape(-1, 2)
        w._rows = np.asarray(s["rows"], np.float64).reshape(-1, 3)
        return w
