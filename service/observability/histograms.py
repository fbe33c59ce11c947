"""The two custom Prometheus histograms of nlpmon (prometheus_client's ``Histogram`` observes one value per call).

- ``VectorHistogram``: label-less, fed whole numpy arrays (event ages: one ``searchsorted`` per batch).
- ``MirroredHistogram``: labelled, mirrors bucket counts that another component counts (the quality core's
  label delays): each series is advanced by the growth of those counts, so it never goes backwards.

Both are thread-safe: writers and scrapes take the collector's lock. Neither touches the global registry.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["HistogramSeries", "MirroredHistogram", "VectorHistogram"]


def _bucket_names(bounds: Sequence[float]) -> list[str]:
    return [floatToGoString(b) for b in bounds] + ["+Inf"]


class VectorHistogram(Collector):
    """A label-less histogram fed whole numpy arrays (one ``searchsorted`` per batch, not a call per value)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # last cell: above the largest bound
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: npt.ArrayLike) -> None:
        """Count every finite value of ``values``; NaN and infinite values are ignored."""
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        if v.size == 0:
            return
        counts = np.bincount(np.searchsorted(self.bounds, v, side="left"), minlength=self._counts.size)
        with self._lock:
            self._counts += counts
            self._sum += float(v.sum())

    def _family(self, counts: npt.NDArray[np.int64] | None, total: float) -> HistogramMetricFamily:
        if counts is None:
            return HistogramMetricFamily(self.name, self.documentation)
        cum = np.cumsum(counts)
        return HistogramMetricFamily(self.name, self.documentation,
                                     buckets=[(le, float(c)) for le, c in
                                              zip(_bucket_names(self.bounds.tolist()), cum, strict=True)],
                                     sum_value=total)

    def describe(self) -> Iterable[Metric]:
        return [self._family(None, 0.0)]

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            counts, total = self._counts.copy(), self._sum
        return [self._family(counts, total)]


class HistogramSeries:
    """One labelled series of a ``MirroredHistogram``: cumulative bucket counts that only grow."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.edges: tuple[float, ...] | None = None  # bucket upper bounds, fixed by the first ``add``
        self.cumulative: list[float] = []  # observations <= each edge, then +Inf (= count)
        self.sum = 0.0

    def add(self, edges: Sequence[float], cumulative_growth: Sequence[float], sum_growth: float) -> bool:
        """Add ``cumulative_growth`` (``len(edges) + 1`` non-negative, non-decreasing numbers: growth of the
        observations <= each edge, the last one for +Inf) and ``sum_growth``.

        The first call fixes the series' edges; a later call with other edges is ignored (returns False),
        so a series never changes its buckets nor goes backwards. Raises ValueError on a growth of the wrong
        length or with a negative value.
        """
        key = tuple(float(e) for e in edges)
        growth = [float(g) for g in cumulative_growth]
        if len(growth) != len(key) + 1 or any(g < 0 for g in growth):
            raise ValueError(f"cumulative growth needs len(edges) + 1 = {len(key) + 1} values >= 0, got {growth}")
        with self._lock:
            if self.edges is None:
                self.edges, self.cumulative = key, [0.0] * len(growth)
            elif self.edges != key:
                return False
            self.cumulative = [c + g for c, g in zip(self.cumulative, growth, strict=True)]
            self.sum += float(sum_growth)
        return True


class MirroredHistogram(Collector):
    """A labelled histogram whose series copy counts kept elsewhere (``labels(...).add(...)``).

    Quacks like a prometheus_client metric where ``NlpmonMetrics`` needs it: ``labels(*values)`` returns
    the series (created on first use) and ``remove(*values)`` drops it. A series without any ``add`` yet
    is not exposed (it has no buckets).
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._series: dict[tuple[str, ...], HistogramSeries] = {}
        self._lock = threading.Lock()

    def labels(self, *values: str) -> HistogramSeries:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        with self._lock:
            series = self._series.get(values)
            if series is None:
                series = self._series[values] = HistogramSeries(self._lock)
        return series

    def remove(self, *values: str) -> None:
        with self._lock:
            self._series.pop(values, None)

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            rows = [(values, s.edges, list(s.cumulative), s.sum) for values, s in self._series.items()]
        for values, edges, cumulative, total in rows:
            if edges is not None:
                family.add_metric(list(values), list(zip(_bucket_names(edges), cumulative, strict=True)), total)
        return [family]
