"""What the quality metrics export of a version's quality report (``nlpmon.quality.report.QualityReport``). Pure.

``NlpmonMetrics`` owns the metrics, the model and label caps and the counters; this module only says which
gauge samples a quality report makes, as ``(metric name, label values after model and model_version,
value)``, and how the join counters map to series. Undefined figures (None, NaN) make no sample: a missing
series, never a NaN gauge, because ``NaN < x`` and ``NaN > x`` are both false in PromQL and would silence
a rule without a trace.

The join figures (counters, pending entries, buffer bytes, ``labelled_fraction``) belong to the model, not
to one version (a label joins its prediction whatever version made it): every version's report carries
the same values. Here they are exported as reported, on each version's series; the ``other`` aggregate
counts each model once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping

from ..quality.report import (
    CalibrationGapOverall,
    F1Drop,
    JoinFigures,
    PartialMatch,
    QualityReport,
    SchemeBlock,
    WindowFigures,
)

__all__ = [
    "FIGURES", "JOIN_INPUTS", "JOIN_OUTCOMES", "MACRO", "MICRO", "OVERALL", "PARTIAL_COUNTS", "PARTIAL_FIGURES",
    "QUALITY_TESTS", "join_series", "other_quality_gauges", "partial_samples", "quality_gauges",
]

Sample = tuple[str, tuple[str, ...], float]  # (metric name, label values after model/model_version, value)

OTHER = "other"
ALL = "__all__"  # label of text-classification accuracy and of the overall calibration gap
MICRO, MACRO = "__micro__", "__macro__"
OVERALL = "__overall__"  # label of the partial-match schemes' overall evaluation (every label at once)
PARTIAL_FIGURES = ("precision", "recall", "f1")  # per label and overall
PARTIAL_COUNTS = ("correct", "incorrect", "partial", "missed", "spurious")  # overall only
FIGURES = ("precision", "recall", "f1", "support")  # per label; MICRO has all four, MACRO only f1
QUALITY_TESTS = {"f1_drop": "f1_drop", "calibration_gap": "calibration_gap_overall"}  # signal -> report key
JOIN_INPUTS = {"predictions": "predictions", "labels": "labels"}  # join counter -> kind of join_events_total
#: Where an input of the join ended (the core's counter names; docs/metrics.md explains each).
JOIN_OUTCOMES = (
    "matched", "prediction_expired_unlabelled", "label_expired_unmatched", "label_for_expired_prediction",
    "duplicate_label", "duplicate_prediction", "label_wrong_model", "task_mismatch",
    "prediction_evicted_memory", "label_evicted_memory",
)
PENDING = {"pending_predictions": "predictions", "pending_labels": "labels"}


def join_series(counter: str) -> tuple[str, str]:
    """The (metric, label value) a join counter of ``join_here`` feeds: inputs count as
    ``nlpmon_join_events_total{kind}``, everything else as ``nlpmon_join_total{outcome}``."""
    if counter in JOIN_INPUTS:
        return "nlpmon_join_events_total", JOIN_INPUTS[counter]
    return "nlpmon_join_total", counter


def _value(x: float | None) -> float | None:
    """A report number as float; None, NaN and infinities (undefined) as None."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def figure_samples(block: WindowFigures, label_of: Callable[[str], str]) -> Iterator[tuple[str, str, float]]:
    """``(label, metric, value)`` of one figures block (the current window or the reference).

    Labels that ``label_of`` maps to ``other`` (over the label cap) are pooled: their precision, recall and
    F1 are recomputed from the summed tp/fp/fn, their supports summed. ``__micro__`` support is the sum of
    every label's support.
    """
    pooled = [0.0, 0.0, 0.0, 0.0]  # tp, fp, fn, support of the labels over the cap
    any_pooled = False
    support = 0.0
    for name, fig in block.labels.items():
        support += float(fig.support)
        label = label_of(str(name))
        if label == OTHER:
            any_pooled = True
            for i, count in enumerate((fig.tp, fig.fp, fig.fn, fig.support)):
                pooled[i] += float(count)
            continue
        figures: tuple[float | None, ...] = (fig.precision, fig.recall, fig.f1, fig.support)
        for metric, x in zip(FIGURES, figures, strict=True):
            f = _value(x)
            if f is not None:
                yield label, metric, f
    if any_pooled:
        tp, fp, fn, sup = pooled
        for metric, r in (("precision", _ratio(tp, tp + fp)), ("recall", _ratio(tp, tp + fn)),
                          ("f1", _ratio(2 * tp, 2 * tp + fp + fn)), ("support", sup)):
            if r is not None:
                yield OTHER, metric, r
    micro = block.micro
    for metric, m in (("precision", micro.precision), ("recall", micro.recall), ("f1", micro.f1)):
        v = _value(m)
        if v is not None:
            yield MICRO, metric, v
    if block.labels:
        yield MICRO, "support", support
    v = _value(block.macro_f1)
    if v is not None:
        yield MACRO, "f1", v
    v = _value(block.accuracy)
    if v is not None:
        yield ALL, "accuracy", v


