"""What the quality metrics export of a report's ``"quality"`` block (delayed ground truth). Pure.

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
from typing import Any

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


def _value(x: Any) -> float | None:
    """A report number as float; None, NaN and infinities (undefined) as None."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def figure_samples(block: Mapping[str, Any], label_of: Callable[[str], str]) -> Iterator[tuple[str, str, float]]:
    """``(label, metric, value)`` of one figures block (the current window or the reference).

    Labels that ``label_of`` maps to ``other`` (over the label cap) are pooled: their precision, recall and
    F1 are recomputed from the summed tp/fp/fn, their supports summed. ``__micro__`` support is the sum of
    every label's support.
    """
    labels: Mapping[str, Mapping[str, Any]] = block.get("labels") or {}
    pooled = [0.0, 0.0, 0.0, 0.0]  # tp, fp, fn, support of the labels over the cap
    any_pooled = False
    support = 0.0
    for name, fig in labels.items():
        support += float(fig.get("support") or 0)
        label = label_of(str(name))
        if label == OTHER:
            any_pooled = True
            for i, key in enumerate(("tp", "fp", "fn", "support")):
                pooled[i] += float(fig.get(key) or 0)
            continue
        for metric in FIGURES:
            v = _value(fig.get(metric))
            if v is not None:
                yield label, metric, v
    if any_pooled:
        tp, fp, fn, sup = pooled
        for metric, v in (("precision", _ratio(tp, tp + fp)), ("recall", _ratio(tp, tp + fn)),
                          ("f1", _ratio(2 * tp, 2 * tp + fp + fn)), ("support", sup)):
            if v is not None:
                yield OTHER, metric, v
    micro = block.get("micro") or {}
    for metric in ("precision", "recall", "f1"):
        v = _value(micro.get(metric))
        if v is not None:
            yield MICRO, metric, v
    if labels:
        yield MICRO, "support", support
    v = _value((block.get("macro") or {}).get("f1"))
    if v is not None:
        yield MACRO, "f1", v
    v = _value(block.get("accuracy"))
    if v is not None:
        yield ALL, "accuracy", v


def quality_gauges(q: Mapping[str, Any], label_of: Callable[[str], str]) -> Iterator[Sample]:
    """Every gauge sample of one own-series (model, version) from its quality report ``q``.

    ``label_of`` maps a label to its exported value (itself, or ``other`` over the cap). Estimated
    precision and calibration gaps of labels over the cap are not exported (they cannot be pooled
    without their span counts).
    """
    for label, metric, figure in figure_samples(q, label_of):
        yield "nlpmon_quality", (label, metric), figure
    ref = q.get("reference") or {}
    if ref.get("source") is not None:  # None: no baseline yet, its figures mean nothing
        for label, metric, figure in figure_samples(ref, label_of):
            yield "nlpmon_quality_reference", (label, metric), figure
    yield from _defined("nlpmon_quality_documents", (), q.get("documents"))
    yield from _test_samples(q)
    yield from partial_samples(q.get("partial_match"), label_of)
    for name, key in (("nlpmon_quality_estimated_precision", "estimated_precision"),
                      ("nlpmon_quality_calibration_gap", "calibration_gap")):
        for raw, x in (q.get(key) or {}).items():
            label = label_of(str(raw))
            if label != OTHER:
                yield from _defined(name, (label,), x)
    yield from _defined("nlpmon_quality_calibration_gap", (ALL,), (q.get("calibration_gap_overall") or {}).get("gap"))
    if q.get("calibrated") is not None:
        yield "nlpmon_quality_calibrated", (), float(bool(q["calibrated"]))
    yield from _defined("nlpmon_quality_labelled_fraction", (), q.get("labelled_fraction"))
    yield from _join_gauges(q.get("join") or {})


def _defined(name: str, values: tuple[str, ...], x: Any) -> Iterator[Sample]:
    """The sample, when ``x`` is a defined number."""
    v = _value(x)
    if v is not None:
        yield name, values, v


def _test_samples(q: Mapping[str, Any]) -> Iterator[Sample]:
    """Score, threshold and flag of the F1-drop and calibration-gap tests; a flag whenever its block is
    there (the core's ``drift`` is False while the test cannot be made), the score only when defined."""
    for signal, key in QUALITY_TESTS.items():
        block = q.get(key)
        if not block:
            continue
        yield "nlpmon_quality_drift", (signal,), float(bool(block.get("drift")))
        for suffix in ("score", "threshold"):
            yield from _defined(f"nlpmon_quality_{signal}_{suffix}", (), block.get(suffix))


