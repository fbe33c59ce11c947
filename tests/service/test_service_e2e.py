"""`nlpmon run` end to end against a real broker: publish -> metrics, dead letters, SIGTERM, SIGKILL + restart.

The service runs as a separate process (`python -m nlpmon.cli run`), configured through NLPMON_*
environment variables, exactly as a user runs it.
"""

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

import numpy as np
import pytest
from confluent_kafka import Consumer

from nlpmon.demo import SyntheticStream
from nlpmon.demo.generator import LABELS
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.observability.http import to_jsonable
from tests.core.test_monitor import EMBEDDING_TOL, assert_close_tree
from tests.support import process_gone, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
MONITOR_ENV = {"NLPMON_MONITOR__CALIBRATION_SPLITS": "2"}
CONFIG = MonitorConfig(calibration_splits=2)
# event times an hour before the test: within the service's clock-skew range, so that the service (which
# checks event clocks against its wall clock) and the replay (which has no clock) see the same times
T0 = time.time() - 3600


def event_lines(n_ref: int, n: int, drift_at: int, seed: int = 5) -> list[str]:
    ref = SyntheticStream(seed=seed, t0=T0)
    ref.rng = np.random.default_rng(77)
    prod = SyntheticStream(seed=seed, drift_at=drift_at, t0=T0 + n_ref / 100)
    return ([json.dumps(e) for e in ref.events(n_ref, "reference")] +
            [json.dumps(e) for e in prod.events(n)])


