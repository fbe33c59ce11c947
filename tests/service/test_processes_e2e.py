"""`nlpmon run --processes 2` end to end on the real broker: two members of one group on a 4-partition topic
behind one parent; merged /metrics count every event once; pages served through the parent; a member killed
with SIGKILL is restarted and nothing is lost or counted twice; SIGTERM stops everything cleanly."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from nlpmon.demo import SyntheticStream
from tests.support import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
MODELS = [f"m{k}" for k in range(8)]  # keyed by model: spread over the 4 partitions
T0 = time.time() - 3600


def model_lines(per_model: int, start: int = 0) -> list[str]:
    out = []
    for k, model in enumerate(MODELS):
        stream = SyntheticStream(seed=k, model=model, t0=T0 + start)
        for i, e in enumerate(stream.events(start + per_model)):
            if i >= start:
                e["event_id"] = f"{model}-{i}"
                out.append(json.dumps(e))
    return out


class Parent:
    """A `nlpmon run --processes 2` subprocess; its HTTP port is read from the parent's start-up line."""

    def __init__(self, bootstrap: str, names: dict[str, str], log: Path, *extra: str,
                 auth: tuple[str, str] | None = None, env: dict[str, str] | None = None) -> None:
        self.auth = auth
        env = {**os.environ, "NLPMON_BOOTSTRAP_SERVERS": bootstrap, "NLPMON_PORT": "0",
               "NLPMON_TOPIC": names["topic"], "NLPMON_GROUP_ID": names["group"], "NLPMON_PARTITIONS": "4",
               "NLPMON_STATE_TOPIC": names["state"], "NLPMON_DEAD_LETTER_TOPIC": names["dlq"],
               "NLPMON_GROUND_TRUTH_TOPIC": names["labels"], "NLPMON_MONITOR__CALIBRATION_SPLITS": "2",
               "NLPMON_PROGRESS_INTERVAL_S": "5", "NLPMON_KAFKA__SESSION_TIMEOUT_MS": "2000",
               "NLPMON_KAFKA__STATISTICS_INTERVAL_MS": "300", "NLPMON_KAFKA__BATCH_SIZE": "200",
               "NLPMON_KAFKA__CHECKPOINT_INTERVAL_S": "1", "NLPMON_KAFKA__POLL_TIMEOUT_S": "0.2", **(env or {})}
        self.log = log
        self.fh = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "nlpmon.cli", "run", "--processes", "2", *extra],
                                     cwd=ROOT,
                                     env=env, stdout=self.fh, stderr=subprocess.STDOUT)
        m = wait_until(lambda: re.search(r"2 members consuming \S+ on \S+; metrics and models at "
                                         r"http://127\.0\.0\.1:(\d+)/", log.read_text()) or self._dead(), 60,
                       "the parent to start")
        self.port = int(m.group(1))

    def _dead(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"nlpmon exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")

    def get(self, path: str, auth: bool = True) -> tuple[int, bytes]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if self.auth is not None and auth:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        text = self.get("/metrics")[1].decode()
        return {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(text)
                for s in f.samples if s.name == name}

    def events_counted(self) -> float:
        return sum(self.samples("nlpmon_events_total").values())

    def events_reported(self) -> int:
        models = json.loads(self.get("/api/models?limit=1000")[1])["models"]
        return sum(sum(m["events"].values()) for m in models)

    def member_pid(self, index: int) -> int:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        for pid in children:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"nlpmon.app.members" in cmd and cmd[cmd.index(b"--member") + 1] == str(index).encode():
                return int(pid)
        raise AssertionError(f"no member {index} among {children}")

    def stop(self, timeout_s: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self.fh.close()


def committed_events(bootstrap: str, names: dict[str, str]) -> int:
    """The event topic's messages the group committed (offsets from 0, one per message)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": names["group"], "enable.auto.commit": False})
    try:
        committed = c.committed([TopicPartition(names["topic"], p) for p in range(4)], timeout=10)
        return sum(max(tp.offset, 0) for tp in committed)
    finally:
        c.close()


def test_two_members_count_every_event_once_and_serve_one_set_of_pages(
        kafka_bootstrap: str, names: dict[str, str], publish: Any, tmp_path: Path) -> None:
    svc = Parent(kafka_bootstrap, names, tmp_path / "parent.log")
    try:
        lines = model_lines(150)
        publish(lines, "events")
        wait_until(lambda: svc.events_counted() == len(lines), 120, "every event counted in the merged /metrics")
        wait_until(lambda: svc.events_reported() == len(lines), 30, "every event in the merged model list")
        assigned = svc.samples("nlpmon_assigned_partitions")
        assert set(assigned) == {(("member", "0"),), (("member", "1"),)}
        assert all(v >= 1 for v in assigned.values()), assigned  # both members hold partitions
        assert sum(assigned.values()) == 8  # 4 event + 4 ground-truth partitions, each held once
        status: dict[str, float] = {}
        for labels, v in svc.samples("nlpmon_model_status").items():
            status[dict(labels)["model"]] = status.get(dict(labels)["model"], 0.0) + v
        assert status == {m: 1.0 for m in MODELS}  # each model's gauges once: one status, from one member
        wait_until(lambda: svc.get("/readyz")[0] == 200, 60, "every member ready")
        assert svc.get("/healthz")[0] == 200
        for model in MODELS:
            report = json.loads(svc.get(f"/api/models/{model}")[1])
            assert report["model"] == model and report["events"]["production"] == 150
        status, page = svc.get("/models/m3")
        assert status == 200 and b"m3" in page
        status, page = svc.get("/models")
        assert status == 200 and all(m.encode() in page for m in MODELS)
        assert svc.get("/models/nope")[0] == 404
        assert svc.events_counted() == len(lines)  # still: nothing counted twice after the fact
    finally:
        code = svc.stop()
    assert code == 0, svc.log.read_text()[-3000:]
    log = svc.log.read_text()
    assert "[member 0]" in log and "[member 1]" in log and "stop requested" in log


def test_the_parent_makes_every_topic_before_the_demo_writes_labels(
        kafka_bootstrap: str, names: dict[str, str], tmp_path: Path) -> None:
    """`nlpmon run --processes 2 --demo` with a 2-partition event topic: the demo's first labels must not
    create the ground-truth topic with the broker's default partition count (the members then refused to
    start: "has 4 partitions but ... has 2"). The parent makes every topic before it starts the members and
    the demo; the members monitor the demo's events and join its labels."""
    from nlpmon.kafka.topics import topic_partition_count

    svc = Parent(kafka_bootstrap, names, tmp_path / "parent.log", "--demo", env={"NLPMON_PARTITIONS": "2"})
    try:
        counts = {role: topic_partition_count(kafka_bootstrap, names[role])
                  for role in ("topic", "state", "dlq", "labels")}
        assert counts == {"topic": 2, "state": 2, "dlq": 2, "labels": 2}, counts  # already at the start line
        wait_until(lambda: any(dict(k).get("kind") == "labels" and v > 0
                               for k, v in svc.samples("nlpmon_join_events_total").items()), 120,
                   "the demo's labels joined")
        wait_until(lambda: svc.get("/readyz")[0] == 200, 60, "every member ready")
        assert svc.proc.poll() is None and "must match" not in svc.log.read_text()
    finally:
        code = svc.stop()
    assert code == 0, svc.log.read_text()[-3000:]


