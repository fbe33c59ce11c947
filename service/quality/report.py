"""The typed, frozen quality report of one (model, version): what ``QualityMonitor.view`` builds and the
pages, the API (``quality`` of ``/api/models/<model>``) and the metrics read. Pure.

``QualityReport.to_json()`` is the JSON of docs/quality.md, key for key and in order; ``from_json`` reads such
JSON back (a member's report, ``replay --report``). Undefined figures are None. The join counters are the
model's (a label joins its prediction whatever version made it): every version's report carries the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CalibrationGapOverall", "DelayHistogram", "DelaySeconds", "F1Drop", "JoinFigures", "LabelFigures",
    "MicroFigures", "PartialMatch", "QualityReference", "QualityReport", "SchemeBlock", "SchemeFigures",
    "WindowFigures",
]

Json = dict[str, Any]  # a JSON object (the quality figures are numbers, strings, None and nested objects)
Raw = Mapping[str, Any]  # parsed JSON at the ``from_json`` boundary only


@dataclass(frozen=True, slots=True)
class LabelFigures:
    """One label over a window: precision, recall, F1 (None when undefined), support and the counts."""

    precision: float | None
    recall: float | None
    f1: float | None
    support: int
    tp: int
    fp: int
    fn: int

    def to_json(self) -> Json:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "support": self.support,
                "tp": self.tp, "fp": self.fp, "fn": self.fn}

    @classmethod
    def from_json(cls, d: Raw) -> LabelFigures:
        return cls(d.get("precision"), d.get("recall"), d.get("f1"), d.get("support", 0), d.get("tp", 0),
                   d.get("fp", 0), d.get("fn", 0))


@dataclass(frozen=True, slots=True)
class MicroFigures:
    """Every label at once: micro precision, recall, F1 and the support."""

    precision: float | None
    recall: float | None
    f1: float | None
    support: int

    def to_json(self) -> Json:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "support": self.support}

    @classmethod
    def from_json(cls, d: Raw) -> MicroFigures:
        return cls(d.get("precision"), d.get("recall"), d.get("f1"), d.get("support", 0))


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """Exact-match figures of a window of labelled documents: per label (those predicted or in the gold
    standard), micro and macro F1, the documents, and the accuracy of text classification (``accuracy`` is
    in the JSON only when ``classification``)."""

    labels: Mapping[str, LabelFigures]
    micro: MicroFigures
    documents: int
    macro_f1: float | None
    classification: bool = False
    accuracy: float | None = None

    def to_json(self) -> Json:
        out: Json = {"labels": {k: v.to_json() for k, v in self.labels.items()}, "micro": self.micro.to_json(),
                     "documents": self.documents}
        if self.classification:
            out["accuracy"] = self.accuracy
        out["macro"] = {"f1": self.macro_f1}
        return out

    @classmethod
    def from_json(cls, d: Raw) -> WindowFigures:
        return cls({str(k): LabelFigures.from_json(v) for k, v in (d.get("labels") or {}).items()},
                   MicroFigures.from_json(d.get("micro") or {}), d.get("documents", 0),
                   (d.get("macro") or {}).get("f1", d.get("macro_f1")), "accuracy" in d, d.get("accuracy"))


@dataclass(frozen=True, slots=True)
class QualityReference:
    """The baseline of the F1-drop test: its ``source`` ("reference": labelled reference events;
    "baseline": the first labelled production documents; None: none yet) and its figures."""

    source: str | None
    figures: WindowFigures

    def to_json(self) -> Json:
        return {"source": self.source, **self.figures.to_json()}

    @classmethod
    def from_json(cls, d: Raw) -> QualityReference:
        return cls(d.get("source"), WindowFigures.from_json(d))


@dataclass(frozen=True, slots=True)
class F1Drop:
    """A test of a micro-F1 drop against the baseline: its score (None before both sides have enough
    documents), threshold, verdict and the two F1s."""

    score: float | None
    threshold: float
    drift: bool
    reference_f1: float | None
    current_f1: float | None

    def to_json(self) -> Json:
        return {"score": self.score, "threshold": self.threshold, "drift": self.drift,
                "reference_f1": self.reference_f1, "current_f1": self.current_f1}

    @classmethod
    def from_json(cls, d: Raw) -> F1Drop:
        return cls(d.get("score"), d.get("threshold", 0.0), bool(d.get("drift")), d.get("reference_f1"),
                   d.get("current_f1"))


@dataclass(frozen=True, slots=True)
class SchemeBlock:
    """One partial-match scheme's evaluation (nervaluate's): the five categories, ``actual`` and
    ``possible``, and precision, recall, F1 (None when undefined)."""

    correct: int
    incorrect: int
    partial: int
    missed: int
    spurious: int
    actual: int
    possible: int
    precision: float | None
    recall: float | None
    f1: float | None

    def to_json(self) -> Json:
        return {"correct": self.correct, "incorrect": self.incorrect, "partial": self.partial,
                "missed": self.missed, "spurious": self.spurious, "actual": self.actual, "possible": self.possible,
                "precision": self.precision, "recall": self.recall, "f1": self.f1}

    @classmethod
    def from_json(cls, d: Raw) -> SchemeBlock:
        return cls(d.get("correct", 0), d.get("incorrect", 0), d.get("partial", 0), d.get("missed", 0),
                   d.get("spurious", 0), d.get("actual", 0), d.get("possible", 0), d.get("precision"),
                   d.get("recall"), d.get("f1"))


@dataclass(frozen=True, slots=True)
class SchemeFigures:
    """One scheme over the window: every label at once, per label, and its F1-drop test."""

    overall: SchemeBlock
    labels: Mapping[str, SchemeBlock]
    f1_drop: F1Drop

    def to_json(self) -> Json:
        return {"overall": self.overall.to_json(), "labels": {k: v.to_json() for k, v in self.labels.items()},
                "f1_drop": self.f1_drop.to_json()}

    @classmethod
    def from_json(cls, d: Raw) -> SchemeFigures:
        return cls(SchemeBlock.from_json(d.get("overall") or {}),
                   {str(k): SchemeBlock.from_json(v) for k, v in (d.get("labels") or {}).items()},
                   F1Drop.from_json(d.get("f1_drop") or {}))


@dataclass(frozen=True, slots=True)
class PartialMatch:
    """The partial-match figures of token classification (SemEval-2013 schemes, as nervaluate counts):
    the window's documents with partial counts, the overlap setting, every scheme, and the baseline's
    documents and overall figures per scheme."""

    documents: int
    min_overlap_percent: float
    schemes: Mapping[str, SchemeFigures]
    reference_documents: int
    reference_schemes: Mapping[str, SchemeBlock]

    def to_json(self) -> Json:
        return {"documents": self.documents, "min_overlap_percent": self.min_overlap_percent,
                "schemes": {k: v.to_json() for k, v in self.schemes.items()},
                "reference": {"documents": self.reference_documents,
                              "schemes": {k: {"overall": v.to_json()} for k, v in self.reference_schemes.items()}}}

    @classmethod
    def from_json(cls, d: Raw) -> PartialMatch:
        ref = d.get("reference") or {}
        ref_schemes = ref.get("schemes") or {}
        return cls(d.get("documents", 0), d.get("min_overlap_percent", 1.0),
                   {str(k): SchemeFigures.from_json(v) for k, v in (d.get("schemes") or {}).items()},
                   ref.get("documents", 0),
                   {str(k): SchemeBlock.from_json(v.get("overall") or {}) for k, v in ref_schemes.items()})


@dataclass(frozen=True, slots=True)
class CalibrationGapOverall:
    """Realised against estimated precision over the window's scored spans, with its test."""

    realised: float
    estimated: float
    gap: float
    score: float | None
    threshold: float
    drift: bool

    def to_json(self) -> Json:
        return {"realised": self.realised, "estimated": self.estimated, "gap": self.gap, "score": self.score,
                "threshold": self.threshold, "drift": self.drift}

    @classmethod
    def from_json(cls, d: Raw) -> CalibrationGapOverall:
        return cls(d["realised"], d["estimated"], d["gap"], d.get("score"), d.get("threshold", 0.0),
                   bool(d.get("drift")))


