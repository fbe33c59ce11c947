"""The per-model monitor on seeded synthetic streams with known change points."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nlpmon.demo import SyntheticStream
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.monitor.reference import ReferenceProfile
from tests.support import f32_sum_rtol

CONFIG = MonitorConfig(calibration_splits=3, auto_baseline_events=600, min_reference_events=200)


def lines(n: int, seed: int, drift_at: int | None = None, split: str = "production",
          ref_rng: int | None = None) -> list[bytes]:
    s = SyntheticStream(seed=seed, drift_at=drift_at)
    if ref_rng is not None:  # same domains, different draws
        s.rng = np.random.default_rng(ref_rng)
    return [json.dumps(e).encode() for e in s.events(n, split)]


def replay(ms: MonitorSet, data: list[bytes], batch: int = 500) -> list:
    alarms = []
    for i in range(0, len(data), batch):
        res = ms.process_lines(data[i:i + batch])
        alarms += [(a.signal, i + a.position) for a in res.alarms]
    return alarms


@pytest.fixture(scope="module")
def drift_run() -> tuple[MonitorSet, list]:
    ms = MonitorSet(CONFIG)
    ms.process_lines(lines(1000, 3, split="reference", ref_rng=99))
    alarms = replay(ms, lines(2500, 3, drift_at=1500))
    return ms, alarms


def test_detects_synthetic_drift_quickly_and_not_before(drift_run: tuple[MonitorSet, list]) -> None:
    ms, alarms = drift_run
    assert all(pos >= 1500 for _, pos in alarms), alarms
    first = {}
    for sig, pos in alarms:
        first.setdefault(sig, pos)
    assert first["embedding"] - 1500 <= 30
    assert first["entity_label"] - 1500 <= 300
    rep = ms.report()["demo-ner/1"]
    assert rep["status"] == "monitoring" and rep["signals"]["embedding"]["drift"]
    assert rep["signals"]["embedding"]["score"] > 1.0
    moved = rep["signals"]["entity_label"]["evidence"]["moved_labels"]
    assert moved and abs(moved[0]["change"]) >= abs(moved[-1]["change"])
    assert len(rep["outliers"]) == CONFIG.outlier_examples
    assert all(o["index"] >= 1500 for o in rep["outliers"])  # the new domain is the most unusual


def test_stationary_synthetic_stream_raises_no_alarm() -> None:
    ms = MonitorSet(CONFIG)
    ms.process_lines(lines(1000, 3, split="reference", ref_rng=99))
    assert replay(ms, lines(3000, 3)) == []


def test_auto_baseline_then_monitoring() -> None:
    ms = MonitorSet(CONFIG)
    data = lines(1800, 4, drift_at=1200)
    res = ms.process_lines(data[:599])
    assert ms.report()["demo-ner/1"]["status"] == "collecting_baseline" and not res.alarms
    alarms = replay(ms, data[599:], batch=300)
    rep = ms.report()["demo-ner/1"]
    assert rep["reference"]["source"] == "auto-baseline" and rep["reference"]["events"] == 600
    assert rep["monitored_events"] == 1200
    assert alarms and min(p for _, p in alarms) + 599 >= 1200


def test_too_small_reference_is_said_loudly() -> None:
    ms = MonitorSet(CONFIG)
    ms.process_lines(lines(50, 5, split="reference"))
    ms.process_lines(lines(10, 5))
    rep = ms.report()["demo-ner/1"]
    assert "fewer than min_reference_events=200" in rep["reference_error"]
    assert rep["status"] != "monitoring"


def test_invalid_events_are_rejected_with_reasons_and_the_rest_processed() -> None:
    ms = MonitorSet(CONFIG)
    good = lines(3, 6)
    bad_dim = json.loads(lines(1, 7)[0])
    bad_dim["embedding"] = [0.1] * 10
    batch = [good[0], b"{not json", good[1], json.dumps(bad_dim).encode(), None, good[2]]
    res = ms.process_lines(batch)
    assert res.accepted == 3
    assert [(r.position, r.reason) for r in res.rejected] == [(1, "malformed_json"), (3, "bad_embedding"),
                                                             (4, "malformed_json")]
    assert "differs" in res.rejected[1].detail


def test_snapshot_restore_mid_stream_equals_uninterrupted() -> None:
    """Restored mid-block (1130 = 22 blocks of 50 + 30) and fed the same batches as the uninterrupted run
    (113 events: 1130 is a batch boundary of both): the same float32 operations in the same order, so
    alarms and report agree exactly, floats included."""
    ref = lines(800, 8, split="reference", ref_rng=5)
    data = lines(1600, 8, drift_at=1000)
    batch, cut = 113, 1130
    whole = MonitorSet(CONFIG)
    whole.process_lines(ref)
    a = replay(whole, data, batch=batch)
    part = MonitorSet(CONFIG)
    part.process_lines(ref)
    b = replay(part, data[:cut], batch=batch)
    resumed = MonitorSet(CONFIG)
    resumed.restore(part.snapshot())
    b += [(s, p + cut) for s, p in replay(resumed, data[cut:], batch=batch)]
    assert a and a == b
    ra, rb = whole.report(), resumed.report()
    for r in (ra, rb):
        r["demo-ner/1"]["reference"].pop("calibration_seconds")  # wall time, not state
        r["demo-ner/1"].pop("events_processed_here")  # this process's work, not state
        for key in ("history", "throughput", "examples", "projection", "confidence_by_label"):
            r["demo-ner/1"].pop(key)  # in memory only, for the pages: refilled after a restore
        for o in r["demo-ner/1"]["outliers"]:
            o.pop("nearest_reference")  # the outliers' embeddings are in memory only, too
    assert_close_tree(ra, rb, tol=0.0)


# Report values that went through the embedding featurizer (float32 dot products over the embedding's
# coordinates, whose order BLAS picks by batch shape) agree across batch splits within dim * eps relative
# to max(|value|, 1): the statistics, scores and evidence are O(1)-scaled functions of window means of those
# rows (whitened coordinates, a ratio to a threshold of 1.0). See tests/support.py.
EMBEDDING_TOL = f32_sum_rtol(384)


def assert_close_tree(a: object, b: object, tol: float, path: str = "") -> None:
    """Equal structure and values: integers (event counts) and strings exactly; floats within ``tol``
    relative and absolute (``tol=0``: exactly, NaN equal to NaN)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            assert_close_tree(a[k], b[k], tol, f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close_tree(x, y, tol, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=tol, abs=tol, nan_ok=True), path
    else:
        assert a == b, path


def test_profile_save_load_gives_the_same_decisions(tmp_path) -> None:
    ms = MonitorSet(CONFIG)
    ms.process_lines(lines(800, 9, split="reference", ref_rng=1))
    data = lines(1500, 9, drift_at=900)
    a = replay(ms, data)
    prof = ms.monitors[("demo-ner", "1")].profile
    assert prof is not None
    prof.save(tmp_path / "p.nlpmon")
    loaded = ReferenceProfile.load(tmp_path / "p.nlpmon")
    ms2 = MonitorSet(CONFIG, {("demo-ner", "1"): loaded})
    assert replay(ms2, data) == a


def test_models_are_monitored_separately() -> None:
    ms = MonitorSet(CONFIG)
    a = [json.dumps(dict(json.loads(x), model="a")).encode() for x in lines(700, 10)]
    b = [json.dumps(dict(json.loads(x), model="b", model_version="2")).encode() for x in lines(300, 11)]
    ms.process_lines([x for pair in zip(a, b, strict=False) for x in pair] + a[300:])
    rep = ms.report()
    assert set(rep) == {"a/1", "b/2"}
    assert rep["a/1"]["events"]["production"] == 700
    assert rep["a/1"]["status"] == "monitoring" and rep["a/1"]["monitored_events"] == 100
    assert rep["b/2"]["events"]["production"] == 300
    assert rep["b/2"]["status"] == "collecting_baseline"


def test_state_does_not_grow_with_the_number_of_events() -> None:
    """RELIABILITY 11: per-model memory is bounded (window sums, not events)."""
    ms = MonitorSet(CONFIG)
    ms.process_lines(lines(800, 12, split="reference", ref_rng=3))
    data = lines(6000, 12)
    replay(ms, data[:2000])
    size_2k = len(ms.snapshot())
    replay(ms, data[2000:])
    size_6k = len(ms.snapshot())
    assert size_6k <= size_2k * 1.02, (size_2k, size_6k)


def test_entity_and_document_embeddings_have_separate_sizes() -> None:
    ms = MonitorSet(CONFIG)
    e = json.loads(lines(1, 13)[0])
    e["entities"] = [{"label": "PER", "score": 0.9, "embedding": [0.1] * 8}]
    assert ms.process_lines([json.dumps(e).encode()]).rejected == []  # 384-d document, 8-d entity: fine
    e["event_id"] = "other"
    e["entities"][0]["embedding"] = [0.1] * 9
    rej = ms.process_lines([json.dumps(e).encode()]).rejected
    assert [(r.reason, r.detail.split(":")[0]) for r in rej] == [("bad_embedding", "entities[0].embedding")]


def test_auto_baseline_sample_is_released_after_calibration() -> None:
    ms = MonitorSet(CONFIG)
    data = lines(700, 14)
    ms.process_lines(data[:599])
    collecting = len(ms.snapshot())
    ms.process_lines(data[599:])
    assert ms.report()["demo-ner/1"]["status"] == "monitoring"
    assert len(ms.snapshot()) < collecting  # the 600-event baseline is no longer carried in the state


def test_embedding_size_is_per_model_version_and_bad_reference_events_are_skipped() -> None:
    v1 = lines(3, 15)
    v2 = [json.dumps(dict(json.loads(x), model_version="2", embedding=[0.5] * 16)).encode() for x in lines(3, 16)]
    ms = MonitorSet(CONFIG)
    res = ms.process_lines(v1 + v2)
    assert res.accepted == 6 and res.rejected == []
    # a reference file whose embeddings have another size than production: skipped, never raised
    from nlpmon.events import decode_event

    ref = [decode_event(x) for x in lines(300, 17, split="reference")]
    bad = decode_event(json.dumps(dict(json.loads(lines(1, 18)[0]), embedding=[0.1] * 7)))
    ms2 = MonitorSet(CONFIG, reference_events=[bad, *ref])
    res2 = ms2.process_lines(lines(5, 19))
    assert res2.accepted == 5
    assert ms2.report()["demo-ner/1"]["events"]["reference"] == 300


def test_absurd_embedding_values_do_not_blind_the_embedding_signal() -> None:
    ms = MonitorSet(CONFIG)
    ms.process_lines(lines(800, 20, split="reference", ref_rng=4))
    drifted = lines(600, 20, drift_at=0)
    poisoned = []
    for i, x in enumerate(drifted):
        e = json.loads(x)
        if i % 4 == 0:
            e["embedding"] = [1e30] * 384
        poisoned.append(json.dumps(e).encode())
    alarms = replay(ms, poisoned)
    assert ("embedding" in {s for s, _ in alarms}), alarms
    assert np.isfinite(ms.report()["demo-ner/1"]["signals"]["embedding"]["score"])


def test_max_window_age_stops_an_old_window_from_flagging_new_traffic() -> None:
    """A drifting episode, then a week of silence: new normal events are not judged by the old window."""
    cfg = CONFIG.model_copy(update={"max_window_age_seconds": 3600.0})
    ms = MonitorSet(cfg)
    ms.process_lines(lines(800, 21, split="reference", ref_rng=6))
    drifted = lines(1200, 21, drift_at=0)
    replay(ms, drifted)
    assert ms.report()["demo-ner/1"]["signals"]["embedding"]["drift"]
    week_later = [json.dumps(dict(json.loads(x), timestamp=json.loads(x)["timestamp"] + 7 * 86400)).encode()
                  for x in lines(150, 21, ref_rng=99)]
    replay(ms, week_later)
    sig = ms.report()["demo-ner/1"]["signals"]
    assert not sig["embedding"]["drift"], sig["embedding"]
    stale = [w for w in sig["embedding"]["windows"] if w["window"] > 150 and w["statistic"] == "mean_shift"]
    assert stale and all(w["value"] is None for w in stale), stale
