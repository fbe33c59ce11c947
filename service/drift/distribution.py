"""Featurizers for label and scalar distributions, and their effect-size window statistics.

``CategoricalFeaturizer``: each event becomes a row of counts over the reference vocabulary plus one
``other`` cell for labels never seen in the reference; a window's statistic is the Jensen-Shannon
distance (base 2, in [0, 1]) between its label distribution and the reference distribution.

``BinnedFeaturizer``: each value (a confidence, a length, a count) falls into one of the bins cut at
reference quantiles; a window's statistic is the mean absolute difference between its CDF and the
reference CDF at the bin edges, i.e. the Wasserstein-1 distance after the reference's probability
integral transform (scale-free, in [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

OTHER = "__other__"


def js_distance(p: F64, q: F64) -> F64:
    """Row-wise Jensen-Shannon distance (base 2) between distributions ``p`` (m, L) and ``q`` (L,)."""
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kp = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=1)
        kq = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=1)
    return np.sqrt(np.maximum(0.5 * (kp + kq), 0.0))


class LabelIndex(dict[str, int]):
    """A label-to-column dict whose missing labels map to the ``other`` column."""

    def __init__(self, index: dict[str, int], other: int) -> None:
        super().__init__(index)
        self.other = other

    def __missing__(self, key: str) -> int:
        return self.other


@dataclass
class CategoricalFeaturizer:
    """Counts over a fixed vocabulary (reference labels, capped) plus ``other``."""

    labels: tuple[str, ...]
    ref_probs: F64
    stat_names: tuple[str, ...] = ("js_distance",)
    _lookup: LabelIndex | None = None

    @property
    def n_features(self) -> int:
        return len(self.labels)

    @classmethod
    def fit(cls, counts: dict[str, float], max_labels: int = 64) -> CategoricalFeaturizer:
        """Vocabulary = the ``max_labels - 1`` most frequent reference labels, then ``other``."""
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max_labels - 1]
        labels = (*(k for k, _ in top), OTHER)
        vec = np.array([counts.get(k, 0.0) for k in labels[:-1]] + [0.0])
        vec[-1] = sum(counts.values()) - vec[:-1].sum()
        total = vec.sum()
        return cls(labels, vec / total if total > 0 else np.full(len(labels), 1.0 / len(labels)))

    def index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.labels)}

    def lookup(self) -> LabelIndex:
        """Label -> column, unknown labels -> ``other``; built once (C-speed ``map`` over it)."""
        if self._lookup is None:
            self._lookup = LabelIndex(self.index(), len(self.labels) - 1)
        return self._lookup

    def rows(self, event_of_item: I64, label_index: I64, n_events: int) -> F64:
        """(n_events, L) counts from flat per-item arrays (event position, label index)."""
        out = np.zeros((n_events, len(self.labels)))
        np.add.at(out, (event_of_item, label_index), 1.0)
        return out

    def statistics(self, sums: F64, items: F64) -> F64:
        total = sums.sum(axis=1, keepdims=True)
        p = sums / np.maximum(total, 1e-300)
        out = js_distance(p, self.ref_probs)[:, None]
        out[total[:, 0] <= 0] = 0.0
        return out

    def shares(self, sums: F64) -> dict[str, float]:
        total = float(sums.sum())
        return {k: (float(v) / total if total > 0 else 0.0) for k, v in zip(self.labels, sums, strict=True)}

    def moved(self, sums: F64, top: int | None = None) -> list[dict[str, float | str]]:
        """Every label (or the ``top`` ones) with its reference and window share, largest change first."""
        total = float(sums.sum())
        if total <= 0:
            return []
        cur = sums / total
        delta = cur - self.ref_probs
        order = np.argsort(-np.abs(delta), kind="stable")[:top]
        return [{"label": self.labels[i], "reference": float(self.ref_probs[i]), "current": float(cur[i]),
                 "change": float(delta[i])} for i in order]

    def state(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "ref_probs": self.ref_probs}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> CategoricalFeaturizer:
        return cls(tuple(s["labels"]), np.asarray(s["ref_probs"], dtype=np.float64))


def label_excess(counts: F64, expected: F64) -> F64:
    """(m, L) one-sided Chernoff exponents ``N * KL(x_L / N || pi_L)`` where a label's window share
    ``x_L / N`` exceeds ``pi_L`` (else 0): about ``-ln P(Binomial(N, pi_L) >= x_L)``. ``counts`` (m, L),
    ``expected`` (L,) in (0, 1)."""
    n = counts.sum(axis=1, keepdims=True)
    share = counts / np.maximum(n, 1e-300)
    pi = expected[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(share > 0, share * np.log(share / pi), 0.0)
        b = np.where(share < 1, (1.0 - share) * np.log((1.0 - share) / (1.0 - pi)), 0.0)
    out = n * (a + b)
    out[~(share > pi)] = 0.0
    return np.maximum(out, 0.0)


@dataclass
class LabelShareFeaturizer(CategoricalFeaturizer):
    """Per-label rising share: the same count rows as ``CategoricalFeaturizer`` (same vocabulary, same
    ``other`` cell for labels the reference never saw), one statistic: the largest one-sided Chernoff
    exponent over labels (``label_excess``), so a label going from nothing to a few percent stands out
    where the Jensen-Shannon distance over all labels dilutes it.

    ``expected`` are the reference shares smoothed by half a count per label (Jeffreys), so that a label
    the reference never saw has a small, non-zero expected share. The statistic is only a well-scaled
    score: its threshold is calibrated like every other signal's (held-out resampling, tail fit), which
    also accounts for labels clustering within events.
    """

    expected: F64 = field(default_factory=lambda: np.zeros(0))
    stat_names: tuple[str, ...] = ("label_excess",)

    @classmethod
    def fit(cls, counts: dict[str, float], max_labels: int = 64) -> LabelShareFeaturizer:
        base = CategoricalFeaturizer.fit(counts, max_labels)
        total = float(sum(counts.values()))
        raw = base.ref_probs * total
        expected = (raw + 0.5) / (total + 0.5 * len(base.labels))
        return cls(base.labels, base.ref_probs, expected=expected)

    def statistics(self, sums: F64, items: F64) -> F64:
        return self.statistics_detail(sums, items)[0]

    def statistics_detail(self, sums: F64, items: F64) -> tuple[F64, I64]:
        """(m, 1) statistics and (m,) the index of the label behind each (-1 where none exceeds)."""
        ex = label_excess(sums, self.expected)
        top = np.argmax(ex, axis=1)
        out = ex[np.arange(ex.shape[0]), top][:, None]
        empty = ~(sums.sum(axis=1) > 0)
        out[empty] = 0.0
        return out, np.where(empty | (out[:, 0] <= 0), -1, top).astype(np.int64)

    def rising(self, sums: F64, top: int | None = None) -> list[dict[str, float | str]]:
        """Labels by their excess in a window (largest first): reference and window share, exponent."""
        total = float(sums.sum())
        if total <= 0:
            return []
        ex = label_excess(sums[None, :], self.expected)[0]
        order = np.argsort(-ex, kind="stable")[:top]
        return [{"label": self.labels[i], "reference": float(self.ref_probs[i]), "current": float(sums[i] / total),
                 "count": float(sums[i]), "excess": float(ex[i])} for i in order]

    def state(self) -> dict[str, Any]:
        return {**super().state(), "expected": self.expected}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> LabelShareFeaturizer:
        return cls(tuple(s["labels"]), np.asarray(s["ref_probs"], dtype=np.float64),
                   expected=np.asarray(s["expected"], np.float64))


@dataclass
class BinnedFeaturizer:
    """One-hot bins cut at reference quantiles; the statistic compares CDFs at the bin edges."""

    edges: F64  # interior edges, increasing; bin i holds edges[i-1] < x <= edges[i]
    ref_cdf: F64  # reference CDF at each interior edge
    ref_quantiles: F64  # reference values at QUANTILE_LEVELS, for evidence
    stat_names: tuple[str, ...] = ("cdf_distance",)

    QUANTILE_LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)

    @property
    def n_features(self) -> int:
        return len(self.edges) + 1

    @classmethod
    def fit(cls, values: F64, n_bins: int = 20) -> BinnedFeaturizer:
        """Raises ValueError on an empty sample."""
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            raise ValueError("no reference values")
        qs = np.quantile(v, np.linspace(0, 1, n_bins + 1)[1:-1])
        edges = np.unique(qs)
        if edges.size == 0:
            edges = np.array([v[0]])
        ref_cdf = np.searchsorted(np.sort(v), edges, side="right") / v.size
        return cls(edges, ref_cdf, np.quantile(v, cls.QUANTILE_LEVELS))

    def bin_index(self, values: F64) -> I64:
        return np.searchsorted(self.edges, values, side="left").astype(np.int64)

    def pit(self, values: F64) -> F64:
        """Each value's mid-rank in the reference (probability integral transform), in [0, 1]."""
        cdf = np.concatenate([[0.0], self.ref_cdf, [1.0]])
        i = self.bin_index(values)
        return 0.5 * (cdf[i] + cdf[i + 1])

    def rows(self, event_of_item: I64, values: F64, n_events: int) -> F64:
        out = np.zeros((n_events, self.n_features))
        np.add.at(out, (event_of_item, self.bin_index(values)), 1.0)
        return out

    def statistics(self, sums: F64, items: F64) -> F64:
        total = sums.sum(axis=1, keepdims=True)
        cdf = np.cumsum(sums[:, :-1], axis=1) / np.maximum(total, 1e-300)
        out = np.mean(np.abs(cdf - self.ref_cdf), axis=1)[:, None]
        out[total[:, 0] <= 0] = 0.0
        return out

    def window_quantiles(self, sums: F64) -> list[float]:
        """Approximate window quantiles at QUANTILE_LEVELS from the bin counts (edge interpolation)."""
        total = float(sums.sum())
        if total <= 0:
            return []
        cdf = np.cumsum(sums) / total
        lo = np.concatenate([[self.ref_quantiles[0]], self.edges])
        hi = np.concatenate([self.edges, [self.ref_quantiles[-1]]])
        out = []
        for level in self.QUANTILE_LEVELS:
            i = int(np.searchsorted(cdf, level, side="left"))
            i = min(i, len(lo) - 1)
            prev = cdf[i - 1] if i > 0 else 0.0
            frac = (level - prev) / max(cdf[i] - prev, 1e-12)
            out.append(float(lo[i] + frac * (hi[i] - lo[i])))
        return out

    def state(self) -> dict[str, Any]:
        return {"edges": self.edges, "ref_cdf": self.ref_cdf, "ref_quantiles": self.ref_quantiles}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> BinnedFeaturizer:
        return cls(np.asarray(s["edges"], np.float64), np.asarray(s["ref_cdf"], np.float64),
                   np.asarray(s["ref_quantiles"], np.float64))
