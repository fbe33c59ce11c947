"""NlpmonMetrics: exact values from real MonitorSet reports, caps, retirement, the catalogue and its docs.

Every test builds a fresh CollectorRegistry and asserts with ``get_sample_value``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry

from service.demo import generate_events
from service.kafka.runner import RunnerMetrics
from service.monitor.config import MonitorConfig
from service.monitor.model_monitor import Alarm
from service.monitor.monitor_set import MonitorSet
from service.observability.metrics import METRICS, NlpmonMetrics, catalogue_markdown, metric_catalogue

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
CONFIG = MonitorConfig(calibration_splits=2)
N_REF, N_PROD, DRIFT_AT = 300, 1100, 900  # drift 600 events into production


@dataclass
class Stream:
    monitors: MonitorSet
    reports: dict[str, Any]
    alarms: list[Alarm]
    events: list[dict[str, Any]]
    snapshot: bytes


@pytest.fixture(scope="module")
def stream() -> Stream:
    """One real model: 300 reference events, 1100 production events drifting after 600 of them."""
    events = generate_events(N_REF + N_PROD, drift_at=DRIFT_AT)
    for e in events[:N_REF]:
        e["split"] = "reference"
    lines = [json.dumps(e) for e in events]
    ms = MonitorSet(CONFIG)
    alarms: list[Alarm] = []
    for i in range(0, len(lines), 350):
        alarms += ms.process_lines(lines[i:i + 350]).alarms
    report = ms.report()
    for r in report.values():  # these tests drive the counters through the cumulative counts
        r.pop("events_processed_here")
    return Stream(ms, report, alarms, events, ms.snapshot())


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def sample_count(registry: CollectorRegistry) -> int:
    return sum(len(fam.samples) for fam in registry.collect())


def renamed(report: dict[str, Any], model: str, version: str = "1") -> dict[str, Any]:
    return {**report, "model": model, "model_version": version}


def runner_metrics(**kw: Any) -> RunnerMetrics:
    base: dict[str, Any] = dict(
        events_processed={}, invalid_events={}, dead_letters_sent=0, batches=0, checkpoints=0,
        checkpoints_skipped=0, snapshots_written=0, commit_failures=0, rebalances=0, lost_assignments=0,
        offset_gaps=0, last_poll_monotonic=None, assigned=(), paused=False, next_offsets={},
        committed_offsets={}, lag={}, circuit_state="closed", circuit_trips=0, circuit_reason="",
        last_client_error="", broker_reachable=True)
    return RunnerMetrics(**{**base, **kw})


# -- values ------------------------------------------------------------------------------------------------
def test_report_values_are_exported_exactly(stream: Stream) -> None:
    reg = CollectorRegistry()
    NlpmonMetrics(reg, clock=FakeClock()).observe_reports(stream.reports, stream.alarms)
    rep = stream.reports["demo-ner/1"]
    m = {"model": "demo-ner", "model_version": "1"}

    assert value(reg, "nlpmon_events_total", **m, split="production") == N_PROD
    assert value(reg, "nlpmon_events_total", **m, split="reference") == N_REF
    assert value(reg, "nlpmon_reference_events", **m) == N_REF
    assert value(reg, "nlpmon_window_events", **m) == 1000  # longest distribution window is full
    assert value(reg, "nlpmon_model_status", **m, status="monitoring") == 1
    assert value(reg, "nlpmon_model_status", **m, status="reference_pending") == 0
    assert value(reg, "nlpmon_model_status", **m, status="collecting_baseline") == 0
    assert value(reg, "nlpmon_last_event_timestamp_seconds", **m) == max(e["timestamp"] for e in stream.events)

    assert set(rep["signals"]) >= {"embedding", "entity_label", "token_tag", "confidence"}
    alarms_per_signal: dict[str, int] = defaultdict(int)
    for a in stream.alarms:
        alarms_per_signal[a.signal] += 1
    for name, sig in rep["signals"].items():
        assert value(reg, "nlpmon_drift_score", **m, signal=name) == sig["score"]
        assert value(reg, "nlpmon_drift_threshold", **m, signal=name) == 1.0
        assert value(reg, "nlpmon_drift_detected", **m, signal=name) == float(sig["drift"])
        assert (value(reg, "nlpmon_drift_alarms_total", **m, signal=name) or 0) == alarms_per_signal[name]
        assert alarms_per_signal[name] == sig["alarms"]  # the Alarm objects agree with the core's count
    assert value(reg, "nlpmon_drift_detected", **m, signal="embedding") == 1  # the injected drift is seen
    assert (value(reg, "nlpmon_drift_score", **m, signal="embedding") or 0) > 1

    for source in ("entity_label", "token_tag"):
        moved = rep["signals"][source]["evidence"]["moved_labels"]
        assert moved
        for x in moved:
            for w in ("reference", "current"):
                assert value(reg, "nlpmon_label_share", **m, source=source, label=x["label"], window=w) == x[w]

    ev = rep["signals"]["confidence"]["evidence"]
    assert ev["levels"] == [0.05, 0.25, 0.5, 0.75, 0.95]
    for level, ref_q, cur_q in zip(ev["levels"], ev["reference_quantiles"], ev["current_quantiles"], strict=True):
        q = f"{level:g}"
        assert value(reg, "nlpmon_confidence_quantile", **m, source="confidence", label="__all__", quantile=q,
                     window="reference") == ref_q
        assert value(reg, "nlpmon_confidence_quantile", **m, source="confidence", label="__all__", quantile=q,
                     window="current") == cur_q


def test_label_confidence_mean_matches_recomputation_from_events(stream: Stream) -> None:
    """The longest window (1000 events) covers production events 100..1099: recompute per-label means."""
    reg = CollectorRegistry()
    NlpmonMetrics(reg, clock=FakeClock()).observe_reports(stream.reports)
    sums: dict[str, list[float]] = defaultdict(list)
    for e in stream.events[N_REF + N_PROD - 1000:]:
        for ent in e["entities"]:
            sums[ent["label"]].append(ent["score"])
    assert sums
    for label, scores in sums.items():
        got = value(reg, "nlpmon_label_confidence_mean", model="demo-ner", model_version="1", label=label)
        assert got == pytest.approx(sum(scores) / len(scores), rel=1e-12)


def test_counters_advance_by_report_growth_and_rebase_on_restore(stream: Stream) -> None:
    """Counters grow by the events this process handled: a restored monitor's history is not counted."""
    reg = CollectorRegistry()
    metrics = NlpmonMetrics(reg, clock=FakeClock())
    ms = MonitorSet(CONFIG)
    ms.restore(stream.snapshot)
    metrics.observe_reports(ms.report())
    more = generate_events(120, seed=5, drift_at=0)
    ms.process_lines([json.dumps(e) for e in more])
    metrics.observe_reports(ms.report())
    m = {"model": "demo-ner", "model_version": "1", "split": "production"}
    assert value(reg, "nlpmon_events_total", **m) == 120
    # state restored from an older snapshot: the count goes down, the counter does not
    older = MonitorSet(CONFIG)
    older.restore(stream.snapshot)
    metrics.observe_reports(older.report())
    assert value(reg, "nlpmon_events_total", **m) == 120
    older.process_lines([json.dumps(e) for e in more[:20]])
    metrics.observe_reports(older.report())
    assert value(reg, "nlpmon_events_total", **m) == 140


