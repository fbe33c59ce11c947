"""The partition processor of `nlpmon run`: predictions and labels of one partition, one snapshot."""

from __future__ import annotations

import json
import platform
import sys

import pytest

from nlpmon.app.processor import MonitorPartitionProcessor, References
from nlpmon.kafka.processor import LabelledPartitionProcessor, Record
from nlpmon.monitor.config import MonitorConfig
from nlpmon.quality import QualityConfig


def records(values: list[dict | bytes], start: int = 0, ts_ms: int = 1_700_000_000_000) -> list[Record]:
    return [Record(start + i, v if isinstance(v, bytes) else json.dumps(v).encode(), b"k", ts_ms + i)
            for i, v in enumerate(values)]


def prediction(eid: str, model: str = "ner") -> dict:
    return {"event_id": eid, "model": model, "model_version": "2",
            "entities": [{"label": "PER", "start": 0, "end": 4, "score": 0.9}]}


def label(eid: str, model: str = "ner", lab: str = "PER") -> dict:
    return {"event_id": eid, "model": model, "entities": [{"label": lab, "start": 0, "end": 4}]}


DEFAULT = QualityConfig()


def processor(quality: QualityConfig | None = DEFAULT) -> MonitorPartitionProcessor:
    return MonitorPartitionProcessor("t", 0, MonitorConfig(), References(), quality=quality)


def test_labels_join_predictions_and_the_snapshot_keeps_pending_joins() -> None:
    p = processor()
    assert isinstance(p, LabelledPartitionProcessor)
    assert p.process_labels(records([label("a"), label("b", lab="LOC")], start=8)) == []  # before predictions
    rejected = p.process_labels(records([b"{broken", b'{"event_id": "x", "model": "ner"}'], start=10))
    assert [(r.offset, r.reason) for r in rejected] == [(10, "malformed_json"), (11, "missing_field")]
    assert p.process(records([prediction("a"), prediction("b"), prediction("c")], start=0)) == []
    q = p.report()["ner/2"]["quality"]
    assert (q["labels"]["PER"]["tp"], q["labels"]["PER"]["fp"], q["labels"]["LOC"]["fn"]) == (1, 1, 1)
    assert q["join"]["pending_predictions"] == 1  # c
    restored = processor()
    restored.restore(p.snapshot())
    restored.process_labels(records([label("c")], start=12))
    q2 = restored.report()["ner/2"]["quality"]
    assert q2["labels"]["PER"]["tp"] == 2 and q2["join"]["pending_predictions"] == 0
    assert q2["join_here"]["matched"] == 1 and q2["join"]["matched"] == 3


def test_a_snapshot_of_a_build_without_ground_truth_still_restores() -> None:
    p = processor()
    p.process(records([prediction("a")]))
    old = p.monitors.snapshot()  # what earlier builds wrote: the MonitorSet alone
    restored = processor()
    restored.restore(old)
    assert restored.report()["ner/2"]["events"] == {"production": 1, "reference": 0}


def test_without_a_ground_truth_topic_predictions_skip_the_join() -> None:
    p = processor(quality=None)
    p.process(records([prediction("a")]))
    assert "quality" not in p.report()["ner/2"]


def test_labels_of_a_model_with_no_prediction_here_are_reported_as_orphans() -> None:
    p = processor()
    p.process_labels(records([label("a", model="elsewhere"), label("b", model="elsewhere")]))
    p.process(records([prediction("c")]))
    p.process_labels(records([label("c")], start=2))
    assert p.orphan_labels() == {"elsewhere": 2}


def test_valid_events_without_a_kafka_key_are_counted() -> None:
    p = MonitorPartitionProcessor("preds", 3, MonitorConfig(), References(), quality=DEFAULT, labels_topic="gt")
    values = [prediction("a"), prediction("b", model="pos"), b"{broken", prediction("c"), prediction("d", "pos")]
    keys = [None, b"", None, b"ner", None]  # empty and null keys both fail to key by model
    batch = [Record(i, json.dumps(v).encode() if isinstance(v, dict) else v, k, 1_700_000_000_000)
             for i, (v, k) in enumerate(zip(values, keys, strict=True))]
    assert [r.reason for r in p.process(batch)] == ["malformed_json"]  # a keyless invalid one is a dead letter
    stats = p.batch_stats.drain()
    assert stats.unkeyed == {"preds": 3} and stats.unkeyed_models == ["ner", "pos"]
    p.process(records([prediction("e")], start=5))  # keyed
    assert p.batch_stats.drain().unkeyed == {}
    p.process_labels([Record(0, json.dumps(label("a")).encode(), None, 1_700_000_000_000),
                      Record(1, b"{broken", None, 1_700_000_000_000)])
    assert p.batch_stats.drain().unkeyed == {"gt": 1}


