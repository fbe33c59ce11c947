"""Settings, the snapshot codec, the publisher, the embedded broker's errors and the module doctests."""

from __future__ import annotations

import doctest
import gzip
import json
import stat
from pathlib import Path

import pytest
from confluent_kafka import Producer
from kafka_test_helpers import Names, make_topic, read_partition

import nlpmon.kafka.checkpoints
import nlpmon.kafka.circuit_breaker
import nlpmon.kafka.publish
import nlpmon.kafka.rebalance
import nlpmon.kafka.settings
import nlpmon.kafka.snapshot_format
import nlpmon.kafka.state_store
import nlpmon.kafka.write_costs
from nlpmon.kafka.broker import BrokerError, EmbeddedBroker
from nlpmon.kafka.publish import PublishResult, event_key, publish_file
from nlpmon.kafka.settings import KafkaSettings
from nlpmon.kafka.snapshot_format import (
    PartitionSnapshot,
    SnapshotFormatError,
    decode_snapshot,
    encode_snapshot,
    snapshot_key,
)
from nlpmon.kafka.state_store import StateRestoreError, StateStore
from nlpmon.kafka.topics import create_topic, topic_partition_count


@pytest.mark.parametrize(
    "module",
    [nlpmon.kafka.checkpoints, nlpmon.kafka.circuit_breaker, nlpmon.kafka.publish, nlpmon.kafka.rebalance,
     nlpmon.kafka.settings, nlpmon.kafka.snapshot_format, nlpmon.kafka.write_costs],
)
def test_doctests(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.failed == 0 and result.attempted > 0


def test_settings_defaults_and_validation() -> None:
    settings = KafkaSettings()
    assert settings.bootstrap_servers is None and settings.topic == "nlpmon.predictions"
    assert settings.batch_size == 5000 and settings.session_timeout_ms == 10_000
    assert settings.effective_heartbeat_ms() == 3333
    assert KafkaSettings(bootstrap_servers=" a:1 , b:2 ").bootstrap_servers == "a:1,b:2"
    for bad, message in (
        ({"topic": "bad topic"}, r"\ntopic\s+Value error, invalid Kafka topic name 'bad topic'"),
        ({"bootstrap_servers": "nohostport"}, r"bootstrap_servers 'nohostport' must be host:port"),
        ({"state_topic": "nlpmon.predictions"}, r"state_topic .*must be different topics"),
        ({"circuit_min_events": 2000}, r"circuit_min_events must not exceed circuit_window_events"),
        ({"consumer_options": {"enable.auto.commit": True}},
         r"consumer_options may not set \['enable\.auto\.commit'\]"),
        ({"heartbeat_interval_ms": 20_000}, r"heartbeat_interval_ms must be smaller than session_timeout_ms"),
        ({"unknown_field": 1}, r"unknown_field\s+Extra inputs are not permitted"),
    ):
        with pytest.raises(ValueError, match=message):
            KafkaSettings(**bad)
    with pytest.raises(ValueError, match=r"batch_size\s+Instance is frozen"):
        KafkaSettings().batch_size = 3


def test_snapshot_codec_round_trip_and_errors() -> None:
    snapshot = PartitionSnapshot("nlpmon.predictions", 7, 123_456_789_012, b"\x00\x01 state")
    data = encode_snapshot(snapshot)
    assert decode_snapshot(data) == snapshot
    assert snapshot_key("g", "t", 3) == b"g/t/3"
    for bad, message in (
        (b"", "too short"),
        (b"XXXXXXXX" + data[8:], "bad magic"),
        (data[:8] + b"\x09" + data[9:], "format version 9"),
        (data[:14] + b"!" + data[15:], "bad snapshot header"),
        (data[:20], "bad snapshot header"),
    ):
        with pytest.raises(SnapshotFormatError, match=message):
            decode_snapshot(bad)


def test_event_key_extracts_model_without_validation() -> None:
    assert event_key(b'{"event_id": 1, "model": "clf-\\u00e9", "embedding": [1.0, 2.0]}') == "clf-é".encode()
    assert event_key(b'{"model": 3}') is None
    assert event_key(b'{"no_model": true}') is None
    assert event_key(b"\xff\xfe") is None


@pytest.mark.broker
def test_publish_file_jsonl_and_gz(kafka_bootstrap: str, kafka_names: Names, tmp_path: Path) -> None:
    make_topic(kafka_bootstrap, kafka_names.topic, 1)
    lines = [json.dumps({"model": f"m{i % 3}", "event_id": i}) for i in range(25)] + ["not json", ""]
    plain, packed = tmp_path / "events.jsonl", tmp_path / "events.jsonl.gz"
    plain.write_text("\n".join(lines) + "\n")
    with gzip.open(packed, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    seen: list[PublishResult] = []
    for path in (plain, packed):
        result = publish_file(
            path, kafka_bootstrap, kafka_names.topic, progress=seen.append, progress_every=10
        )
        assert result == PublishResult(sent=26, acked=26, failed=0)
    assert [r.sent for r in seen] == [10, 20, 26, 10, 20, 26]
    messages = read_partition(kafka_bootstrap, kafka_names.topic, 0)
    assert len(messages) == 52
    assert [m.key() for m in messages[:4]] == [b"m0", b"m1", b"m2", b"m0"]
    assert messages[25].key() is None and messages[25].value() == b"not json"


@pytest.mark.broker
def test_create_topic_is_idempotent(kafka_bootstrap: str, kafka_names: Names) -> None:
    assert topic_partition_count(kafka_bootstrap, kafka_names.topic) is None
    assert create_topic(kafka_bootstrap, kafka_names.topic, 3, {"cleanup.policy": "compact"})
    assert not create_topic(kafka_bootstrap, kafka_names.topic, 5)
    assert topic_partition_count(kafka_bootstrap, kafka_names.topic) == 3


@pytest.mark.broker
def test_state_store_reads_latest_and_refuses_garbage(kafka_bootstrap: str, kafka_names: Names) -> None:
    make_topic(kafka_bootstrap, kafka_names.state_topic, 2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    store = StateStore(
        bootstrap_servers=kafka_bootstrap,
        state_topic=kafka_names.state_topic,
        group_id="g",
        producer=producer,
        restore_timeout_s=10,
    )
    assert store.read_latest("t", [0, 1]) == {}
    for offset in (10, 20, 30):
        store.write(PartitionSnapshot("t", 1, offset, b"s%d" % offset))
    store.write(PartitionSnapshot("other", 1, 99, b"x"))  # another topic's key, same partition
    store.wait_all_acked(10)
    assert store.read_latest("t", [0, 1]) == {1: PartitionSnapshot("t", 1, 30, b"s30")}
    producer.produce(kafka_names.state_topic, key=snapshot_key("g", "t", 0), value=b"garbage", partition=0)
    producer.flush(10)
    with pytest.raises(StateRestoreError, match="unreadable"):
        store.read_latest("t", [0])
    with pytest.raises(ValueError, match="max_snapshot_bytes"):
        StateStore(
            bootstrap_servers=kafka_bootstrap,
            state_topic=kafka_names.state_topic,
            group_id="g",
            producer=producer,
            max_snapshot_bytes=1024,
        ).write(PartitionSnapshot("t", 0, 1, b"x" * 2000))


def test_embedded_broker_reports_a_binary_that_cannot_start(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'address in use' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    broker = EmbeddedBroker(binary=str(fake), start_timeout_s=5, log_path=tmp_path / "broker.log")
    with pytest.raises(BrokerError, match="exited with code 3"):
        broker.start()
    assert "address in use" in (tmp_path / "broker.log").read_text()
    with pytest.raises(BrokerError, match="not running"):
        _ = broker.bootstrap_servers
    with pytest.raises(BrokerError, match="not executable"):
        EmbeddedBroker(binary=str(tmp_path / "missing")).start()


def test_restore_consumer_is_built_from_the_client_options() -> None:
    """The snapshot reader is built like every other client: from KafkaSettings.client_options() (it was a
    hard-wired Consumer)."""
    ks = KafkaSettings(bootstrap_servers="127.0.0.1:9", librdkafka_options={"security.protocol": "SASL_SSL",
                                                                            "sasl.mechanism": "PLAIN"})
    built: list[dict[str, object]] = []

    def factory(config: dict[str, object]) -> Producer:
        built.append(config)
        raise RuntimeError("built")

    store = StateStore(bootstrap_servers="127.0.0.1:9", state_topic="s", group_id="g", producer=None,  # type: ignore[arg-type]
                       client_options=ks.client_options(), consumer_factory=factory)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="built"):
        store.read_latest("t", [0])
    assert built == [{**ks.client_options(), "bootstrap.servers": "127.0.0.1:9", "group.id": "g.state-reader",
                      "enable.auto.commit": False, "enable.auto.offset.store": False, "enable.partition.eof": True,
                      "auto.offset.reset": "earliest", "fetch.wait.max.ms": 20}]
