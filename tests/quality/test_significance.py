"""The F1-drop and calibration-gap tests: exact figures, standard errors against a bootstrap, false-alarm
rates at the nominal level on seeded null streams, and detection of real drops in a QualityMonitor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nlpmon.events import decode_event
from nlpmon.quality.events import decode_ground_truth
from nlpmon.quality.quality_monitor import QualityConfig, QualityMonitor
from nlpmon.quality.significance import calibration_gap_score, f1_drop_score, micro_f1_with_se, z_threshold


def clustered_documents(rng: np.random.Generator, docs: int, p_ok: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-document TP and TP+FP+FN where a document's spans share its difficulty (clustered errors)."""
    spans = rng.integers(0, 6, docs)
    difficulty = np.clip(rng.normal(p_ok, 0.25, docs), 0, 1)
    tp = rng.binomial(spans, difficulty)
    wrong = spans - tp  # a wrong span is one FP and one FN
    return tp.astype(float), (tp + 2 * wrong).astype(float)


def test_micro_f1_is_the_pooled_formula_and_its_error_matches_a_bootstrap() -> None:
    rng = np.random.default_rng(1)
    tp, n = clustered_documents(rng, 800, 0.8)
    f1, se = micro_f1_with_se(tp, n)
    fp_plus_fn = n.sum() - tp.sum()
    assert f1 == pytest.approx(2 * tp.sum() / (2 * tp.sum() + fp_plus_fn))
    boot = []
    for _ in range(2000):
        i = rng.integers(0, tp.size, tp.size)
        boot.append(micro_f1_with_se(tp[i], n[i])[0])
    assert se == pytest.approx(float(np.std(boot)), rel=0.1)
    # ignoring the clustering (spans as independent draws) would understate the error
    p = tp.sum() / n.sum()
    naive = 2 / (1 + p) ** 2 * np.sqrt(p * (1 - p) / n.sum())
    assert se > 1.3 * naive


def test_undefined_cases() -> None:
    assert all(np.isnan(micro_f1_with_se(np.zeros(3), np.zeros(3))))
    f1, se = micro_f1_with_se(np.array([1.0]), np.array([1.0]))
    assert f1 == 1.0 and np.isnan(se)
    assert np.isnan(f1_drop_score((0.8, np.nan), (0.7, 0.01)))
    assert f1_drop_score((0.9, 0.0), (0.9, 0.0)) == 0.0 and f1_drop_score((0.9, 0.0), (0.8, 0.0)) == np.inf
    assert np.isnan(calibration_gap_score(np.zeros(0), np.zeros(0, bool), 10))
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
        z_threshold(0)


@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_f1_drop_false_alarm_rate_is_near_nominal_on_null_streams(alpha: float) -> None:
    rng = np.random.default_rng(int(alpha * 1000))
    z = z_threshold(alpha)
    trials = 3000
    hits = sum(f1_drop_score(micro_f1_with_se(*clustered_documents(rng, 400, 0.75)),
                             micro_f1_with_se(*clustered_documents(rng, 300, 0.75))) > z for _ in range(trials))
    sd = np.sqrt(alpha * (1 - alpha) / trials)
    assert abs(hits / trials - alpha) < 4 * sd + 0.2 * alpha


def test_f1_drop_sees_a_real_drop() -> None:
    rng = np.random.default_rng(3)
    scores = [f1_drop_score(micro_f1_with_se(*clustered_documents(rng, 2000, 0.8)),
                            micro_f1_with_se(*clustered_documents(rng, 2000, 0.65))) for _ in range(20)]
    assert min(scores) > z_threshold(1e-6)


def test_calibration_gap_rate_near_nominal_when_calibration_holds_and_large_when_it_breaks() -> None:
    rng = np.random.default_rng(4)
    alpha = 0.02
    z = z_threshold(alpha / 2)  # the gap test is two-sided
    hits = 0
    for _ in range(2000):
        c = rng.uniform(0.3, 1.0, 500)
        hits += calibration_gap_score(c, rng.random(500) < c, 10**9) > z
    assert abs(hits / 2000 - alpha) < 4 * np.sqrt(alpha * (1 - alpha) / 2000) + 0.2 * alpha
    c = rng.uniform(0.3, 1.0, 500)
    assert calibration_gap_score(c, rng.random(500) < c**3, 4000) > z_threshold(1e-6)
    # a map fitted on few reference spans is uncertain itself: the same gap scores lower
    y = rng.random(500) < c**1.3
    assert calibration_gap_score(c, y, 100) < calibration_gap_score(c, y, 100000)


