"""The service's counters across a rebalance (no broker: the consumer loop's calls made by hand): the work a
processor did since the last report refresh is counted when its partition is revoked, also when the
partition comes back to this process in a new processor before the refresh, which then counts from 0."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, cast

from prometheus_client import CollectorRegistry

from nlpmon.app.service import NlpmonService
from nlpmon.app.settings import ServiceSettings
from nlpmon.demo import generate_events
from nlpmon.kafka.processor import Record
from nlpmon.kafka.runner import ConsumerRunner
from nlpmon.kafka.runner_metrics import RunnerMetrics

LABELS = {"model": "demo-ner", "model_version": "1", "split": "production"}


def records(lines: list[bytes], start: int) -> list[Record]:
    return [Record(start + i, line, b"demo-ner", None) for i, line in enumerate(lines)]


def test_work_since_the_last_refresh_is_counted_when_a_partition_is_revoked_or_reassigned() -> None:
    lines = [json.dumps(e).encode() for e in generate_events(140)]
    reg = CollectorRegistry()
    svc = NlpmonService(ServiceSettings(ground_truth_topic=""), registry=reg)
    assigned: list[tuple[str, int]] = [("t", 0)]
    runner = cast(ConsumerRunner, SimpleNamespace(metrics=lambda: RunnerMetrics(assigned=tuple(assigned))))
    svc.runner = runner

    def counted() -> Any:
        return reg.get_sample_value("nlpmon_events_total", LABELS)

    first = svc._factory("t", 0)
    first.process(records(lines[:50], 0))
    svc._refresh(runner)
    assert counted() == 50
    first.process(records(lines[50:80], 50))  # not refreshed yet when the rebalance comes
    second = svc._factory("t", 0)  # revoked and assigned again: a new processor, its own counts from 0
    second.process(records(lines[80:100], 80))
    svc._refresh(runner)
    assert counted() == 100
    second.process(records(lines[100:140], 100))
    assigned.clear()  # revoked, to another member, before the refresh
    svc._refresh(runner)
    assert counted() == 140
    assert svc.reports() == {}


def test_a_refresh_without_batches_exports_the_loops_own_state() -> None:
    """Held events applied after a calibration make a refresh without any batch: the loop's checkpoints,
    lag and polls must reach /metrics then too, not only with batches (they looked frozen before)."""
    reg = CollectorRegistry()
    svc = NlpmonService(ServiceSettings(ground_truth_topic=""), registry=reg)
    loop = RunnerMetrics(assigned=(("t", 0),), checkpoints=3, snapshot_bytes_produced=12_345,
                         longest_poll_gap_s=0.75, lag={("t", 0): 9})
    runner = cast(ConsumerRunner, SimpleNamespace(metrics=lambda: loop))
    svc.runner = runner
    svc._refresh(runner)
    assert reg.get_sample_value("nlpmon_checkpoints_total") == 3
    assert reg.get_sample_value("nlpmon_snapshot_bytes_produced_total") == 12_345
    assert reg.get_sample_value("nlpmon_longest_poll_gap_seconds") == 0.75
    assert reg.get_sample_value("nlpmon_consumer_lag", {"topic": "t", "partition": "0"}) == 9


def test_a_refresh_renders_the_exposition_on_the_loop_and_a_scrape_reuses_it(monkeypatch: Any) -> None:
    """The families a refresh wrote are rendered by it, on the loop: the scrape that follows renders none of
    them again (it joins their bytes) and sends what prometheus_client renders for the same registry."""
    from prometheus_client import generate_latest

    from nlpmon.observability.exposition import LabelledFamily, render_exposition

    lines = [json.dumps(e).encode() for e in generate_events(60)]
    reg = CollectorRegistry()
    svc = NlpmonService(ServiceSettings(ground_truth_topic=""), registry=reg)
    runner = cast(ConsumerRunner, SimpleNamespace(metrics=lambda: RunnerMetrics(assigned=(("t", 0),))))
    svc.runner = runner
    svc._factory("t", 0).process(records(lines, 0))
    renders: list[str] = []
    render = LabelledFamily.render
    monkeypatch.setattr(LabelledFamily, "render", lambda self: (renders.append(self.sample_name), render(self))[1])
    svc._refresh(runner)
    assert "nlpmon_events_total" in renders  # rendered by the refresh
    renders.clear()
    def steady(text: bytes) -> list[bytes]:  # the poll age is a live clock, read at each render
        return [x for x in text.splitlines() if not x.startswith(b"nlpmon_last_poll_age_seconds ")]

    assert steady(render_exposition(reg)) == steady(generate_latest(reg))
    assert renders == []