def _nervaluate_figures(c: Mapping[str, float], half_credit: bool) -> dict[str, float | None]:
    """nervaluate's precision, recall and F1 of pooled counts (labels over the cap)."""
    credit = c["correct"] + (0.5 * c["partial"] if half_credit else 0.0)
    actual = c["correct"] + c["incorrect"] + c["partial"] + c["spurious"]
    possible = c["correct"] + c["incorrect"] + c["partial"] + c["missed"]
    p, r = _ratio(credit, actual), _ratio(credit, possible)
    f1 = None if actual + possible == 0 else (2 * p * r / (p + r) if p and r else 0.0)
    return {"precision": p, "recall": r, "f1": f1}


def partial_samples(pm: Mapping[str, Any] | None, label_of: Callable[[str], str]) -> Iterator[Sample]:
    """Samples of a report's ``partial_match`` block: per scheme, precision/recall/F1 per label (labels over
    the cap pooled into ``other`` from their counts) and overall with the five counts, the baseline's
    overall figures, the F1-drop score and flag. At most 4 x (3 x (max_labels + 1) + 8) + 4 x 5 series."""
    if not pm:
        return
    ref = pm.get("reference") or {}
    for scheme, block in (pm.get("schemes") or {}).items():
        overall = block.get("overall") or {}
        for metric in (*PARTIAL_FIGURES, *PARTIAL_COUNTS):
            yield from _defined("nlpmon_quality_partial", (scheme, OVERALL, metric), overall.get(metric))
        pooled: dict[str, float] = dict.fromkeys(PARTIAL_COUNTS, 0.0)
        any_pooled = False
        for name, fig in (block.get("labels") or {}).items():
            label = label_of(str(name))
            if label == OTHER:
                any_pooled = True
                for k in PARTIAL_COUNTS:
                    pooled[k] += float(fig.get(k) or 0)
                continue
            for metric in PARTIAL_FIGURES:
                yield from _defined("nlpmon_quality_partial", (scheme, label, metric), fig.get(metric))
        if any_pooled:
            for metric, v in _nervaluate_figures(pooled, scheme == "partial").items():
                yield from _defined("nlpmon_quality_partial", (scheme, OTHER, metric), v)
        drop = block.get("f1_drop")
        if drop:
            yield "nlpmon_quality_partial_drift", (scheme,), float(bool(drop.get("drift")))
            yield from _defined("nlpmon_quality_partial_f1_drop_score", (scheme,), drop.get("score"))
    if pm.get("reference") and ref.get("documents"):
        for scheme, block in (ref.get("schemes") or {}).items():
            for metric in PARTIAL_FIGURES:
                yield from _defined("nlpmon_quality_partial_reference", (scheme, metric),
                                    (block.get("overall") or {}).get(metric))


def _join_gauges(join: Mapping[str, Any]) -> Iterator[Sample]:
    for key, kind in PENDING.items():
        yield from _defined("nlpmon_join_pending", (kind,), join.get(key))
    yield from _defined("nlpmon_join_buffer_bytes", (), join.get("bytes"))


def other_quality_gauges(reports: Iterable[tuple[str, Mapping[str, Any]]]) -> Iterator[Sample]:
    """Gauge samples of the ``other`` aggregate from ``(model, quality report)`` pairs of the overflow
    versions: test flags and scores are maxima, per partial-match scheme too (thresholds too: they are one
    configured value), labelled documents are summed; pending entries and buffer bytes are summed over
    distinct models (every version of a model reports the same join). No per-label series, no ratios."""
    drift: dict[tuple[str, tuple[str, ...]], float] = {}
    peak: dict[tuple[str, tuple[str, ...]], float] = {}
    documents = 0.0
    join: dict[str, Mapping[str, Any]] = {}
    for model, q in reports:
        documents += float(q.get("documents") or 0)
        partial_tests = ("nlpmon_quality_partial_drift", "nlpmon_quality_partial_f1_drop_score")
        tests = [*_test_samples(q), *(x for x in partial_samples(q.get("partial_match"), lambda _: OTHER)
                                      if x[0] in partial_tests)]
        for name, values, v in tests:
            if name in ("nlpmon_quality_drift", "nlpmon_quality_partial_drift"):
                drift[(name, values)] = max(drift.get((name, values), 0.0), v)
            else:
                peak[(name, values)] = max(peak.get((name, values), -math.inf), v)
        join.setdefault(model, q.get("join") or {})
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
