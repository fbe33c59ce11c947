"""Calibration off the consumer loop: a deferred executor gives the report of the blocking run.

A manual executor completes the jobs at chosen points of the stream (deterministic); the blocking run is
the default inline executor. Two models interleaved: one with reference events (and drift), one on its
auto-baseline that gets new reference events mid-stream (a second calibration, while the first model's
may be pending too). Held events are processed batch by batch as the blocking run processed them, so
the reports agree exactly (floats included; only wall times and this process's counters differ).
"""

from __future__ import annotations

import json
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest

from nlpmon.demo import SyntheticStream
from nlpmon.monitor import model_monitor
from nlpmon.monitor.calibration_jobs import (
    CalibrationJob,
    PackedEvents,
    event_state,
    events_from_state,
    events_state,
)
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.monitor.reference import ReferenceProfile
from nlpmon.state import decode_state, encode_state
from tests.core.test_monitor import assert_close_tree

CONFIG = MonitorConfig(calibration_splits=2, auto_baseline_events=600, min_reference_events=200,
                       embedding_windows=(5, 20, 100), distribution_windows=(50, 100), outlier_windows=(20, 50),
                       block_events=10)
BATCH = 97
DIM = 32  # small embeddings: the PCA fits are cheap, the code paths the same


class ManualExecutor:
    """Jobs wait until the test completes them (oldest first), or the monitor runs one itself."""

    def __init__(self) -> None:
        self.jobs: list[tuple[CalibrationJob, Future[ReferenceProfile]]] = []

    def submit(self, job: CalibrationJob) -> Future[ReferenceProfile]:
        fut: Future[ReferenceProfile] = Future()
        self.jobs.append((job, fut))
        return fut

    @property
    def pending(self) -> list[tuple[CalibrationJob, Future[ReferenceProfile]]]:
        return [(j, f) for j, f in self.jobs if not f.done()]

    def complete_one(self) -> bool:
        for job, fut in self.pending:
            fut.set_result(job.run())
            return True
        return False


def stream_lines() -> list[bytes]:
    """Two models interleaved (seeded), each in its own order."""
    a = SyntheticStream(seed=3, dim=DIM, model="ner-a", drift_at=900)
    a_ref = SyntheticStream(seed=3, dim=DIM, model="ner-a")
    a_ref.rng = np.random.default_rng(99)
    b = SyntheticStream(seed=5, dim=DIM, model="ner-b")
    b_ref = SyntheticStream(seed=6, dim=DIM, model="ner-b")
    model_a = [*a_ref.events(500, "reference"), *a.events(1400)]
    b_prod = list(b.events(1500))
    model_b = [*b_prod[:1000], *b_ref.events(250, "reference"), *b_prod[1000:]]
    rng = np.random.default_rng(1)
    out: list[bytes] = []
    i = j = 0
    while i < len(model_a) or j < len(model_b):
        take_a = j >= len(model_b) or (i < len(model_a) and rng.random() < 0.5)
        e = model_a[i] if take_a else model_b[j]
        i, j = (i + 1, j) if take_a else (i, j + 1)
        out.append(json.dumps(e).encode())
    return out


LINES = stream_lines()


