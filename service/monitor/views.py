"""Typed, frozen views the shells read of the core. Pure.

- ``ModelMetrics``: what the Prometheus exporter (``nlpmon.observability.exporter``) reads of one (model,
  version), built on every metrics refresh (``ModelMonitor.metrics_view``): counts, status, every signal's
  score, flag and the few evidence figures exported as metrics (label shares, confidence quantiles,
  rising labels), per-label confidence, the quality report. No page evidence: no projection, no nearest
  neighbours, no examples, so a refresh costs O(signals x labels).
- The page view (``nlpmon.monitor.page_view.ModelPage``: ``ModelMonitor.page_view``,
  ``Pipeline.page_views``): what the pages read, its ``to_json()`` the JSON of ``/api/models/<model>`` and
  ``replay --report`` (docs/api.md), built only when a page or the API asks for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..quality.report import QualityReport

__all__ = ["LabelConfidence", "LabelShare", "ModelMetrics", "RisingLabel", "SignalMetrics"]


@dataclass(frozen=True, slots=True)
class LabelShare:
    """A label's share of a categorical signal's items, in the reference and in the current window."""

    label: str
    reference: float | None
    current: float | None


@dataclass(frozen=True, slots=True)
class RisingLabel:
    """A label of a per-label share signal and how far its share rose, on the score scale (1 = threshold)."""

    label: str
    score: float


@dataclass(frozen=True, slots=True)
class SignalMetrics:
    """One signal: its score (largest statistic / threshold ratio; None before it is scored), threshold
    (1.0 on this scale), drift flag, the longest window with data (0: none, or not a windowed-share
    signal), and the evidence figures the metrics export."""

    name: str
    score: float | None
    drift: bool
    threshold: float = 1.0
    window: int = 0
    moved_labels: tuple[LabelShare, ...] = ()  # categorical signals
    quantile_levels: tuple[float, ...] = ()  # binned signals (confidence)
    reference_quantiles: tuple[float | None, ...] = ()
    current_quantiles: tuple[float | None, ...] = ()
    rising_labels: tuple[RisingLabel, ...] = ()  # per-label share signals, highest first


@dataclass(frozen=True, slots=True)
class LabelConfidence:
    """Mean confidence of a label's predictions over the longest distribution window, and their count."""

    mean: float
    count: int


@dataclass(frozen=True, slots=True)
class ModelMetrics:
    """What the metrics read of one (model, version). ``events``: cumulative counts per split (in the
    state); ``events_here`` and ``duplicates_here``: this process's own work (counters grow by these, so a
    restored or handed-over monitor's history is not counted again). ``quality``: the quality report of
    the version (``QualityMonitor.view``, docs/quality.md), None without ground truth. ``reference_error``:
    why its reference failed to calibrate, None while it has not (the /readyz ``references_loaded`` check)."""

    model: str
    model_version: str
    status: str
    events: Mapping[str, int]
    events_here: Mapping[str, int] | None  # None (a report without it): counters follow ``events``
    duplicates_here: int | None
    reference_events: int
    last_event_time: float | None
    signals: Mapping[str, SignalMetrics] = field(default_factory=dict)
    label_confidence: Mapping[str, LabelConfidence] = field(default_factory=dict)
    quality: QualityReport | None = None
    reference_error: str | None = None  # why the reference failed to calibrate (too small, degenerate)

    @property
    def key(self) -> str:
        return f"{self.model}/{self.model_version}"

    @classmethod
    def from_report(cls, rep: Mapping[str, Any]) -> ModelMetrics:
        """The view of a page report (``ModelMonitor.report()`` JSON, with an optional ``"quality"``): for
        reports read back from JSON and for tests. Keys a report may lack take their defaults."""
        signals: dict[str, SignalMetrics] = {}
        for name, sig in (rep.get("signals") or {}).items():
            ev = sig.get("evidence") or {}
            signals[name] = SignalMetrics(
                str(name), _opt_float(sig.get("score")), bool(sig.get("drift")),
                float(sig.get("threshold", 1.0)), int(ev.get("window", 0) or 0),
                tuple(LabelShare(str(m["label"]), _opt_float(m.get("reference")), _opt_float(m.get("current")))
                      for m in ev.get("moved_labels") or ()),
                tuple(float(x) for x in ev.get("levels") or ()),
                tuple(_opt_float(q) for q in ev.get("reference_quantiles") or ()),
                tuple(_opt_float(q) for q in ev.get("current_quantiles") or ()),
                tuple(RisingLabel(str(r["label"]), float(r.get("score") or 0.0))
                      for r in ev.get("rising_labels") or ()))
        here = rep.get("events_processed_here")
        return cls(
            str(rep["model"]), str(rep["model_version"]), str(rep.get("status", "")),
            {str(k): int(v) for k, v in (rep.get("events") or {}).items()},
            None if here is None else {str(k): int(v) for k, v in here.items()},
            None if rep.get("duplicate_events_here") is None else int(rep["duplicate_events_here"]),
            int((rep.get("reference") or {}).get("events", 0) or 0), _opt_float(rep.get("last_event_time")),
            signals,
            {str(label): LabelConfidence(float(lc["mean"]) if lc.get("mean") is not None else math.nan,
                                         int(lc.get("count", 0) or 0))
             for label, lc in (rep.get("label_confidence") or {}).items()},
            QualityReport.from_json(rep["quality"]) if rep.get("quality") else None, rep.get("reference_error") or None)


def _opt_float(x: Any) -> float | None:
    return None if x is None else float(x)
