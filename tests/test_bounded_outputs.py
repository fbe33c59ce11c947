"""Bounded outputs (RELIABILITY.md scenario 19): odd input (huge texts, 10,000 model names, newlines in
names, duplicate event ids) cannot grow a page, an API answer, a log or progress line, or a snapshot without
bound, nor count an event twice."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from prometheus_client import CollectorRegistry

from nlpmon.app.processor import MonitorPartitionProcessor, References
from nlpmon.app.service import progress_line
from nlpmon.demo import SyntheticStream
from nlpmon.kafka.processor import Record
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.monitor.page_view import ModelPage, ModelSummary
from nlpmon.monitor.views import ModelMetrics
from nlpmon.observability import pages
from nlpmon.observability.exporter import NlpmonMetrics
from nlpmon.observability.http import BadQuery, json_bytes, page_of_models
from nlpmon.observability.oneline import OneLineFormatter

CONFIG = MonitorConfig(auto_baseline_events=200, min_reference_events=200, reference_reservoir=400,
                       embedding_windows=(5, 20), distribution_windows=(20, 40), block_events=20,
                       calibration_splits=2, random_features=32, pca_components=4, max_text_chars=200)


def many_reports(n: int = 10_000) -> dict[str, dict[str, Any]]:
    """Reports of ``n`` model versions, as MonitorSet builds them (one event each, names with newlines)."""
    ms = MonitorSet(CONFIG)
    lines = [json.dumps({"event_id": str(i), "model": f"ner-{i}\nnlpmon: 0 events; fake", "text": "x"})
             for i in range(n)]
    assert ms.process_lines(lines).accepted == n
    return ms.report()


def test_the_progress_line_is_one_bounded_line_whatever_the_models() -> None:
    reports = {k: ModelMetrics.from_report(r) for k, r in many_reports().items()}
    line = progress_line(123, 4.5, 0, reports)
    assert "\n" not in line and len(line) < 2_000, len(line)
    assert "ner-0\\nnlpmon: 0 events; fake/unversioned: collecting baseline" in line
    assert "and 9,990 more model versions" in line
    assert len(progress_line(123, 4.5, 0, reports, max_models=None)) > 400_000  # what it was


def test_log_messages_with_newlines_stay_one_line() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(OneLineFormatter("%(levelname)s %(message)s"))
    log = logging.getLogger("test.oneline")
    log.addHandler(handler)
    try:
        log.warning("%s/%s: reference calibrated", "ner\nWARNING forged line", "1\x1b[2J")
    finally:
        log.removeHandler(handler)
    assert out.getvalue() == "WARNING ner\\nWARNING forged line/1\\x1b[2J: reference calibrated\n"


def test_api_models_and_the_overview_are_paginated_with_the_count_left_out() -> None:
    reports = {k: ModelSummary.of(k, ModelPage.from_json(r)) for k, r in many_reports().items()}
    page = page_of_models(reports, {})
    body = json_bytes(page.to_json())
    assert len(body) < 150_000, len(body)  # 2.7 MB for every model
    assert (page.total, page.offset, page.limit, page.omitted) == (10_000, 0, 200, 9_800)
    html = pages.overview_page(page, 0.0, 5)
    assert len(html) < 300_000 and "of 10,000 (drifting first; 9,800 not on this page)" in html
    assert 'href="/?offset=200"' in html
    last = page_of_models(reports, {"offset": "9900", "limit": "1000"})
    assert len(last.models) == 100 and last.omitted == 9_900
    for bad in ({"limit": "0"}, {"limit": "1001"}, {"offset": "-1"}, {"limit": "x"}):
        try:
            page_of_models(reports, bad)
        except BadQuery as exc:
            assert "must be an integer" in str(exc)
        else:
            raise AssertionError(bad)


def test_drifting_models_come_first_and_the_banner_is_capped() -> None:
    summaries = {f"m{i}/1": ModelSummary.from_json(
        {"key": f"m{i}/1", "model": f"m{i}", "model_version": "1", "status": "monitoring",
         "signals": {"embedding": {"drift": i % 10 == 0, "score": 2.0, "threshold": 1.0}}}) for i in range(1_000)}
    page = page_of_models(summaries, {"limit": "150"})
    assert [m.drift for m in page.models] == [True] * 100 + [False] * 50 and page.drifting == 100
    html = pages.overview_page(page, 0.0, 5)
    assert "Drift:</strong> 100 of 1000 model versions" in html and "and 80 more." in html


def huge_text_events(n: int, chars: int) -> list[bytes]:
    events = list(SyntheticStream(seed=3, dim=16, model="ner-4").events(n))
    for e in events[-3:]:
        e["text"] = "word " * (chars // 5)
    return [json.dumps(e).encode() for e in events]


def test_huge_texts_are_cut_in_the_report_and_the_snapshot() -> None:
    small, big = MonitorSet(CONFIG), MonitorSet(CONFIG)
    small.process_lines(huge_text_events(300, 100))
    big.process_lines(huge_text_events(300, 5_000_000))
    report = json_bytes(big.report())
    assert len(report) < 2 * len(json_bytes(small.report())) + 10_000, len(report)  # was 15.9 MB
    assert len(big.snapshot()) < 2 * len(small.snapshot()) + 10_000
    texts = [x for x in json.loads(report)["ner-4/1"]["projection"]["current"]["text"] if x]
    huge = [t for t in texts if t.startswith("word word")]
    assert huge and all(len(t) <= 200 + 40 for t in texts)
    assert all(t.endswith("… [cut: 4,999,800 more characters]") for t in huge)


def records(lines: list[bytes], start: int = 0) -> list[Record]:
    return [Record(start + i, v, b"ner", None) for i, v in enumerate(lines)]


def stream_with_duplicates() -> list[bytes]:
    events = [json.dumps(e).encode() for e in SyntheticStream(seed=6, dim=16, model="ner").events(400)]
    # 50 retries: each of events 250..299 sent again right after, and events 120..130 again at the end
    return events[:250] + [x for x in events[250:300] for _ in (0, 1)] + events[300:] + events[120:131]


def test_duplicate_event_ids_are_counted_once_and_as_duplicates() -> None:
    proc = MonitorPartitionProcessor("t", 0, CONFIG, References())
    assert proc.process(records(stream_with_duplicates())) == []
    rep = proc.report()["ner/1"]
    assert rep["events"]["production"] == 400 and rep["duplicate_events"] == 61
    registry = CollectorRegistry()
    NlpmonMetrics(registry).observe_reports(proc.report())
    labels = {"model": "ner", "model_version": "1"}
    assert registry.get_sample_value("nlpmon_duplicate_events_total", labels) == 61
    assert registry.get_sample_value("nlpmon_events_total", {**labels, "split": "production"}) == 400


def test_a_restart_remembers_the_recent_ids_restart_equals_uninterrupted() -> None:
    lines = stream_with_duplicates()
    whole = MonitorPartitionProcessor("t", 0, CONFIG, References())
    for start in range(0, len(lines), 37):
        whole.process(records(lines[start:start + 37], start))
    first = MonitorPartitionProcessor("t", 0, CONFIG, References())
    cut = 251  # inside the retried run: the copy of event 250 comes after the restart
    first.process(records(lines[:cut]))
    second = MonitorPartitionProcessor("t", 0, CONFIG, References())
    second.restore(first.snapshot())
    for start in range(cut, len(lines), 37):
        second.process(records(lines[start:start + 37], start))
    a, b = whole.report()["ner/1"], second.report()["ner/1"]
    assert (a["events"], a["duplicate_events"], a["monitored_events"]) == \
        (b["events"], b["duplicate_events"], b["monitored_events"]) == ({"production": 400, "reference": 0}, 61, 200)
    assert {k: s["score"] for k, s in a["signals"].items()} == {k: s["score"] for k, s in b["signals"].items()}
    key = ("ner", "1")
    assert whole.monitors.monitors[key].recent_ids._seen == second.monitors.monitors[key].recent_ids._seen


def test_the_duplicate_window_is_bounded() -> None:
    config = CONFIG.model_copy(update={"duplicate_window_events": 50})
    ms = MonitorSet(config)
    lines = [json.dumps({"event_id": str(i % 120), "model": "m"}) for i in range(600)]
    ms.process_lines(lines)
    mon = ms.monitors[("m", "unversioned")]
    assert mon.events_total["production"] == 600 and mon.duplicates == 0  # repeats older than 50 ids count
    ms.process_lines([json.dumps({"event_id": "119", "model": "m"})])
    assert mon.duplicates == 1 and len(mon.recent_ids.state()["ring"]) == 50
