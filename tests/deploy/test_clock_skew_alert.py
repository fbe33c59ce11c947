"""NlpmonModelSilent still fires for a model that once sent a year-9999 timestamp: the series promtool
evaluates are the ones nlpmon exported (a real processor and NlpmonMetrics on a fresh registry, fed minute
by minute with an injected clock), not hand-written ones."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from nlpmon.app.processor import MonitorPartitionProcessor, References
from nlpmon.demo import SyntheticStream
from nlpmon.kafka.processor import Record
from nlpmon.monitor.config import MonitorConfig
from nlpmon.observability.exporter import NlpmonMetrics
from tests.deploy.conftest import RULE_TESTS, RULES
from tests.deploy.test_alert_rules import Tools

BASE = 1_800_000_000.0  # epoch seconds of promtool's time 0
CONFIG = MonitorConfig(auto_baseline_events=200, min_reference_events=200, reference_reservoir=400,
                       embedding_windows=(5, 20), distribution_windows=(20, 40), block_events=20,
                       calibration_splits=2, random_features=32, pca_components=4)
LABELS = 'job="nlpmon", instance="nlpmon:9308", model="quiet-ner", model_version="1"'


def exported_minutes(sending_minutes: int) -> tuple[list[float], list[float]]:
    """Per minute while the model sends (one event with a year-9999 timestamp in the last minute): the
    exported newest-event gauge (relative to BASE) and production event counter."""
    now = [BASE]
    proc = MonitorPartitionProcessor("t", 0, CONFIG, References(), clock=lambda: now[0])
    registry = CollectorRegistry()
    metrics = NlpmonMetrics(registry, clock=lambda: now[0])
    source = SyntheticStream(seed=5, dim=16, model="quiet-ner", t0=BASE - 300, events_per_second=1)
    gauge, counter = [], []
    offset = 0
    for minute in range(sending_minutes + 1):
        now[0] = BASE + 60 * minute
        batch: list[dict[str, Any]] = []
        for e in source.events(300 if minute == 0 else 60):
            batch.append(dict(e, timestamp=now[0] - 1))
        if minute == sending_minutes:
            batch[len(batch) // 2]["timestamp"] = 253402300799.0  # 9999-12-31T23:59:59Z
        proc.process([Record(offset + i, json.dumps(e).encode(), b"quiet-ner", None) for i, e in enumerate(batch)])
        offset += len(batch)
        stats = proc.batch_stats.drain()
        metrics.observe_batch(event_timestamps=stats.event_times, clock_skew=stats.clock_skew)
        metrics.observe_reports(proc.report(), now=now[0])
        labels = {"model": "quiet-ner", "model_version": "1"}
        g = registry.get_sample_value("nlpmon_last_event_timestamp_seconds", labels)
        c = registry.get_sample_value("nlpmon_events_total", {**labels, "split": "production"})
        assert g is not None and c is not None
        gauge.append(g - BASE)
        counter.append(c)
    return gauge, counter


def test_the_silent_alert_fires_after_a_year_9999_timestamp(tools: Tools, tmp_path: Path) -> None:
    gauge, counter = exported_minutes(sending_minutes=5)
    assert gauge[-1] == 300 + CONFIG.max_clock_skew_seconds  # clamped; before: 2.5e11 - BASE
    hold = 60 - len(gauge)  # then silent: the last values are exported unchanged
    values = " ".join(f"{v:g}" for v in gauge) + f" {gauge[-1]:g}x{hold}"
    counts = " ".join(f"{v:g}" for v in counter) + f" {counter[-1]:g}x{hold}"
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": f"nlpmon_last_event_timestamp_seconds{{{LABELS}}}", "values": values},
                {"series": f'nlpmon_events_total{{{LABELS}, split="production"}}', "values": counts},
            ],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "NlpmonModelSilent", "exp_alerts": []},
                {"eval_time": "55m", "alertname": "NlpmonModelSilent", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "alertname": "NlpmonModelSilent", "job": "nlpmon",
                                   "model": "quiet-ner", "model_version": "1"},
                    "exp_annotations": silent_annotations(55 * 60 - gauge[-1]),
                }]},
            ],
        }],
    }
    path = tmp_path / "clock_skew.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    proc = subprocess.run([tools("promtool")["promtool"], "test", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def silent_annotations(age_s: float) -> dict[str, str]:
    """The annotations of the shipped NlpmonModelSilent test, for quiet-ner at ``age_s`` seconds."""
    doc = yaml.safe_load(RULE_TESTS.read_text())
    for t in doc["tests"]:
        for case in t["alert_rule_test"]:
            if case["alertname"] == "NlpmonModelSilent" and case["exp_alerts"]:
                shipped = dict(case["exp_alerts"][0]["exp_annotations"])
                minutes, seconds = divmod(int(age_s), 60)
                for key in ("summary", "description"):
                    shipped[key] = shipped[key].replace("45m 0s", f"{minutes}m {seconds}s")
                return shipped
    raise AssertionError("no NlpmonModelSilent firing case in the shipped rule tests")