def test_observe_batch_histograms_and_rejections() -> None:
    reg = CollectorRegistry()
    metrics = NlpmonMetrics(reg, clock=FakeClock(1000.0), max_labels=3)
    metrics.observe_batch(seconds=0.03, event_timestamps=[999.95, 999.0, 990.0, None, 1001.0, math.nan],
                          rejected_reasons=["malformed_json", "malformed_json", "bad_embedding"])
    metrics.observe_batch(seconds=2.0, rejected_reasons=["a", "b", "c", "a"])
    bucket = "nlpmon_event_age_seconds_bucket"
    assert value(reg, bucket, le="0.1") == 2  # 0.05 s and a future event (counted as 0)
    assert value(reg, bucket, le="1.0") == 3
    assert value(reg, bucket, le="10.0") == 4
    assert value(reg, bucket, le="+Inf") == 4
    assert value(reg, "nlpmon_event_age_seconds_count") == 4
    assert value(reg, "nlpmon_event_age_seconds_sum") == pytest.approx(0.05 + 1.0 + 10.0)
    assert value(reg, "nlpmon_batch_seconds_count") == 2
    assert value(reg, "nlpmon_batch_seconds_sum") == pytest.approx(2.03)
    assert value(reg, "nlpmon_batch_seconds_bucket", le="0.05") == 1
    assert value(reg, "nlpmon_invalid_events_total", reason="malformed_json") == 2
    assert value(reg, "nlpmon_invalid_events_total", reason="bad_embedding") == 1
    assert value(reg, "nlpmon_invalid_events_total", reason="a") == 2  # third reason: the cap (3) is full
    assert value(reg, "nlpmon_invalid_events_total", reason="b") is None
    assert value(reg, "nlpmon_invalid_events_total", reason="other") == 2