class Service:
    """A `nlpmon run` subprocess; its HTTP port is read from its start-up line."""

    def __init__(self, bootstrap: str, names: dict[str, str], log: Path) -> None:
        env = {**os.environ, **MONITOR_ENV, "NLPMON_BOOTSTRAP_SERVERS": bootstrap, "NLPMON_PORT": "0",
               "NLPMON_TOPIC": names["topic"], "NLPMON_GROUP_ID": names["group"],
               "NLPMON_STATE_TOPIC": names["state"], "NLPMON_DEAD_LETTER_TOPIC": names["dlq"],
               "NLPMON_GROUND_TRUTH_TOPIC": names["labels"],
               "NLPMON_PROGRESS_INTERVAL_S": "1", "NLPMON_KAFKA__SESSION_TIMEOUT_MS": "2000",
               "NLPMON_KAFKA__STATISTICS_INTERVAL_MS": "300", "NLPMON_KAFKA__BATCH_SIZE": "300",
               "NLPMON_KAFKA__CHECKPOINT_INTERVAL_EVENTS": "700", "NLPMON_KAFKA__CHECKPOINT_INTERVAL_S": "30",
               "NLPMON_KAFKA__POLL_TIMEOUT_S": "0.2"}
        self.log = log
        self.fh = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "nlpmon.cli", "run"], cwd=ROOT, env=env,
                                     stdout=self.fh, stderr=subprocess.STDOUT)
        m = wait_until(lambda: re.search(r"models at http://127\.0\.0\.1:(\d+)/", log.read_text())
                       or self._dead(), 60, "the service to start")
        self.port = int(m.group(1))

    def _dead(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"service exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def json(self, path: str) -> Any:
        return json.loads(self.get(path)[1])

    def metric(self, name: str, **labels: str) -> float | None:
        text = self.get("/metrics")[1].decode()
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith(name + "{" if labels else name + " "):
                got = line[len(name):].split(" ")[0]
                parsed = ",".join(sorted(got.strip("{}").split(","))) if labels else ""
                if parsed == want:
                    return float(line.rsplit(" ", 1)[1])
        return None

    def caught_up(self, *topics: str) -> bool:
        """The (single) partition of each of ``topics`` is consumed to its end: its nlpmon_consumer_lag (from
        the fetch statistics' high watermark, final once publishing has ended) is present and 0."""
        text = self.get("/metrics")[1].decode()
        lags = {}
        for m in re.finditer(r'^nlpmon_consumer_lag\{([^}]*)\} (\S+)$', text, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            lags[(labels["topic"], labels["partition"])] = float(m.group(2))
        return all(lags.get((t, "0")) == 0 for t in topics)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout_s)
        finally:
            self.fh.close()
        # no calibration worker process outlives the service (after a SIGKILL it sees its parent gone)
        for pid in re.findall(r"calibration worker process started \(pid (\d+)\)", self.log.read_text()):
            wait_until(lambda pid=int(pid): process_gone(pid), 10, f"calibration worker {pid} to exit")
        return code


def dead_letters(bootstrap: str, topic: str, expected: int) -> list[Any]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.partition.eof": True})
    c.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + 30
    while len(out) < expected and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            out.append(m)
    c.close()
    return out


def test_publish_to_metrics_end_to_end(kafka_bootstrap: str, names: dict[str, str], publish: Any,
                                       tmp_path: Path) -> None:
    svc = Service(kafka_bootstrap, names, tmp_path / "service.log")
    try:
        lines = event_lines(800, 1500, drift_at=700)
        lines[900:900] = ['{"event_id": "bad-1"}', "not json at all", json.dumps({**json.loads(lines[901]),
                                                                                  "task": "summarisation"})]
        publish(lines, "events")
        labels = {"model": "demo-ner", "model_version": "1", "signal": "embedding"}
        wait_until(lambda: svc.metric("nlpmon_drift_detected", **labels) == 1.0, 90, "an embedding drift flag")
        wait_until(lambda: svc.metric("nlpmon_events_total", model="demo-ner", model_version="1",
                                      split="production") == 1500, 30, "all production events counted")
        assert svc.metric("nlpmon_events_total", model="demo-ner", model_version="1", split="reference") == 800
        assert svc.metric("nlpmon_drift_alarms_total", **labels) >= 1
        assert svc.metric("nlpmon_invalid_events_total", reason="malformed_json") == 1
        assert svc.metric("nlpmon_invalid_events_total", reason="missing_field") == 1
        assert svc.metric("nlpmon_invalid_events_total", reason="unknown_task") == 1
        assert svc.metric("nlpmon_drift_threshold", **labels) == 1.0
        model = svc.json("/api/models/demo-ner")
        assert model["status"] == "monitoring" and model["signals"]["embedding"]["drift"] is True
        assert model["outliers"] and all(o["index"] >= 700 for o in model["outliers"])
        assert svc.get("/healthz")[0] == 200 and svc.get("/readyz")[0] == 200
        dl = dead_letters(kafka_bootstrap, names["dlq"], 3)
        assert len(dl) == 3
        headers = dict(dl[0].headers())
        assert headers["nlpmon-source-topic"].decode() == names["topic"]
        assert {dict(m.headers())["nlpmon-reason"].decode() for m in dl} == {"missing_field", "malformed_json",
                                                                              "unknown_task"}
    finally:
        code = svc.stop(signal.SIGTERM)
    assert code == 0, svc.log.read_text()[-2000:]


def test_sigkill_mid_stream_then_restart_equals_uninterrupted(kafka_bootstrap: str, names: dict[str, str],
                                                              publish: Any, tmp_path: Path) -> None:
    lines = event_lines(800, 2400, drift_at=1600, seed=9)
    svc = Service(kafka_bootstrap, names, tmp_path / "first.log")
    publish(lines[:2000], "first")

    def processed() -> int:
        reps = svc.json("/api/models")["models"]
        return sum(r["events"]["production"] for r in reps) if reps else 0

    wait_until(lambda: processed() >= 600, 90, "part of the stream processed")
    assert svc.stop(signal.SIGKILL) == -signal.SIGKILL
    publish(lines[2000:], "rest")
    svc2 = Service(kafka_bootstrap, names, tmp_path / "second.log")
    try:
        # Final: every partition consumed to its end (publishing is over), and a report refreshed after the
        # last batch (its count covers every event; a report older than the last batch could not).
        wait_until(lambda: svc2.caught_up(names["topic"]), 120, "the whole stream consumed after the restart")
        got = wait_until(lambda: (r := svc2.json("/api/models/demo-ner")).get("events", {}).get("production", 0)
                         >= 2400 and r, 30, "the report of the last batch")
    finally:
        assert svc2.stop(signal.SIGTERM) == 0
    assert got["events"] == {"production": 2400, "reference": 800}, "an event was lost or counted twice"
    ms = MonitorSet(CONFIG)
    for i in range(0, len(lines), 500):
        ms.process_lines(lines[i:i + 500])
    want = json.loads(json.dumps(to_jsonable(ms.report()["demo-ner/1"])))
    got.pop("key", None)
    for r in (want, got):
        r["reference"].pop("calibration_seconds")
        r.pop("events_processed_here")
    assert got.pop("quality")["join"]["predictions"] == 3200  # each prediction joined once (none labelled)
    for r in (want, got):
        for key in ("history", "throughput", "examples", "projection", "confidence_by_label"):
            r.pop(key)  # in memory only, for the pages: they start again after the restart
    # outlier scores are clipped, so many tie: which tied ones are kept depends on float rounding
    oa, ob = (sorted(o["score"] for o in r.pop("outliers")) for r in (want, got))
    assert oa == pytest.approx(ob, rel=EMBEDDING_TOL, abs=EMBEDDING_TOL)
    assert_close_tree(want, got, EMBEDDING_TOL)
    restored = re.search(r"assigned \S+\[0\]@(\d+)", (tmp_path / "second.log").read_text())
    assert restored and 0 < int(restored.group(1)) <= 2000, "the restart did not resume from a snapshot"


def test_readiness_reports_an_unreachable_broker(names: dict[str, str], tmp_path: Path) -> None:
    """/readyz reports a broker outage and recovers: first the broker process is frozen (SIGSTOP: the
    group session lapses, partitions are lost) and resumed; then it is killed (connections refused).
    /healthz stays 200 throughout: the loop keeps polling, so the process is alive, just not ready."""
    from nlpmon.kafka.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        svc = Service(broker.bootstrap_servers, names, tmp_path / "svc.log")
        try:
            wait_until(lambda: svc.get("/readyz")[0] == 200, 60, "ready")
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                body = wait_until(lambda: (r := svc.get("/readyz"))[0] == 503 and json.loads(r[1]), 60,
                                  "readiness to report the frozen broker")
                assert set(body["failing"]) <= {"broker_reachable", "group_member", "partitions_assigned",
                                                "checkpoints_acknowledged"} and body["failing"]
                assert svc.get("/healthz")[0] == 200
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            wait_until(lambda: svc.get("/readyz")[0] == 200, 60, "ready again after the broker came back")
            os.kill(broker.pid, signal.SIGKILL)
            body = wait_until(lambda: (r := svc.get("/readyz"))[0] == 503
                              and "broker_reachable" in json.loads(r[1])["failing"] and json.loads(r[1]), 60,
                              "readiness to report the dead broker")
            assert svc.get("/healthz")[0] == 200
        finally:
            svc.stop(signal.SIGTERM, timeout_s=40)


def labelled_lines(n_ref: int, n: int, seed: int = 3) -> tuple[list[str], dict[str, list[tuple[int, int, str]]],
                                                                 dict[str, list[tuple[int, int, str]]]]:
    """Events with unique ids, their predicted spans and gold spans (right, shifted or relabelled)."""
    import random

    rng = random.Random(seed)
    lines, pred, gold = [], {}, {}
    for i, e in enumerate(json.loads(x) for x in event_lines(n_ref, n, drift_at=n, seed=seed)):
        e["event_id"] = eid = f"ev-{i}"
        lines.append(json.dumps(e))
        if e["split"] == "production":
            pred[eid] = [(x["start"], x["end"], x["label"]) for x in e["entities"]]
            roll = rng.random()
            gold[eid] = (pred[eid] if roll < 0.6 else [(s, t + 1, lab) for s, t, lab in pred[eid]] if roll < 0.8
                         else [(s, t, "MISC") for s, t, _ in pred[eid]] + [(0, 1, "PER")])
    return lines, pred, gold


def label_line(eid: str, spans: list[tuple[int, int, str]]) -> str:
    return json.dumps({"event_id": eid, "model": "demo-ner",
                       "entities": [{"label": lab, "start": s, "end": t} for s, t, lab in spans]})


def test_pending_joins_survive_sigkill_and_late_labels_give_exact_span_figures(
        kafka_bootstrap: str, names: dict[str, str], publish: Any, tmp_path: Path) -> None:
    import random

    from nlpmon.quality.spans import LabelVocab
    from nlpmon.quality.window import scores_from_counts
    from tests.quality.test_spans import oracle

    lines, pred, gold = labelled_lines(600, 1500)
    ids = sorted(gold)
    random.Random(4).shuffle(ids)
    first, rest = ids[:500], ids[500:]
    svc = Service(kafka_bootstrap, names, tmp_path / "first.log")
    publish([label_line(e, gold[e]) for e in first[:150]], "early", names["labels"])  # before their predictions
    publish(lines, "events")
    publish([label_line(e, gold[e]) for e in first[150:]], "late", names["labels"])

    def quality(s: Service) -> dict[str, Any]:
        return s.json("/api/models/demo-ner").get("quality") or {"join": {"matched": 0, "labels": 0}}

    wait_until(lambda: quality(svc)["join"]["matched"] == 500, 120, "the first labels joined")
    q = quality(svc)
    # 1000 unlabelled production and 600 reference predictions wait (in the snapshot too, or re-read)
    assert q["join"]["pending_predictions"] == 1600 and q["join"]["pending_labels"] == 0
    assert svc.stop(signal.SIGKILL) == -signal.SIGKILL
    publish([label_line(e, gold[e]) for e in rest] + [label_line(e, gold[e]) for e in first[:7]], "rest",
            names["labels"])
    svc2 = Service(kafka_bootstrap, names, tmp_path / "second.log")
    try:
        # Final: both topics consumed to their ends (publishing is over), and a report refreshed after the last
        # batch: one that counts every label and every prediction (an older one cannot).
        wait_until(lambda: svc2.caught_up(names["topic"], names["labels"]), 120,
                   "every prediction and label consumed after the restart")
        q = wait_until(lambda: (r := quality(svc2))["join"]["labels"] >= 1507
                       and r["join"].get("predictions", 0) >= 2100 and r, 30, "the report of the last batch")
        series = {"model": "demo-ner", "model_version": "1"}
        assert svc2.metric("nlpmon_quality", **series, label="__micro__", metric="f1") == pytest.approx(
            q["micro"]["f1"])
        assert svc2.metric("nlpmon_quality_documents", **series) == 1500
        # this process's own work only: the labels joined before the SIGKILL are not counted again
        assert svc2.metric("nlpmon_join_total", **series, outcome="duplicate_label") == 7
        assert svc2.metric("nlpmon_join_events_total", **series, kind="labels") == q["join_here"]["labels"]
    finally:
        assert svc2.stop(signal.SIGTERM) == 0
    j = q["join"]
    assert j["predictions"] == 2100, "a prediction was lost or counted twice"
    assert j["matched"] == 1500 and j["duplicate_label"] == 7, "a label was lost or joined twice"
    assert j["pending_predictions"] == 600 and j["pending_labels"] == 0  # the unlabelled reference
    vocab = LabelVocab(names=[*LABELS, "MISC", "PER"])
    sums = np.zeros((len(vocab), 3), dtype=np.int64)
    for eid in ids:
        for lab, counts in oracle(pred[eid], gold[eid]).items():
            sums[vocab.id(lab)] += counts
    want = scores_from_counts(sums, vocab.names)
    assert q["labels"] == want["labels"]
    assert q["micro"] == want["micro"] and q["documents"] == 1500
