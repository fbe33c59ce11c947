"""NlpmonMetrics: exact values from real MonitorSet reports, caps, retirement, the catalogue and its docs.

Every test builds a fresh CollectorRegistry and asserts with ``get_sample_value``.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry

from nlpmon.demo import generate_events
from nlpmon.kafka.runner_metrics import RunnerMetrics
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.model_monitor import Alarm
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.observability.exporter import NlpmonMetrics
from nlpmon.observability.metrics import METRICS, catalogue_markdown, metric_catalogue

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
    # the longest distribution window evaluated: a 300-event reference calibrates windows up to 150 events
    assert value(reg, "nlpmon_window_events", **m) == 100
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

    for source in ("entity_label_share", "token_tag_share"):  # the labels behind the per-label signals
        ranked = [x for x in rep["signals"][source]["evidence"]["rising_labels"] if x["score"] > 0]
        for x in ranked[:5]:
            assert value(reg, "nlpmon_drift_label_score", **m, signal=source, label=x["label"]) == x["score"]

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
        last_poll_monotonic=52.5, assigned=(("t", 0), ("t", 1)), lag={("t", 0): 7, ("t", 1): 0},
        longest_poll_gap_s=1.25))
    assert value(reg, "nlpmon_last_poll_age_seconds") == 0.5
    assert value(reg, "nlpmon_longest_poll_gap_seconds") == 1.25
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


def test_every_runner_count_is_exported() -> None:
    """One counters type for the runner, exported in full: each int count of RunnerMetrics moves exactly one
    counter series by its value (checkpoints, snapshots, lost assignments, offset gaps... were kept but never
    exported)."""
    import dataclasses

    counts = [f.name for f in dataclasses.fields(RunnerMetrics) if f.type in ("int", int)]
    assert {"checkpoints", "checkpoints_skipped", "snapshots_written", "snapshots_produced", "lost_assignments",
            "offset_gaps", "snapshot_tombstone_failures", "statistics_undecodable", "dead_letters_sent"} <= set(counts)
    for name in counts:
        reg = CollectorRegistry()
        metrics = NlpmonMetrics(reg, clock=FakeClock())
        before = {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in reg.collect() for s in fam.samples}
        metrics.observe_runner(runner_metrics(**{name: 7}))
        moved = [(key, s.value) for fam in reg.collect() for s in fam.samples
                 if (key := (s.name, tuple(sorted(s.labels.items())))) and s.name.endswith("_total")
                 and s.value != before.get(key, 0.0)]
        assert len(moved) == 1 and moved[0][0][1] == () and moved[0][1] == 7.0, (name, moved)


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
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        NlpmonMetrics(a)  # the same metrics twice on one registry


# -- catalogue and docs --------------------------------------------------------------------------------------
def test_catalogue_lists_every_exported_metric_with_its_help_and_labels(stream: Stream) -> None:
    reg = CollectorRegistry()
    metrics = NlpmonMetrics(reg, clock=FakeClock())
    reports = {k: with_quality(r, quality(join_here={"labels": 1}, delays=[0, 1, 1, 1, 1]))
               for k, r in stream.reports.items()}
    metrics.observe_reports(reports, stream.alarms)
    metrics.observe_batch(seconds=0.1, event_timestamps=[1.0], rejected_reasons=["malformed_json"],
                          unkeyed={"t": 1}, clock_skew={("demo-ner", "1", "future"): 1})
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
    parent_only = {"nlpmon_member_restarts_total"}  # declared by every process, series only in the parent
    for name in parent_only:
        assert exported.pop(name) == set(), name
    for name, labels in exported.items():
        if labels or name not in empty_ok:
            assert labels == set(catalogue[name]["labels"]), name
    for c in catalogue.values():
        assert c["help"] and c["type"] in {"counter", "gauge", "histogram"}
        assert c["name"].startswith("nlpmon_")
        assert c["name"].endswith("_total") == (c["type"] == "counter")


def test_unkeyed_events_are_counted_per_topic() -> None:
    reg = CollectorRegistry()
    metrics = NlpmonMetrics(reg, clock=FakeClock())
    metrics.observe_batch(unkeyed={"predictions": 3, "labels": 0})
    metrics.observe_batch(unkeyed={"predictions": 2, "labels": 4})
    assert reg.get_sample_value("nlpmon_unkeyed_events_total", {"topic": "predictions"}) == 5
    assert reg.get_sample_value("nlpmon_unkeyed_events_total", {"topic": "labels"}) == 4


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


# -- quality from delayed ground truth -------------------------------------------------------------------------
JOIN_KEYS = ("predictions", "labels", "matched", "prediction_expired_unlabelled", "label_expired_unmatched",
             "label_for_expired_prediction", "duplicate_label", "duplicate_prediction", "label_wrong_model",
             "task_mismatch", "prediction_evicted_memory", "label_evicted_memory")
DELAY_EDGES = [0.0, 60.0, 600.0, 3600.0]
QUALITY_FAMILIES = ("nlpmon_quality", "nlpmon_join")


def label_figures(tp: int, fp: int, fn: int) -> dict[str, Any]:
    """One label's figures as the core reports them (None where undefined, f1 0 then)."""
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {"precision": p, "recall": r, "f1": f1, "support": tp + fn, "tp": tp, "fp": fp, "fn": fn}