def test_a_killed_member_is_restarted_and_nothing_is_lost_or_counted_twice(
        kafka_bootstrap: str, names: dict[str, str], publish: Any, tmp_path: Path) -> None:
    svc = Parent(kafka_bootstrap, names, tmp_path / "parent.log")
    try:
        first, rest = model_lines(100), model_lines(100, start=100)
        publish(first, "first")
        wait_until(lambda: svc.events_counted() == len(first), 120, "the first events counted")
        # every partition checkpointed (snapshots and offsets), then the parent scrapes what the victim counted
        wait_until(lambda: committed_events(kafka_bootstrap, names) == len(first), 60,
                   "the group to commit the first events")
        assert svc.events_counted() == len(first)
        victim = svc.member_pid(1)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: svc.samples("nlpmon_member_restarts_total").get((("member", "1"),)) == 1, 60,
                   "the parent to restart member 1")
        assert svc.member_pid(1) != victim
        publish(rest, "rest")
        total = len(first) + len(rest)
        wait_until(lambda: svc.events_reported() == total, 120, "every event in the restored reports")
        counted = wait_until(lambda: (n := svc.events_counted()) >= total and n, 60, "every event in /metrics")
        assert counted == total, "an event was counted twice"
        wait_until(lambda: svc.get("/readyz")[0] == 200, 60, "both members ready again")
        for model in MODELS:  # the state restored from the snapshots: each event once
            report = json.loads(svc.get(f"/api/models/{model}")[1])
            assert report["events"]["production"] == 200, (model, report["events"])
        assert svc.events_counted() == total
        assert svc.samples("nlpmon_member_restarts_total").get((("member", "0"),)) == 0
    finally:
        code = svc.stop()
    assert code == 0, svc.log.read_text()[-3000:]
    assert "member 1 (pid" in svc.log.read_text() and "exited with code -9" in svc.log.read_text()


def test_the_parent_applies_the_web_config_and_the_members_serve_loopback_only(
        kafka_bootstrap: str, names: dict[str, str], publish: Any, tmp_path: Path) -> None:
    from tests.test_web_auth import write_config
    from tests.tls_certs import bcrypt_hash

    cfg = write_config(tmp_path, None, {"prometheus": bcrypt_hash("s3cret")})
    svc = Parent(kafka_bootstrap, names, tmp_path / "parent.log", "--web-config-file", str(cfg),
                 auth=("prometheus", "s3cret"))
    try:
        lines = model_lines(20)
        publish(lines, "events")
        wait_until(lambda: svc.events_counted() == len(lines), 120, "every event counted through basic auth")
        for path in ("/metrics", "/models", "/api/models/m1", "/readyz"):
            assert svc.get(path, auth=False)[0] == 401, path
        assert svc.get("/api/models/m1")[0] == 200
        members = re.findall(r"\[member \d\] nlpmon: nlpmon: consuming .* models at (\S+)/", svc.log.read_text())
        assert len(members) == 2 and all(u.startswith("http://127.0.0.1:") for u in members), members
    finally:
        code = svc.stop()
    assert code == 0, svc.log.read_text()[-3000:]