def quality_gauges(q: QualityReport, label_of: Callable[[str], str]) -> Iterator[Sample]:
    """Every gauge sample of one own-series (model, version) from its quality report ``q``.

    ``label_of`` maps a label to its exported value (itself, or ``other`` over the cap). Estimated
    precision and calibration gaps of labels over the cap are not exported (they cannot be pooled
    without their span counts).
    """
    for label, metric, figure in figure_samples(q.window, label_of):
        yield "nlpmon_quality", (label, metric), figure
    if q.reference.source is not None:  # None: no baseline yet, its figures mean nothing
        for label, metric, figure in figure_samples(q.reference.figures, label_of):
            yield "nlpmon_quality_reference", (label, metric), figure
    yield from _defined("nlpmon_quality_documents", (), q.window.documents)
    yield from _test_samples(q)
    yield from partial_samples(q.partial_match, label_of)
    for name, figures in (("nlpmon_quality_estimated_precision", q.estimated_precision),
                          ("nlpmon_quality_calibration_gap", q.calibration_gap)):
        for raw, x in figures.items():
            label = label_of(str(raw))
            if label != OTHER:
                yield from _defined(name, (label,), x)
    gap = q.calibration_gap_overall
    yield from _defined("nlpmon_quality_calibration_gap", (ALL,), None if gap is None else gap.gap)
    yield "nlpmon_quality_calibrated", (), float(q.calibrated)
    yield from _defined("nlpmon_quality_labelled_fraction", (), q.labelled_fraction)
    yield from _join_gauges(q.join)


def _defined(name: str, values: tuple[str, ...], x: float | None) -> Iterator[Sample]:
    """The sample, when ``x`` is a defined number."""
    v = _value(x)
    if v is not None:
        yield name, values, v


def _test_samples(q: QualityReport) -> Iterator[Sample]:
    """Score, threshold and flag of the F1-drop and calibration-gap tests; a flag whenever the test is in
    the report (the core's ``drift`` is False while the test cannot be made), the score only when defined."""
    tests: dict[str, F1Drop | CalibrationGapOverall | None] = {
        "f1_drop": q.f1_drop, "calibration_gap": q.calibration_gap_overall}
    for signal, block in tests.items():
        if block is None:
            continue
        yield "nlpmon_quality_drift", (signal,), float(block.drift)
        yield from _defined(f"nlpmon_quality_{signal}_score", (), block.score)
        yield from _defined(f"nlpmon_quality_{signal}_threshold", (), block.threshold)


def _nervaluate_figures(c: Mapping[str, float], half_credit: bool) -> dict[str, float | None]:
    """nervaluate's precision, recall and F1 of pooled counts (labels over the cap)."""
    credit = c["correct"] + (0.5 * c["partial"] if half_credit else 0.0)
    actual = c["correct"] + c["incorrect"] + c["partial"] + c["spurious"]
    possible = c["correct"] + c["incorrect"] + c["partial"] + c["missed"]
    p, r = _ratio(credit, actual), _ratio(credit, possible)
    f1 = None if actual + possible == 0 else (2 * p * r / (p + r) if p and r else 0.0)
    return {"precision": p, "recall": r, "f1": f1}


def _scheme_figures(b: SchemeBlock) -> tuple[float | None, ...]:
    """A scheme block's ``PARTIAL_FIGURES``, in order."""
    return b.precision, b.recall, b.f1


def _scheme_counts(b: SchemeBlock) -> tuple[int, ...]:
    """A scheme block's ``PARTIAL_COUNTS``, in order."""
    return b.correct, b.incorrect, b.partial, b.missed, b.spurious


