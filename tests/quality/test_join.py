"""The join buffer: exact matching in any order, TTL and memory bounds, every input accounted for, restarts."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nlpmon.quality.join import CLASS, SPANS, JoinBuffer, Label, Prediction, entry_bytes
from nlpmon.state import decode_state, encode_state

BIG = 10**12


def pred(eid: str, k: int = 1, ts: float = math.nan, kind: int = SPANS, model: str = "m") -> Prediction:
    spans = np.array([[i, i + 1, i % 3] for i in range(k)], dtype=np.int64).reshape(-1, 3)
    return Prediction(eid, model, "1", ts, kind, False, spans, np.full(k, 0.5, dtype=np.float32))


def label(eid: str, k: int = 1, kind: int = SPANS, model: str = "m") -> Label:
    return Label(eid, model, math.nan, kind, np.array([[i, i + 1, 0] for i in range(k)], np.int64).reshape(-1, 3))


def roundtrip(j: JoinBuffer) -> JoinBuffer:
    return JoinBuffer.from_state(decode_state(encode_state(j.state())))


def accounted(j: JoinBuffer) -> None:
    c = j.counters
    joined = c["matched"] + c["task_mismatch"]
    assert c["predictions"] == (joined + c["duplicate_prediction"] + c["prediction_expired_unlabelled"]
                                + c["prediction_evicted_memory"] + j.pending_predictions)
    assert c["labels"] == (joined + c["duplicate_label"] + c["label_for_expired_prediction"]
                           + c["label_wrong_model"] + c["label_expired_unmatched"] + c["label_evicted_memory"]
                           + j.pending_labels)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 40))
def test_out_of_order_equals_offline_join(seed: int, n: int) -> None:
    rng = random.Random(seed)
    pids = [f"e{i}" for i in range(n)]
    lids = [e for e in pids if rng.random() < 0.7] + [f"unknown{i}" for i in range(rng.randint(0, 3))]
    stream = [("p", e) for e in pids] + [("l", e) for e in lids]
    rng.shuffle(stream)
    j = JoinBuffer("m", ttl=BIG, max_bytes=BIG)
    matched = []
    for t, (kind, eid) in enumerate(stream):
        m = j.add_prediction(pred(eid), t) if kind == "p" else j.add_label(label(eid), t)
        if m is not None:
            assert m.prediction.event_id == m.label.event_id == eid
            matched.append(eid)
        if rng.random() < 0.2:
            j = roundtrip(j)
    assert sorted(matched) == sorted(set(pids) & set(lids))
    assert j.pending_predictions == len(set(pids) - set(lids))
    assert j.pending_labels == len(set(lids) - set(pids))
    accounted(j)


def test_ttl_duplicates_and_reasons() -> None:
    j = JoinBuffer("m", ttl=10, max_bytes=BIG)
    assert j.add_prediction(pred("a"), 0) is None
    assert j.add_prediction(pred("a"), 1) is None  # duplicate while waiting: first kept
    assert j.add_label(label("b"), 1) is None  # label first
    assert j.add_label(label("b"), 2) is None  # duplicate label while waiting
    m = j.add_prediction(pred("b"), 3)
    assert m is not None and m.label.event_id == "b"
    assert j.add_label(label("b"), 4) is None  # a second label after the match
    assert j.add_prediction(pred("b"), 4) is None  # a repeated prediction after the match
    assert j.add_label(label("x", model="other"), 4) is None
    assert j.add_prediction(pred("c", kind=CLASS), 5) is None
    assert j.add_label(label("c", kind=SPANS), 5) is None  # task mismatch
    assert j.add_prediction(pred("d"), 6) is None
    assert j.add_label(label("z"), 6) is None  # never gets a prediction
    j.expire(10)  # nothing waited more than 10 s yet
    assert j.pending_predictions == 2 and j.pending_labels == 1
    j.expire(10.5)  # "a" (arrived 0) is now 10.5 s old
    assert j.pending_predictions == 1
    assert j.add_label(label("a"), 11) is None  # after its prediction expired
    j.expire(17)  # d (6) and z (6) expire
    c = j.counters
    assert {k: v for k, v in c.items() if v} == {
        "predictions": 6, "labels": 7, "matched": 1, "duplicate_prediction": 2, "duplicate_label": 2,
        "label_wrong_model": 1, "task_mismatch": 1, "prediction_expired_unlabelled": 2,
        "label_for_expired_prediction": 1, "label_expired_unmatched": 1}
    assert j.pending_predictions == j.pending_labels == 0
    accounted(j)


def test_time_is_a_watermark() -> None:
    j = JoinBuffer("m", ttl=10, max_bytes=BIG)
    j.add_prediction(pred("a"), 100)
    j.add_prediction(pred("b"), 50)  # earlier `now`: arrives at the watermark, 100
    j.expire(111)
    assert j.pending_predictions == 0 and j.counters["prediction_expired_unlabelled"] == 2


def test_memory_bound_evicts_oldest_first_and_counts() -> None:
    one = entry_bytes(pred("e00", k=4))
    j = JoinBuffer("m", ttl=BIG, max_bytes=5 * one + 10, tombstone_ttl=1)
    for i in range(8):
        j.add_prediction(pred(f"e{i:02d}", k=4), i)
        assert j.bytes <= j.max_bytes
    assert j.pending_predictions == 5 and j.counters["prediction_evicted_memory"] == 3
    assert [p for p in j.state()["pred_ids"]] == ["e03", "e04", "e05", "e06", "e07"]
    # labels share the budget; the oldest entry (a prediction) goes first
    j.add_label(label("late", k=1), 9)
    assert j.counters["prediction_evicted_memory"] == 4 and j.pending_labels == 1
    assert j.add_label(label("e04"), 10) is not None  # still there: joins
    accounted(j)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), st.integers(300, 4000), st.floats(1, 30))
def test_random_streams_bounded_accounted_and_restartable(seed: int, max_bytes: int, ttl: float) -> None:
    rng = random.Random(seed)
    a = JoinBuffer("m", ttl=ttl, max_bytes=max_bytes)
    b = JoinBuffer("m", ttl=ttl, max_bytes=max_bytes)
    t = 0.0
    out_a: list[Any] = []
    out_b: list[Any] = []
    for _ in range(60):
        t += rng.expovariate(1.0)
        eid = f"e{rng.randint(0, 25)}"
        op = rng.random()
        if op < 0.45:
            p = pred(eid, k=rng.randint(0, 5), kind=rng.choice([SPANS, SPANS, CLASS]))
            out_a.append(a.add_prediction(p, t))
            out_b.append(b.add_prediction(p, t))
        elif op < 0.9:
            q = label(eid, k=rng.randint(0, 3), kind=rng.choice([SPANS, SPANS, CLASS]),
                      model=rng.choice(["m"] * 9 + ["x"]))
            out_a.append(a.add_label(q, t))
            out_b.append(b.add_label(q, t))
        else:
            a.expire(t)
            b.expire(t)
        if rng.random() < 0.3:
            b = roundtrip(b)
        assert a.bytes <= max_bytes
        assert a.bytes == roundtrip(a).bytes  # the incremental estimate equals a recount
        accounted(a)
    assert [None if m is None else m.prediction.event_id for m in out_a] == \
           [None if m is None else m.prediction.event_id for m in out_b]
    assert a.counters == b.counters and a.state()["pred_ids"] == b.state()["pred_ids"]


def test_byte_estimate_is_close_to_the_measured_allocation() -> None:
    import tracemalloc

    for k in (0, 3, 10):
        tracemalloc.start()
        try:
            j = JoinBuffer("m", ttl=BIG, max_bytes=BIG)
            before = tracemalloc.get_traced_memory()[0]
            for i in range(2000):  # fresh ids and arrays, as after decoding
                j.add_prediction(Prediction(f"7f9c2a6e-{i:08d}", "m", "1", float(i), SPANS, False,
                                            np.zeros((k, 3), np.int64), np.zeros(k, np.float32)), i)
                j.add_label(Label(f"other-{i:08d}", "m", float(i), SPANS, np.zeros((k, 3), np.int64)), i)
            measured = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert 0.8 < measured / j.bytes < 1.25, (k, measured, j.bytes)
