"""A checkpoint in flight on a real broker: the loop keeps polling and applying while the snapshot's
acknowledgements are held back, the commit comes only after every one of them, and a stop (or crash) while
one is in flight leaves the previous snapshot and committed offsets, from which a restart ends exactly where
an uninterrupted run does."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, Producer
from counting_processor import CountingProcessor
from kafka_test_helpers import (
    Names,
    RunnerThread,
    committed_offsets,
    final_states,
    make_topic,
    model_events,
    produce,
    reached,
    recording_factories,
    reference_states,
    settings_for_test,
    wait_until,
)

from nlpmon.kafka.runner import ConsumerRunner

pytestmark = [pytest.mark.broker, pytest.mark.slow]


class HoldingProducer(Producer):
    """A real producer whose state-topic acknowledgements are held back while ``hold`` is set (released by
    the first poll or flush after ``hold`` is cleared). With ``divert_to`` the held messages go to that
    topic instead, so the state topic never receives them (a crash before they reached the broker)."""

    timeline: list[tuple[str, Any]]
    state_topic: str
    hold: bool = False
    divert_to: str | None = None

    def setup(self, timeline: list[tuple[str, Any]], state_topic: str) -> None:
        self.timeline, self.state_topic, self.held = timeline, state_topic, []

    def produce(self, *args: Any, **kwargs: Any) -> Any:
        topic = kwargs["topic"]
        callback = kwargs.get("on_delivery")
        held = topic == self.state_topic and self.hold
        if held and self.divert_to is not None:
            kwargs["topic"], kwargs["partition"] = self.divert_to, 0
        tombstone = kwargs.get("value") is None
        self.timeline.append(("produce", (topic, held, tombstone)))

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if held:
                self.held.append((topic, tombstone, err, msg, callback))
                return
            self._deliver(topic, tombstone, err, msg, callback)

        kwargs["on_delivery"] = on_delivery
        return super().produce(*args, **kwargs)

    def poll(self, *args: Any, **kwargs: Any) -> int:
        served: int = super().poll(*args, **kwargs)
        self._release()
        return served

    def flush(self, *args: Any, **kwargs: Any) -> int:
        left: int = super().flush(*args, **kwargs)
        self._release()
        return left

    def _release(self) -> None:
        while not self.hold and self.held:
            self._deliver(*self.held.pop(0))

    def _deliver(self, topic: str, tombstone: bool, err: KafkaError | None, msg: Message, callback: Any) -> None:
        self.timeline.append(("ack" if err is None else "nack", (topic, tombstone)))
        if callback is not None:
            callback(err, msg)


def start(bootstrap: str, names: Names, timeline: list[tuple[str, Any]]) -> tuple[ConsumerRunner, RunnerThread,
                                                                                 list[HoldingProducer]]:
    producers: list[HoldingProducer] = []

    def producer_factory(config: dict[str, Any]) -> Producer:
        producer = HoldingProducer(config)
        producer.setup(timeline, names.state_topic)
        producers.append(producer)
        return producer

    settings = settings_for_test(bootstrap, names, batch_size=50, checkpoint_interval_events=300,
                                 checkpoint_interval_s=0.5)
    factories = recording_factories(timeline)
    runner = ConsumerRunner(settings, lambda t, p: CountingProcessor(t, p, delay_s=0.03),
                            consumer_factory=factories["consumer_factory"], producer_factory=producer_factory)
    return runner, RunnerThread(runner).start(), producers


def held_produced(timeline: list[tuple[str, Any]]) -> bool:
    return any(kind == "produce" and detail[1] for kind, detail in timeline)


def commits(timeline: list[tuple[str, Any]]) -> list[dict[int, int]]:
    return [{p: o for _, p, o in offsets} for kind, offsets in timeline if kind == "commit"]


def test_the_loop_keeps_polling_while_a_checkpoint_is_in_flight_and_commits_after_every_ack(
        kafka_bootstrap: str, kafka_names: Names) -> None:
    make_topic(kafka_bootstrap, kafka_names.topic, 1)
    ends = produce(kafka_bootstrap, kafka_names.topic, model_events(6000, 1))
    timeline: list[tuple[str, Any]] = []
    runner, worker, producers = start(kafka_bootstrap, kafka_names, timeline)
    try:
        wait_until(lambda: bool(producers and commits(timeline)) or worker.done, 30, "a first complete checkpoint")
        assert worker.error is None, worker.error
        producers[0].hold = True
        wait_until(lambda: held_produced(timeline) or worker.done, 30,
                   "a snapshot written while its acks are held")
        before = runner.metrics()
        committed_before = len(commits(timeline))
        # within 3 s (the checkpoint would stall after min(delivery_timeout_s, max_batch_s) = 5 s)
        wait_until(lambda: runner.metrics().batches >= before.batches + 10 or worker.done, 3.0,
                   "10 more batches applied while the checkpoint is in flight")
        during = runner.metrics()
        assert worker.error is None, worker.error
        assert sum(during.events_processed.values()) > sum(before.events_processed.values())
        assert len(commits(timeline)) == committed_before and during.checkpoints == before.checkpoints
        assert during.checkpoint_stalls == 0 and not during.paused
        producers[0].hold = False
        wait_until(lambda: reached([runner], kafka_names.topic, ends) or worker.done, 60, "all events processed")
        wait_until(lambda: commits(timeline) and commits(timeline)[-1] == ends, 15, "the last commit")
    finally:
        worker.finish()
    assert worker.error is None, worker.error
    # every commit comes after the acknowledgement of every snapshot chunk produced before it (tombstones of
    # old snapshots, produced once a newer one is acknowledged, are not waited for)
    unacked = 0
    for kind, detail in timeline:
        if kind == "produce" and detail[0] == kafka_names.state_topic and not detail[2]:
            unacked += 1
        elif kind == "ack" and detail[0] == kafka_names.state_topic and not detail[1]:
            unacked -= 1
        elif kind == "commit":
            assert unacked == 0, "a commit before every snapshot chunk was acknowledged"
    assert committed_offsets(kafka_bootstrap, kafka_names.group, kafka_names.topic, 1) == ends
    finals = final_states(kafka_bootstrap, kafka_names, 1)
    reference = reference_states(kafka_bootstrap, kafka_names.topic, 1)
    assert {p: {k: v for k, v in s.items() if k != "next_offset"} for p, s in finals.items()} == reference


def test_a_stop_with_a_checkpoint_in_flight_leaves_the_previous_snapshot_and_commit(
        kafka_bootstrap: str, kafka_names: Names) -> None:
    make_topic(kafka_bootstrap, kafka_names.topic, 1)
    junk = f"{kafka_names.state_topic}-diverted"
    make_topic(kafka_bootstrap, junk, 1)
    ends = produce(kafka_bootstrap, kafka_names.topic, model_events(6000, 1))
    timeline: list[tuple[str, Any]] = []
    runner, worker, producers = start(kafka_bootstrap, kafka_names, timeline)
    try:
        wait_until(lambda: bool(producers and commits(timeline)) or worker.done, 30, "a first complete checkpoint")
        assert worker.error is None, worker.error
        producer = producers[0]
        producer.divert_to, producer.hold = junk, True
        wait_until(lambda: held_produced(timeline) or worker.done, 30,
                   "a snapshot written (diverted) while its acks are held")
        batches = runner.metrics().batches
        wait_until(lambda: runner.metrics().batches >= batches + 5 or worker.done, 3.0, "5 more batches")
        applied = runner.metrics().next_offsets[(kafka_names.topic, 0)]
    finally:
        worker.finish()  # the final checkpoint waits for the in-flight one, which never completes
    assert worker.error is None, worker.error
    last = commits(timeline)[-1]
    assert committed_offsets(kafka_bootstrap, kafka_names.group, kafka_names.topic, 1) == last
    snapshot = final_states(kafka_bootstrap, kafka_names, 1)[0]
    assert snapshot["next_offset"] == last[0] < ends[0]
    assert applied > last[0]  # applied past the snapshot in flight, neither committed nor snapshotted

    # a restart restores the previous snapshot, reads on from its offset and ends as an uninterrupted run
    timeline.clear()
    restarted = ConsumerRunner(settings_for_test(kafka_bootstrap, kafka_names),
                               lambda t, p: CountingProcessor(t, p), **recording_factories(timeline))
    worker = RunnerThread(restarted).start()
    try:
        wait_until(lambda: reached([restarted], kafka_names.topic, ends) or worker.done, 60, "the rest processed")
    finally:
        worker.finish()
    assert worker.error is None, worker.error
    assert sum(restarted.metrics().events_processed.values()) == ends[0] - last[0]
    finals = final_states(kafka_bootstrap, kafka_names, 1)
    reference = reference_states(kafka_bootstrap, kafka_names.topic, 1)
    assert finals[0]["duplicates"] == 0
    assert {p: {k: v for k, v in s.items() if k != "next_offset"} for p, s in finals.items()} == reference