def test_observe_runner_lag_counters_circuit_and_poll_age() -> None:
    reg = CollectorRegistry()
    mono = FakeClock(50.0)
    metrics = NlpmonMetrics(reg, clock=FakeClock(), monotonic=mono)
    assert value(reg, "nlpmon_last_poll_age_seconds") == 0  # since start-up, before the first poll
    mono.t = 53.0
    assert value(reg, "nlpmon_last_poll_age_seconds") == 3
    metrics.observe_runner(runner_metrics(
        dead_letters_sent=4, batches=10, commit_failures=1, rebalances=2, circuit_trips=1, circuit_state="open",
        last_poll_monotonic=52.5, assigned=(("t", 0), ("t", 1)), lag={("t", 0): 7, ("t", 1): 0}))
    assert value(reg, "nlpmon_last_poll_age_seconds") == 0.5
    assert value(reg, "nlpmon_consumer_lag", topic="t", partition="0") == 7
    assert value(reg, "nlpmon_consumer_lag", topic="t", partition="1") == 0
    assert value(reg, "nlpmon_assigned_partitions") == 2
    assert value(reg, "nlpmon_circuit_open") == 1
    assert value(reg, "nlpmon_dead_letters_total") == 4
    metrics.observe_runner(runner_metrics(
        dead_letters_sent=6, batches=15, commit_failures=1, rebalances=3, circuit_trips=1,
        circuit_state="closed", last_poll_monotonic=53.0, assigned=(("t", 0),), lag={("t", 0): 2}))
    assert value(reg, "nlpmon_consumer_lag", topic="t", partition="0") == 2
    assert value(reg, "nlpmon_consumer_lag", topic="t", partition="1") is None  # revoked: series removed
    assert value(reg, "nlpmon_circuit_open") == 0
    assert value(reg, "nlpmon_dead_letters_total") == 6
    assert value(reg, "nlpmon_batches_total") == 15
    assert value(reg, "nlpmon_rebalances_total") == 3
    assert value(reg, "nlpmon_circuit_trips_total") == 1
    # a new runner instance starts from zero: re-base, never count backwards
    metrics.observe_runner(runner_metrics(dead_letters_sent=1, batches=1))
    assert value(reg, "nlpmon_dead_letters_total") == 6
    metrics.observe_runner(runner_metrics(dead_letters_sent=3, batches=2))
    assert value(reg, "nlpmon_dead_letters_total") == 8


# -- cardinality ---------------------------------------------------------------------------------------------
def many_models(report: dict[str, Any], n: int) -> dict[str, Any]:
    return {f"m{i:05d}/1": renamed(report, f"m{i:05d}") for i in range(n)}


