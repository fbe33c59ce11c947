"""Hostile input through the real service processor on a real broker (RELIABILITY.md scenario 15)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kafka_test_helpers import (
    Names,
    RunnerThread,
    committed_offsets,
    make_topic,
    produce,
    reached,
    read_partition,
    settings_for_test,
    wait_until,
)

from nlpmon.app.processor import MonitorPartitionProcessor, References
from nlpmon.demo import SyntheticStream
from nlpmon.kafka.runner import ConsumerRunner
from nlpmon.monitor.config import MonitorConfig

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DEEP = 10_000


def deep_messages() -> list[bytes]:
    """The 10,000-level messages of the issue: in ``metadata``, in ``entities`` and at the top level."""
    head = json.dumps({"event_id": "deep", "model": "ner", "model_version": "1"})[:-1]
    nest = "[" * DEEP + "]" * DEEP
    return [f'{head}, "metadata": {{"x": {nest}}}}}'.encode(), f'{head}, "entities": {nest}}}'.encode(),
            nest.encode()]


def test_a_10000_level_message_is_dead_lettered_and_the_loop_goes_on(kafka_bootstrap: str, kafka_names: Names) -> None:
    """Before the depth limit, the first of these crashed the runner with RecursionError (nothing committed,
    and the same crash again on every restart)."""
    make_topic(kafka_bootstrap, kafka_names.topic, 1)
    valid = [json.dumps(e).encode() for e in SyntheticStream(seed=2, dim=16, model="ner").events(60)]
    poison = deep_messages()
    values = valid[:20] + poison[:1] + valid[20:40] + poison[1:] + valid[40:]
    ends = produce(kafka_bootstrap, kafka_names.topic, [(0, b"ner", v) for v in values])
    processors: dict[int, MonitorPartitionProcessor] = {}

    def factory(topic: str, partition: int) -> MonitorPartitionProcessor:
        processors[partition] = MonitorPartitionProcessor(topic, partition, MonitorConfig(), References())
        return processors[partition]

    runner = ConsumerRunner(settings_for_test(kafka_bootstrap, kafka_names, batch_size=25), factory)
    worker = RunnerThread(runner).start()
    try:
        wait_until(lambda: reached([runner], kafka_names.topic, ends) or worker.done, 60, "every message processed")
        wait_until(lambda: committed_offsets(kafka_bootstrap, kafka_names.group, kafka_names.topic, 1) == ends
                   or worker.done, 30, "the offset past the poison committed")
    finally:
        worker.finish()
    assert worker.error is None, worker.error
    assert committed_offsets(kafka_bootstrap, kafka_names.group, kafka_names.topic, 1) == ends == {0: 63}
    assert processors[0].report()["ner/1"]["events"]["production"] == 60  # every valid event, around the poison
    dead = read_partition(kafka_bootstrap, kafka_names.dead_letter_topic, 0)
    headers: list[dict[str, Any]] = [{k: v.decode() for k, v in m.headers() or []} for m in dead]
    assert [(h["nlpmon-reason"], int(h["nlpmon-source-offset"])) for h in headers] == [
        ("too_deep", 20), ("too_deep", 41), ("too_deep", 42)]
    assert [m.value() for m in dead] == poison
    assert all("nested deeper than 64 levels" in h["nlpmon-detail"] for h in headers)
