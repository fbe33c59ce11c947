"""render_exposition (service/observability/exposition.py) against its oracle, prometheus_client's
``generate_latest`` of the same registry: the same families, in the same order, with exactly the same samples
(names, labels, values) once parsed, and the same text; after series are removed, for label values that need
escaping, for values that change between scrapes, and for registries with other collectors."""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from nlpmon.demo import generate_events
from nlpmon.kafka.runner_metrics import RunnerMetrics
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.observability.exporter import NlpmonMetrics
from nlpmon.observability.exposition import LabelledFamily, prerender_exposition, render_exposition

T0 = 1_700_000_000.0
ODD_NAMES = ('quo"te', "back\\slash", "new\nline", 'all\\"\n"\\', "ünï cödé")


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """One real model's report: 300 reference events, 500 production events drifting after 300."""
    events = generate_events(800, drift_at=600)
    for e in events[:300]:
        e["split"] = "reference"
    ms = MonitorSet(MonitorConfig(calibration_splits=2))
    lines = [json.dumps(e) for e in events]
    for i in range(0, len(lines), 400):
        ms.process_lines(lines[i:i + 400])
    rep = ms.report()
    return next(iter(rep.values()))


def families(text: bytes) -> list[tuple[str, str, str, list[tuple[str, tuple[tuple[str, str], ...], Any]]]]:
    """Every family as (name, type, help, samples), in exposition order; NaN as the string "nan"."""
    out = []
    for f in text_string_to_metric_families(text.decode("utf-8")):
        samples = [(s.name, tuple(sorted(s.labels.items())), "nan" if math.isnan(s.value) else s.value)
                   for s in f.samples]
        out.append((f.name, f.type, f.documentation, sorted(samples, key=lambda x: (x[0], x[1]))))
    return out


def assert_same(registry: CollectorRegistry) -> bytes:
    """render_exposition equals generate_latest: parsed sample for sample, and as text."""
    reference, fast = generate_latest(registry), render_exposition(registry)
    assert families(fast) == families(reference)
    assert fast == reference
    return fast


def fed(report: dict[str, Any], names: list[str], clock: list[float], **kw: Any) -> NlpmonMetrics:
    metrics = NlpmonMetrics(CollectorRegistry(), clock=lambda: clock[0], monotonic=lambda: 10.0, **kw)
    metrics.observe_reports({f"{n}/1": {**report, "model": n, "model_version": "1"} for n in names})
    metrics.observe_batch(seconds=0.2, event_timestamps=[clock[0] - 3.0], rejected_reasons=["schema", "schema"],
                          unkeyed={"predictions": 1})
    runner = RunnerMetrics()
    runner.lag = {("predictions", 0): 4, ("predictions", 1): 0}
    metrics.observe_runner(runner)
    return metrics


def test_a_fleet_renders_the_samples_of_generate_latest(report: dict[str, Any]) -> None:
    clock = [T0]
    metrics = fed(report, [f"m{i}" for i in range(6)], clock, max_models=4)  # 2 overflow into "other"
    text = assert_same(metrics.registry)
    assert b'nlpmon_drift_score{model="other",model_version="other"' in text
    assert b'nlpmon_label_share{' in text and b"nlpmon_events_created{" in text


def test_label_values_needing_escaping_round_trip(report: dict[str, Any]) -> None:
    clock = [T0]
    metrics = fed(report, list(ODD_NAMES), clock)
    text = assert_same(metrics.registry)
    models = {s.labels["model"] for f in text_string_to_metric_families(text.decode()) for s in f.samples
              if "model" in s.labels}
    assert models == set(ODD_NAMES)


def test_removed_series_are_gone_from_both(report: dict[str, Any]) -> None:
    clock = [T0]
    metrics = fed(report, ["stays", "leaves", 'ret"ires'], clock, retire_after_s=60.0)
    before = assert_same(metrics.registry)
    assert b'model="leaves"' in before
    # "leaves" is absent from the next reports: its gauges go at once, its counters stay until it retires
    clock[0] += 10.0
    stays = {**report, "model": "stays", "model_version": "1"}
    silent = {**report, "model": 'ret"ires', "model_version": "1"}
    metrics.observe_reports({"stays/1": stays, 'ret"ires/1': silent})
    absent = assert_same(metrics.registry)
    assert b'nlpmon_events_total{model="leaves"' in absent
    assert b'nlpmon_drift_score{model="leaves"' not in absent
    # then "stays" sees events while the others are silent past retire_after_s: they retire
    clock[0] += 120.0
    moved = {**stays, "events": {k: v + 1 for k, v in report["events"].items()}}
    metrics.observe_reports({"stays/1": moved, 'ret"ires/1': silent})
    after = assert_same(metrics.registry)
    assert b'model="leaves"' not in after and b'ret\\"ires' not in after
    assert b'ret\\"ires' in before
    assert b'nlpmon_drift_score{model="stays"' in after
    assert metrics.retired_models() == [('ret"ires', "1")]


