"""The typed quality report (``nlpmon.quality.report``): ``QualityMonitor.view(version).to_json()`` is exactly the
dict the monitor built before the typed report (kept below as the oracle), key for key and in order, for token
classification (with partial matching and its tests), text classification (accuracy, calibration gap) and a
version with no labels yet; ``QualityReport.from_json`` reads it back to the same report."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np

from nlpmon.quality.estimate import calibration_gap, estimated_precision
from nlpmon.quality.events import GroundTruth, decode_ground_truth
from nlpmon.quality.partial_match import SCHEMES
from nlpmon.quality.quality_monitor import QualityConfig, QualityMonitor, _finite, _Version
from nlpmon.quality.report import QualityReport
from nlpmon.quality.significance import calibration_gap_score, f1_drop_score, micro_f1_with_se, z_threshold
from tests.quality.test_quality_monitor import clf_event, gt_event, ner_event, random_spans


def _legacy_figures(window: Any, names: list[str], classification: bool) -> dict[str, Any]:
    out: dict[str, Any] = window.figures(names, classification=classification)
    out["macro"] = {"f1": out.pop("macro_f1")}
    return out


def legacy_report(self: QualityMonitor, model_version: str) -> dict[str, Any]:
    """``QualityMonitor.report`` as it was built before the typed report (the oracle of ``to_json``)."""
    ver = self.versions.get(model_version) or _Version(self.config)
    cfg = self.config
    names = self.vocab.names
    n_labels = max(len(names), 1)
    task = "text-classification" if ver.classification else "token-classification"
    out: dict[str, Any] = {"model": self.model, "model_version": model_version, "task": task}
    out.update(_legacy_figures(ver.window, names, ver.classification))
    out["reference"] = {"source": ver.reference_source, **_legacy_figures(ver.reference, names, ver.classification)}
    threshold = z_threshold(cfg.false_alarm_rate)
    ref_f1 = micro_f1_with_se(*ver.reference.document_counts())
    now_f1 = micro_f1_with_se(*ver.window.document_counts())
    enough = (ver.reference_source is not None and len(ver.window) >= cfg.min_test_documents
              and len(ver.reference) >= cfg.min_test_documents)
    score = f1_drop_score(ref_f1, now_f1) if enough else float("nan")
    out["f1_drop"] = {"score": _finite(score), "threshold": threshold,
                      "drift": bool(score > threshold and ref_f1[0] - now_f1[0] >= cfg.min_f1_drop),
                      "reference_f1": _finite(ref_f1[0]), "current_f1": _finite(now_f1[0])}
    out["partial_match"] = None if ver.classification else _legacy_partial(self, ver, names, threshold)
    lab, sc = ver.scores.spans()
    est, n_est = estimated_precision(ver.calibrator, lab, sc, n_labels)
    out["estimated_precision"] = {names[i]: float(est[i]) for i in range(len(names)) if n_est[i] > 0}
    out["calibrated"] = ver.calibrator.calibrated
    out["calibration_spans"] = ver.calibrator.fitted_on
    wl, ws, wc = ver.window.scored_predictions()
    gap, overall, n_gap = calibration_gap(ver.calibrator, wl, ws, wc, n_labels)
    out["calibration_gap"] = {names[i]: float(gap[i]) for i in range(len(names)) if n_gap[i] > 0}
    if np.isfinite(overall[2]):
        gscore = (calibration_gap_score(ver.calibrator.apply(wl, ws), wc, ver.calibrator.fitted_on)
                  if ver.calibrator.calibrated and wl.size >= cfg.min_test_documents else float("nan"))
        out["calibration_gap_overall"] = {
            "realised": float(overall[0]), "estimated": float(overall[1]), "gap": float(overall[2]),
            "score": _finite(gscore), "threshold": threshold,
            "drift": bool(gscore > threshold and abs(overall[2]) >= cfg.min_calibration_gap)}
    else:
        out["calibration_gap_overall"] = None
    c = self.join.counters
    seen = (c["matched"] + c["prediction_expired_unlabelled"] + c["prediction_evicted_memory"]
            + self.join.pending_predictions)
    out["labelled_fraction"] = None if seen == 0 else c["matched"] / seen
    edges = np.asarray([*cfg.delay_buckets, np.inf])
    delays = ver.window.delays()
    out["label_delay_histogram"] = {"edges": list(cfg.delay_buckets),
                                    "counts": ver.window.delay_histogram(edges).tolist(),
                                    "below_first_edge": int((delays < edges[0]).sum()),
                                    "unknown": len(ver.window) - int(delays.size)}
    out["label_delay_seconds"] = {"edges": list(cfg.delay_buckets),
                                  "cumulative_counts": np.cumsum(ver.delay_counts).tolist(),
                                  "sum": ver.delay_sum, "count": int(ver.delay_counts.sum())}
    out["join"] = {**c, "pending_predictions": self.join.pending_predictions,
                   "pending_labels": self.join.pending_labels, "bytes": self.join.bytes}
    out["join_here"] = {k: c[k] - self._join_base.get(k, 0) for k in c}
    out["counters"] = dict(self.counters)
    return out


def _legacy_partial(self: QualityMonitor, ver: Any, names: list[str], threshold: float) -> dict[str, Any] | None:
    """Partial-match figures of every scheme over the window, the baseline's overall figures, and the
    F1-drop test of each scheme's overall F1 (the exact-match test's rule, on that scheme's counts)."""
    cfg = self.config
    if not cfg.partial_match:
        return None
    now, ref = ver.window.partial_figures(names), ver.reference.partial_figures(names)
    enough = (ver.reference_source is not None and ver.window.partial_documents >= cfg.min_test_documents
              and ver.reference.partial_documents >= cfg.min_test_documents)
    schemes: dict[str, Any] = {}
    for scheme in SCHEMES:
        ref_f1 = micro_f1_with_se(*ver.reference.partial_document_counts(scheme))
        now_f1 = micro_f1_with_se(*ver.window.partial_document_counts(scheme))
        score = f1_drop_score(ref_f1, now_f1) if enough else float("nan")
        schemes[scheme] = {**now[scheme], "f1_drop": {
            "score": _finite(score), "threshold": threshold,
            "drift": bool(score > threshold and ref_f1[0] - now_f1[0] >= cfg.min_f1_drop),
            "reference_f1": _finite(ref_f1[0]), "current_f1": _finite(now_f1[0])}}
    return {"documents": ver.window.partial_documents, "min_overlap_percent": cfg.partial_min_overlap_percent,
            "schemes": schemes,
            "reference": {"documents": ver.reference.partial_documents,
                          "schemes": {s: {"overall": ref[s]["overall"]} for s in SCHEMES}}}



