"""Poison events on a real broker: dead letters with their origin, commits only after their ack, and the
circuit breaker on all-invalid input."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest
from confluent_kafka import Producer
from counting_processor import CountingProcessor
from kafka_test_helpers import (
    Names,
    RunnerThread,
    committed_offsets,
    event,
    make_topic,
    produce,
    reached,
    read_partition,
    recording_factories,
    settings_for_test,
    wait_until,
)

from nlpmon.kafka.publish import DeliveryError
from nlpmon.kafka.runner import ConsumerRunner

pytestmark = [pytest.mark.broker, pytest.mark.slow]

POISON: list[tuple[bytes | None, str]] = [
    (b"{not json", "malformed_json"),
    (b"[1, 2, 3]", "malformed_json"),
    (None, "malformed_json"),
    (json.dumps({"model": "m0"}).encode(), "missing_field"),
    (json.dumps({"model": 7, "event_id": 1}).encode(), "missing_field"),
]


def mixed_stream(
    n: int, partitions: int, poison_every: int
) -> tuple[list[tuple[int, bytes, bytes | None]], int]:
    """``n`` messages; every ``poison_every``-th one is a poison event. Returns (messages, poison count)."""
    messages: list[tuple[int, bytes, bytes | None]] = []
    poison = 0
    for i in range(n):
        partition = i % partitions
        if i % poison_every == poison_every - 1:
            value, _ = POISON[poison % len(POISON)]
            messages.append((partition, b"m-bad", value))
            poison += 1
        else:
            messages.append((partition, f"m{partition}".encode(), event(f"m{partition}", i)))
    return messages, poison


def counting_factory(topic: str, partition: int) -> CountingProcessor:
    return CountingProcessor(topic, partition)


def headers_of(message: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in message.headers() or []}


def test_poison_events_go_to_dead_letter_topic(kafka_bootstrap: str, kafka_names: Names) -> None:
    """Scenario 6: each poison event lands in the dead-letter topic with reason, detail and origin; the
    valid ones are all counted; every commit comes after the acks of the dead letters it covers."""
    make_topic(kafka_bootstrap, kafka_names.topic, 2)
    messages, poison = mixed_stream(1000, 2, poison_every=25)
    ends = produce(kafka_bootstrap, kafka_names.topic, messages)
    timeline: list[tuple[str, Any]] = []
    runner = ConsumerRunner(
        settings_for_test(kafka_bootstrap, kafka_names, batch_size=100, checkpoint_interval_events=200),
        counting_factory,
        **recording_factories(timeline),
    )
    worker = RunnerThread(runner).start()
    try:
        wait_until(
            lambda: reached([runner], kafka_names.topic, ends) or worker.done, 30, "all events processed"
        )
    finally:
        worker.finish()
    assert worker.error is None, worker.error
    metrics = runner.metrics()
    assert metrics.dead_letters_sent == poison == 40
    assert sum(metrics.invalid_events.values()) == poison
    assert committed_offsets(kafka_bootstrap, kafka_names.group, kafka_names.topic, 2) == ends

    dead = [m for p in range(2) for m in read_partition(kafka_bootstrap, kafka_names.dead_letter_topic, p)]
    assert len(dead) == poison
    sources = {}
    for message in dead:
        headers = headers_of(message)
        assert headers["nlpmon-source-topic"] == kafka_names.topic
        assert headers["nlpmon-detail"]
        sources[(int(headers["nlpmon-source-partition"]), int(headers["nlpmon-source-offset"]))] = (
            headers["nlpmon-reason"],
            message.value(),
        )
    originals = {}
    for p in range(2):
        for message in read_partition(kafka_bootstrap, kafka_names.topic, p):
            originals[(p, message.offset())] = message.value()
    expected_reason = dict(POISON)
    for source, (reason, value) in sources.items():
        assert value == originals[source], "the dead letter must carry the original bytes"
        assert reason == expected_reason[value]

    # Order: a commit covering a poison offset comes after that dead letter's acknowledgement.
    acked: set[tuple[int, int]] = set()
    for kind, payload in timeline:
        if kind == "ack" and payload[0] == kafka_names.dead_letter_topic:
            headers = {k: v.decode() for k, v in payload[1].items()}
            acked.add((int(headers["nlpmon-source-partition"]), int(headers["nlpmon-source-offset"])))
        elif kind == "commit":
            for _, partition, offset in payload:
                covered = {s for s in sources if s[0] == partition and s[1] < offset}
                assert covered <= acked, f"commit {partition}@{offset} before dead letters {covered - acked}"


def test_failed_dead_letter_delivery_blocks_the_commit(kafka_bootstrap: str, kafka_names: Names) -> None:
    """Scenario 6: when a dead letter is not acknowledged, the runner stops and commits nothing past it."""
    make_topic(kafka_bootstrap, kafka_names.topic, 1)
    messages = [(0, b"m0", event("m0", i)) for i in range(300)]
    messages[150] = (0, b"m0", b"{poison")
    ends = produce(kafka_bootstrap, kafka_names.topic, messages)
    timeline: list[tuple[str, Any]] = []
    runner = ConsumerRunner(
        settings_for_test(kafka_bootstrap, kafka_names, batch_size=50, checkpoint_interval_events=100),
        counting_factory,
        **recording_factories(timeline, fail_topic=kafka_names.dead_letter_topic),
    )
    worker = RunnerThread(runner).start()
    wait_until(lambda: worker.done, 30, "the runner to stop on the failed dead letter")
    assert isinstance(worker.error, DeliveryError), worker.error
    committed = committed_offsets(kafka_bootstrap, kafka_names.group, kafka_names.topic, 1)[0]
    assert committed <= 150, f"offset {committed} committed past the unacknowledged dead letter at 150"
    assert ends == {0: 300}
    assert any(kind == "nack" for kind, _ in timeline)
    assert all(offset <= 150 for kind, offsets in timeline if kind == "commit" for _, _, offset in offsets)


class SteppedClock:
    """The runner's clock: ``time.monotonic()`` plus an offset that a test advances. The jump is applied in
    the runner's ``on_poll`` (its own thread, between two polls), so no deadline the runner waits on inside
    a poll (acks, queue space) ever sees it; only the pause of the circuit breaker does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = self._pending = 0.0
        self.polls = 0

    def __call__(self) -> float:
        return time.monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._pending += seconds

    def on_poll(self) -> None:
        with self._lock:
            self._offset += self._pending
            self._pending = 0.0
            self.polls += 1


