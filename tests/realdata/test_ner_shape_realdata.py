"""Tag validity and span shape on real NER predictions (benchmarks/ner_shape.py builds the streams): no alarm
of the new signals in 20,000 held-out stationary events per domain at the default target, and the injected
faults found within the delays docs/drift.md states. Nothing is tuned to these domains."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import Streams

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from ner_shape import NEW, STATIONARY, measure

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

#: stated in docs/drift.md ("Tag sequences and entity spans"): events from the change to the first alarm
DELAY_TARGETS = {"invalid_tags": 150, "grown_spans": 200}


@pytest.fixture(scope="module", params=["pydocs", "quotes"])
def measured(request: pytest.FixtureRequest, streams: Streams) -> dict[str, Any]:
    return measure(streams.data, streams.root, request.param)


def test_new_signals_run_and_raise_no_alarm_on_20000_stationary_events(measured: dict[str, Any]) -> None:
    assert measured["unavailable"] == {}, measured["unavailable"]
    assert measured["stationary_events"] == STATIONARY
    assert measured["stationary_alarms"] == {}, measured["stationary_alarms"]


@pytest.mark.parametrize("fault", sorted(DELAY_TARGETS))
def test_injected_faults_are_found_within_the_stated_delay(measured: dict[str, Any], fault: str) -> None:
    r = measured[fault]
    assert r["before_change"] == {}, f"{measured['domain']}: alarm before the change {r['before_change']}"
    assert r["delay"] <= DELAY_TARGETS[fault], f"{measured['domain']} {fault}: {r['signal']} delay {r['delay']}"
    assert set(r["other_signals"]) <= set(NEW)
