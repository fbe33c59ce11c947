"""What the model pages show, against brute-force oracles: score history, lowest-confidence and
smallest-margin examples, per-label confidence quantiles, the projection and the nearest-reference lookup.
Every figure must not depend on how the stream was split into batches, and must survive a restore."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest

from nlpmon.demo import SyntheticStream
from nlpmon.events import decode_event
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.examples import QUANTILE_LEVELS
from nlpmon.monitor.history import ScoreHistory
from nlpmon.monitor.monitor_set import MonitorSet
from tests.support import f32_matmul_atol, f32_sum_rtol

CONFIG = MonitorConfig(calibration_splits=2, distribution_windows=(50, 100, 200), embedding_windows=(5, 20, 100),
                       block_events=25, history_points=10, history_events_per_point=20, projection_points=60,
                       outlier_examples=5, confidence_sample=300, display_sample=120)
KEY = "demo-ner/1"
N_REF, N_PROD, DRIFT_AT = 400, 420, 650  # the stream index counts reference events too: drift at event 250
EMBEDDING_DIM = SyntheticStream().dim


def stream_lines(seed: int = 11) -> tuple[list[bytes], list[bytes]]:
    s = SyntheticStream(seed=seed, drift_at=DRIFT_AT)
    ref = [json.dumps(e).encode() for e in s.events(N_REF, "reference")]
    return ref, [json.dumps(e).encode() for e in s.events(N_PROD)]


def run(batch: int) -> tuple[MonitorSet, list[dict[str, tuple[float, bool]]]]:
    """Replay in batches of ``batch``; return the monitor and every monitored event's (score, flag) per
    signal as the monitor computed them (what it hands its score history), checked after each batch
    against the monitor's current ``scores`` and ``flags``."""
    ref, prod = stream_lines()
    ms = MonitorSet(CONFIG)
    ms.process_lines(ref)
    handed: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = []
    original = ScoreHistory.add

    def spy(self: ScoreHistory, first_event: int, times: np.ndarray, ratios: dict[str, np.ndarray],
            flags: dict[str, np.ndarray]) -> None:
        handed.append(({k: np.array(v) for k, v in ratios.items()}, {k: np.array(v) for k, v in flags.items()}))
        original(self, first_event, times, ratios, flags)

    seen: list[dict[str, tuple[float, bool]]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ScoreHistory, "add", spy)
        for i in range(0, len(prod), batch):
            handed.clear()
            ms.process_lines(prod[i:i + batch])
            for ratios, flags in handed:
                seen += [{s: (float(ratios[s][j]), bool(flags[s][j])) for s in ratios}
                         for j in range(len(next(iter(ratios.values()))))]
            rep = ms.monitors[("demo-ner", "1")]
            assert seen[-1] == {n: (rep.scores[n]["score"], rep.flags[n]) for n in rep.windows}
    assert len(seen) == len(prod)
    return ms, seen


@pytest.fixture(scope="module")
def one_by_one() -> tuple[MonitorSet, list[dict[str, Any]]]:
    return run(1)


@pytest.fixture(scope="module")
def batched_run() -> tuple[MonitorSet, list[dict[str, Any]]]:
    return run(97)


@pytest.fixture(scope="module")
def batched(batched_run: tuple[MonitorSet, list[dict[str, Any]]]) -> MonitorSet:
    return batched_run[0]


