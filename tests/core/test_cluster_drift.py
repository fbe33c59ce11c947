"""embedding_clusters against brute-force oracles: the pairwise agreement of marked directions at every
marking level of the ladder over windows for any batch split, its rows, its calibration's false-alarm rate
on fresh null windows, a snapshot round-trip, and a clustered sub-population that the count of outliers
does not see."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from nlpmon.drift.clusters import MIN_MARKED_HELD_OUT, ClusterFeaturizer, marking_threshold, usable_levels
from nlpmon.drift.embedding import EmbeddingFeaturizer
from nlpmon.drift.featurizers import event_rows
from nlpmon.drift.items import ItemColumn
from nlpmon.drift.signal import (
    CLUSTER_BLOCK,
    SignalModel,
    SignalWindow,
    calibrate_cluster_signal,
    cluster_event_rows,
    resample_cluster_sums,
)
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.monitor.signals import SIGNALS


def brute_statistic(z: np.ndarray, scores: np.ndarray, event: np.ndarray, lo: int, hi: int, tau: float,
                    level: float, k: int) -> float:
    """Sum over ordered pairs of distinct items of events lo..hi-1 marked at ``tau`` of the cosine of their
    first k coordinates, over max(items * level, 1); one pair at a time."""
    idx = [i for i in range(event.size) if lo <= event[i] < hi]
    marked = [i for i in idx if scores[i] >= tau and np.linalg.norm(z[i, :k]) > 0]
    total = 0.0
    for i in marked:
        for j in marked:
            if i != j:
                a, b = z[i, :k], z[j, :k]
                total += float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return total / max(len(idx) * level, 1.0) if idx else 0.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cluster_statistic_over_windows_equals_a_pairwise_recomputation_for_any_batch_split(seed: int) -> None:
    """Every (window, level) of a three-level ladder: the streamed score (the largest statistic/threshold
    over windows and levels) equals the brute-force pairs of each level's window, for a random batch split."""
    rng = np.random.default_rng(seed)
    k, n, windows = 6, 400, (20, 50, 100)
    feat = ClusterFeaturizer(taus=(1.6, 1.0, 0.3), levels=(0.05, 0.1, 0.3), k=k)
    thr = np.array([[4.0, 3.0, 6.0], [3.5, 3.0, 5.0], [3.0, 2.5, 4.0]])  # (windows, levels)
    model = SignalModel("embedding_clusters", feat, windows, thr, 1e-4, 1000)
    has = rng.random(n) < 0.9  # some events carry no embedding
    event = np.flatnonzero(has).astype(np.int64)
    z = rng.standard_normal((event.size, k + 3))  # extra columns beyond k are ignored
    new = event > 250  # a sub-population pointing one way arrives at event 250
    z[new, :k] += 3.0 * np.eye(k)[0]
    z[rng.random(event.size) < 0.02] = 0.0  # items without a direction: marked, but no pairs
    scores = np.where(new, rng.normal(1.2, 0.5, event.size), rng.normal(0.0, 1.0, event.size))
    scores[rng.random(event.size) < 0.02] = np.nan
    column = ItemColumn(event, np.concatenate([z, scores[:, None]], axis=1))
    rows, items = event_rows(feat, column, n)
    win = SignalWindow(model, 50, None)
    cuts = np.sort(rng.choice(np.arange(1, n), size=9, replace=False))
    bounds = list(zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [n]]), strict=True))
    ups = [win.update_rows(rows[a:b], items[a:b], np.full(b - a, np.nan)) for a, b in bounds]
    got = np.concatenate([u.ratio for u in ups])
    got_stat = np.concatenate([u.stat for u in ups])
    # the monitor's path: only the events with a marked item, never an (n, F) array
    sparse_win = SignalWindow(model, 50, None)
    got_sparse = []
    for a, b in bounds:
        sel = (event >= a) & (event < b)
        positions, values = feat.marked_rows(z[sel], scores[sel], event[sel] - a)
        assert positions.size <= b - a and np.array_equal(values, rows[a:b][positions])
        got_sparse.append(sparse_win.update_sparse(int(b - a), positions, values, items[a:b],
                                                   np.full(b - a, np.nan)).ratio)
    assert np.concatenate(got_sparse) == pytest.approx(got, abs=1e-9)
    want = np.zeros(n)
    want_stat = np.zeros(n, dtype=np.int64)
    for i in range(n):
        end = (i + 1) // CLUSTER_BLOCK * CLUSTER_BLOCK  # judged as of the last closed block of 10
        vals = [(brute_statistic(z, scores, event, end - w, end, tau, q, k) / thr[j, lv], lv)
                for j, w in enumerate(windows) if end >= w
                for lv, (tau, q) in enumerate(zip(feat.taus, feat.levels, strict=True))]
        if vals:
            want[i], want_stat[i] = max(vals)
    # sums of O(10^2) float64 products of unit vectors: agreement to 1e-9 absolute is ample
    assert got == pytest.approx(want, abs=1e-9)
    # the level behind the score, where one level is clearly ahead of the others
    assert np.array_equal(got_stat[want > 0.5], want_stat[want > 0.5])
    assert got[300:].max() > 3 * want[:250].max()  # the statistic sees the cluster arrive
    assert feat.stat_names == ("cluster_pairs@0.05", "cluster_pairs@0.1", "cluster_pairs@0.3")