def figures(counts: dict[str, tuple[int, int, int]], documents: int) -> dict[str, Any]:
    labels = {k: label_figures(*c) for k, c in counts.items()}
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    micro = label_figures(tp, fp, fn)
    return {"documents": documents, "labels": labels,
            "micro": {"precision": micro["precision"], "recall": micro["recall"], "f1": micro["f1"]},
            "macro": {"f1": sum(x["f1"] for x in labels.values()) / len(labels) if labels else None}}


def quality(model: str = "demo-ner", version: str = "1", *, join_here: dict[str, int] | None = None,
            delays: list[int] | None = None, delay_sum: float = 0.0, **over: Any) -> dict[str, Any]:
    """A hand-built quality report of the contract's shape (token classification)."""
    current = figures({"PER": (40, 10, 5), "LOC": (30, 5, 15), "MISC": (0, 0, 3)}, documents=120)
    q: dict[str, Any] = {
        "model": model, "model_version": version, "task": "token-classification", **current,
        "reference": {"source": "reference", **figures({"PER": (90, 5, 5), "LOC": (80, 10, 10)}, documents=200)},
        "f1_drop": {"score": 4.2, "threshold": 3.72, "drift": True, "reference_f1": 0.91, "current_f1": 0.7},
        "estimated_precision": {"PER": 0.81, "LOC": 0.86},
        "calibrated": True, "calibration_spans": 170,
        "calibration_gap": {"PER": -0.01, "LOC": 0.0},
        "calibration_gap_overall": {"realised": 0.82, "estimated": 0.835, "gap": -0.015, "score": 0.9,
                                    "threshold": 3.72, "drift": False},
        "labelled_fraction": 0.4,
        "label_delay_seconds": {"edges": DELAY_EDGES, "cumulative_counts": delays or [0, 0, 0, 0, 0],
                                "sum": delay_sum, "count": (delays or [0])[-1]},
        "join": {**dict.fromkeys(JOIN_KEYS, 0), "matched": 120, "pending_predictions": 300, "pending_labels": 7,
                 "bytes": 52_000},
        "join_here": {**dict.fromkeys(JOIN_KEYS, 0), **(join_here or {})},
        "partial_match": partial_block(),
    }
    return {**q, **over}


@functools.lru_cache(maxsize=1)
def _partial_block_json() -> str:
    return json.dumps(partial_report()["partial_match"])


def partial_block() -> dict[str, Any]:
    """The ``partial_match`` block of a real report (a fresh copy each time)."""
    return dict(json.loads(_partial_block_json()))


def with_quality(report: dict[str, Any], q: dict[str, Any] | None, model: str | None = None,
                 version: str = "1") -> dict[str, Any]:
    out = renamed(report, model, version) if model else dict(report)
    if q is not None:
        out["quality"] = q
    return out


def quality_samples(registry: CollectorRegistry) -> list[Any]:
    return [s for fam in registry.collect() if fam.name.startswith(QUALITY_FAMILIES) for s in fam.samples]