def test_history_is_the_bucket_maximum_of_every_event_score(
        one_by_one: tuple[MonitorSet, list[dict[str, Any]]],
        batched_run: tuple[MonitorSet, list[dict[str, Any]]]) -> None:
    E, P = CONFIG.history_events_per_point, CONFIG.history_points
    times = [json.loads(x)["timestamp"] for x in stream_lines()[1]]
    for ms, seen in (one_by_one, batched_run):
        n = len(seen)
        buckets = [list(range(b * E, min((b + 1) * E, n))) for b in range((n - 1) // E + 1)][-P:]
        h = ms.report()[KEY]["history"]
        assert h["points"] == P == len(h["event"])  # capped: the older buckets fell off
        assert h["event"] == [b[-1] for b in buckets]
        assert h["time"] == [max(times[i] for i in b) for b in buckets]  # event times, exact
        for name, sig in h["signals"].items():
            # the maxima of this run's own event scores, whatever the batch split: exact
            assert sig["score"] == [max(seen[i][name][0] for i in b) for b in buckets], name
            assert sig["drift"] == [any(seen[i][name][1] for i in b) for b in buckets], name
    # Across batch shapes the event scores differ only by float32 rounding, and only where float32 enters:
    # the embedding rows are float32 dot products over the embedding's coordinates (their order depends on
    # the batch shape through BLAS), the score is normalised so that the threshold is 1.0, so they agree
    # within dim * eps relative to max(|score|, 1). The other signals' rows are integer counts: exact.
    tol = f32_sum_rtol(EMBEDDING_DIM)
    a, b = one_by_one[1], batched_run[1]
    for name in a[0]:
        sa, sb = [e[name][0] for e in a], [e[name][0] for e in b]
        if name in ("embedding", "embedding_clusters"):  # clusters: directions of the float32 embedding rows
            assert sb == pytest.approx(sa, rel=tol, abs=tol), name
        else:
            assert sb == sa, name
    # no score lies within that rounding of the threshold, so the drift decisions agree exactly
    assert min(abs(e["embedding"][0] - 1.0) for e in a) > tol
    assert [[e[s][1] for s in e] for e in b] == [[e[s][1] for s in e] for e in a]
    drifted = one_by_one[0].report()[KEY]["history"]["signals"]["embedding"]
    assert drifted["drift"][-1] and max(drifted["score"]) > 1.0  # the drift at event 250 shows
    rep = batched_run[0].report()[KEY]
    assert rep["throughput"]["events_per_second"] == pytest.approx(100.0, rel=1e-6)  # the stream's 100 ev/s


def events_of(lines: list[bytes]) -> list[Any]:
    return [decode_event(x) for x in lines]


def test_lowest_confidence_equals_the_brute_force_over_the_recent_buckets(
        one_by_one: tuple[MonitorSet, list[dict[str, Any]]], batched: MonitorSet) -> None:
    prod = events_of(stream_lines()[1])
    bucket, k = CONFIG.block_events, CONFIG.outlier_examples
    oldest = (len(prod) - 1) // bucket - (max(CONFIG.distribution_windows) // bucket) + 1
    cands = [(min(x.score for x in e.entities), i) for i, e in enumerate(prod)
             if e.entities and i // bucket >= oldest]
    want = sorted(cands)[:k]
    for ms in (one_by_one[0], batched):
        got = ms.report()[KEY]["examples"]["lowest_confidence"]
        assert [(g["score"], g["index"]) for g in got] == want
        assert [g["event_id"] for g in got] == [prod[i].event_id for _, i in want]
        assert all(g["nearest_reference"] for g in got)


def test_confidence_quantiles_per_label_equal_numpy(batched: MonitorSet) -> None:
    prod = events_of(stream_lines()[1])
    scored = [(x.label, x.score) for e in prod for x in e.entities][-CONFIG.confidence_sample:]
    rows = {r["label"]: r for r in batched.report()[KEY]["confidence_by_label"]["labels"]}
    for label in {lab for lab, _ in scored}:
        vals = np.array([s for lab, s in scored if lab == label])
        assert rows[label]["current_count"] == vals.size
        assert rows[label]["current"] == pytest.approx(np.quantile(vals, QUANTILE_LEVELS).tolist())
    ordered = [abs(r["median_change"]) for r in batched.report()[KEY]["confidence_by_label"]["labels"]
               if r["median_change"] is not None]
    assert len(ordered) >= 3 and ordered == sorted(ordered, reverse=True)


def test_projection_and_nearest_reference_match_numpy(batched: MonitorSet) -> None:
    mon = batched.monitors[("demo-ner", "1")]
    rep = batched.report()[KEY]
    proj = rep["projection"]
    feat = mon.profile.signals["embedding"].featurizer
    sample = mon.profile.sample
    ref_emb = np.asarray(sample.columns()["embedding"].values, np.float32)
    assert proj["reference_events"] == len(proj["reference"]["x"]) == ref_emb.shape[0] == CONFIG.display_sample
    # float32 products over the embedding's coordinates: equal up to their summation-order bound
    ref_xy = np.column_stack([proj["reference"]["x"], proj["reference"]["y"]])
    assert np.all(np.abs(ref_xy - feat.project2d(ref_emb)) <= f32_matmul_atol(ref_emb - feat.mean,
                                                                             feat.components[:, :2]))
    prod = events_of(stream_lines()[1])
    last = prod[-CONFIG.projection_points:]
    assert proj["current"]["event_id"] == [e.event_id for e in last]
    cur = np.vstack([e.embedding for e in last])
    cur_xy = np.column_stack([proj["current"]["x"], proj["current"]["y"]])
    assert np.all(np.abs(cur_xy - feat.project2d(cur)) <= f32_matmul_atol(cur - feat.mean, feat.components[:, :2]))
    # oracle: float64 distances in the principal subspace, all pairs
    basis = feat._unit_basis()
    a = (cur - feat.mean).astype(np.float64) @ basis.astype(np.float64)
    b = (ref_emb - feat.mean).astype(np.float64) @ basis.astype(np.float64)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))
    # The page computes the subspace coordinates in float32 (each off by at most the bound below) and the
    # distances from them in float64 as |a|^2 + |b|^2 - 2 a.b (off by k * eps64 * (|a| + |b|)^2 in d^2).
    da = np.linalg.norm(f32_matmul_atol(cur - feat.mean, basis), axis=1)
    db = np.linalg.norm(f32_matmul_atol(ref_emb - feat.mean, basis), axis=1)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    eps64 = float(np.finfo(np.float64).eps)
    tol = da[:, None] + db[None, :] + np.sqrt((feat.k + 2) * eps64) * (na[:, None] + nb[None, :])
    got = np.array(proj["current"]["nearest"])
    assert got.shape == (len(last), 3) and all(len(set(row)) == 3 for row in got.tolist())
    got_d = np.take_along_axis(d, got, 1)
    got_tol = np.take_along_axis(tol, got, 1)
    assert np.all(np.abs(np.array(proj["current"]["distance"]) - got_d) <= got_tol)
    # the neighbours are the three nearest up to that rounding: the j-th is the j-th nearest ...
    order = np.argsort(d, axis=1, kind="stable")
    best_d = np.take_along_axis(d, order[:, :3], 1)
    row_tol = 2 * (da + db.max() + np.sqrt((feat.k + 2) * eps64) * (na + nb.max()))
    assert np.all(np.abs(got_d - best_d) <= row_tol[:, None])
    # ... and exactly the oracle's wherever the ranking is decided by more than rounding
    gaps = np.diff(np.take_along_axis(d, order[:, :4], 1), axis=1)
    clear = np.all(gaps > row_tol[:, None], axis=1)
    assert clear.mean() > 0.5, row_tol.max()  # most rows: a worst-case bound is far above the real error
    assert got[clear].tolist() == order[clear, :3].tolist()
    # after the drift, the recent points lie outside the reference (out-of-sample percentiles)
    assert proj["percentile_scale"] == "out-of-sample"
    pct = np.array(proj["current"]["percentile"])
    assert np.mean(pct >= 0.9) > 0.95 and np.mean(pct >= 0.99) > 0.7
    assert all(o["nearest_reference"] for o in rep["outliers"])


def test_a_stationary_stream_is_mostly_inside_the_reference() -> None:
    s = SyntheticStream(seed=5)
    ref = [json.dumps(e).encode() for e in s.events(N_REF, "reference")]
    s.rng = np.random.default_rng(99)  # same domains, other draws
    ms = MonitorSet(CONFIG)
    ms.process_lines(ref)
    ms.process_lines([json.dumps(e).encode() for e in s.events(300)])
    pct = np.array(ms.report()[KEY]["projection"]["current"]["percentile"])
    assert np.mean(pct >= 0.99) < 0.1 and np.mean(pct >= 0.9) < 0.3


def classification_lines(n: int, seed: int, split: str = "production") -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = rng.dirichlet([2.0, 1.0, 1.0])
        probs = dict(zip(("POS", "NEG", "NEU"), (round(float(x), 4) for x in p), strict=True))
        label = max(probs, key=probs.__getitem__)
        emb = rng.standard_normal(16).astype("<f4")
        out.append(json.dumps({"event_id": f"{split}-{i}", "model": "clf", "task": "text-classification",
                               "split": split, "text": f"text <b>{i}</b>", "timestamp": 1.7e9 + i,
                               "embedding": {"dtype": "float32", "base64": base64.b64encode(emb.tobytes()).decode()},
                               "prediction": {"label": label, "score": probs[label], "probabilities": probs}}
                              ).encode())
    return out


def test_smallest_margin_for_text_classification_equals_the_brute_force() -> None:
    ref, prod = classification_lines(300, 1, "reference"), classification_lines(230, 2)
    results = []
    for batch in (230, 17):
        ms = MonitorSet(CONFIG)
        ms.process_lines(ref)
        for i in range(0, len(prod), batch):
            ms.process_lines(prod[i:i + batch])
        results.append(ms.report()["clf/unversioned"]["examples"])
    margins = []
    for i, raw in enumerate(prod):
        top = sorted(json.loads(raw)["prediction"]["probabilities"].values(), reverse=True)
        margins.append((top[0] - top[1], i))
    bucket = CONFIG.block_events
    oldest = (len(prod) - 1) // bucket - (max(CONFIG.distribution_windows) // bucket) + 1
    want = sorted(m for m in margins if m[1] // bucket >= oldest)[:CONFIG.outlier_examples]
    for ex in results:
        assert ex["margin_available"] is True and ex["margin_note"] is None
        got = ex["smallest_margin"]
        assert [(g["score"], g["index"]) for g in got] == want
        assert got[0]["top_two"][0]["probability"] - got[0]["top_two"][1]["probability"] == pytest.approx(
            got[0]["score"])
        assert got[0]["prediction"]["label"] == got[0]["top_two"][0]["label"]


def test_margins_are_said_unavailable_for_ner(batched: MonitorSet) -> None:
    ex = batched.report()[KEY]["examples"]
    assert ex["margin_available"] is False and ex["smallest_margin"] == []
    assert "prediction.probabilities" in ex["margin_note"]


def test_restore_keeps_decisions_and_refills_the_in_memory_evidence(batched: MonitorSet) -> None:
    restored = MonitorSet(CONFIG)
    restored.restore(batched.snapshot())
    rep = restored.report()[KEY]
    assert rep["history"]["points"] == 0 and rep["examples"]["lowest_confidence"] == []
    assert rep["projection"]["reference_events"] == CONFIG.display_sample  # the reference side is in the profile
    assert rep["projection"]["current_events"] == 0
    assert rep["signals"]["embedding"]["drift"] == batched.report()[KEY]["signals"]["embedding"]["drift"]
    # an old snapshot: a profile state without the outlier quantiles still restores (in-sample fallback)
    mon = restored.monitors[("demo-ner", "1")]
    state = mon.state()
    state["profile"].pop("outlier_quantiles")
    from nlpmon.monitor.model_monitor import ModelMonitor

    old = ModelMonitor.from_state(state, CONFIG)
    prod = stream_lines()[1]
    old.process([decode_event(x) for x in prod[:30]])
    proj = old.report()["projection"]
    assert proj["percentile_scale"].startswith("in-sample") and proj["current_events"] == 30
