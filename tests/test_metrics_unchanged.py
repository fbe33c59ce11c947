"""A metrics refresh costs only the models that changed: an unchanged monitor gives the same view object
(``ModelMonitor.metrics_view``) and the exporter sets none of its gauges again, yet the exposition equals the
one a fresh exporter makes from the same views (the oracle), also when models change, retire and come back."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from nlpmon.demo import SyntheticStream
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.observability.exporter import NlpmonMetrics

CONFIG = MonitorConfig(calibration_splits=2, auto_baseline_events=200, min_reference_events=200,
                       embedding_windows=(5, 20), distribution_windows=(50,), outlier_windows=(20,))


def lines(model: str, seed: int, n: int, start: int = 0) -> list[bytes]:
    events = list(SyntheticStream(seed=seed, dim=16, model=model, drift_at=350).events(start + n))[start:]
    return [json.dumps(e).encode() for e in events]


def samples(reg: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest

    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            if not s.name.endswith("_created") and s.name != "nlpmon_last_poll_age_seconds":  # a live clock
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_unchanged_models_are_skipped_and_the_exposition_equals_a_fresh_exporters() -> None:
    ms = MonitorSet(CONFIG)
    for m in range(3):
        ms.process_lines(lines(f"m{m}", m, 300))
    clock = [1000.0]
    reg = CollectorRegistry()
    live = NlpmonMetrics(reg, max_models=3, retire_after_s=100.0, clock=lambda: clock[0])
    calls: list[str] = []
    own = live._own_gauges
    live._own_gauges = lambda st, rep, seen: (calls.append(rep.model), own(st, rep, seen))[1]  # type: ignore[method-assign]

    def refresh() -> None:
        live.observe_models(ms.metrics_views().values())
        fresh = CollectorRegistry()
        oracle = NlpmonMetrics(fresh, max_models=3, retire_after_s=100.0, clock=lambda: clock[0])
        oracle.observe_models(ms.metrics_views().values())
        got, want = samples(reg), samples(fresh)
        counters = {k for k in want if k[0].endswith("_total")}  # counted by growth: the live one counted more
        assert {k: v for k, v in got.items() if k not in counters} == {k: v for k, v in want.items()
                                                                      if k not in counters}

    refresh()
    assert sorted(calls) == ["m0", "m1", "m2"]
    views = ms.metrics_views()
    assert all(views[k] is v for k, v in ms.metrics_views().items())  # nothing changed: the same objects
    calls.clear()
    refresh()
    assert calls == []
    ms.process_lines(lines("m1", 1, 100, start=300))  # m1 drifts (drift_at=350); m0 unchanged
    assert ms.metrics_views()["m1/1"] is not views["m1/1"] and ms.metrics_views()["m0/1"] is views["m0/1"]
    refresh()
    assert calls == ["m1"]
    calls.clear()
    clock[0] += 50
    ms.process_lines(lines("m1", 1, 10, start=400))
    ms.process_lines(lines("m2", 2, 10, start=300))
    refresh()
    assert sorted(calls) == ["m1", "m2"]
    calls.clear()
    clock[0] += 60  # m0 silent 110 s: retired (its series go); m1 and m2 were active 60 s ago
    live.observe_models(ms.metrics_views().values())
    assert live.retired_models() == [("m0", "1")] and calls == []
    assert not any(dict(k[1]).get("model") == "m0" for k in samples(reg))
    calls.clear()
    ms.process_lines(lines("m0", 0, 20, start=300))  # back: its gauges are set again, not skipped
    refresh()
    assert "m0" in calls
    assert any(dict(k[1]).get("model") == "m0" for k in samples(reg))