def test_quality_figures_are_exported_and_undefined_ones_omitted(stream: Stream) -> None:
    reg = CollectorRegistry()
    q = quality()
    NlpmonMetrics(reg, clock=FakeClock()).observe_reports({"demo-ner/1": with_quality(stream.reports["demo-ner/1"], q)})
    m = {"model": "demo-ner", "model_version": "1"}

    for name, block in (("nlpmon_quality", q), ("nlpmon_quality_reference", q["reference"])):
        for label, fig in block["labels"].items():
            for metric in ("precision", "recall", "f1", "support"):
                want = fig[metric]
                assert value(reg, name, **m, label=label, metric=metric) == want, (name, label, metric)
        for metric in ("precision", "recall", "f1"):
            assert value(reg, name, **m, label="__micro__", metric=metric) == block["micro"][metric]
        assert value(reg, name, **m, label="__micro__", metric="support") == sum(
            f["support"] for f in block["labels"].values())
        assert value(reg, name, **m, label="__macro__", metric="f1") == block["macro"]["f1"]
        assert value(reg, name, **m, label="__all__", metric="accuracy") is None  # token classification
    assert q["labels"]["MISC"]["precision"] is None  # never predicted: no precision series, the rest is there
    assert value(reg, "nlpmon_quality", **m, label="MISC", metric="recall") == 0.0
    assert value(reg, "nlpmon_quality_reference", **m, label="MISC", metric="f1") is None  # not in the reference
    assert value(reg, "nlpmon_quality_documents", **m) == 120
    assert value(reg, "nlpmon_quality_f1_drop_score", **m) == 4.2
    assert value(reg, "nlpmon_quality_f1_drop_threshold", **m) == 3.72
    assert value(reg, "nlpmon_quality_drift", **m, signal="f1_drop") == 1
    assert value(reg, "nlpmon_quality_drift", **m, signal="calibration_gap") == 0
    assert value(reg, "nlpmon_quality_calibration_gap_score", **m) == 0.9
    assert value(reg, "nlpmon_quality_calibration_gap_threshold", **m) == 3.72
    assert value(reg, "nlpmon_quality_calibration_gap", **m, label="__all__") == -0.015
    assert value(reg, "nlpmon_quality_calibration_gap", **m, label="PER") == -0.01
    assert value(reg, "nlpmon_quality_estimated_precision", **m, label="LOC") == 0.86
    assert value(reg, "nlpmon_quality_estimated_precision", **m, label="MISC") is None
    assert value(reg, "nlpmon_quality_calibrated", **m) == 1
    assert value(reg, "nlpmon_quality_labelled_fraction", **m) == 0.4
    assert value(reg, "nlpmon_join_pending", **m, kind="predictions") == 300
    assert value(reg, "nlpmon_join_pending", **m, kind="labels") == 7
    assert value(reg, "nlpmon_join_buffer_bytes", **m) == 52_000
    samples = quality_samples(reg)
    assert samples and not any(math.isnan(s.value) for s in samples)


def test_quality_without_baseline_or_tests_omits_those_series(stream: Stream) -> None:
    """Nothing undefined becomes a NaN gauge: no baseline yet -> no reference figures; a test that cannot be
    made yet -> its flag (0) and threshold but no score; no overall gap -> no calibration-gap series."""
    reg = CollectorRegistry()
    empty = {"documents": 0, "labels": {}, "micro": {"precision": None, "recall": None, "f1": None},
             "macro": {"f1": None}}
    collecting = figures({"PER": (5, 1, 1)}, documents=7)  # a baseline still being collected
    q = quality(**empty, reference={"source": None, **collecting},
                f1_drop={"score": None, "threshold": 3.72, "drift": False, "reference_f1": None, "current_f1": None},
                estimated_precision={"PER": 0.7}, calibrated=False, calibration_spans=0, calibration_gap={},
                calibration_gap_overall=None, labelled_fraction=None)
    NlpmonMetrics(reg, clock=FakeClock()).observe_reports({"demo-ner/1": with_quality(stream.reports["demo-ner/1"], q)})
    m = {"model": "demo-ner", "model_version": "1"}
    names = {s.name for s in quality_samples(reg)}
    assert "nlpmon_quality" not in names and "nlpmon_quality_reference" not in names
    assert value(reg, "nlpmon_quality_documents", **m) == 0
    assert value(reg, "nlpmon_quality_drift", **m, signal="f1_drop") == 0
    assert value(reg, "nlpmon_quality_f1_drop_threshold", **m) == 3.72
    assert value(reg, "nlpmon_quality_f1_drop_score", **m) is None
    assert value(reg, "nlpmon_quality_drift", **m, signal="calibration_gap") is None
    assert "nlpmon_quality_calibration_gap" not in names and "nlpmon_quality_calibration_gap_score" not in names
    assert value(reg, "nlpmon_quality_labelled_fraction", **m) is None
    assert value(reg, "nlpmon_quality_estimated_precision", **m, label="PER") == 0.7
    assert value(reg, "nlpmon_quality_calibrated", **m) == 0
    assert not any(math.isnan(s.value) for s in quality_samples(reg))


