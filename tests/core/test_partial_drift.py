"""Partial-drift signals against brute-force oracles: outlier-share counts over windows for any batch split,
exact beta-binomial thresholds, the conformal marking rate, per-label rising shares, and the per-block
fast path of ``SignalWindow`` equal to the per-event one."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from scipy import integrate, stats

from nlpmon.drift.distribution import LabelShareFeaturizer, label_excess
from nlpmon.drift.embedding import EmbeddingFeaturizer
from nlpmon.drift.items import ItemColumn
from nlpmon.drift.outliers import OutlierShareFeaturizer, count_thresholds
from nlpmon.drift.signal import (
    OUTLIER_BLOCK,
    SignalModel,
    SignalWindow,
    calibrate_outlier_signal,
    calibrate_signal,
)
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet


def bb_tail_by_integration(c: int, n: int, a: float, b: float) -> float:
    """P(C >= c) for C ~ BetaBinomial(n, a, b), integrating the binomial tail over the Beta density."""
    def f(u: float) -> float:
        return float(stats.binom.sf(c - 1, n, u) * stats.beta.pdf(u, a, b))
    hi = min(1.0, stats.beta.isf(1e-14, a, b))
    val, _ = integrate.quad(f, 0.0, hi, limit=200, epsabs=1e-16, epsrel=1e-8,
                            points=[stats.beta.mean(a, b)])
    return val


@pytest.mark.parametrize(("m", "k", "level"), [(3000, 16, 1e-6 / 6), (600, 3, 1e-6 / 6), (300, 30, 1e-3),
                                               (3000, 15, 1e-9)])  # where scipy's 1 - cdf was off by 1
def test_count_thresholds_are_the_smallest_counts_with_tail_below_the_level(m: int, k: int, level: float) -> None:
    thr = count_thresholds(m, k, 1000, level)
    for n in (1, 5, 20, 50, 200, 672, 975, 1000):
        c = int(thr[n])
        if c <= n:
            assert bb_tail_by_integration(c, n, k, m + 1 - k) <= level * (1 + 1e-6)
        if c - 1 >= 1:
            assert bb_tail_by_integration(c - 1, n, k, m + 1 - k) > level * (1 - 1e-6)


def outlier_model(windows: tuple[int, ...], seed: int = 0) -> SignalModel:
    rng = np.random.default_rng(seed)
    feat = OutlierShareFeaturizer.fit(rng.standard_normal(1000), 0.02, max(windows), 1e-4 / len(windows))
    return SignalModel("embedding_outliers", feat, windows, np.ones((len(windows), 1)), 1e-4, 1000)


def brute_force_ratio(marks: np.ndarray, items: np.ndarray, feat: OutlierShareFeaturizer, windows: tuple[int, ...],
                      block: int) -> np.ndarray:
    """Per event: the largest count / (alarming count - 0.5) over the windows, each as of the last block
    that closed at or before the event (0 before any window is full)."""
    out = np.zeros(marks.size)
    for i in range(marks.size):
        end = (i + 1) // block * block  # events in closed blocks up to event i
        best = -np.inf
        for w in windows:
            if end >= w:
                c, n = marks[end - w:end].sum(), items[end - w:end].sum()
                best = max(best, c / (feat.count_threshold[int(n)] - 0.5) if n > 0 else 0.0)
        out[i] = best if np.isfinite(best) else 0.0
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_outlier_share_counts_over_windows_equal_a_recomputation_for_any_batch_split(seed: int) -> None:
    windows = (20, 50, 100)
    model = outlier_model(windows, seed)
    feat = model.featurizer
    assert isinstance(feat, OutlierShareFeaturizer)
    rng = np.random.default_rng(seed)
    n = 700
    p = np.where(np.arange(n) > 400, 0.3, 0.02)  # a sub-population arrives at event 400
    items = (rng.random(n) < 0.9).astype(np.float64)  # some events carry no embedding
    marks = ((rng.random(n) < p) & (items > 0)).astype(np.float64)
    want = brute_force_ratio(marks, items, feat, windows, OUTLIER_BLOCK)
    win = SignalWindow(model, 50, None)
    cuts = np.sort(rng.choice(np.arange(1, n), size=12, replace=False))
    got = []
    for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [n]]), strict=True):
        got.append(win.update_rows(marks[a:b, None], items[a:b], np.full(b - a, np.nan)).ratio)
    assert np.concatenate(got) == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert (np.concatenate(got) > 1).any() and not (want[:400] > 1).any()


def test_per_block_fast_path_equals_the_per_event_path() -> None:
    rng = np.random.default_rng(7)
    labels = ["A"] * 600 + ["B"] * 300 + ["C"] * 95 + ["R"] * 5
    column = ItemColumn(np.arange(1000, dtype=np.int64) // 2, labels)
    model = calibrate_signal("entity_label_share", "label_share", column, 500, windows=(50, 100, 200),
                             false_alarm_rate=1e-4, splits=2, rng=rng)
    fast, slow = SignalWindow(model, 50, None), SignalWindow(model, 50, None)
    assert not fast.windows.short
    n = 900
    rows = rng.poisson(np.where(np.arange(n)[:, None] > 500, [1.0, 0.6, 0.2, 0.5, 0.0], [1.0, 0.6, 0.2, 0.01, 0.0]))
    rows = rows.astype(np.float64)
    items = rows.sum(axis=1)
    for a, b in ((0, 37), (37, 420), (420, 421), (421, 900)):
        u = fast._update_blocks(rows[a:b], items[a:b], np.full(b - a, np.nan))
        v = slow._update_events(rows[a:b], items[a:b], np.full(b - a, np.nan))
        for field in ("drift", "ratio", "window", "stat", "detail"):
            assert np.array_equal(getattr(u, field), getattr(v, field)), field
        assert np.array_equal(u.value, v.value, equal_nan=True)
    assert u.drift.any()
    assert isinstance(model.featurizer, LabelShareFeaturizer)
    assert {model.featurizer.labels[i] for i in u.detail[u.drift]} == {"R"}  # the rare label that rose


def test_label_excess_is_the_one_sided_binomial_chernoff_exponent() -> None:
    counts = np.array([[30.0, 60.0, 10.0], [0.0, 100.0, 0.0]])
    pi = np.array([0.2, 0.7, 0.1])
    got = label_excess(counts, pi)
    n = 100.0

    def kl(a: float, b: float) -> float:
        return a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))
    assert got[0] == pytest.approx([n * kl(0.3, 0.2), 0.0, 0.0])
    assert got[1] == pytest.approx([0.0, n * kl(1.0 - 1e-12, 0.7), 0.0], rel=1e-6)
    # never below the exact binomial tail's -log (Chernoff is an upper bound on the tail probability)
    assert got[0, 0] <= -np.log(stats.binom.sf(29, 100, 0.2))


def clustered(n: int, rng: np.random.Generator, offset: np.ndarray | None = None) -> np.ndarray:
    """Unit-norm embeddings near a 10-dimensional subspace of R^64 (``offset``: a new sub-population)."""
    basis = np.linalg.qr(np.random.default_rng(99).standard_normal((64, 10)))[0]
    x = rng.standard_normal((n, 10)) @ basis.T * 0.3 + rng.standard_normal((n, 64)) * 0.05
    if offset is not None:
        x = x + offset
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_marking_rate_of_new_stationary_events_is_the_conformal_rate_on_average() -> None:
    """Exchangeable new events are marked at about k/(m+1), averaged over references (Beta(k, m+1-k))."""
    rates, expected = [], []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        ref = clustered(1000, rng)
        emb = EmbeddingFeaturizer.fit(ref, 8, 32, rng)
        model = calibrate_outlier_signal("embedding_outliers", emb, ItemColumn(np.arange(1000), ref), 1000,
                                         windows=(20, 100), false_alarm_rate=1e-6, level=0.01, rng=rng)
        feat = model.featurizer
        assert isinstance(feat, OutlierShareFeaturizer)
        _, scores = emb.transform_scored(clustered(20000, rng))
        rates.append(float(feat.marks(scores).mean()))
        expected.append(feat.expected_share)
    sd = np.sqrt(np.mean(expected) * (1 - np.mean(expected)) / 1000 / len(rates))  # the Beta spread, averaged
    assert abs(np.mean(rates) - np.mean(expected)) < 4 * sd + 0.002, (rates, expected)


def demo_lines(n: int, seed: int, *, split: str = "production", new_from: int | None = None,
               share: float = 0.0, new_label: str | None = None) -> list[bytes]:
    """Synthetic NER events with 64-dim embeddings; from ``new_from`` on, each event is, with probability
    ``share``, from a new sub-population (shifted embedding, and ``new_label`` entities if given)."""
    rng = np.random.default_rng(seed)
    shift = np.random.default_rng(5).standard_normal(64) * 0.25
    out = []
    for i in range(n):
        new = new_from is not None and i >= new_from and rng.random() < share
        emb = clustered(1, rng, shift if new else None)[0]
        label = new_label if new and new_label else str(rng.choice(["PERSON", "ORG", "GPE"], p=[0.5, 0.3, 0.2]))
        ev: dict[str, Any] = {"event_id": f"{seed}-{i}", "model": "m", "model_version": "1",
                              "task": "token-classification", "text": f"text {i % 1000:03d}", "split": split,
                              "timestamp": 1.7e9 + i * 0.01, "embedding": emb.tolist(),
                              "entities": [{"label": label, "score": 0.9, "start": 0, "end": 4}],
                              "tokens": [{"text": "text", "tag": "NOUN"}, {"text": str(i), "tag": "NUM"}]}
        out.append(json.dumps(ev).encode())
    return out


def alarms_of(ms: MonitorSet, lines: list[bytes], batch: int = 250) -> list[Any]:
    got = []
    for i in range(0, len(lines), batch):
        got += [(a.signal, a.position + i, a.label) for a in ms.process_lines(lines[i:i + batch]).alarms]
    return got


def test_a_five_percent_sub_population_raises_the_outlier_share_and_nothing_before() -> None:
    ms = MonitorSet(MonitorConfig(calibration_splits=2))
    ms.process_lines(demo_lines(1500, 1, split="reference"))
    got = alarms_of(ms, demo_lines(3000, 2, new_from=1500, share=0.05))
    assert [a for a in got if a[1] < 1500] == []
    outliers = [a[1] for a in got if a[0] == "embedding_outliers"]
    assert outliers and outliers[0] - 1500 < 800, got
    report = ms.report()["m/1"]["signals"]["embedding_outliers"]["evidence"]
    assert report["counted"] and report["windows"][-1]["share"] > report["expected_share"]


def test_a_new_entity_label_at_a_few_percent_is_named() -> None:
    ms = MonitorSet(MonitorConfig(calibration_splits=2))
    ms.process_lines(demo_lines(1500, 3, split="reference"))
    got = alarms_of(ms, demo_lines(3000, 4, new_from=1500, share=0.04, new_label="LAW"))
    share = [a for a in got if a[0] == "entity_label_share"]
    assert [a for a in got if a[1] < 1500] == []
    assert share and share[0][1] - 1500 < 1000 and share[0][2] == "__other__", got  # LAW: never in the reference
    ev = ms.report()["m/1"]["signals"]["entity_label_share"]["evidence"]
    assert ev["label"] == "__other__" and ev["rising_labels"][0]["score"] > 1
