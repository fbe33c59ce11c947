"""Events published without a Kafka key: accepted, counted in nlpmon_unkeyed_events_total, one warning
per partition (the docs require keying by model; without it per-model partitioning breaks). librdkafka's
default partitioner sends keyless messages to one partition per batch (sticky), so which partitions get
them is read from the delivery reports."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from tests.service.test_service_e2e import Service, event_lines
from tests.support import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_keyless_events_are_counted_and_warned_once_per_partition(
        kafka_bootstrap: str, names: dict[str, str], publish: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NLPMON_PARTITIONS", "2")
    svc = Service(kafka_bootstrap, names, tmp_path / "service.log")
    try:
        lines = event_lines(300, 200, drift_at=10_000)
        publish(lines[:400], "keyed")  # nlpmon publish keys by model
        partitions: list[int] = []
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for line in lines[400:]:
            producer.produce(names["topic"], line.encode(),
                             on_delivery=lambda err, msg: partitions.append(-1 if err else msg.partition()))
        assert producer.flush(30) == 0 and len(partitions) == 100 and -1 not in partitions
        wait_until(lambda: svc.metric("nlpmon_unkeyed_events_total", topic=names["topic"]) == 100, 60,
                   "the keyless events counted")
        warnings = [line for line in svc.log.read_text().splitlines() if "without a Kafka key" in line]
        assert len(warnings) == len(set(partitions)), warnings
        assert {f"{names['topic']}[{p}]" for p in partitions} == {
            w.split(" on ", 1)[1].split(" ")[0].rstrip(":") for w in warnings}
        assert all("models: demo-ner" in w for w in warnings)
        # accepted, not dead-lettered (the keyed ones may sit on another partition: a split model)
        assert svc.metric("nlpmon_invalid_events_total", reason="malformed_json") is None
        assert json.loads(svc.get("/api/models")[1])["models"]
    finally:
        assert svc.stop(signal.SIGTERM) == 0