def test_text_classification_exports_accuracy(stream: Stream) -> None:
    reg = CollectorRegistry()
    cur = {**figures({"pos": (50, 10, 5), "neg": (30, 5, 10)}, documents=110), "accuracy": 80 / 110}
    ref = {"source": "baseline", **figures({"pos": (60, 5, 5), "neg": (40, 5, 5)}, documents=115),
           "accuracy": 100 / 115}
    q = quality(task="text-classification", **cur, reference=ref)
    NlpmonMetrics(reg, clock=FakeClock()).observe_reports({"demo-ner/1": with_quality(stream.reports["demo-ner/1"], q)})
    m = {"model": "demo-ner", "model_version": "1", "label": "__all__", "metric": "accuracy"}
    assert value(reg, "nlpmon_quality", **m) == 80 / 110
    assert value(reg, "nlpmon_quality_reference", **m) == 100 / 115
    assert value(reg, "nlpmon_quality", model="demo-ner", model_version="1", label="neg", metric="f1") == \
        cur["labels"]["neg"]["f1"]


def test_models_without_quality_export_no_quality_series(stream: Stream) -> None:
    reg = CollectorRegistry()
    metrics = NlpmonMetrics(reg, clock=FakeClock())
    rep = stream.reports["demo-ner/1"]
    metrics.observe_reports({"demo-ner/1": rep, "b/1": with_quality(rep, quality("b"), model="b")})
    assert quality_samples(reg)
    assert not [s for s in quality_samples(reg) if s.labels.get("model") == "demo-ner"]
    assert value(reg, "nlpmon_events_total", model="demo-ner", model_version="1", split="production") == N_PROD


def test_join_counters_grow_by_join_here_and_rebase_when_it_drops(stream: Stream) -> None:
    reg = CollectorRegistry()
    metrics = NlpmonMetrics(reg, clock=FakeClock())
    rep = stream.reports["demo-ner/1"]
    m = {"model": "demo-ner", "model_version": "1"}

    def observe(**join_here: int) -> None:
        metrics.observe_reports({"demo-ner/1": with_quality(rep, quality(join_here=join_here))})

    observe()  # every outcome exists from the start, at 0: matched / labels is defined while nothing matches
    for key in JOIN_KEYS[2:]:
        assert value(reg, "nlpmon_join_total", **m, outcome=key) == 0, key
    assert value(reg, "nlpmon_join_events_total", **m, kind="predictions") == 0
    assert value(reg, "nlpmon_join_events_total", **m, kind="labels") == 0
    assert value(reg, "nlpmon_join_total", **m, outcome="predictions") is None  # inputs are not outcomes
    observe(predictions=100, labels=40, matched=30, label_for_expired_prediction=6)
    observe(predictions=150, labels=50, matched=38, label_for_expired_prediction=9)
    assert value(reg, "nlpmon_join_events_total", **m, kind="predictions") == 150
    assert value(reg, "nlpmon_join_events_total", **m, kind="labels") == 50
    assert value(reg, "nlpmon_join_total", **m, outcome="matched") == 38
    assert value(reg, "nlpmon_join_total", **m, outcome="label_for_expired_prediction") == 9
    # a new owner process counts from 0 again: every counter re-bases together, never backwards, even
    # those whose new count happens to be higher (counting 12 - 9 would be a made-up number)
    observe(predictions=10, labels=5, matched=2, label_for_expired_prediction=12)
    assert value(reg, "nlpmon_join_total", **m, outcome="matched") == 38
    assert value(reg, "nlpmon_join_events_total", **m, kind="labels") == 50
    assert value(reg, "nlpmon_join_total", **m, outcome="label_for_expired_prediction") == 9
    observe(predictions=20, labels=9, matched=5, label_for_expired_prediction=13)
    assert value(reg, "nlpmon_join_total", **m, outcome="matched") == 41
    assert value(reg, "nlpmon_join_events_total", **m, kind="labels") == 54
    assert value(reg, "nlpmon_join_total", **m, outcome="label_for_expired_prediction") == 10


