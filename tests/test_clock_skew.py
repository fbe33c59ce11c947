"""Event clocks (RELIABILITY.md scenario 18): one event with a timestamp far in the future or the past cannot
pin a gauge, inflate the age histogram, age a window or blind NlpmonModelSilent. Processing time is the
processor's injected clock; the metrics are read from a fresh CollectorRegistry."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from nlpmon.app.processor import MonitorPartitionProcessor, References
from nlpmon.demo import SyntheticStream
from nlpmon.kafka.processor import Record
from nlpmon.monitor.config import MonitorConfig
from nlpmon.observability.exporter import NlpmonMetrics
from nlpmon.quality import QualityConfig

NOW = 1_800_000_000.0
YEAR_9999 = 253402300799.0
CONFIG = MonitorConfig(auto_baseline_events=200, min_reference_events=200, reference_reservoir=400,
                       embedding_windows=(5, 20), distribution_windows=(20, 40), block_events=20,
                       calibration_splits=2, random_features=32, pca_components=4)
MODEL = {"model": "quiet-ner", "model_version": "1"}


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def stream(n: int, t0: float, seed: int = 4) -> list[dict[str, Any]]:
    return list(SyntheticStream(seed=seed, dim=16, model="quiet-ner", t0=t0, events_per_second=10).events(n))


def records(events: list[dict[str, Any]], start: int = 0) -> list[Record]:
    return [Record(start + i, json.dumps(e).encode(), b"quiet-ner", int(NOW * 1000)) for i, e in enumerate(events)]


class Service:
    """A processor and the metrics, fed the way NlpmonService feeds them (without Kafka)."""

    def __init__(self, config: MonitorConfig = CONFIG) -> None:
        self.clock = Clock()
        self.processor = MonitorPartitionProcessor("t", 0, config, References(), quality=QualityConfig(),
                                                   clock=self.clock)
        self.registry = CollectorRegistry()
        self.metrics = NlpmonMetrics(self.registry, clock=self.clock)
        self.offset = 0

    def feed(self, events: list[dict[str, Any]]) -> list[Any]:
        rejected = self.processor.process(records(events, self.offset))
        self.offset += len(events)
        stats = self.processor.batch_stats.drain()
        self.metrics.observe_batch(seconds=stats.seconds, event_timestamps=stats.event_times,
                                   rejected_reasons=stats.rejected_reasons, clock_skew=stats.clock_skew)
        self.metrics.observe_reports(self.processor.report(), now=self.clock())
        return rejected

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


def skewed(events: list[dict[str, Any]], at: int, timestamp: float) -> list[dict[str, Any]]:
    out = [dict(e) for e in events]
    out[at]["timestamp"] = timestamp
    return out


def test_a_year_9999_event_cannot_pin_the_newest_event_gauge_and_the_silent_alert_fires() -> None:
    svc = Service()
    events = stream(300, t0=NOW - 30)
    assert svc.feed(events[:250]) == []
    assert svc.processor.report()["quiet-ner/1"]["status"] == "monitoring"
    assert svc.feed(skewed(skewed(events[250:], 10, YEAR_9999), 20, 0.0)) == []
    gauge = svc.value("nlpmon_last_event_timestamp_seconds", **MODEL)
    assert gauge is not None and gauge == NOW + CONFIG.max_clock_skew_seconds  # clamped, not 2.5e11
    assert svc.value("nlpmon_clock_skew_events_total", **MODEL, direction="future") == 1
    assert svc.value("nlpmon_clock_skew_events_total", **MODEL, direction="past") == 1
    assert svc.value("nlpmon_events_total", **MODEL, split="production") == 300  # both monitored
    # NlpmonModelSilent: time() - newest event time > 1800 s once the model stops (the rule's condition,
    # with the gauge as exported): 40 minutes after the last event it holds again
    assert NOW + 2400 - gauge > 1800


def test_1970_timestamps_count_at_most_max_event_age_in_the_age_histogram() -> None:
    svc = Service()
    events = stream(300, t0=NOW - 30)
    svc.feed(events[:250])
    before = svc.value("nlpmon_event_age_seconds_sum") or 0.0
    svc.feed([dict(e, timestamp=0) for e in events[250:]])
    added = (svc.value("nlpmon_event_age_seconds_sum") or 0.0) - before
    assert added == pytest.approx(50 * CONFIG.max_event_age_seconds)  # not 50 x 1.8e9 s
    assert svc.value("nlpmon_clock_skew_events_total", **MODEL, direction="past") == 50


def test_a_skewed_event_neither_breaks_nor_ages_a_window() -> None:
    """With max_window_age_seconds, a 1970 or 9999 timestamp is unknown to the windows: the scores equal
    those of the same stream without it (a 1970 start made every window through it stale before)."""
    config = CONFIG.model_copy(update={"max_window_age_seconds": 3600.0})
    events = stream(400, t0=NOW - 60)
    plain, odd = Service(config), Service(config)
    plain.feed(events[:250])
    odd.feed(events[:250])
    plain.feed(events[250:])
    odd.feed(skewed(skewed(events[250:], -10, 0.0), -1, YEAR_9999))  # inside the newest windows
    want, got = plain.processor.report()["quiet-ner/1"], odd.processor.report()["quiet-ner/1"]
    assert {k: s["score"] for k, s in got["signals"].items()} == {k: s["score"] for k, s in want["signals"].items()}
    assert got["history"]["signals"] == want["history"]["signals"]
    assert all(s["window"] == w["window"] for s, w in zip(got["signals"].values(), want["signals"].values(),
                                                           strict=True))


def test_reject_clock_skew_dead_letters_them_with_the_reason() -> None:
    svc = Service(CONFIG.model_copy(update={"reject_clock_skew": True}))
    events = stream(260, t0=NOW - 30)
    rejected = svc.feed(skewed(skewed(events, 5, YEAR_9999), 7, NOW - 8 * 86400))
    assert [(r.offset, r.reason) for r in rejected] == [(5, "clock_skew"), (7, "clock_skew")]
    assert "after the processing time" in rejected[0].detail and "before the processing time" in rejected[1].detail
    assert svc.value("nlpmon_invalid_events_total", reason="clock_skew") == 2
    assert svc.value("nlpmon_events_total", **MODEL, split="production") == 258
    assert svc.value("nlpmon_clock_skew_events_total", **MODEL, direction="future") == 1


def test_a_skewed_label_time_is_not_a_label_delay() -> None:
    svc = Service()
    events = stream(3, t0=NOW - 30)
    svc.feed(events)
    labels = [{"event_id": e["event_id"], "model": "quiet-ner", "entities": [], "timestamp": t}
              for e, t in zip(events, (NOW - 10, YEAR_9999, NOW + 10), strict=True)]
    assert svc.processor.process_labels(records(labels, 100)) == []
    delays = svc.processor.report()["quiet-ner/1"]["quality"]["label_delay_seconds"]
    assert delays["count"] == 2 and delays["sum"] < 100  # the year-9999 label has no delay, not 2.5e11 s
