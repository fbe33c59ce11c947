"""The detection criteria of the monitoring core, on real NER predictions with real embeddings.

References and streams are built with ``make_stream.py``; every test stream is held out of its
reference (``--exclude``). Nothing here is tuned to these domains: thresholds come from calibration.
"""

from __future__ import annotations

from typing import Any

import pytest

from nlpmon.monitor.config import MonitorConfig
from nlpmon.replay import replay

from .conftest import Streams

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

DOMAINS = ("quotes", "pydocs")
SWITCH = 3000


def alarms(report: dict[str, Any], signal: str | None = None) -> list[int]:
    return [a["event_index"] for a in report["alerts"] if signal is None or a["signal"] == signal]


def _reference(streams: Streams, domain: str) -> Any:
    return streams.build(f"ref-{domain}", f"{domain}:3000", seed=11 if domain == "quotes" else 21)


@pytest.fixture(scope="module", params=DOMAINS)
def switch(request: pytest.FixtureRequest, streams: Streams) -> tuple[str, Any, Any]:
    a = request.param
    b = DOMAINS[1 - DOMAINS.index(a)]
    ref = _reference(streams, a)
    stream = streams.build(f"switch-{a}-{b}", f"{a}:{SWITCH},{b}:3000", seed=12, exclude=ref)
    return a, ref, stream


@pytest.fixture(scope="module", params=DOMAINS)
def stationary(request: pytest.FixtureRequest, streams: Streams) -> tuple[str, Any, Any]:
    d = request.param
    ref = _reference(streams, d)
    return d, ref, streams.build(f"stationary-{d}", f"{d}:20000", seed=13, exclude=ref)


def test_stationary_no_alarm_on_any_signal_at_default_target(stationary: tuple[str, Any, Any]) -> None:
    domain, ref, stream = stationary
    report = replay(stream, [ref], MonitorConfig())
    assert report["events"] == 20000 and report["invalid"] == 0
    assert report["alerts"] == [], f"{domain}: false alarms {report['alerts'][:5]}"


def test_domain_switch_detected_quickly_at_default_target(switch: tuple[str, Any, Any]) -> None:
    domain, ref, stream = switch
    report = replay(stream, [ref], MonitorConfig())
    assert [i for i in alarms(report) if i < SWITCH] == [], "alarm before the switch"
    emb = alarms(report, "embedding")
    lab = alarms(report, "entity_label")
    assert emb and emb[0] - SWITCH <= 15, f"{domain}: embedding alarms {emb}"
    assert lab and lab[0] - SWITCH <= 300, f"{domain}: entity_label alarms {lab}"


def test_fast_detection_at_alibi_detect_false_alarm_rate(switch: tuple[str, Any, Any]) -> None:
    domain, ref, stream = switch
    report = replay(stream, [ref], MonitorConfig(false_alarm_rate=0.0005))
    emb = [i for i in alarms(report, "embedding") if i >= SWITCH]
    assert emb and emb[0] - SWITCH <= 6, f"{domain}: embedding alarms after the switch {emb}"
    before = [i for i in alarms(report, "embedding") if i < SWITCH]
    assert len(before) <= SWITCH / 1500, f"{domain}: embedding false alarms before the switch {before}"


def test_false_alarms_at_alibi_detect_rate_stay_below_one_per_1500(stationary: tuple[str, Any, Any]) -> None:
    domain, ref, stream = stationary
    report = replay(stream, [ref], MonitorConfig(false_alarm_rate=0.0005))
    emb = alarms(report, "embedding")
    assert len(emb) <= 20000 / 1500, f"{domain}: {len(emb)} embedding false alarms in 20,000 events"