def test_label_delay_is_a_cumulative_histogram_that_never_goes_backwards(stream: Stream) -> None:
    reg = CollectorRegistry()
    metrics = NlpmonMetrics(reg, clock=FakeClock())
    rep = stream.reports["demo-ner/1"]
    m = {"model": "demo-ner", "model_version": "1"}
    bucket = "nlpmon_quality_label_delay_seconds_bucket"

    def observe(cumulative: list[int], total: float, edges: list[float] = DELAY_EDGES) -> None:
        q = quality(delays=cumulative, delay_sum=total)
        q["label_delay_seconds"]["edges"] = edges
        metrics.observe_reports({"demo-ner/1": with_quality(rep, q)})

    def buckets() -> list[float | None]:
        return [value(reg, bucket, **m, le=le) for le in ("0.0", "60.0", "600.0", "3600.0", "+Inf")]

    observe([0, 0, 0, 0, 0], 0.0)
    assert buckets() == [0, 0, 0, 0, 0]  # the series exists before the first label
    observe([1, 4, 9, 10, 12], 30_000.0)  # 1 at 0 s, 3 within a minute, ..., 2 above an hour
    assert buckets() == [1, 4, 9, 10, 12]
    assert value(reg, "nlpmon_quality_label_delay_seconds_count", **m) == 12
    assert value(reg, "nlpmon_quality_label_delay_seconds_sum", **m) == 30_000.0
    observe([1, 6, 12, 13, 15], 31_000.0)
    assert buckets() == [1, 6, 12, 13, 15]
    observe([0, 1, 1, 1, 2], 100.0)  # a new owner counts from 0: re-based, nothing counted
    assert buckets() == [1, 6, 12, 13, 15]
    assert value(reg, "nlpmon_quality_label_delay_seconds_sum", **m) == 31_000.0
    observe([0, 2, 3, 3, 4], 200.0)
    assert buckets() == [1, 7, 14, 15, 17]
    assert value(reg, "nlpmon_quality_label_delay_seconds_sum", **m) == 31_100.0
    observe([0, 0, 5], 900.0, edges=[10.0, 100.0])  # other buckets than the series': ignored, not reset
    observe([0, 0, 9], 1900.0, edges=[10.0, 100.0])
    assert buckets() == [1, 7, 14, 15, 17]
    assert value(reg, bucket, **m, le="10.0") is None