def feed(m: QualityMonitor, prefix: str, n: int, p_ok: float, split: str, t: float,
         rng: np.random.Generator) -> None:
    """``n`` one-entity NER documents, right with probability ``p_ok``, with their labels."""
    score = rng.uniform(0.5, 1.0, n)
    ok = rng.random(n) < p_ok
    m.add_predictions([decode_event(json.dumps({
        "event_id": f"{prefix}{i}", "model": "ner", "model_version": "1", "timestamp": t, "split": split,
        "entities": [{"label": "PER", "start": 0, "end": 4, "score": float(score[i])}]})) for i in range(n)],
        now=t)
    m.add_labels([decode_ground_truth(json.dumps({
        "event_id": f"{prefix}{i}", "model": "ner", "timestamp": t + 1,
        "entities": [{"label": "PER" if ok[i] else "ORG", "start": 0, "end": 4}]})) for i in range(n)], now=t + 1)


def test_monitor_baseline_from_production_then_flags_an_f1_drop() -> None:
    rng = np.random.default_rng(6)
    m = QualityMonitor("ner", QualityConfig(window_documents=600, baseline_documents=600))
    feed(m, "a", 300, 0.85, "production", 0, rng)
    r = m.report("1")
    assert r["reference"]["source"] is None and r["f1_drop"]["score"] is None and not r["f1_drop"]["drift"]
    feed(m, "b", 300, 0.85, "production", 10, rng)
    r = m.report("1")
    assert r["reference"]["source"] == "baseline" and r["reference"]["documents"] == 600
    assert r["f1_drop"]["score"] == pytest.approx(0.0, abs=1e-9)  # the window is the baseline
    feed(m, "c", 600, 0.85, "production", 20, rng)
    r = m.report("1")
    assert not r["f1_drop"]["drift"] and abs(r["f1_drop"]["score"]) < 4
    feed(m, "d", 600, 0.6, "production", 30, rng)
    r = m.report("1")
    assert r["f1_drop"]["drift"] and r["f1_drop"]["score"] > r["f1_drop"]["threshold"]
    assert r["f1_drop"]["reference_f1"] > r["f1_drop"]["current_f1"] + 0.15


def test_labelled_reference_replaces_the_baseline_and_calibration_gap_flags_over_confidence() -> None:
    rng = np.random.default_rng(8)
    m = QualityMonitor("ner", QualityConfig(window_documents=2000, baseline_documents=500,
                                            calibration_method="histogram"))
    feed(m, "p", 500, 0.5, "production", 0, rng)
    assert m.report("1")["reference"]["source"] == "baseline"
    feed(m, "r", 2000, 0.9, "reference", 1, rng)
    r = m.report("1")
    assert r["reference"]["source"] == "reference" and r["reference"]["documents"] == 500  # the newest
    assert r["reference"]["micro"]["f1"] == pytest.approx(0.9, abs=0.03)
    assert r["calibrated"]
    assert r["f1_drop"]["drift"]  # production (0.5) is far below the labelled reference (0.9)
    gap = r["calibration_gap_overall"]
    assert gap["drift"] and gap["gap"] < -0.3 and gap["score"] > gap["threshold"]
    feed(m, "q", 2000, 0.9, "production", 2, rng)
    r = m.report("1")
    assert not r["f1_drop"]["drift"] and not r["calibration_gap_overall"]["drift"]


def test_label_delay_histogram_counts_this_objects_own_joins() -> None:
    m = QualityMonitor("ner", QualityConfig(delay_buckets=(0, 10, 100)))
    ent = [{"label": "PER", "start": 0, "end": 4, "score": 0.9}]
    m.add_predictions([decode_event(json.dumps({"event_id": f"e{i}", "model": "ner", "model_version": "1",
                                                "timestamp": 0, "entities": ent})) for i in range(4)], now=0)
    for i, delay in enumerate([5.0, 10.0, 50.0, 500.0]):
        m.add_labels([decode_ground_truth(json.dumps({"event_id": f"e{i}", "model": "ner", "timestamp": delay,
                                                      "entities": []}))], now=delay)
    d = m.report("1")["label_delay_seconds"]
    assert d == {"edges": [0, 10, 100], "cumulative_counts": [0, 2, 3, 4], "sum": 565.0, "count": 4}