@dataclass(frozen=True, slots=True)
class DelayHistogram:
    """Known label delays of the window's documents per bucket (``edges``; the last is open-ended), those
    below the first edge, and the documents whose delay is unknown."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    below_first_edge: int
    unknown: int

    def to_json(self) -> Json:
        return {"edges": list(self.edges), "counts": list(self.counts), "below_first_edge": self.below_first_edge,
                "unknown": self.unknown}

    @classmethod
    def from_json(cls, d: Raw) -> DelayHistogram:
        return cls(tuple(d.get("edges") or ()), tuple(d.get("counts") or ()), d.get("below_first_edge", 0),
                   d.get("unknown", 0))


@dataclass(frozen=True, slots=True)
class DelaySeconds:
    """Label delays counted here (since this process took the model over): Prometheus histogram form."""

    edges: tuple[float, ...]
    cumulative_counts: tuple[int, ...]
    sum: float
    count: int

    def to_json(self) -> Json:
        return {"edges": list(self.edges), "cumulative_counts": list(self.cumulative_counts), "sum": self.sum,
                "count": self.count}

    @classmethod
    def from_json(cls, d: Raw) -> DelaySeconds:
        return cls(tuple(d.get("edges") or ()), tuple(d.get("cumulative_counts") or ()), d.get("sum", 0.0),
                   d.get("count", 0))


@dataclass(frozen=True, slots=True)
class JoinFigures:
    """The model's join buffer: its counters (``nlpmon.quality.join.COUNTERS``), entries waiting on each
    side and its estimated memory."""

    counters: Mapping[str, int]
    pending_predictions: int
    pending_labels: int
    bytes: int

    def to_json(self) -> Json:
        return {**self.counters, "pending_predictions": self.pending_predictions,
                "pending_labels": self.pending_labels, "bytes": self.bytes}

    @classmethod
    def from_json(cls, d: Raw) -> JoinFigures:
        extra = ("pending_predictions", "pending_labels", "bytes")
        return cls({str(k): v for k, v in d.items() if k not in extra}, d.get("pending_predictions", 0),
                   d.get("pending_labels", 0), d.get("bytes", 0))


@dataclass(frozen=True, slots=True)
class QualityReport:
    """The quality of one (model, version) from delayed ground truth (docs/quality.md): the window's
    exact-match figures, the baseline, the F1-drop test, partial matching (token classification; None for
    text classification or when off), the label-free estimate and the calibration gap, the labelled
    fraction, label delays, and the join's counters (``join``: the model's; ``join_here``: counted since
    this process took the model over; ``counters``: the monitor's own)."""

    model: str
    model_version: str
    task: str
    window: WindowFigures
    reference: QualityReference
    f1_drop: F1Drop
    partial_match: PartialMatch | None
    estimated_precision: Mapping[str, float]
    calibrated: bool
    calibration_spans: int
    calibration_gap: Mapping[str, float]
    calibration_gap_overall: CalibrationGapOverall | None
    labelled_fraction: float | None
    label_delay_histogram: DelayHistogram
    label_delay_seconds: DelaySeconds
    join: JoinFigures
    join_here: Mapping[str, int]
    counters: Mapping[str, int]

    def to_json(self) -> Json:
        """Exactly the JSON of ``QualityMonitor.report`` (docs/quality.md)."""
        return {"model": self.model, "model_version": self.model_version, "task": self.task,
                **self.window.to_json(), "reference": self.reference.to_json(), "f1_drop": self.f1_drop.to_json(),
                "partial_match": None if self.partial_match is None else self.partial_match.to_json(),
                "estimated_precision": dict(self.estimated_precision), "calibrated": self.calibrated,
                "calibration_spans": self.calibration_spans, "calibration_gap": dict(self.calibration_gap),
                "calibration_gap_overall": (None if self.calibration_gap_overall is None
                                            else self.calibration_gap_overall.to_json()),
                "labelled_fraction": self.labelled_fraction,
                "label_delay_histogram": self.label_delay_histogram.to_json(),
                "label_delay_seconds": self.label_delay_seconds.to_json(), "join": self.join.to_json(),
                "join_here": dict(self.join_here), "counters": dict(self.counters)}

    @classmethod
    def from_json(cls, d: Raw) -> QualityReport:
        """The report of its JSON (``to_json`` of another process)."""
        pm, gap = d.get("partial_match"), d.get("calibration_gap_overall")
        return cls(d.get("model", ""), d.get("model_version", ""), d.get("task", "token-classification"),
                   WindowFigures.from_json(d), QualityReference.from_json(d.get("reference") or {}),
                   F1Drop.from_json(d.get("f1_drop") or {}), None if pm is None else PartialMatch.from_json(pm),
                   dict(d.get("estimated_precision") or {}), bool(d.get("calibrated")),
                   d.get("calibration_spans", 0), dict(d.get("calibration_gap") or {}),
                   None if gap is None else CalibrationGapOverall.from_json(gap), d.get("labelled_fraction"),
                   DelayHistogram.from_json(d.get("label_delay_histogram") or {}),
                   DelaySeconds.from_json(d.get("label_delay_seconds") or {}),
                   JoinFigures.from_json(d.get("join") or {}), dict(d.get("join_here") or {}),
                   dict(d.get("counters") or {}))
