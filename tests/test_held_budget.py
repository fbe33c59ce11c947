"""Back-pressure for what is held while references calibrate (``max_held_mb``): the service measures it
(``Pipeline.held_bytes``: each queued calibration's sample and the packed bytes of every held batch), exports
it, and asks the runner to pause consumption from when it reaches the budget until it is below half of it.
No broker here: the consumer loop's calls are made by hand (the runner's pause on a real broker:
tests/kafka/test_kafka_backpressure.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, cast

from prometheus_client import CollectorRegistry

from nlpmon.app.service import NlpmonService
from nlpmon.app.settings import ServiceSettings
from nlpmon.demo import SyntheticStream
from nlpmon.kafka.processor import Record
from nlpmon.kafka.runner import ConsumerRunner
from nlpmon.kafka.runner_metrics import RunnerMetrics
from nlpmon.monitor.calibration_jobs import PackedEvents
from nlpmon.monitor.config import MonitorConfig
from tests.core.test_calibration_jobs import ManualExecutor

CONFIG = MonitorConfig(calibration_splits=2, auto_baseline_events=200, min_reference_events=200,
                       embedding_windows=(5, 20), distribution_windows=(50,), outlier_windows=(20,))


def batches(model: str, seed: int, count: int, size: int) -> list[list[Record]]:
    lines = [json.dumps(e).encode() for e in SyntheticStream(seed=seed, dim=16, model=model).events(count)]
    return [[Record(i, line, model.encode(), None) for i, line in enumerate(lines[s:s + size], s)]
            for s in range(0, count, size)]


def service(max_held_mb: float) -> tuple[NlpmonService, ManualExecutor, CollectorRegistry]:
    reg = CollectorRegistry()
    svc = NlpmonService(ServiceSettings(ground_truth_topic="", monitor=CONFIG, max_held_mb=max_held_mb), registry=reg)
    executor = ManualExecutor()
    svc.calibrations = executor  # type: ignore[assignment]
    svc.runner = cast(ConsumerRunner, SimpleNamespace(metrics=lambda: RunnerMetrics(assigned=(("t", 0),))))
    return svc, executor, reg


def test_held_bytes_are_the_queued_sample_and_the_packed_batches_held_for_it() -> None:
    svc, executor, reg = service(max_held_mb=0)
    proc = svc._factory("t", 0)
    chunks = batches("ner", 1, 600, 50)
    for b in chunks[:4]:  # the auto-baseline fills: its calibration is pending
        proc.process(b)
    mon = proc.pipeline.monitors.monitors[("ner", "1")]
    assert mon.calibration is not None
    sample = mon.calibration.job.sample.nbytes
    assert executor.pending and proc.pipeline.held_bytes == sample > 200 * 100  # the queued sample counts
    for b in chunks[4:]:
        proc.process(b)
    held = [p for kind, p in mon._deferred if kind != "clamp"]
    assert mon.deferred_events == 400 and all(isinstance(p, PackedEvents) for p in held)
    packed = sum(len(p.data) for p in held)
    assert proc.pipeline.held_bytes == sample + packed and packed > 400 * 500  # 16-dim events: ~1 KB each
    assert svc._hold() is False  # no budget
    assert reg.get_sample_value("nlpmon_held_event_bytes") == proc.pipeline.held_bytes
    executor.complete_one()
    while proc.poll_calibrations():
        pass
    assert proc.pipeline.held_bytes == 0 and mon.monitored_events == 400
    svc._hold()
    assert reg.get_sample_value("nlpmon_held_event_bytes") == 0


def test_consumption_pauses_at_the_budget_and_resumes_below_half_of_it() -> None:
    """Two models wait for their calibrations; the budget is crossed by a held batch. The service says
    "pause" from then until the held bytes are below half the budget (not as soon as they are below it):
    completing one model's calibration frees its share, the other's still holds."""
    a, b = batches("ner-a", 1, 1000, 50), batches("ner-b", 2, 1000, 50)
    probe, _, _ = service(max_held_mb=0)  # the same stream without a budget: what is held when
    pp = probe._factory("t", 0)
    sizes: list[int] = []
    for x, y in zip(a, b, strict=True):
        pp.process(x)
        pp.process(y)
        sizes.append(pp.pipeline.held_bytes)
    assert sizes[-1] > sizes[10] > 0
    budget = sizes[10] + 1  # reached at the 12th pair of batches
    svc, executor, reg = service(max_held_mb=budget / 2**20)
    proc = svc._factory("t", 0)
    said = []
    for x, y in zip(a, b, strict=True):
        proc.process(x)
        proc.process(y)
        said.append(svc._hold())
        if said[-1]:
            break
    assert len(said) == 12 and said[:11] == [False] * 11 and proc.pipeline.held_bytes >= budget
    assert reg.get_sample_value("nlpmon_held_event_bytes") == proc.pipeline.held_bytes
    held_a = proc.pipeline.monitors.monitors[("ner-a", "1")].held_bytes
    held_b = proc.pipeline.monitors.monitors[("ner-b", "1")].held_bytes
    assert held_a + held_b == proc.pipeline.held_bytes and held_a > 0 and held_b > 0
    executor.complete_one()  # ner-a's calibration: its held events are processed over the next polls
    while proc.poll_calibrations() and proc.pipeline.monitors.monitors[("ner-a", "1")].waiting:
        pass
    assert proc.pipeline.held_bytes == held_b
    assert svc._hold() is (held_b > budget / 2)  # resumed only below half the budget
    executor.complete_one()
    while proc.poll_calibrations():
        pass
    assert proc.pipeline.held_bytes == 0 and svc._hold() is False
    # nothing was lost on the way: every event of both models is monitored (the budget only pauses)
    counts = {k: m.monitored_events for k, m in proc.pipeline.monitors.monitors.items()}
    assert counts == {("ner-a", "1"): (12 * 50) - 200, ("ner-b", "1"): (12 * 50) - 200}


def test_a_reference_sample_shares_its_string_items_and_keeps_their_values() -> None:
    """Decoded events carry a new string object per token tag; the sample keeps one per distinct value (its
    memory: 8 bytes a tag instead of ~60), with the same values in the same order, also after a restore."""
    from nlpmon.events import decode_event
    from nlpmon.monitor.reference import ReferenceSample
    from nlpmon.monitor.signals import extract_columns

    events = [decode_event(json.dumps(e)) for e in SyntheticStream(seed=3, dim=16).events(300)]
    cols, _ = extract_columns(events)
    tags = list(cols["token_tag"].values)
    assert len({id(t) for t in tags}) > 1000  # as decoded: one object per token
    sample = ReferenceSample(1000, 0)
    sample.add(cols, len(events), [e.text for e in events])
    kept = sample.columns()["token_tag"].values
    assert list(kept) == tags and len({id(t) for t in kept}) == len(set(tags)) < 50
    restored = ReferenceSample.from_state(sample.state())
    again = restored.columns()["token_tag"].values
    assert list(again) == tags and len({id(t) for t in again}) == len(set(tags))
    assert sample.nbytes == restored.nbytes > 8 * len(tags)


def test_held_events_are_served_a_model_at_a_time_once_the_loop_is_out_of_time() -> None:
    """``poll_calibrations(expired)`` (the service passes "the loop's budget is spent"): once ``expired`` says so
    the other models wait for the next call, which starts after the last one served, so that every model gets
    its turn and nothing is lost; without it, one call serves them all."""
    models = ["ner-a", "ner-b", "ner-c"]
    streams = {m: batches(m, seed, 600, 50) for seed, m in enumerate(models, 1)}

    def held_everywhere() -> tuple[object, ManualExecutor]:
        svc, executor, _ = service(max_held_mb=0)
        proc = svc._factory("t", 0)
        for i in range(12):  # 4 batches fill each baseline, the other 8 (400 events) are held
            for m in models:
                proc.process(streams[m][i])
        for _ in models:
            executor.complete_one()
        return proc, executor

    proc, _ = held_everywhere()
    monitors = proc.pipeline.monitors.monitors  # type: ignore[attr-defined]
    assert all(monitors[(m, "1")].deferred_events == 400 for m in models)
    served: list[list[str]] = []
    asked = []

    def expired() -> bool:
        asked.append(True)
        return True

    for _ in range(len(models) + 1):
        before = {m for m in models if monitors[(m, "1")].waiting}
        proc.poll_calibrations(expired)  # type: ignore[attr-defined]
        served.append(sorted(before - {m for m in models if monitors[(m, "1")].waiting}))
    assert served == [["ner-a"], ["ner-b"], ["ner-c"], []], served
    assert len(asked) == len(models)  # asked after each model served, never before the first
    assert {m: monitors[(m, "1")].monitored_events for m in models} == dict.fromkeys(models, 400)

    whole, _ = held_everywhere()
    assert whole.poll_calibrations()  # type: ignore[attr-defined]
    assert not whole.pipeline.calibrating  # type: ignore[attr-defined]
    assert without_clocks(whole.report()) == without_clocks(proc.report())  # type: ignore[attr-defined]


def without_clocks(report: dict[str, Any]) -> dict[str, Any]:
    """A report without what depends on when it ran (arrival times, seconds a calibration took)."""
    out = {}
    for key, model in report.items():
        model = {k: v for k, v in model.items() if k != "last_event_time"}
        model["reference"] = {k: v for k, v in model["reference"].items() if k != "calibration_seconds"}
        out[key] = model
    return out