def test_model_cap_bounds_series_and_keeps_counting_under_other(stream: Stream) -> None:
    rep = stream.reports["demo-ner/1"]
    counts = {}
    for n in (100, 10_000):
        reg = CollectorRegistry()
        metrics = NlpmonMetrics(reg, max_models=5, clock=FakeClock())
        reports = many_models(rep, n)
        alarms = [Alarm(f"m{i:05d}", "1", "embedding", 0, "e", 2.0, 1.0, "mmd", 5, 1.0, 0.5) for i in range(n)]
        metrics.observe_reports(reports, alarms)
        counts[n] = sample_count(reg)
        other = {"model": "other", "model_version": "other"}
        assert value(reg, "nlpmon_tracked_models", series="own") == 5
        assert value(reg, "nlpmon_tracked_models", series="other") == n - 5
        assert value(reg, "nlpmon_events_total", **other, split="production") == (n - 5) * N_PROD
        assert value(reg, "nlpmon_drift_alarms_total", **other, signal="embedding") == n - 5
        assert value(reg, "nlpmon_model_status", **other, status="monitoring") == n - 5
        assert value(reg, "nlpmon_drift_score", **other, signal="embedding") == rep["signals"]["embedding"]["score"]
        assert value(reg, "nlpmon_drift_detected", **other, signal="embedding") == 1
        assert value(reg, "nlpmon_events_total", model="m00004", model_version="1", split="production") == N_PROD
        assert value(reg, "nlpmon_events_total", model="m00005", model_version="1", split="production") is None
        assert value(reg, "nlpmon_label_share", model="other", model_version="other", source="entity_label",
                     label="PERSON", window="current") is None  # no per-label series for the aggregate
        # counters keep counting under "other" as the overflow models grow
        grown = {k: {**r, "events": {"production": N_PROD + 10, "reference": N_REF}} for k, r in reports.items()}
        metrics.observe_reports(grown)
        assert value(reg, "nlpmon_events_total", **other, split="production") == (n - 5) * (N_PROD + 10)
        assert value(reg, "nlpmon_events_total", model="m00000", model_version="1", split="production") == N_PROD + 10
    assert counts[100] == counts[10_000]  # bounded: independent of the number of models


def test_label_cap_aggregates_overflow_labels(stream: Stream) -> None:
    rep = stream.reports["demo-ner/1"]
    n = 10_000
    label_confidence = {f"L{i:05d}": {"mean": (i % 10) / 10, "count": 1 + i % 3} for i in range(n)}
    signals = dict(rep["signals"])
    signals["entity_label"] = {**signals["entity_label"], "evidence": {"window": 1000, "moved_labels": [
        {"label": f"L{i:05d}", "reference": 1 / n, "current": 2 / n, "change": 1 / n} for i in range(n)]}}
    big = {**rep, "label_confidence": label_confidence, "signals": signals}
    reg = CollectorRegistry()
    NlpmonMetrics(reg, max_labels=30, clock=FakeClock()).observe_reports({"demo-ner/1": big})
    m = {"model": "demo-ner", "model_version": "1"}
    labels = {s.labels["label"] for fam in reg.collect() for s in fam.samples
              if fam.name in ("nlpmon_label_share", "nlpmon_label_confidence_mean")}
    assert len(labels) == 31 and "other" in labels  # 30 own labels + "other"
    rest = range(30, n)
    assert value(reg, "nlpmon_label_share", **m, source="entity_label", label="other",
                 window="current") == pytest.approx(len(rest) * 2 / n)
    want = sum(label_confidence[f"L{i:05d}"]["mean"] * label_confidence[f"L{i:05d}"]["count"] for i in rest) / sum(
        label_confidence[f"L{i:05d}"]["count"] for i in rest)
    assert value(reg, "nlpmon_label_confidence_mean", **m, label="other") == pytest.approx(want)
    assert value(reg, "nlpmon_label_confidence_mean", **m, label="L00007") == 0.7


