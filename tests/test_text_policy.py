"""What of production texts nlpmon keeps (``pages.keep_texts``, ``pages.redact``): sentinel words sent in the
events must not be in the reports, the pages, the API or the snapshots when texts are not kept, must be
redacted when redaction is on, and are shown by default (so each check can fail)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any
from urllib.parse import quote

import pytest
from prometheus_client import CollectorRegistry

from nlpmon.app.settings import SettingsError, load_settings
from nlpmon.demo import generate_events
from nlpmon.monitor.config import DEFAULT_REDACT_PATTERNS, REDACTION_MARK, MonitorConfig, TextPolicy
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.observability.http import ObservabilityServer

TIMEOUT = 10.0
WORD = "quokkazebra"  # a plain word: only keep_texts hides it
EMAIL, PHONE, CARD = "jane.doe@example.com", "+44 20 7946 0958", "4111111111111111"
SENTINELS = (WORD, EMAIL, PHONE, CARD, "7946 0958")


def events() -> list[dict[str, Any]]:
    out = generate_events(900, drift_at=600)
    for i, e in enumerate(out):
        e["split"] = "reference" if i < 300 else "production"
        # appended: the entities' offsets stay right; the tokens carry the words too
        e["text"] = f"{e['text']} {WORD} mail {EMAIL} call {PHONE} card {CARD}"
        e["tokens"] = [*e["tokens"], {"text": WORD, "tag": "O"}, {"text": EMAIL, "tag": "O"}]
    return out


def monitored(policy: TextPolicy) -> MonitorSet:
    ms = MonitorSet(MonitorConfig(calibration_splits=2, texts=policy))
    lines = [json.dumps(e) for e in events()]
    for i in range(0, len(lines), 150):
        ms.process_lines(lines[i:i + 150])
    return ms


def served_bodies(reports: dict[str, Any]) -> list[str]:
    """The overview, the model page, its selected examples and the JSON API, as served."""
    srv = ObservabilityServer(CollectorRegistry(), reports=lambda: reports, readiness=dict, last_poll=lambda: None)
    srv.start()
    try:
        rep = reports["demo-ner/1"]
        ids = [o["event_id"] for o in rep["outliers"]][:2]
        ids += [x["event_id"] for x in rep["examples"]["lowest_confidence"]][:2]
        ids += (rep.get("projection") or {}).get("current", {}).get("event_id", [])[-2:]
        paths = ["/", "/models/demo-ner", "/api/models", "/api/models/demo-ner",
                 *[f"/models/demo-ner?example={quote(i)}" for i in ids]]
        bodies = []
        for path in paths:
            with urllib.request.urlopen(srv.url + path, timeout=TIMEOUT) as r:
                bodies.append(r.read().decode())
        return bodies
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def kept() -> MonitorSet:
    return monitored(TextPolicy())


@pytest.fixture(scope="module")
def not_kept() -> MonitorSet:
    return monitored(TextPolicy(keep=False))


def test_texts_are_shown_by_default(kept: MonitorSet) -> None:
    rep = kept.report()
    assert rep["demo-ner/1"]["texts"] == {"kept": True, "redacted": False}
    everything = "\n".join(served_bodies(rep)) + json.dumps(rep)
    for word in SENTINELS:
        assert word in everything, word
    assert WORD.encode() in kept.snapshot()


def test_keep_texts_false_keeps_no_text_anywhere(not_kept: MonitorSet) -> None:
    rep = not_kept.report()
    assert rep["demo-ner/1"]["outliers"] and rep["demo-ner/1"]["examples"]["lowest_confidence"]
    blobs = {"report": json.dumps(rep), "snapshot": not_kept.snapshot().decode("latin-1"),
             **{f"served {i}": b for i, b in enumerate(served_bodies(rep))}}
    for where, blob in blobs.items():
        for word in SENTINELS:
            assert word not in blob, (where, word)
    page = blobs["served 1"]
    assert "Texts are not kept" in page
    assert 'class="ent-label">' in page  # the examples show their entity labels and scores instead
    restored = MonitorSet(MonitorConfig(calibration_splits=2, texts=TextPolicy(keep=False)))
    restored.restore(not_kept.snapshot())
    assert WORD not in json.dumps(restored.report())


def test_a_snapshot_with_texts_restored_without_keeping_them(kept: MonitorSet) -> None:
    restored = MonitorSet(MonitorConfig(calibration_splits=2, texts=TextPolicy(keep=False)))
    restored.restore(kept.snapshot())
    assert WORD not in json.dumps(restored.report()) and WORD.encode() not in restored.snapshot()
    redacting = MonitorSet(MonitorConfig(calibration_splits=2, texts=TextPolicy(redact=DEFAULT_REDACT_PATTERNS)))
    redacting.restore(kept.snapshot())
    state = redacting.snapshot()
    assert WORD.encode() in state and EMAIL.encode() not in state and CARD.encode() not in state


def test_redaction_on_pages_and_api() -> None:
    ms = monitored(TextPolicy(redact=DEFAULT_REDACT_PATTERNS))
    rep = ms.report()
    assert rep["demo-ner/1"]["texts"] == {"kept": True, "redacted": True}
    for i, body in enumerate(served_bodies(rep)):
        for word in (EMAIL, PHONE, CARD, "7946 0958", "example.com"):
            assert word not in body, (i, word)
        if i in (1, 3):  # the model page and its API: the plain word stays, the redaction shows
            assert WORD in body and (REDACTION_MARK in body or "\\u2588" in body)  # JSON escapes it
    assert EMAIL.encode() not in ms.snapshot()


@pytest.mark.parametrize("text, expected", [
    ("write to jane.doe@example.com today", "write to " + REDACTION_MARK * 20 + " today"),
    ("call +1 (555) 010-9999 now", "call " + REDACTION_MARK * 17 + " now"),
    ("call 020 7946 0958.", "call " + REDACTION_MARK * 13 + "."),
    ("iban DE89370400440532013000", "iban DE" + REDACTION_MARK * 20),
    ("order 12345 of 2024", "order 12345 of 2024"),  # short numbers stay
    ("Angela Merkel visited Paris", "Angela Merkel visited Paris"),
])
def test_default_patterns(text: str, expected: str) -> None:
    policy = TextPolicy(redact=DEFAULT_REDACT_PATTERNS)
    assert policy.apply(text, 1000) == expected
    assert policy.restrict(expected) == expected  # idempotent
    assert len(policy.apply(text, 1000) or "") == len(text)  # offsets stay right


def test_redaction_runs_before_the_cut() -> None:
    text = "x" * 20 + " jane.doe@example.com"
    out = TextPolicy(redact=DEFAULT_REDACT_PATTERNS).apply(text, 25)
    assert out is not None and "jane" not in out and "[cut:" in out


def test_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().monitor_config().texts == TextPolicy()
    monkeypatch.setenv("NLPMON_PAGES__KEEP_TEXTS", "false")
    assert load_settings().monitor_config().texts == TextPolicy(keep=False)
    monkeypatch.setenv("NLPMON_PAGES__KEEP_TEXTS", "true")
    monkeypatch.setenv("NLPMON_PAGES__REDACT", "true")
    assert load_settings().monitor_config().texts.redact == DEFAULT_REDACT_PATTERNS
    monkeypatch.setenv("NLPMON_PAGES__REDACT_PATTERNS", '["(unclosed"]')
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "pages.redact_patterns" in str(err.value) and "(unclosed" in str(err.value)
    monkeypatch.delenv("NLPMON_PAGES__REDACT_PATTERNS")
    monkeypatch.setenv("NLPMON_MONITOR__TEXTS__KEEP", "false")
    with pytest.raises(SettingsError, match=r"set from pages\.keep_texts"):
        load_settings()


def test_events_held_for_a_pending_calibration_keep_no_text_in_the_snapshot() -> None:
    """While a reference calibrates off the loop, the model's events are held, and a checkpoint writes them:
    under ``keep_texts: false`` without their texts (the event's, its entities' and its tokens')."""
    from concurrent.futures import Future

    from nlpmon.monitor.calibration_jobs import CalibrationJob
    from nlpmon.monitor.reference import ReferenceProfile

    class Never:  # the calibration never finishes during the test
        def submit(self, job: CalibrationJob) -> Future[ReferenceProfile]:
            return Future()

    lines = [json.dumps(e) for e in events()]
    for policy, present in ((TextPolicy(), True), (TextPolicy(keep=False), False)):
        ms = MonitorSet(MonitorConfig(calibration_splits=2, texts=policy), executor=Never())
        for i in range(0, len(lines), 150):
            ms.process_lines(lines[i:i + 150])
        mon = ms.monitors[("demo-ner", "1")]
        assert mon.calibration is not None and mon.deferred_events > 0
        snap = ms.snapshot()
        assert (WORD.encode() in snap) is present and (EMAIL.encode() in snap) is present, policy