def test_changed_values_are_rendered_again() -> None:
    registry = CollectorRegistry()
    gauge = LabelledFamily("g", "a gauge", "gauge", ("a",))
    counter = LabelledFamily("c_total", "a counter", "counter", ("a", "b"))
    registry.register(gauge)
    registry.register(counter)
    assert_same(registry)  # declared, no series yet
    for k, v in enumerate((0.0, 1.5, -2.0, 1e21, 123456789.0, math.inf, -math.inf, math.nan, 7.0, 7.0)):
        gauge.labels("x").set(v)
        gauge.labels(str(k % 3)).set(k)
        counter.labels("x", str(k % 2)).inc(k)
        text = assert_same(registry)
        assert registry.get_sample_value("g", {"a": "x"}) is not None
        line = next(x for x in text.decode().splitlines() if x.startswith('g{a="x"}'))
        assert line.split(" ")[1] == {0.0: "0.0", 1.5: "1.5", 7.0: "7.0", math.inf: "+Inf", -math.inf: "-Inf",
                                      1e21: "1e+21", 123456789.0: "1.23456789e+08"}.get(v, line.split(" ")[1])
    gauge.remove("x")
    counter.remove("x", "0")
    text = assert_same(registry)
    assert b'g{a="x"}' not in text and b'c_total{a="x",b="0"}' not in text
    with pytest.raises(ValueError):
        counter.labels("x", "1").inc(-1)
    with pytest.raises(ValueError):
        gauge.labels("x", "y")


def test_other_collectors_render_as_generate_latest_renders_them() -> None:
    registry = CollectorRegistry()
    Counter("plain_total", "plain counter", ["member"], registry=registry).labels("0").inc(3)
    Gauge("plain_gauge", "plain gauge", registry=registry).set(2)
    Histogram("plain_seconds", "a histogram", ["k"], buckets=(0.5, 1.0), registry=registry).labels('a"b').observe(0.7)
    fast = LabelledFamily("fast", "fast gauge\nwith a \\ in its help", "gauge", ("k",))
    registry.register(fast)
    fast.labels("v").set(1)
    assert_same(registry)
    with pytest.raises(ValueError):  # the names are registered as prometheus_client's would be
        registry.register(LabelledFamily("plain_total", "again", "counter", ("member",)))
    registry.set_target_info({"env": "test"})  # rendered whole by generate_latest
    assert_same(registry)


def test_renders_while_the_loop_writes() -> None:
    """Scrapes on another thread while series are created, set and removed always parse to a consistent
    exposition (bounded: 200 writer rounds)."""
    registry = CollectorRegistry()
    family = LabelledFamily("busy", "writes under a scrape", "gauge", ("model",))
    registry.register(family)
    done = threading.Event()
    errors: list[BaseException] = []

    def scrape() -> None:
        try:
            for _ in range(500):
                if done.is_set():
                    break
                for f in text_string_to_metric_families(render_exposition(registry).decode()):
                    assert all(s.value >= 0 for s in f.samples)
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    for k in range(200):
        for m in range(20):
            family.labels(f"m{m}").set(k)
        family.remove(f"m{k % 20}")
    done.set()
    scraper.join(10.0)
    assert not errors
    assert_same(registry)


class CountingFamily(LabelledFamily):
    """A family that counts its renders and can write to itself in the middle of one (a loop write racing a
    scrape's render)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.renders = 0
        self.during_render: list[tuple[str, float]] = []

    def render(self) -> str:
        self.renders += 1
        text = super().render()
        while self.during_render:  # after the lines were read: the text misses this write
            label, value = self.during_render.pop()
            self.labels(label).set(value)
        return text


def test_prerendered_families_are_reused_until_written(report: dict[str, Any]) -> None:
    """What ``prerender_exposition`` rendered (on the loop, after a refresh) is what the next scrape sends,
    without rendering again; a family written after it is rendered again by the scrape, never sent stale."""
    clock = [T0]
    metrics = fed(report, ["a", "b"], clock)
    registry = metrics.registry
    counting = CountingFamily("late", "written between refreshes", "counter", ("model",))
    registry.register(counting)
    counting.labels("a").inc(2)
    assert prerender_exposition(registry) > 10  # every labelled family of a fresh exporter
    assert counting.renders == 1
    assert prerender_exposition(registry) == 0  # nothing written since
    first = assert_same(registry)
    assert counting.renders == 1  # the scrape reused the prerender
    for write in (lambda: counting.labels("a").inc(1), lambda: counting.labels("b").set(0.0),
                  lambda: counting.remove("a")):
        write()
        text = assert_same(registry)  # the scrape sees the write
        assert text != first
        first = text
    assert counting.renders == 4  # one per write, by the scrapes
    # a refresh of the models moves every family they wrote on: rendered again by the next prerender
    clock[0] += 10.0
    moved = {**report, "events": {k: v + 5 for k, v in report["events"].items()}}
    metrics.observe_reports({"a/1": {**moved, "model": "a", "model_version": "1"}})
    assert prerender_exposition(registry) >= 1
    assert_same(registry)


def test_a_render_that_raced_a_write_is_rendered_again() -> None:
    registry = CollectorRegistry()
    family = CountingFamily("raced", "a gauge", "gauge", ("k",))
    registry.register(family)
    family.labels("x").set(1.0)
    family.during_render.append(("x", 2.0))  # written while the scrape renders
    stale = render_exposition(registry)
    assert b'raced{k="x"} 1.0' in stale  # what the render read
    assert b'raced{k="x"} 2.0' in assert_same(registry)  # the next scrape is current
    assert family.renders == 2
    assert prerender_exposition(registry) == 0
