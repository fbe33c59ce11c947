"""Prometheus' own parser (promtool 2.42, ``check metrics``) reads ``render_exposition``'s text, with label
values that need escaping, exactly as it reads ``generate_latest``'s: no parse error, the same lint notes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest

from nlpmon.demo import generate_events
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.observability.exporter import NlpmonMetrics
from nlpmon.observability.exposition import render_exposition


def check_metrics(promtool: str, text: bytes) -> tuple[int, str]:
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60, check=False)
    return done.returncode, (done.stdout + done.stderr).decode()


def test_promtool_parses_the_fast_exposition(tools: Callable[..., dict[str, str]]) -> None:
    promtool = tools("promtool")["promtool"]
    events = generate_events(800, drift_at=600)
    for e in events[:300]:
        e["split"] = "reference"
    monitors = MonitorSet(MonitorConfig(calibration_splits=2))
    monitors.process_lines([json.dumps(e) for e in events])
    report = next(iter(monitors.report().values()))
    metrics = NlpmonMetrics(CollectorRegistry())
    metrics.observe_reports({f"{n}/1": {**report, "model": n} for n in ('quo"te', "new\nline", "back\\slash", "m")})
    code, out = check_metrics(promtool, render_exposition(metrics.registry))
    assert code in (0, 3), out  # 3: lint notes only (nlpmon_confidence_quantile has a "quantile" label)
    assert "error" not in out.lower(), out
    assert (code, out) == check_metrics(promtool, generate_latest(metrics.registry))
    broken = render_exposition(metrics.registry).replace(b'quo\\"te', b'quo"te', 1)
    assert check_metrics(promtool, broken)[0] == 1  # the check does catch a bad escape
