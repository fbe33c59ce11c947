"""The partition processor of `nlpmon run`: predictions and labels of one partition, one snapshot."""

from __future__ import annotations

import json

from service.app.processor import MonitorPartitionProcessor, References
from service.kafka.processor import LabelledPartitionProcessor, Record
from service.monitor.config import MonitorConfig
from service.quality import QualityConfig


def records(values: list[dict | bytes], start: int = 0, ts_ms: int = 1_700_000_000_000) -> list[Record]:
    return [Record(start + i, v if isinstance(v, bytes) else json.dumps(v).encode(), b"k", ts_ms + i)
            for i, v in enumerate(values)]


def prediction(eid: str, model: str = "ner") -> dict:
    return {"event_id": eid, "model": model, "model_version": "2",
            "entities": [{"label": "PER", "start": 0, "end": 4, "score": 0.9}]}


def label(eid: str, model: str = "ner", lab: str = "PER") -> dict:
    return {"event_id": eid, "model": model, "entities": [{"label": lab, "start": 0, "end": 4}]}


DEFAULT = QualityConfig()


def processor(quality: QualityConfig | None = DEFAULT) -> MonitorPartitionProcessor:
    return MonitorPartitionProcessor("t", 0, MonitorConfig(), References(), quality=quality)


def test_labels_join_predictions_and_the_snapshot_keeps_pending_joins() -> None:
    p = processor()
    assert isinstance(p, LabelledPartitionProcessor)
    assert p.process_labels(records([label("a"), label("b", lab="LOC")], start=8)) == []  # before predictions
    rejected = p.process_labels(records([b"{broken", b'{"event_id": "x", "model": "ner"}'], start=10))
    assert [(r.offset, r.reason) for r in rejected] == [(10, "malformed_json"), (11, "missing_field")]
    assert p.process(records([prediction("a"), prediction("b"), prediction("c")], start=0)) == []
    q = p.report()["ner/2"]["quality"]
    assert (q["labels"]["PER"]["tp"], q["labels"]["PER"]["fp"], q["labels"]["LOC"]["fn"]) == (1, 1, 1)
    assert q["join"]["pending_predictions"] == 1  # c
    restored = processor()
    restored.restore(p.snapshot())
    restored.process_labels(records([label("c")], start=12))
    q2 = restored.report()["ner/2"]["quality"]
    assert q2["labels"]["PER"]["tp"] == 2 and q2["join"]["pending_predictions"] == 0
    assert q2["join_here"]["matched"] == 1 and q2["join"]["matched"] == 3


def test_a_snapshot_of_a_build_without_ground_truth_still_restores() -> None:
    p = processor()
    p.process(records([prediction("a")]))
    old = p.monitors.snapshot()  # what earlier builds wrote: the MonitorSet alone
    restored = processor()
    restored.restore(old)
    assert restored.report()["ner/2"]["events"] == {"production": 1, "reference": 0}


def test_without_a_ground_truth_topic_predictions_skip_the_join() -> None:
    p = processor(quality=None)
    p.process(records([prediction("a")]))
    assert "quality" not in p.report()["ner/2"]


def test_labels_of_a_model_with_no_prediction_here_are_reported_as_orphans() -> None:
    p = processor()
    p.process_labels(records([label("a", model="elsewhere"), label("b", model="elsewhere")]))
    p.process(records([prediction("c")]))
    p.process_labels(records([label("c")], start=2))
    assert p.orphan_labels() == {"elsewhere": 2}


def test_valid_events_without_a_kafka_key_are_counted() -> None:
    p = MonitorPartitionProcessor("preds", 3, MonitorConfig(), References(), quality=DEFAULT, labels_topic="gt")
    values = [prediction("a"), prediction("b", model="pos"), b"{broken", prediction("c"), prediction("d", "pos")]
    keys = [None, b"", None, b"ner", None]  # empty and null keys both fail to key by model
    batch = [Record(i, json.dumps(v).encode() if isinstance(v, dict) else v, k, 1_700_000_000_000)
             for i, (v, k) in enumerate(zip(values, keys, strict=True))]
    assert [r.reason for r in p.process(batch)] == ["malformed_json"]  # a keyless invalid one is a dead letter
    stats = p.batch_stats.drain()
    assert stats.unkeyed == {"preds": 3} and stats.unkeyed_models == ["ner", "pos"]
    p.process(records([prediction("e")], start=5))  # keyed
    assert p.batch_stats.drain().unkeyed == {}
    p.process_labels([Record(0, json.dumps(label("a")).encode(), None, 1_700_000_000_000),
                      Record(1, b"{broken", None, 1_700_000_000_000)])
    assert p.batch_stats.drain().unkeyed == {"gt": 1}
