"""The Faust helper (``nlpmon[faust]``) inside a real Faust worker on the embedded broker: events in, drift
flags and the quality join in /metrics, invalid events in the dead-letter topic."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.clients.conftest import ROOT, require
from tests.service.test_service_e2e import event_lines
from tests.support import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def publish(bootstrap: str, topic: str, lines: list[str], path: Path) -> None:
    path.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, "-m", "nlpmon.cli", "publish", str(path), "--bootstrap-servers",
                           bootstrap, "--topic", topic], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def read_all(bootstrap: str, topic: str, expected: int) -> list[Any]:
    """The first ``expected`` messages of every partition, by assignment (no group join to wait for)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    partitions = wait_until(lambda: c.list_topics(topic, timeout=5).topics[topic].partitions, 30, topic)
    c.assign([TopicPartition(topic, p, 0) for p in partitions])  # from 0: the embedded broker's ListOffsets is off
    out: list[Any] = []
    deadline = time.monotonic() + 30
    while len(out) < expected and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            out.append(m)
    c.close()
    return out


def metric(port: int, name: str, **labels: str) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    want = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    for line in text.splitlines():
        if line.startswith(name + "{"):
            series, value = line.rsplit(" ", 1)
            got = "{" + ",".join(sorted(series[len(name) + 1:-1].split(","))) + "}"
            if got == want:
                return float(value)
    return None


def test_faust_worker_monitors_the_stream(kafka_bootstrap: str, tmp_path: Path) -> None:
    require("faust", "faust")
    s = uuid.uuid4().hex[:8]
    topic, labels_topic, dlq = f"faust-pred-{s}", f"faust-labels-{s}", f"faust-dlq-{s}"
    lines = event_lines(400, 900, drift_at=400)  # a small reference: calibration takes seconds
    lines[500:500] = ['{"event_id": "bad-1"}', "not json"]
    production = [json.loads(x) for x in lines[400:500]]
    gold = [json.dumps({"event_id": e["event_id"], "model": e["model"],
                        "entities": [{"label": x["label"], "start": x["start"], "end": x["end"]}
                                     for x in e["entities"] if x.get("start") is not None]}) for e in production[:50]]
    env = {**os.environ, "FAUST_TEST_APP_ID": f"nlpmon-faust-{s}", "FAUST_TEST_BOOTSTRAP": kafka_bootstrap,
           "FAUST_TEST_DATADIR": str(tmp_path / "faust"), "FAUST_TEST_TOPIC": topic, "FAUST_TEST_LABELS": labels_topic,
           "FAUST_TEST_DLQ": dlq}
    publish(kafka_bootstrap, topic, lines, tmp_path / "events.jsonl")
    publish(kafka_bootstrap, labels_topic, gold, tmp_path / "labels.jsonl")
    log = tmp_path / "worker.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "tests.clients.faust_app", "worker", "-l", "info"], cwd=ROOT,
                                env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        def port() -> int | None:
            assert proc.poll() is None, log.read_text()[-3000:]
            m = re.search(r"metrics and models at http://127\.0\.0\.1:(\d+)/", log.read_text())
            return int(m.group(1)) if m else None

        p = wait_until(port, 60, "the Faust worker's nlpmon server")
        drift = {"model": "demo-ner", "model_version": "1", "signal": "embedding"}
        wait_until(lambda: metric(p, "nlpmon_drift_detected", **drift) == 1.0, 120, "an embedding drift flag")
        wait_until(lambda: metric(p, "nlpmon_events_total", model="demo-ner", model_version="1",
                                  split="production") == 900, 60, "every production event monitored")
        assert metric(p, "nlpmon_events_total", model="demo-ner", model_version="1", split="reference") == 400
        wait_until(lambda: metric(p, "nlpmon_join_total", model="demo-ner", model_version="1",
                                  outcome="matched") == 50, 60, "the labels joined to their predictions")
        assert metric(p, "nlpmon_invalid_events_total", reason="missing_field") == 1
        assert metric(p, "nlpmon_invalid_events_total", reason="malformed_json") == 1
        report = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{p}/api/models/demo-ner", timeout=5).read())
        assert report["signals"]["embedding"]["drift"] is True and report["quality"]["join"]["matched"] == 50
        assert urllib.request.urlopen(f"http://127.0.0.1:{p}/healthz", timeout=5).status == 200
        assert urllib.request.urlopen(f"http://127.0.0.1:{p}/readyz", timeout=5).status == 200
        dl = read_all(kafka_bootstrap, dlq, 2)
        assert sorted(dict(m.headers())["nlpmon-reason"].decode() for m in dl) == ["malformed_json", "missing_field"]
        assert {dict(m.headers())["nlpmon-source-topic"].decode() for m in dl} == {topic}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