def test_item_rows_mark_each_level_at_its_tau_and_carry_unit_directions() -> None:
    feat = ClusterFeaturizer(taus=(3.0, 2.0), levels=(0.02, 0.05), k=2)
    z = np.array([[3.0, 4.0, 9.0], [1.0, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 2.0, 0.0], [0.0, -1.0, 0.0]])
    rows = feat.item_rows(z, np.array([2.0, 1.99, 7.0, np.nan, 3.0]))
    assert rows.tolist() == [[0.0] * 4 + [1.0, 0.6, 0.8, 1.0],  # marked at the wide level only
                             [0.0] * 8,
                             [1.0, 0.0, 0.0, 0.0] * 2,  # marked at both, no direction
                             [0.0] * 8,
                             [1.0, 0.0, -1.0, 1.0] * 2]  # marked at both (its score is the narrow tau)
    # two marked items pointing the same way in a window of 10 items: 2 ordered pairs / max(10 q, 1) = 2
    sums = np.array([[2.0, 1.2, 1.6, 2.0, 2.0, 1.2, 1.6, 2.0]])
    assert feat.statistics(sums, np.array([10.0])) == pytest.approx(np.array([[2.0, 2.0]]))
    assert feat.statistics(sums, np.array([100.0])) == pytest.approx(np.array([[1.0, 0.4]]))
    assert feat.statistics(sums, np.array([0.0])).tolist() == [[0.0, 0.0]]
    assert feat.window_report(sums[0], 100.0, 0) == {"items": 100, "marked": 2, "expected_marked": 2.0,
                                                     "mean_pair_cosine": pytest.approx(1.0)}
    assert feat.window_report(sums[0], 100.0)["expected_marked"] == 5.0  # default: the widest level
    with pytest.raises(ValueError, match="ascending"):
        ClusterFeaturizer(taus=(2.0, 3.0), levels=(0.05, 0.02), k=2)


def test_event_rows_sum_the_item_rows_of_each_event_with_several_items_per_event() -> None:
    rng = np.random.default_rng(8)
    feat = ClusterFeaturizer(taus=(1.0, 0.0), levels=(0.1, 0.3), k=4)
    event = np.sort(rng.integers(0, 30, 120))  # several items per event, some events without any
    z = rng.standard_normal((120, 5))
    scores = rng.standard_normal(120)
    got = feat.event_rows(z, scores, event, 30)
    items = feat.item_rows(z, scores)
    want = np.zeros((30, feat.n_features))
    for i, e in enumerate(event):  # one item at a time
        want[e] += items[i]
    assert got == pytest.approx(want, abs=1e-12)
    one = np.arange(0, 60, 2)  # one item per event (the document embeddings' case), events 0, 2, 4, ...
    assert np.array_equal(feat.event_rows(z[:30], scores[:30], one, 60)[one], items[:30])


def test_narrow_levels_are_judged_only_when_the_held_out_half_expects_enough_marked_events() -> None:
    assert usable_levels((0.05, 0.02), 3000) == ((0.02, 0.05), ())  # 0.02 * 1,500 = 30
    assert usable_levels((0.02, 0.05), 2000) == ((0.02, 0.05), ())  # 0.02 * 1,000 = 20
    assert usable_levels((0.02, 0.05), 1000) == ((0.05,), (0.02,))  # 0.02 * 500 = 10
    assert usable_levels((0.02, 0.05), 300) == ((0.05,), (0.02,))  # the widest level always
    assert MIN_MARKED_HELD_OUT == 20
    with pytest.raises(ValueError, match="at least one"):
        usable_levels((), 3000)


def test_marking_threshold_is_the_conformal_order_statistic() -> None:
    s = np.arange(100, dtype=np.float64)
    assert marking_threshold(s, 0.05) == 94.0  # k = ceil(0.05 * 101) = 6: the 6th largest
    with pytest.raises(ValueError, match="at least 20"):
        marking_threshold(s[:10], 0.05)


