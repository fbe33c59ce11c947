"""`nlpmon run` on a real broker and `nlpmon replay` give the same report for the same events.

The same predictions, the same reference file (``--reference``) and the same ground-truth labels (of
production and of reference events) go through ``replay`` (files) and through ``nlpmon run`` (the
prediction and ground-truth topics of an embedded broker, the reference file through NLPMON_REFERENCE).
Both drive ``nlpmon.monitor.pipeline.Pipeline``; their reports must agree on every deterministic field.

Excluded, and why:
- ``reference.calibration_seconds``: wall-clock time of the calibration;
- ``quality.label_delay_seconds``: label arrival is the Kafka record time under ``run`` and the newest
  event time under ``replay``, so the measured delays differ by design;
- ``key``: the service's API adds it (the model/version key the replay report is indexed by).
Floats are compared within ``EMBEDDING_TOL`` (float32 embeddings, BLAS sums in other batch splits: the
service consumes batches of 300, the replay reads 2,000 lines at a time); counts and strings exactly.
"""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest

from nlpmon.observability.http import to_jsonable
from nlpmon.quality import QualityConfig
from nlpmon.replay import replay
from tests.core.test_monitor import EMBEDDING_TOL, assert_close_tree
from tests.service.test_service_e2e import CONFIG, Service, event_lines, label_line
from tests.support import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]
N_REF, N_PROD = 600, 1500


def stream(seed: int = 11) -> tuple[list[str], list[str], list[str]]:
    """Reference-file lines, production lines (drifting half-way) and label lines for all of them: right,
    shifted or relabelled spans, so that F1 is neither 0 nor 1."""
    rng = random.Random(seed)
    ref, prod, labels = [], [], []
    for i, e in enumerate(json.loads(x) for x in event_lines(N_REF, N_PROD, drift_at=N_PROD // 2, seed=seed)):
        e["event_id"] = eid = f"{e['split'][:3]}-{i}"
        (ref if e["split"] == "reference" else prod).append(json.dumps(e))
        spans = [(x["start"], x["end"], x["label"]) for x in e["entities"]]
        roll = rng.random()
        gold = (spans if roll < 0.7 else [(s, t + 1, lab) for s, t, lab in spans] if roll < 0.85
                else [(s, t, "MISC") for s, t, _ in spans])
        labels.append(label_line(eid, gold))
    return ref, prod, labels


def comparable(rep: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(to_jsonable(rep)))
    out.pop("key", None)
    out["reference"].pop("calibration_seconds")
    out["quality"].pop("label_delay_seconds")
    return out


def test_run_and_replay_give_equal_reports(kafka_bootstrap: str, names: dict[str, str],
                                           publish: Any, tmp_path: Path) -> None:
    ref, prod, labels = stream()
    ref_path, events_path, labels_path = tmp_path / "ref.jsonl", tmp_path / "events.jsonl", tmp_path / "gt.jsonl"
    for path, lines in ((ref_path, ref), (events_path, prod), (labels_path, labels)):
        path.write_text("\n".join(lines) + "\n")
    want = replay(events_path, [ref_path], CONFIG, ground_truth_path=labels_path, quality_config=QualityConfig())
    want_model = comparable(want["models"]["demo-ner/1"])
    # the scenario exercises what it claims: drift, and the reference labels joined as the baseline
    assert any(s["drift"] for s in want_model["signals"].values())
    assert want_model["quality"]["join"]["matched"] == N_REF + N_PROD
    assert want_model["quality"]["reference"]["source"] is not None
    assert want_model["quality"]["join"]["label_expired_unmatched"] == 0

    os.environ["NLPMON_REFERENCE"] = json.dumps([str(ref_path)])
    try:
        svc = Service(kafka_bootstrap, names, tmp_path / "service.log")
    finally:
        del os.environ["NLPMON_REFERENCE"]
    try:
        publish(prod, "events")
        publish(labels, "labels", names["labels"])
        wait_until(lambda: svc.caught_up(names["topic"], names["labels"]), 180,
                   "every prediction and label consumed")

        def final() -> dict[str, Any] | None:
            r = svc.json("/api/models/demo-ner")
            j = (r.get("quality") or {}).get("join") or {}
            done = (r.get("events", {}).get("production") == N_PROD and j.get("labels") == N_REF + N_PROD
                    and "calibration_pending" not in r)
            return r if done else None

        got = wait_until(final, 60, "the report of the last batch")
    finally:
        assert svc.stop(signal.SIGTERM) == 0
    assert_close_tree(want_model, comparable(got), EMBEDDING_TOL)