def run(ms: MonitorSet, lines: list[bytes], start: int = 0, complete: Any = None) -> list[tuple[Any, ...]]:
    """Feed batches of BATCH lines from ``start``; ``complete(batch_index)`` runs between batches. Alarms as
    (model, signal, event_id, score, window, statistic)."""
    alarms = []
    for k in range(start, len(lines), BATCH):
        if complete is not None:
            complete(k // BATCH)
        res = ms.process_lines(lines[k:k + BATCH])
        alarms += [(a.model, a.signal, a.event_id, a.score, a.window, a.statistic) for a in res.alarms]
    return alarms


def finish(ms: MonitorSet) -> list[tuple[Any, ...]]:
    return [(a.model, a.signal, a.event_id, a.score, a.window, a.statistic) for a in ms.poll(wait=True)]


def comparable(report: dict[str, Any], restored: bool = False) -> dict[str, Any]:
    out = json.loads(json.dumps(report, default=str))
    for rep in out.values():
        rep.get("reference", {}).pop("calibration_seconds", None)  # wall time, not state
        if restored:
            rep.pop("events_processed_here")  # this process's work, not state
            for key in ("history", "throughput", "examples", "projection", "confidence_by_label"):
                rep.pop(key, None)  # in memory only, for the pages: refilled after a restore
            for o in rep.get("outliers", []):
                o.pop("nearest_reference")
    return out


@pytest.fixture(scope="module")
def blocking() -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    ms = MonitorSet(CONFIG)
    alarms = run(ms, LINES)
    assert ms.calibrating == 0
    rep = ms.report()
    assert {k: r["status"] for k, r in rep.items()} == {"ner-a/1": "monitoring", "ner-b/1": "monitoring"}
    assert rep["ner-b/1"]["reference"]["source"] == "reference"  # recalibrated from its new reference events
    assert any(a[0] == "ner-a" for a in alarms)  # the drift is seen
    return alarms, rep


@pytest.mark.parametrize(("seed", "drain"), [(0, 2000), (1, 150)])
def test_deferred_calibration_gives_the_blocking_report(blocking: tuple[list[Any], dict[str, Any]],
                                                        seed: int, drain: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``drain``: held events processed per poll (150: the catching up spreads over several batches)."""
    monkeypatch.setattr(model_monitor, "DRAIN_EVENTS", drain)
    want_alarms, want = blocking
    ex = ManualExecutor()
    ms = MonitorSet(CONFIG, executor=ex)
    rng = np.random.default_rng(seed)
    held: list[int] = []

    def complete(_: int) -> None:
        held.append(sum(m.deferred_events for m in ms.monitors.values()))
        for key, rep in ms.report().items():
            mon = ms.monitors[(rep["model"], rep["model_version"])]
            assert ("calibration_pending" in rep) == (mon.calibration is not None), key
            if mon.calibration is not None:
                assert rep["calibration_pending"]["held_events"] == mon.deferred_events
        if rng.random() < 0.25:  # jobs finish at arbitrary points, several batches later
            ex.complete_one()

    alarms = run(ms, LINES, complete=complete)
    alarms += finish(ms)
    assert len(ex.jobs) >= 3 and max(held) > 0  # events were really held, over several calibrations
    assert sorted(alarms) == sorted(want_alarms)
    assert_close_tree(comparable(ms.report()), comparable(want), tol=0.0)


@pytest.mark.parametrize(("nth", "phase"), [(1, "pending"), (3, "pending"), (6, "held"), (1, "catching up"),
                                            (2, "catching up")])
def test_snapshot_mid_wait_restored_and_completed_gives_the_blocking_report(
        blocking: tuple[list[Any], dict[str, Any]], nth: int, phase: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash at the ``nth`` batch boundary where events are held and a calibration is pending ("pending"),
    either that or its profile applied and the held events being caught up on ("held"), or only the latter
    ("catching up"): the restored set resubmits the pending jobs; no held event is lost or counted twice."""
    monkeypatch.setattr(model_monitor, "DRAIN_EVENTS", 40)  # a batch holds ~48 events of a model: steps show
    want_alarms, want = blocking
    ex = ManualExecutor()
    ms = MonitorSet(CONFIG, executor=ex)
    before: list[tuple[Any, ...]] = []
    seen, cut = 0, 0
    while seen < nth:
        before += run(ms, LINES[cut * BATCH:(cut + 1) * BATCH])
        cut += 1
        if cut % 4 == 0:
            ex.complete_one()  # some jobs finish before the crash, others do not
        held = [m for m in ms.monitors.values() if m.deferred_events]
        pending = [m for m in held if m.calibration is not None]
        if (pending if phase == "pending" else held if phase == "held" else
                [m for m in held if m.calibration is None]):
            seen += 1
        assert cut * BATCH < len(LINES), "the stream never held events"
    snap = ms.snapshot()
    ex2 = ManualExecutor()
    resumed = MonitorSet(CONFIG, executor=ex2)
    resumed.restore(snap)
    # the calibrations not applied yet (finished or not), handed over again
    pending = [m.calibration.job for m in ms.monitors.values() if m.calibration is not None]
    assert [(j.model, j.source, j.sample.size, j.sample.seen) for j in pending] == \
        [(j.model, j.source, j.sample.size, j.sample.seen) for j, _ in ex2.jobs]
    after = run(resumed, LINES, start=cut * BATCH, complete=lambda k: k % 3 == 0 and ex2.complete_one())
    after += finish(resumed)
    assert sorted(before + after) == sorted(want_alarms)
    got, ref = comparable(resumed.report(), restored=True), comparable(want, restored=True)
    for r in (got, ref):
        for rep in r.values():
            rep.pop("outliers")  # their page embeddings are in memory only; indices and scores compared below
    assert_close_tree(got, ref, tol=0.0)
    assert [o["event_id"] for o in resumed.report()["ner-a/1"]["outliers"]] == \
        [o["event_id"] for o in want["ner-a/1"]["outliers"]]


def test_too_many_held_events_make_the_monitor_run_the_job_itself(
        blocking: tuple[list[Any], dict[str, Any]]) -> None:
    """An executor that never gets to the job: the loop runs it once more than ``calibration_pending_events``
    events wait, and the report is still the blocking one."""
    want_alarms, want = blocking
    config = CONFIG.model_copy(update={"calibration_pending_events": 150})
    ex = ManualExecutor()
    ms = MonitorSet(config, executor=ex)
    held: list[int] = []
    alarms = run(ms, LINES, complete=lambda _: held.append(max((m.deferred_events for m in ms.monitors.values()),
                                                               default=0)))
    alarms += finish(ms)
    assert ex.jobs and all(f.cancelled() for _, f in ex.jobs)  # each one run by the monitor, none by the executor
    assert max(held) <= 150 + BATCH
    assert sorted(alarms) == sorted(want_alarms)
    assert_close_tree(comparable(ms.report()), comparable(want), tol=0.0)


def test_a_too_small_reference_is_refused_at_once_without_a_job() -> None:
    ex = ManualExecutor()
    ms = MonitorSet(CONFIG, executor=ex)
    ms.process_lines([json.dumps(e).encode() for e in SyntheticStream(seed=1).events(50, "reference")])
    ms.process_lines([json.dumps(e).encode() for e in SyntheticStream(seed=1).events(10)])
    rep = ms.report()["demo-ner/1"]
    assert not ex.jobs and "fewer than min_reference_events" in rep["reference_error"]
    assert rep["status"] == "reference_pending"


@pytest.mark.parametrize("codec", ["one tree per event (earlier builds)", "packed", "held packed",
                                   "held packed, restored"])
def test_held_events_round_trip_through_the_snapshot_codec(codec: str) -> None:
    from nlpmon.events import decode_event

    raw = {"event_id": "e1", "model": "m", "model_version": "2", "timestamp": "2026-11-20T13:41:00Z",
           "task": "text-classification", "text": "hello", "embedding": [0.5, -1.25, 3.0],
           "entities": [{"label": "PER", "score": 0.9, "start": 0, "end": 5, "text": "hello",
                         "embedding": [1.0, 2.0]}],
           "tokens": [{"text": "hello", "tag": "X", "score": 0.5, "start": 0, "end": 5}, {"tag": "Y", "end": 5}],
           "prediction": {"label": "pos", "score": 0.75, "probabilities": {"pos": 0.75, "neg": 0.25}},
           "metadata": {"a": [1, {"b": None}]}}
    e = decode_event(json.dumps(raw))
    if codec == "packed":
        (back,) = events_from_state(decode_state(encode_state({"e": events_state([e])}))["e"])
    elif codec == "held packed":  # in memory while a calibration is pending
        held = PackedEvents.pack([e])
        assert len(held) == 1 and held.state()["packed"].tobytes() == events_state([e])["packed"].tobytes()
        (back,) = held.events()
    elif codec == "held packed, restored":  # its snapshot part, read back and held again
        tree = decode_state(encode_state({"e": PackedEvents.pack([e, e]).state()}))["e"]
        restored = PackedEvents.from_state(tree)
        assert len(restored) == 2
        back = restored.events()[1]
    else:
        (back,) = events_from_state([decode_state(encode_state({"e": event_state(e)}))["e"]])
    for name in e.__struct_fields__:
        x, y = getattr(e, name), getattr(back, name)
        if name == "embedding":
            assert x.dtype == y.dtype and np.array_equal(x, y)
        elif name == "entities":
            assert [(a.label, a.score, a.start, a.end, a.text, a.embedding.tolist()) for a in x] == \
                [(a.label, a.score, a.start, a.end, a.text, a.embedding.tolist()) for a in y]
        elif name == "tokens":  # the decoder's strict subclasses: the fields are what the monitor reads
            assert [(t.text, t.tag, t.score, t.start, t.end) for t in x] == \
                [(t.text, t.tag, t.score, t.start, t.end) for t in y]
            assert [t.start for t in y] == [0, None] and [t.end for t in y] == [5, 5]
        elif name == "prediction":
            assert (x.label, x.score, x.probabilities) == (y.label, y.score, y.probabilities)
        else:
            assert x == y, name


def test_held_events_without_texts_keep_their_token_offsets_and_span_measures() -> None:
    from nlpmon.events import decode_event
    from nlpmon.monitor.config import TextPolicy
    from nlpmon.monitor.signals import extract_columns

    toks = [{"text": "ab", "tag": "B-X", "start": 0, "end": 2}, {"text": "cd", "tag": "I-X", "start": 3, "end": 5}]
    e = decode_event(json.dumps({"event_id": "e", "model": "m", "text": "ab cd",
                                 "entities": [{"label": "X", "start": 0, "end": 4}], "tokens": toks}))
    (back,) = events_from_state(decode_state(encode_state({"e": events_state([e], TextPolicy(keep=False))}))["e"])
    assert back.text is None and [t.text for t in back.tokens] == [None, None]
    # a held batch keeps every text in memory (its events are processed as they came) but not in its snapshot
    held = PackedEvents.pack([e])
    assert held.events()[0].text == "ab cd"
    assert held.state(TextPolicy(keep=False))["packed"].tobytes() == \
        events_state([e], TextPolicy(keep=False))["packed"].tobytes()
    for ev in (e, back):  # the text gone, the offsets still measure the entity in tokens
        cols, _ = extract_columns([ev])
        assert cols["span_length"].values.tolist() == [2.0] and cols["span_boundary"].values.tolist() == [1.0]


def test_a_batch_msgpack_cannot_hold_is_held_decoded() -> None:
    """An integer beyond 64 bits in metadata (valid JSON) cannot be packed: the batch is held as it came."""
    from nlpmon.events import decode_event

    e = decode_event(json.dumps({"event_id": "e", "model": "m", "text": "x", "metadata": {"n": 2 ** 70}}))
    with pytest.raises((TypeError, OverflowError)):
        PackedEvents.pack([e])
    held = model_monitor._hold([e])
    assert held == [e] and model_monitor._unhold(held) == [e]
    ok = model_monitor._hold([decode_event(json.dumps({"event_id": "f", "model": "m"}))])
    assert isinstance(ok, PackedEvents) and model_monitor._unhold(ok)[0].event_id == "f"