def clustered(n: int, rng: np.random.Generator, offset: np.ndarray | None = None) -> np.ndarray:
    """Unit-norm embeddings near a 10-dimensional subspace of R^64 (``offset``: a new sub-population)."""
    basis = np.linalg.qr(np.random.default_rng(99).standard_normal((64, 10)))[0]
    x = rng.standard_normal((n, 10)) @ basis.T * 0.3 + rng.standard_normal((n, 64)) * 0.05
    if offset is not None:
        x = x + offset
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_calibrated_thresholds_hold_their_rate_on_fresh_null_windows() -> None:
    """At a rate high enough to count (1e-2 per event, split over 3 windows and 2 levels), fresh windows of
    new events from the reference's distribution exceed each (window, level)'s threshold at most at about
    that rate, averaged over references (each reference's own rate is random: its thresholds are estimates)."""
    windows = (20, 50, 100)
    rates: list[list[float]] = [[], []]
    for seed in range(4):
        rng = np.random.default_rng(seed)
        ref = clustered(1000, rng)
        emb = EmbeddingFeaturizer.fit(ref, 8, 32, rng)
        model = calibrate_cluster_signal("embedding_clusters", emb, ItemColumn(np.arange(1000), ref), 1000,
                                         windows=windows, false_alarm_rate=1e-2, levels=(0.05, 0.1), splits=3,
                                         rng=rng)
        assert model.windows == windows and model.thresholds.shape == (3, 2)
        feat = model.featurizer
        assert isinstance(feat, ClusterFeaturizer) and feat.levels == (0.05, 0.1)
        new = clustered(30000, rng)
        rows, items = cluster_event_rows(feat, emb, ItemColumn(np.arange(30000), new), 30000)
        for j, w in enumerate(windows):
            sums = rows.reshape(-1, w, rows.shape[1]).sum(axis=1)  # disjoint windows: independent
            st = feat.statistics(sums, items.reshape(-1, w).sum(axis=1))
            for lv in range(2):
                rates[lv].append(float(np.mean(st[:, lv] > model.thresholds[j, lv])))
    per_test = 1e-2 / (len(windows) * 2)
    assert model.calibration["tail_probability_per_test"] == pytest.approx(per_test)
    for lv in range(2):
        assert np.mean(rates[lv]) < 2.5 * per_test, (lv, rates)


def test_snapshot_round_trip_keeps_the_cluster_model() -> None:
    rng = np.random.default_rng(4)
    ref = clustered(600, rng)
    emb = EmbeddingFeaturizer.fit(ref, 8, 32, rng)
    model = calibrate_cluster_signal("embedding_clusters", emb, ItemColumn(np.arange(600), ref), 600,
                                     windows=(20, 50, 100, 1000), false_alarm_rate=1e-6, levels=(0.07, 0.15),
                                     splits=2, rng=rng)
    assert model.calibration["windows_not_evaluated"] == [1000]  # longer than the held-out half
    assert model.calibration["marking_levels"] == [0.07, 0.15] and model.thresholds.shape == (3, 2)
    back = SignalModel.from_state(json.loads(json.dumps(model.state(), default=lambda a: a.tolist())))
    assert back.featurizer == model.featurizer and back.windows == model.windows
    assert np.array_equal(back.thresholds, model.thresholds)
    # a one-level featurizer saved before the ladder loads as a ladder of one
    old = ClusterFeaturizer.from_state({"tau": 1.5, "level": 0.05, "k": 8})
    assert old == ClusterFeaturizer((1.5,), (0.05,), 8) and old.n_features == 10


