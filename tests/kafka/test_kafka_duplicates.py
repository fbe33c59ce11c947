"""Duplicate event ids across a restart on a real broker: the recent-id window travels in the snapshot, so
a member that restores it drops the retries of events processed before the restart, and ends equal to one
uninterrupted processor over the same records."""

from __future__ import annotations

import json

import pytest
from kafka_test_helpers import (
    Names,
    RunnerThread,
    committed_offsets,
    make_topic,
    produce,
    reached,
    settings_for_test,
    wait_until,
)

from nlpmon.app.processor import MonitorPartitionProcessor, References
from nlpmon.demo import SyntheticStream
from nlpmon.kafka.processor import Record
from nlpmon.kafka.runner import ConsumerRunner
from nlpmon.monitor.config import MonitorConfig

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CONFIG = MonitorConfig(auto_baseline_events=200, min_reference_events=200, reference_reservoir=400,
                       embedding_windows=(5, 20), distribution_windows=(20, 40), block_events=20,
                       calibration_splits=2, random_features=32, pca_components=4)


def run_until(bootstrap: str, names: Names, ends: dict[int, int]) -> MonitorPartitionProcessor:
    made: list[MonitorPartitionProcessor] = []

    def factory(topic: str, partition: int) -> MonitorPartitionProcessor:
        made.append(MonitorPartitionProcessor(topic, partition, CONFIG, References()))
        return made[-1]

    runner = ConsumerRunner(settings_for_test(bootstrap, names, batch_size=40, checkpoint_interval_events=40),
                            factory)
    worker = RunnerThread(runner).start()
    try:
        wait_until(lambda: reached([runner], names.topic, ends) or worker.done, 60, "every record processed")
        wait_until(lambda: committed_offsets(bootstrap, names.group, names.topic, 1) == ends or worker.done,
                   30, "the last checkpoint")
    finally:
        worker.finish()
    assert worker.error is None, worker.error
    return made[-1]


def test_retries_after_a_restart_are_still_duplicates(kafka_bootstrap: str, kafka_names: Names) -> None:
    make_topic(kafka_bootstrap, kafka_names.topic, 1)
    events = [json.dumps(e).encode() for e in SyntheticStream(seed=8, dim=16, model="ner").events(330)]
    before = events[:300]
    after = events[280:300] + events[300:] + events[290:300]  # 30 retries of events read before the restart
    ends = produce(kafka_bootstrap, kafka_names.topic, [(0, b"ner", v) for v in before])
    first = run_until(kafka_bootstrap, kafka_names, ends)
    assert first.report()["ner/1"]["duplicate_events"] == 0
    ends = produce(kafka_bootstrap, kafka_names.topic, [(0, b"ner", v) for v in after])
    second = run_until(kafka_bootstrap, kafka_names, ends)  # restores the snapshot of the first member

    whole = MonitorPartitionProcessor("t", 0, CONFIG, References())
    values = before + after
    for start in range(0, len(values), 40):
        whole.process([Record(start + i, v, b"ner", None) for i, v in enumerate(values[start:start + 40])])
    got, want = second.report()["ner/1"], whole.report()["ner/1"]
    assert (got["events"], got["duplicate_events"]) == (want["events"], want["duplicate_events"]) == (
        {"production": 330, "reference": 0}, 30)
    assert got["monitored_events"] == want["monitored_events"] == 130
    assert {k: s["score"] for k, s in got["signals"].items()} == {k: s["score"] for k, s in want["signals"].items()}