def test_circuit_breaker_pauses_on_all_invalid_input(
    kafka_bootstrap: str, kafka_names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    """Scenario 7: with only invalid input the breaker opens, the partitions pause (nothing more is read
    while open), the metrics and one log line say so; when the pause is over a trial batch re-opens it.
    The pause is an hour of the runner's (injected) clock: only advancing that clock ends it."""
    make_topic(kafka_bootstrap, kafka_names.topic, 1)
    produce(kafka_bootstrap, kafka_names.topic, [(0, None, b"garbage %d" % i) for i in range(3000)])
    pause_s = 3600.0
    settings = settings_for_test(
        kafka_bootstrap,
        kafka_names,
        batch_size=50,
        circuit_window_events=200,
        circuit_min_events=100,
        circuit_max_invalid_ratio=0.5,
        circuit_max_consecutive_invalid=150,
        circuit_pause_s=pause_s,
    )
    logger = logging.getLogger("runner.breaker")
    clock = SteppedClock()
    runner = ConsumerRunner(settings, counting_factory, logger=logger, clock=clock, on_poll=clock.on_poll)
    worker = RunnerThread(runner).start()
    try:
        with caplog.at_level(logging.ERROR, logger="runner.breaker"):
            wait_until(lambda: runner.metrics().paused, 20, "the breaker to open and pause")
            opened = runner.metrics()
            assert opened.circuit_state == "open" and opened.circuit_trips == 1
            assert "invalid" in opened.circuit_reason
            processed_at_open = sum(opened.events_processed.values())
            assert processed_at_open < 3000
            # While open nothing more is consumed: the loop keeps polling (5 polls), reading nothing.
            polls_at_open = clock.polls
            wait_until(lambda: clock.polls >= polls_at_open + 5, 20, "five polls while paused")
            still = runner.metrics()
            assert sum(still.events_processed.values()) == processed_at_open
            assert still.paused and still.circuit_state == "open" and still.circuit_trips == 1
            assert runner.circuit_breaker.seconds_until_retry() > pause_s - 600
            clock.advance(pause_s)
            wait_until(
                lambda: runner.metrics().circuit_trips >= 2, 20, "the trial batch to re-open the breaker"
            )
            assert sum(runner.metrics().events_processed.values()) > processed_at_open
        lines = [r.getMessage() for r in caplog.records if "circuit breaker OPEN" in r.getMessage()]
        assert len(lines) >= 2 and kafka_names.dead_letter_topic in lines[0]
    finally:
        worker.finish()
    assert worker.error is None, worker.error


def test_oversized_poison_event_is_dead_lettered_truncated(kafka_bootstrap: str, kafka_names: Names) -> None:
    """An invalid event too large to copy whole into a dead letter is cut (and says so); the partition
    moves past it instead of stopping at it forever."""
    make_topic(kafka_bootstrap, kafka_names.topic, 1)
    big = b"{" + b"x" * 1_010_000  # not JSON; accepted by the broker (1,048,588) but not by a default producer
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 2_000_000})
    producer.produce(kafka_names.topic, big, key=b"m", partition=0)
    producer.produce(kafka_names.topic, event("m", 1), key=b"m", partition=0)
    assert producer.flush(30) == 0
    ends = {0: 2}
    runner = ConsumerRunner(settings_for_test(kafka_bootstrap, kafka_names), counting_factory)
    worker = RunnerThread(runner).start()
    try:
        wait_until(lambda: reached([runner], kafka_names.topic, ends) or worker.done, 30, "both events processed")
    finally:
        worker.finish()
    assert worker.error is None, worker.error
    assert committed_offsets(kafka_bootstrap, kafka_names.group, kafka_names.topic, 1) == ends
    (dead,) = read_partition(kafka_bootstrap, kafka_names.dead_letter_topic, 0)
    assert headers_of(dead)["nlpmon-truncated-from-bytes"] == str(len(big))
    assert dead.value() == big[:900_000]
