"""/readyz ``references_loaded`` on a real broker: a reference file too small to calibrate makes it fail
(it was never assigned, so the check could not fail)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from nlpmon.app.service import NlpmonService
from nlpmon.app.settings import load_settings
from nlpmon.demo import SyntheticStream
from tests.support import wait_until

pytestmark = pytest.mark.broker


@pytest.mark.parametrize("reference_events, ready", [(20, False), (300, True)])
def test_readyz_fails_while_a_reference_file_cannot_calibrate(
        kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference_events: int,
        ready: bool) -> None:
    s = uuid.uuid4().hex[:8]
    stream = SyntheticStream(seed=3, t0=time.time() - 600)
    ref = tmp_path / "ref.jsonl"
    ref.write_text("".join(json.dumps(e) + "\n" for e in stream.events(reference_events, "reference")))
    for k, v in {"NLPMON_BOOTSTRAP_SERVERS": kafka_bootstrap, "NLPMON_PORT": "0", "NLPMON_TOPIC": f"in-{s}",
                 "NLPMON_GROUP_ID": f"g-{s}", "NLPMON_STATE_TOPIC": f"state-{s}",
                 "NLPMON_DEAD_LETTER_TOPIC": f"dlq-{s}", "NLPMON_GROUND_TRUTH_TOPIC": "",
                 "NLPMON_MONITOR__CALIBRATION_SPLITS": "2", "NLPMON_KAFKA__SESSION_TIMEOUT_MS": "2000",
                 "NLPMON_KAFKA__POLL_TIMEOUT_S": "0.2"}.items():
        monkeypatch.setenv(k, v)
    service = NlpmonService(load_settings(reference=(str(ref),)), report_interval_s=0.1)
    stop = threading.Event()
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            service.run(stop, on_ready=lambda *_: started.set())
        except BaseException as exc:  # handed to the test
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_until(started.is_set, 60, "the service to start")
        assert not failure, failure
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for e in stream.events(50):
            producer.produce(f"in-{s}", json.dumps(e).encode(), key=b"demo-ner")
        assert producer.flush(30) == 0
        wait_until(lambda: "demo-ner/1" in service.reports() and (
            service.reports()["demo-ner/1"].reference is not None
            or service.reports()["demo-ner/1"].reference_error), 120, "the reference to be taken")
        checks = service.readiness()
        assert checks["references_loaded"] is ready, (checks, service.reference_error)
        if not ready:
            assert service.reference_error is not None and "min_reference_events" in service.reference_error
            assert any("demo-ner/1" in n and "min_reference_events" in n for n in service.readiness_notes())
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