def demo_lines(n: int, seed: int, *, split: str = "production", new_from: int | None = None,
               share: float = 0.0) -> list[bytes]:
    """Synthetic NER events; from ``new_from`` on each event is, with probability ``share``, from a new
    sub-population: reference-like texts shifted one way out of the reference's subspace, by so little that
    only about half of them are beyond the reference's 95th percentile (and 1 in 9 beyond its 99.5th)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(99).standard_normal((64, 10)))[0]
    away = np.random.default_rng(7).standard_normal(64)
    away -= basis @ (basis.T @ away)
    away *= 0.4 / np.linalg.norm(away)
    out = []
    for i in range(n):
        new = new_from is not None and i >= new_from and rng.random() < share
        emb = clustered(1, rng, away if new else None)[0]
        ev: dict[str, Any] = {"event_id": f"{seed}-{i}", "model": "m", "model_version": "1",
                              "task": "token-classification", "text": f"text {i % 1000:03d}", "split": split,
                              "timestamp": 1.7e9 + i * 0.01, "embedding": emb.tolist(),
                              "entities": [{"label": "PERSON", "score": 0.9, "start": 0, "end": 4}],
                              "tokens": [{"text": "text", "tag": "NOUN"}]}
        out.append(json.dumps(ev).encode())
    return out


def test_a_clustered_sub_population_is_caught_by_embedding_clusters_and_nothing_before() -> None:
    ms = MonitorSet(MonitorConfig(calibration_splits=3))
    ms.process_lines(demo_lines(2000, 1, split="reference"))
    got = []
    lines = demo_lines(3500, 2, new_from=1500, share=0.1)
    for i in range(0, len(lines), 250):
        got += [(a.signal, a.position + i) for a in ms.process_lines(lines[i:i + 250]).alarms]
    assert [a for a in got if a[1] < 1500] == []
    clusters = [a[1] for a in got if a[0] == "embedding_clusters"]
    assert clusters and clusters[0] - 1500 < 1500, got
    outliers = [a[1] for a in got if a[0] == "embedding_outliers"]
    assert not outliers or outliers[0] > clusters[0], got  # the count of outliers sees it later or never
    ev = ms.report()["m/1"]["signals"]["embedding_clusters"]["evidence"]
    last = ev["windows"][-1]
    assert ev["marking_levels"] == [0.02, 0.05]  # the default ladder: a 2,000-event reference judges both
    assert {w["level"] for w in ev["windows"]} == {0.02, 0.05}
    assert last["level"] == 0.05 and last["mean_pair_cosine"] > 0.05 and last["marked"] > 0


@pytest.mark.parametrize("window", [5, 100])  # the gather path and the multiplicity-matrix path
def test_resampled_windows_drop_exactly_the_pairs_of_an_event_with_its_copies(window: int) -> None:
    rng = np.random.default_rng(11)
    feat = ClusterFeaturizer(taus=(0.7, 0.5), levels=(0.1, 0.2), k=3)
    n = 40
    rows = feat.item_rows(rng.standard_normal((n, 3)), rng.random(n))
    items = np.ones(n)
    pair_columns = (feat.width - 1, 2 * feat.width - 1)
    sums, its = resample_cluster_sums(rows, items, window, 30, np.random.default_rng(5), pair_columns)
    idx = np.random.default_rng(5).integers(0, n, (30, window))  # the same draws
    for s, t, draw in zip(sums, its, idx, strict=True):
        got = feat.statistics(s[None, :], np.array([t]))[0]
        for lv, q in enumerate(feat.levels):
            u = rows[:, lv * feat.width + 1:(lv + 1) * feat.width - 1]
            pairs = sum(float(u[a] @ u[b]) for p, a in enumerate(draw) for r, b in enumerate(draw)
                        if a != b)  # pairs of distinct events only (two draws of one event: not a pair)
            # float32 sums of <= 100 unit-scale terms (resample_window_sums): 1e-4 relative is ample
            assert got[lv] == pytest.approx(pairs / max(t * q, 1.0), rel=1e-4, abs=1e-4)
            assert s[lv * feat.width] == pytest.approx(rows[draw, lv * feat.width].sum())
        assert t == window


def test_restore_mid_stream_equals_uninterrupted_with_the_ladder() -> None:
    """A monitor restored from a snapshot taken mid-block (685 = 68 blocks of 10 + 5) and fed the same batches
    raises the same embedding_clusters alarms and reports the same windows, both levels judged."""
    keep = ("embedding", "embedding_clusters")
    config = MonitorConfig(calibration_splits=2, disabled_signals=tuple(s.name for s in SIGNALS if s.name not in keep))
    ref = demo_lines(2000, 1, split="reference")
    data = demo_lines(1500, 2, new_from=500, share=0.2)
    batch, cut = 137, 685

    def feed(ms: MonitorSet, lines: list[bytes], offset: int) -> list[tuple[str, int]]:
        out = []
        for i in range(0, len(lines), batch):
            out += [(a.signal, a.position + i + offset) for a in ms.process_lines(lines[i:i + batch]).alarms]
        return out

    whole = MonitorSet(config)
    whole.process_lines(ref)
    a = feed(whole, data, 0)
    part = MonitorSet(config)
    part.process_lines(ref)
    b = feed(part, data[:cut], 0)
    resumed = MonitorSet(config)
    resumed.restore(part.snapshot())
    b += feed(resumed, data[cut:], cut)
    assert ("embedding_clusters" in {s for s, _ in a}) and a == b
    ra, rb = (m.report()["m/1"]["signals"]["embedding_clusters"] for m in (whole, resumed))
    assert ra["evidence"]["marking_levels"] == [0.02, 0.05]
    assert json.dumps(ra, sort_keys=True) == json.dumps(rb, sort_keys=True)