def test_a_reference_calibrates_on_the_worker_thread_while_the_processor_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``nlpmon run``'s executor: the batch that starts a calibration returns without it, the model's
    events are held, other models keep being monitored, and once the worker is done ``poll_calibrations``
    processes the held events: the report is the one of an inline (blocking) processor. Each model whose
    held events are all processed gives the heap's free memory back (``trim_heap``)."""
    import threading

    from nlpmon.app import processor as processor_module
    from nlpmon.app.heap import trim_heap

    trims: list[bool] = []
    monkeypatch.setattr(processor_module, "trim_heap", lambda: trims.append(trim_heap()) or True)

    from nlpmon.app.calibration_worker import ThreadCalibrationExecutor
    from nlpmon.demo import SyntheticStream
    from nlpmon.monitor.calibration_jobs import CalibrationJob
    from tests.support import wait_until

    config = MonitorConfig(calibration_splits=2, auto_baseline_events=300, min_reference_events=200,
                           embedding_windows=(5, 20), distribution_windows=(50,), outlier_windows=(20,))
    other = list(SyntheticStream(seed=2, dim=16, model="other").events(302))  # monitored when the reference comes
    ref = list(SyntheticStream(seed=1, dim=16).events(400, "reference"))
    prod = list(SyntheticStream(seed=1, dim=16).events(300))
    batches = [records(other[:300]), records(ref), records(prod[:100] + other[300:]), records(prod[100:])]

    release = threading.Event()  # the worker's job waits for the test: the calibration is pending for sure

    class GatedJob:
        def __init__(self, job: CalibrationJob) -> None:
            self.job = job

        def run(self):  # type: ignore[no-untyped-def]
            assert release.wait(60), "the test never released the calibration"
            return self.job.run()

    class Gated(ThreadCalibrationExecutor):
        def submit(self, job: CalibrationJob):  # type: ignore[no-untyped-def]
            return super().submit(GatedJob(job))  # type: ignore[arg-type]

    now = 1_796_000_000.0  # one processing time for both runs: the clock clamps of skewed events agree
    blocking = MonitorPartitionProcessor("t", 0, config, References(), quality=None, clock=lambda: now)
    for b in batches:
        blocking.process(b)
    worker = Gated()
    try:
        p = MonitorPartitionProcessor("t", 0, config, References(), quality=None, calibrations=worker,
                                      clock=lambda: now)
        p.process(batches[0])  # "other" fills its auto-baseline: its calibration is pending too
        release.set()
        wait_until(lambda: p.poll_calibrations() and not p.monitors.calibrating, 60, "other's calibration")
        release.clear()
        p.process(batches[1])
        p.process(batches[2])  # demo-ner's calibration starts: held, while "other" is monitored on
        mon = p.monitors.monitors[("demo-ner", "1")]
        assert mon.calibration is not None and mon.deferred_events == 100
        assert p.monitors.monitors[("other", "1")].monitored_events == 2
        p.process(batches[3])
        assert mon.deferred_events == 300 and mon.monitored_events == 0
        release.set()
        wait_until(lambda: p.poll_calibrations() and not p.monitors.calibrating, 60, "the calibration")
    finally:
        release.set()
        worker.close()
    assert len(trims) == 2  # "other", then demo-ner
    if sys.platform == "linux" and platform.libc_ver()[0] == "glibc":
        assert trims == [True, True]
    got, want = p.report(), blocking.report()
    for r in (got, want):
        for rep in r.values():
            rep["reference"].pop("calibration_seconds")
    from tests.core.test_monitor import assert_close_tree

    assert_close_tree(json.loads(json.dumps(got, default=str)), json.loads(json.dumps(want, default=str)), tol=0.0)
    assert got["demo-ner/1"]["monitored_events"] == 300


def test_the_calibration_worker_never_holds_up_a_stop() -> None:
    """``close`` cancels queued jobs and returns at once while one runs; the worker is a daemon thread, so
    the interpreter's exit does not wait for a calibration either (its job is in the snapshot)."""
    import threading

    from nlpmon.app.calibration_worker import ThreadCalibrationExecutor

    started, release = threading.Event(), threading.Event()

    class Slow:
        def run(self) -> str:
            started.set()
            assert release.wait(60), "the test never released the job"
            return "done"

    worker = ThreadCalibrationExecutor()
    try:
        running = worker.submit(Slow())  # type: ignore[arg-type]
        queued = worker.submit(Slow())  # type: ignore[arg-type]
        assert started.wait(60)
        worker.close()
        assert queued.cancelled() and not running.done()
        assert worker._thread.daemon
    finally:
        release.set()
    assert running.result(60) == "done"
    worker._thread.join(60)
    assert not worker._thread.is_alive()