# -- lifecycle -----------------------------------------------------------------------------------------------
def test_silent_model_is_retired_from_every_metric_and_frees_its_slot(stream: Stream) -> None:
    rep = stream.reports["demo-ner/1"]
    clock = FakeClock(0.0)
    reg = CollectorRegistry()
    metrics = NlpmonMetrics(reg, max_models=2, retire_after_s=600, clock=clock)

    def reports(b_events: int, models: tuple[str, ...] = ("a", "b")) -> dict[str, Any]:
        out = {f"{k}/1": renamed(rep, k) for k in models}
        if "b" in models:
            out["b/1"] = {**out["b/1"], "events": {"production": b_events, "reference": N_REF}}
        return out

    a_alarm = Alarm("a", "1", "embedding", 0, "e", 2.0, 1.0, "mmd", 5, 1.0, 0.5)
    metrics.observe_reports(reports(N_PROD), [a_alarm])
    own_a = [k for k in metrics.per_model_series() if k[1][0] == "a"]
    assert len(own_a) > 30
    for t, b in ((300.0, N_PROD + 1), (700.0, N_PROD + 2)):
        clock.t = t
        metrics.observe_reports(reports(b))
    assert metrics.retired_models() == [("a", "1")]  # silent since t=0, b moved at t=700
    for name, values in own_a:
        labels = dict(zip(next(s.labels for s in METRICS if s.name == name), values, strict=True))
        assert value(reg, name, **labels) is None, (name, values)
    assert not any(s.labels.get("model") == "a" for fam in reg.collect() for s in fam.samples)
    assert value(reg, "nlpmon_drift_score", model="b", model_version="1", signal="embedding") is not None
    # the freed slot goes to the next new model
    clock.t = 800.0
    metrics.observe_reports({**reports(N_PROD + 3), "c/1": renamed(rep, "c")})
    assert value(reg, "nlpmon_events_total", model="c", model_version="1", split="production") == N_PROD
    assert value(reg, "nlpmon_tracked_models", series="own") == 2
    assert value(reg, "nlpmon_tracked_models", series="other") == 0  # "a" is retired, not aggregated
    # a retired model that sees events again comes back, counting only its new events ("other": slots full)
    clock.t = 900.0
    a_more = {**renamed(rep, "a"), "events": {"production": N_PROD + 5, "reference": N_REF}}
    metrics.observe_reports({**reports(N_PROD + 4), "c/1": renamed(rep, "c"), "a/1": a_more})
    assert value(reg, "nlpmon_events_total", model="other", model_version="other", split="production") == 5


def test_absent_model_loses_gauges_at_once_and_counters_at_retirement(stream: Stream) -> None:
    rep = stream.reports["demo-ner/1"]
    clock = FakeClock(0.0)
    reg = CollectorRegistry()
    metrics = NlpmonMetrics(reg, retire_after_s=60, clock=clock)
    metrics.observe_reports({"demo-ner/1": rep})
    m = {"model": "demo-ner", "model_version": "1"}
    clock.t = 10.0
    metrics.observe_reports({})  # its partition moved to another member
    assert value(reg, "nlpmon_drift_score", **m, signal="embedding") is None
    assert value(reg, "nlpmon_model_status", **m, status="monitoring") is None
    assert value(reg, "nlpmon_events_total", **m, split="production") == N_PROD
    clock.t = 61.0
    metrics.observe_reports({})
    assert value(reg, "nlpmon_events_total", **m, split="production") is None
    assert metrics.series_count() == 0


def test_registries_are_independent_and_the_global_one_is_untouched() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    NlpmonMetrics(a).observe_batch(rejected_reasons=["x"])
    NlpmonMetrics(b)
    assert value(a, "nlpmon_invalid_events_total", reason="x") == 1
    assert value(b, "nlpmon_invalid_events_total", reason="x") is None
    assert prometheus_client.REGISTRY.get_sample_value("nlpmon_build_info", {"version": "0.1.0"}) is None
    with pytest.raises(ValueError):
        NlpmonMetrics(a)  # the same metrics twice on one registry