def test_join_counters_of_the_contract_map_to_documented_series() -> None:
    from nlpmon.observability.quality_series import JOIN_OUTCOMES, join_series

    assert {join_series(k) for k in JOIN_KEYS} == {
        ("nlpmon_join_events_total", "predictions"), ("nlpmon_join_events_total", "labels"),
        *(("nlpmon_join_total", o) for o in JOIN_OUTCOMES)}
    assert len(JOIN_OUTCOMES) == len(JOIN_KEYS) - 2
    table = DOCS.read_text().split("| outcome | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = {x for row in table.splitlines() if row.strip().startswith("| `")
                  for x in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
    assert documented == set(JOIN_OUTCOMES)


def test_mirrored_histogram_rejects_malformed_growth() -> None:
    from nlpmon.observability.histograms import MirroredHistogram

    hist = MirroredHistogram("h", "doc", ("a",))
    series = hist.labels("x")
    with pytest.raises(ValueError, match=r"needs len\(edges\) \+ 1 = 3 values >= 0"):
        series.add([1.0, 2.0], [1, 2], 0.0)  # needs 3 values
    with pytest.raises(ValueError, match=r"values >= 0, got \[1.0, -1.0\]"):
        series.add([1.0], [1, -1], 0.0)
    with pytest.raises(ValueError, match=r"h takes labels \('a',\), got \('x', 'y'\)"):
        hist.labels("x", "y")
    assert series.add([1.0], [1, 2], 3.0) and not series.add([2.0], [1, 1], 0.0)
    (fam,) = hist.collect()
    assert [(s.name, s.labels.get("le"), s.value) for s in fam.samples] == [
        ("h_bucket", "1.0", 1.0), ("h_bucket", "+Inf", 2.0), ("h_count", None, 2.0), ("h_sum", None, 3.0)]


def test_quality_labels_share_the_label_cap_and_overflow_is_pooled_from_counts(stream: Stream) -> None:
    rep = stream.reports["demo-ner/1"]
    n = 40
    counts = {f"Q{i:03d}": (i, i % 7, i % 5) for i in range(n)}
    q = quality(**figures(counts, documents=500), reference={"source": "reference", **figures(counts, 900)},
                estimated_precision={k: 0.5 for k in counts}, calibration_gap={k: 0.01 for k in counts})
    reg = CollectorRegistry()
    NlpmonMetrics(reg, max_labels=30, clock=FakeClock()).observe_reports({"demo-ner/1": with_quality(rep, q)})
    m = {"model": "demo-ner", "model_version": "1"}
    shared = {s.labels["label"] for fam in reg.collect() for s in fam.samples
              if fam.name in ("nlpmon_label_share", "nlpmon_label_confidence_mean", "nlpmon_quality",
                              "nlpmon_quality_estimated_precision")} - {"__micro__", "__macro__"}
    assert len(shared) == 31 and "other" in shared  # one cap of 30 labels per model, for every label metric
    own_quality = {s.labels["label"] for s in quality_samples(reg) if s.name == "nlpmon_quality"} - {
        "__micro__", "__macro__", "other"}
    pooled = [counts[k] for k in counts if k not in own_quality]
    assert len(pooled) >= n - 30
    tp, fp, fn = (sum(c[i] for c in pooled) for i in range(3))
    for name in ("nlpmon_quality", "nlpmon_quality_reference"):
        assert value(reg, name, **m, label="other", metric="precision") == pytest.approx(tp / (tp + fp))
        assert value(reg, name, **m, label="other", metric="recall") == pytest.approx(tp / (tp + fn))
        assert value(reg, name, **m, label="other", metric="f1") == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert value(reg, name, **m, label="other", metric="support") == tp + fn
        assert value(reg, name, **m, label="__micro__", metric="support") == sum(c[0] + c[2] for c in counts.values())
    # estimates and gaps cannot be pooled without span counts: no "other" series for them
    assert value(reg, "nlpmon_quality_estimated_precision", **m, label="other") is None
    assert value(reg, "nlpmon_quality_calibration_gap", **m, label="other") is None
    assert value(reg, "nlpmon_quality_calibration_gap", **m, label="__all__") == -0.015


def test_quality_of_overflow_models_is_aggregated_under_other(stream: Stream) -> None:
    rep = stream.reports["demo-ner/1"]
    reg = CollectorRegistry()
    metrics = NlpmonMetrics(reg, max_models=1, clock=FakeClock())
    calm = {"score": 1.0, "threshold": 3.72, "drift": False, "reference_f1": 0.9, "current_f1": 0.89}

    def reports(growth: int) -> dict[str, Any]:
        here = {"labels": 10 * growth, "matched": 8 * growth}
        out = {"own/1": with_quality(rep, quality("own", join_here=here, f1_drop=calm), model="own")}
        # "x" runs two versions: its join (the model's) must count once; "y" drifts
        for model, version, drop in (("x", "1", calm), ("x", "2", calm),
                                     ("y", "1", {**calm, "score": 5.0, "drift": True})):
            q = quality(model, version, join_here=here, f1_drop=drop,
                        delays=[0, growth, growth, 2 * growth, 2 * growth])
            out[f"{model}/{version}"] = with_quality(rep, q, model=model, version=version)
        return out

    metrics.observe_reports(reports(1))
    metrics.observe_reports(reports(3))
    o = {"model": "other", "model_version": "other"}
    assert value(reg, "nlpmon_tracked_models", series="other") == 3
    assert value(reg, "nlpmon_join_total", **o, outcome="matched") == 2 * 24  # x and y, 24 each
    assert value(reg, "nlpmon_join_events_total", **o, kind="labels") == 2 * 30
    assert value(reg, "nlpmon_join_total", model="own", model_version="1", outcome="matched") == 24
    assert value(reg, "nlpmon_join_pending", **o, kind="predictions") == 2 * 300  # per distinct model
    assert value(reg, "nlpmon_join_buffer_bytes", **o) == 2 * 52_000
    assert value(reg, "nlpmon_quality_documents", **o) == 3 * 120  # per version: windows are per version
    assert value(reg, "nlpmon_quality_drift", **o, signal="f1_drop") == 1
    assert value(reg, "nlpmon_quality_f1_drop_score", **o) == 5.0
    assert value(reg, "nlpmon_quality_f1_drop_threshold", **o) == 3.72
    assert value(reg, "nlpmon_quality_drift", **o, signal="calibration_gap") == 0
    assert value(reg, "nlpmon_quality_label_delay_seconds_count", **o) == 3 * 6  # versions' delays add up
    assert value(reg, "nlpmon_quality_label_delay_seconds_bucket", **o, le="60.0") == 3 * 3
    assert not [s for s in quality_samples(reg) if s.labels.get("model") == "other" and "label" in s.labels]
    assert value(reg, "nlpmon_quality_labelled_fraction", **o) is None  # no ratio for the aggregate
    assert value(reg, "nlpmon_quality_drift", model="own", model_version="1", signal="f1_drop") == 0


def test_quality_series_follow_absence_and_retirement(stream: Stream) -> None:
    """Absent from the reports (partition moved): quality gauges go at once, join counters and the delay
    histogram stay; retired (no event for retire_after_s): everything goes, and the slot is freed."""
    rep = stream.reports["demo-ner/1"]
    clock = FakeClock(0.0)
    reg = CollectorRegistry()
    metrics = NlpmonMetrics(reg, max_models=1, retire_after_s=60, clock=clock)
    m = {"model": "demo-ner", "model_version": "1"}
    q = quality(join_here={"labels": 5, "matched": 4}, delays=[0, 2, 3, 4, 4], delay_sum=500.0)
    metrics.observe_reports({"demo-ner/1": with_quality(rep, q)})
    assert value(reg, "nlpmon_quality", **m, label="PER", metric="f1") is not None
    clock.t = 10.0
    metrics.observe_reports({})
    left = {s.name for s in quality_samples(reg) if s.labels.get("model") == "demo-ner"}
    assert left == {"nlpmon_join_total", "nlpmon_join_events_total", "nlpmon_join_created",
                    "nlpmon_join_events_created", "nlpmon_quality_label_delay_seconds_bucket",
                    "nlpmon_quality_label_delay_seconds_count", "nlpmon_quality_label_delay_seconds_sum"}
    assert value(reg, "nlpmon_join_total", **m, outcome="matched") == 4
    assert value(reg, "nlpmon_quality_label_delay_seconds_count", **m) == 4
    clock.t = 61.0
    metrics.observe_reports({})
    assert not [s for s in quality_samples(reg) if s.labels.get("model") == "demo-ner"]
    assert metrics.series_count() == 0
    # the freed slot goes to the next model, whose quality series are its own
    clock.t = 70.0
    metrics.observe_reports({"b/1": with_quality(rep, quality("b"), model="b")})
    assert value(reg, "nlpmon_quality_documents", model="b", model_version="1") == 120
    assert value(reg, "nlpmon_tracked_models", series="other") == 0


# -- partial-match schemes ----------------------------------------------------------------------------------------
def partial_report(labels: tuple[str, ...] = ("PER", "LOC", "ORG", "MISC"), n: int = 300) -> dict[str, Any]:
    """A real QualityMonitor report: boundaries off and types swapped in part of the production documents."""
    import random

    from nlpmon.events import decode_event
    from nlpmon.quality.events import decode_ground_truth
    from nlpmon.quality.quality_monitor import QualityConfig, QualityMonitor

    rng = random.Random(5)
    mon = QualityMonitor("demo-ner", QualityConfig(baseline_documents=100, min_test_documents=50))
    for i in range(n):
        gold = [(10 * k, 10 * k + 5, rng.choice(labels)) for k in range(3)]
        pred = [(s, e + (i > 100 and rng.random() < 0.3), lab if rng.random() < 0.9 else rng.choice(labels))
                for s, e, lab in gold]
        ev = {"event_id": f"e{i}", "model": "demo-ner", "model_version": "1", "timestamp": float(i),
              "entities": [{"label": lab, "start": s, "end": e} for s, e, lab in pred]}
        mon.add_predictions([decode_event(json.dumps(ev))], now=float(i))
        gt = {"event_id": f"e{i}", "model": "demo-ner",
              "entities": [{"label": lab, "start": s, "end": e} for s, e, lab in gold]}
        mon.add_labels([decode_ground_truth(json.dumps(gt))], now=float(i))
    return mon.report("1")


def test_partial_match_figures_are_exported_as_reported(stream: Stream) -> None:
    reg = CollectorRegistry()
    q = partial_report()
    NlpmonMetrics(reg, clock=FakeClock()).observe_reports({"demo-ner/1": with_quality(stream.reports["demo-ner/1"], q)})
    m = {"model": "demo-ner", "model_version": "1"}
    pm = q["partial_match"]
    for scheme, block in pm["schemes"].items():
        for metric in ("precision", "recall", "f1", "correct", "incorrect", "partial", "missed", "spurious"):
            assert value(reg, "nlpmon_quality_partial", **m, scheme=scheme, label="__overall__", metric=metric) == \
                block["overall"][metric], (scheme, metric)
        for label, fig in block["labels"].items():
            for metric in ("precision", "recall", "f1"):
                assert value(reg, "nlpmon_quality_partial", **m, scheme=scheme, label=label, metric=metric) == \
                    fig[metric]
            assert value(reg, "nlpmon_quality_partial", **m, scheme=scheme, label=label, metric="correct") is None
        assert value(reg, "nlpmon_quality_partial_drift", **m, scheme=scheme) == float(block["f1_drop"]["drift"])
        assert value(reg, "nlpmon_quality_partial_f1_drop_score", **m, scheme=scheme) == block["f1_drop"]["score"]
        assert value(reg, "nlpmon_quality_partial_reference", **m, scheme=scheme, metric="f1") == \
            pm["reference"]["schemes"][scheme]["overall"]["f1"]
    assert pm["schemes"]["strict"]["f1_drop"]["drift"]  # the faults are big enough to flag
    assert not any(math.isnan(s.value) for s in quality_samples(reg))


def test_partial_match_labels_over_the_cap_are_pooled_from_their_counts(stream: Stream) -> None:
    """With max_labels=2 the other labels share label="other", their figures recomputed from the summed
    counts as nervaluate computes them; the series count stays within scheme x metric x (cap + 2)."""
    reg = CollectorRegistry()
    q = partial_report()
    NlpmonMetrics(reg, clock=FakeClock(), max_labels=2).observe_reports(
        {"demo-ner/1": with_quality(stream.reports["demo-ner/1"], q)})
    m = {"model": "demo-ner", "model_version": "1"}
    partial = [s for fam in reg.collect() if fam.name == "nlpmon_quality_partial" for s in fam.samples]
    own = {s.labels["label"] for s in partial} - {"__overall__", "other"}
    assert len(own) <= 2 and {s.labels["label"] for s in partial} >= {"__overall__", "other"}
    assert len(partial) <= 4 * (3 * (2 + 1) + 8)
    for scheme, block in q["partial_match"]["schemes"].items():
        pooled = [fig for name, fig in block["labels"].items() if name not in own]
        c = {k: sum(f[k] for f in pooled) for k in ("correct", "incorrect", "partial", "missed", "spurious")}
        credit = c["correct"] + (0.5 * c["partial"] if scheme == "partial" else 0)
        p = credit / (c["correct"] + c["incorrect"] + c["partial"] + c["spurious"])
        r = credit / (c["correct"] + c["incorrect"] + c["partial"] + c["missed"])
        assert value(reg, "nlpmon_quality_partial", **m, scheme=scheme, label="other", metric="precision") == \
            pytest.approx(p, rel=1e-12)
        assert value(reg, "nlpmon_quality_partial", **m, scheme=scheme, label="other", metric="f1") == \
            pytest.approx(2 * p * r / (p + r), rel=1e-12)


def test_partial_match_flags_of_overflow_models_are_maxima(stream: Stream) -> None:
    reg = CollectorRegistry()
    q = partial_report()
    calm = json.loads(json.dumps(q))
    for block in calm["partial_match"]["schemes"].values():
        block["f1_drop"].update(drift=False, score=0.5)
    rep = stream.reports["demo-ner/1"]
    NlpmonMetrics(reg, clock=FakeClock(), max_models=1).observe_reports({
        "a/1": with_quality(rep, calm, model="a"), "b/1": with_quality(rep, q, model="b"),
        "c/1": with_quality(rep, calm, model="c")})
    o = {"model": "other", "model_version": "other"}
    for scheme, block in q["partial_match"]["schemes"].items():
        assert value(reg, "nlpmon_quality_partial_drift", **o, scheme=scheme) == float(block["f1_drop"]["drift"])
        assert value(reg, "nlpmon_quality_partial_f1_drop_score", **o, scheme=scheme) == max(
            0.5, block["f1_drop"]["score"])
    assert value(reg, "nlpmon_quality_partial", **o, scheme="strict", label="__overall__", metric="f1") is None


def test_a_model_that_leaves_and_comes_back_counts_its_new_own_work_in_full(stream: Stream) -> None:
    """A group member that gives a model's partition away and gets it back later (``--processes``, a
    rebalance) has a new monitor whose own counts start at 0 again: all of them are counted, none lost
    (also when the new count is already above the old one, so that no drop shows the change)."""
    reg = CollectorRegistry()
    metrics = NlpmonMetrics(reg, clock=FakeClock())
    rep = dict(stream.reports["demo-ner/1"])
    m = {"model": "demo-ner", "model_version": "1", "split": "production"}
    metrics.observe_reports({"demo-ner/1": {**rep, "events_processed_here": {"production": 50}}})
    metrics.observe_reports({})  # another member holds it now
    metrics.observe_reports({"demo-ner/1": {**rep, "events_processed_here": {"production": 80}}},
                            recounted={("demo-ner", "1")})  # back, in a new monitor counting from 0
    assert value(reg, "nlpmon_events_total", **m) == 130
    metrics.observe_reports({"demo-ner/1": {**rep, "events_processed_here": {"production": 90}}})
    assert value(reg, "nlpmon_events_total", **m) == 140