def _text(x: Any) -> str:
    return json.dumps(x, default=lambda v: v.item() if isinstance(v, np.generic) else v.tolist())


def assert_view_is_the_legacy_report(m: QualityMonitor, version: str) -> QualityReport:
    view = m.view(version)
    got = view.to_json()
    assert _text(got) == _text(legacy_report(m, version))  # every key, value and key order
    parsed = json.loads(_text(got))
    assert QualityReport.from_json(parsed).to_json() == parsed
    return view


def test_token_classification_with_partial_matching_tests_and_delays() -> None:
    rng = random.Random(4)
    m = QualityMonitor("ner", QualityConfig(min_test_documents=20, baseline_documents=60))
    spans = {f"r{i}": random_spans(rng, 3) for i in range(80)}
    m.add_predictions([ner_event(k, float(i), v, rng, "reference") for i, (k, v) in enumerate(spans.items())], now=0)
    m.add_labels([gt_event(k, float(i), v) for i, (k, v) in enumerate(spans.items())], now=1)
    prod = {f"p{i}": random_spans(rng, 3) for i in range(120)}
    m.add_predictions([ner_event(k, 100.0 + i, v, rng) for i, (k, v) in enumerate(prod.items())], now=2)
    # labels that disagree more and more (the drop test has something to see), one prediction left unlabelled
    m.add_labels([gt_event(k, 200.0 + i, v if i < 60 else random_spans(rng, 3))
                  for i, (k, v) in enumerate(prod.items()) if i != 7], now=300)
    view = assert_view_is_the_legacy_report(m, "1")
    assert view.partial_match is not None and set(view.partial_match.schemes) == set(SCHEMES)
    assert view.reference.source == "reference" and view.f1_drop.score is not None
    assert view.label_delay_seconds.count == 119 and view.labelled_fraction is not None
    assert view.window.labels and not view.window.classification
    assert_view_is_the_legacy_report(m, "never-seen")  # a version without predictions: empty figures


def test_text_classification_with_accuracy_and_the_calibration_gap() -> None:
    rng = np.random.default_rng(5)
    m = QualityMonitor("sent", QualityConfig(calibration_method="histogram", min_test_documents=50))
    for prefix, split in (("r", "reference"), ("p", "production")):
        s = rng.uniform(0.3, 1.0, 300)
        ok = rng.random(300) < s**2
        m.add_predictions([clf_event(f"{prefix}{i}", "pos", float(s[i]), split) for i in range(300)], now=0)
        m.add_labels([clf_label(f"{prefix}{i}", "pos" if ok[i] else "neg") for i in range(300)], now=1)
    view = assert_view_is_the_legacy_report(m, "unversioned")
    assert view.window.classification and view.window.accuracy is not None and view.partial_match is None
    assert view.calibrated and view.calibration_gap_overall is not None
    assert view.calibration_gap_overall.score is not None


def clf_label(eid: str, label: str) -> GroundTruth:
    return decode_ground_truth(json.dumps({"event_id": eid, "model": "sent", "label": label}))