# -- catalogue and docs --------------------------------------------------------------------------------------
def test_catalogue_lists_every_exported_metric_with_its_help_and_labels(stream: Stream) -> None:
    reg = CollectorRegistry()
    metrics = NlpmonMetrics(reg, clock=FakeClock())
    metrics.observe_reports(stream.reports, stream.alarms)
    metrics.observe_batch(seconds=0.1, event_timestamps=[1.0], rejected_reasons=["malformed_json"])
    metrics.observe_runner(runner_metrics(lag={("t", 0): 1}, assigned=(("t", 0),)))
    catalogue = {c["name"]: c for c in metric_catalogue()}
    exported: dict[str, set[str]] = {}
    for fam in reg.collect():
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        assert name in catalogue, name
        assert fam.documentation == catalogue[name]["help"]
        assert fam.type == catalogue[name]["type"]
        labels = exported.setdefault(name, set())
        for s in fam.samples:
            labels |= set(s.labels) - {"le"}
    assert set(exported) == set(catalogue)
    empty_ok = {"nlpmon_label_share"}  # prediction_label etc. may be absent, but entity_label is there
    for name, labels in exported.items():
        if labels or name not in empty_ok:
            assert labels == set(catalogue[name]["labels"]), name
    for c in catalogue.values():
        assert c["help"] and c["type"] in {"counter", "gauge", "histogram"}
        assert c["name"].startswith("nlpmon_")
        assert c["name"].endswith("_total") == (c["type"] == "counter")


def test_docs_table_lists_exactly_the_catalogue() -> None:
    text = DOCS.read_text()
    assert catalogue_markdown() in text, "regenerate the table from catalogue_markdown()"
    names = [line.split("|")[1].strip().strip("`") for line in text.splitlines()
             if line.startswith("| `nlpmon_")]
    assert names == [c["name"] for c in metric_catalogue()]


def test_a_restored_monitor_does_not_count_its_history_again(stream: Stream) -> None:
    """After a restart (or a rebalance) the monitor's cumulative counts come back from its snapshot; the
    counter grows only by the events this process handles."""
    registry = CollectorRegistry()
    metrics = NlpmonMetrics(registry, clock=FakeClock())
    restored = MonitorSet(CONFIG)
    restored.restore(stream.snapshot)
    metrics.observe_reports(restored.report())
    labels = {"model": "demo-ner", "model_version": "1", "split": "production"}
    assert (value(registry, "nlpmon_events_total", **labels) or 0.0) == 0.0
    more = [json.dumps({**e, "event_id": f"again-{i}"}) for i, e in enumerate(stream.events[-50:])]
    restored.process_lines(more)
    metrics.observe_reports(restored.report())
    assert value(registry, "nlpmon_events_total", **labels) == 50


def test_mirrored_histogram_rejects_malformed_growth() -> None:
    from service.observability.histograms import MirroredHistogram

    hist = MirroredHistogram("h", "doc", ("a",))
    series = hist.labels("x")
    with pytest.raises(ValueError):
        series.add([1.0, 2.0], [1, 2], 0.0)  # needs 3 values
    with pytest.raises(ValueError):
        series.add([1.0], [1, -1], 0.0)
    with pytest.raises(ValueError):
        hist.labels("x", "y")
    assert series.add([1.0], [1, 2], 3.0) and not series.add([2.0], [1, 1], 0.0)
    (fam,) = hist.collect()
    assert [(s.name, s.labels.get("le"), s.value) for s in fam.samples] == [
        ("h_bucket", "1.0", 1.0), ("h_bucket", "+Inf", 2.0), ("h_count", None, 2.0), ("h_sum", None, 3.0)]