def partial_samples(pm: PartialMatch | None, label_of: Callable[[str], str]) -> Iterator[Sample]:
    """Samples of a report's ``partial_match`` block: per scheme, precision/recall/F1 per label (labels over
    the cap pooled into ``other`` from their counts) and overall with the five counts, the baseline's
    overall figures, the F1-drop score and flag. At most 4 x (3 x (max_labels + 1) + 8) + 4 x 5 series."""
    if pm is None:
        return
    for scheme, block in pm.schemes.items():
        overall = block.overall
        for metric, x in zip((*PARTIAL_FIGURES, *PARTIAL_COUNTS),
                             (*_scheme_figures(overall), *_scheme_counts(overall)), strict=True):
            yield from _defined("nlpmon_quality_partial", (scheme, OVERALL, metric), x)
        pooled: dict[str, float] = dict.fromkeys(PARTIAL_COUNTS, 0.0)
        any_pooled = False
        for name, fig in block.labels.items():
            label = label_of(str(name))
            if label == OTHER:
                any_pooled = True
                for k, c in zip(PARTIAL_COUNTS, _scheme_counts(fig), strict=True):
                    pooled[k] += float(c)
                continue
            for metric, x in zip(PARTIAL_FIGURES, _scheme_figures(fig), strict=True):
                yield from _defined("nlpmon_quality_partial", (scheme, label, metric), x)
        if any_pooled:
            for metric, v in _nervaluate_figures(pooled, scheme == "partial").items():
                yield from _defined("nlpmon_quality_partial", (scheme, OTHER, metric), v)
        drop = block.f1_drop
        yield "nlpmon_quality_partial_drift", (scheme,), float(drop.drift)
        yield from _defined("nlpmon_quality_partial_f1_drop_score", (scheme,), drop.score)
    if pm.reference_documents:
        for scheme, ref in pm.reference_schemes.items():
            for metric, x in zip(PARTIAL_FIGURES, _scheme_figures(ref), strict=True):
                yield from _defined("nlpmon_quality_partial_reference", (scheme, metric), x)


def _join_gauges(join: JoinFigures) -> Iterator[Sample]:
    yield from _defined("nlpmon_join_pending", (PENDING["pending_predictions"],), join.pending_predictions)
    yield from _defined("nlpmon_join_pending", (PENDING["pending_labels"],), join.pending_labels)
    yield from _defined("nlpmon_join_buffer_bytes", (), join.bytes)


def other_quality_gauges(reports: Iterable[tuple[str, QualityReport]]) -> Iterator[Sample]:
    """Gauge samples of the ``other`` aggregate from ``(model, quality report)`` pairs of the overflow
    versions: test flags and scores are maxima, per partial-match scheme too (thresholds too: they are one
    configured value), labelled documents are summed; pending entries and buffer bytes are summed over
    distinct models (every version of a model reports the same join). No per-label series, no ratios."""
    drift: dict[tuple[str, tuple[str, ...]], float] = {}
    peak: dict[tuple[str, tuple[str, ...]], float] = {}
    documents = 0.0
    join: dict[str, JoinFigures] = {}
    for model, q in reports:
        documents += float(q.window.documents)
        partial_tests = ("nlpmon_quality_partial_drift", "nlpmon_quality_partial_f1_drop_score")
        tests = [*_test_samples(q), *(x for x in partial_samples(q.partial_match, lambda _: OTHER)
                                      if x[0] in partial_tests)]
        for name, values, v in tests:
            if name in ("nlpmon_quality_drift", "nlpmon_quality_partial_drift"):
                drift[(name, values)] = max(drift.get((name, values), 0.0), v)
            else:
                peak[(name, values)] = max(peak.get((name, values), -math.inf), v)
        join.setdefault(model, q.join)
    for (name, values), flag in drift.items():
        yield name, values, flag
    for (name, values), v in peak.items():
        yield name, values, v
    yield "nlpmon_quality_documents", (), documents
    totals: dict[tuple[str, tuple[str, ...]], float] = {}
    for j in join.values():
        for name, values, v in _join_gauges(j):
            totals[(name, values)] = totals.get((name, values), 0.0) + v
    for (name, values), v in totals.items():
        yield name, values, v
