"""Issue 10 items 2 and 3: a broker outage is survived, and nlpmon's own work never holds the poll back.

- A slow batch is cut at ``max_batch_s`` (a clock injected into the runner and advanced by the processor:
  no real sleeps) and the rest fetched again: nothing skipped, nothing applied twice.
- With the default ``poll_gap_target_s`` the loop polls within it and takes per poll what fits in it.
- A stop in the middle of a long batch ends the loop at the next slice: the final checkpoint covers
  exactly what was applied, and nothing past it is committed.
- The broker is SIGKILLed while a checkpoint is in flight (memory storage: it comes back empty) and
  restarted on the same port: the runner does not die, pauses, logs the outage a bounded number of times,
  delivers the snapshot once the broker is back, notices that the broker lost its offsets, and ends with
  the counts of an uninterrupted run over the same events.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from confluent_kafka import Consumer
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
    reference_states,
    settings_for_test,
    wait_until,
)

from nlpmon.kafka.broker import EmbeddedBroker, free_loopback_port
from nlpmon.kafka.processor import Record, Rejected
from nlpmon.kafka.runner import ConsumerRunner

pytestmark = [pytest.mark.broker, pytest.mark.slow]


class FakeClock:
    """The runner's clock: only the processor moves it (a record costs ``cost_s``)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


class CostlyProcessor(CountingProcessor):
    """CountingProcessor whose records cost ``cost_s`` each on the fake clock; calls ``after`` after each call."""

    def __init__(self, topic: str, partition: int, clock: FakeClock, cost_s: float,
                 after: Any = None) -> None:
        super().__init__(topic, partition)
        self.clock, self.cost_s, self.after = clock, cost_s, after

    def process(self, records: Sequence[Record]) -> list[Rejected]:
        rejected = super().process(records)
        self.clock.advance(self.cost_s * len(records))
        if self.after is not None:
            self.after(self)
        return rejected


def polls_recorder(clock: FakeClock, times: list[float]) -> Any:
    """A consumer factory whose consumer notes the fake time of every consume() call."""

    class TimedConsumer(Consumer):
        def consume(self, *args: Any, **kwargs: Any) -> Any:
            times.append(clock())
            return super().consume(*args, **kwargs)

    return TimedConsumer


def test_a_slow_batch_is_cut_at_max_batch_s_and_the_rest_fetched_again(kafka_bootstrap: str,
                                                                        kafka_names: Names) -> None:
    """200-record batches at 0.5 s a record would hold the poll back 100 s; with max_batch_s=5 no gap
    between two polls exceeds 5 s plus one slice, and the final state is that of an uninterrupted run."""
    make_topic(kafka_bootstrap, kafka_names.topic, 2)
    ends = produce(kafka_bootstrap, kafka_names.topic, model_events(400, 2))
    clock, polls = FakeClock(), []
    cost_s, max_batch_s = 0.5, 5.0
    settings = settings_for_test(kafka_bootstrap, kafka_names, batch_size=200, max_batch_s=max_batch_s,
                                 poll_gap_target_s=max_batch_s, checkpoint_interval_s=30.0,
                                 checkpoint_interval_events=100_000)
    runner = ConsumerRunner(settings, lambda t, p: CostlyProcessor(t, p, clock, cost_s), clock=clock,
                            consumer_factory=polls_recorder(clock, polls))
    worker = RunnerThread(runner).start()
    try:
        wait_until(lambda: reached([runner], kafka_names.topic, ends) or worker.done, 120, "all events applied")
    finally:
        worker.finish(30)
    assert worker.error is None, worker.error
    metrics = runner.metrics()
    assert metrics.batches_cut > 0 and metrics.lost_assignments == 0
    slice_s = 2 * cost_s  # slices are sized to end by the deadline: at most a record's cost past it, rounded up
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert max(gaps) <= max_batch_s + slice_s, max(gaps)
    # the runner's own measure (a poll's return to the next call) sees the cut batches' gaps, never more
    assert max_batch_s <= metrics.longest_poll_gap_s <= max(gaps), (metrics.longest_poll_gap_s, max(gaps))
    states = final_states(kafka_bootstrap, kafka_names, 2)
    reference = reference_states(kafka_bootstrap, kafka_names.topic, 2)
    for p in range(2):
        assert states[p]["counts"] == reference[p]["counts"] and states[p]["digest"] == reference[p]["digest"]
        assert states[p]["duplicates"] == 0 and states[p]["next_offset"] == ends[p]


def test_the_loop_keeps_to_poll_gap_target_s_and_takes_what_fits_per_poll(kafka_bootstrap: str,
                                                                          kafka_names: Names) -> None:
    """Records at 20 ms each (fake clock) in polls of up to 2,000: the default poll_gap_target_s=0.5 (with
    max_batch_s=5) keeps every gap between two polls within 0.5 s and one record; the batch leaves half of it
    when a checkpoint writes snapshots after it (a checkpoint every simulated second here); after the first
    poll the runner takes what fits (at most 25 records) rather than 2,000 it would cut and fetch again; and the
    final state is that of an uninterrupted run."""
    make_topic(kafka_bootstrap, kafka_names.topic, 2)
    ends = produce(kafka_bootstrap, kafka_names.topic, model_events(2000, 2))
    clock, polls, sizes = FakeClock(), [], []
    cost_s = 0.02
    settings = settings_for_test(kafka_bootstrap, kafka_names, batch_size=2000, max_batch_s=5.0,
                                 checkpoint_interval_s=1.0, checkpoint_interval_events=100_000)
    assert settings.poll_gap_target_s == 0.5  # the default under test

    class SizedConsumer(polls_recorder(clock, polls)):  # type: ignore[misc]
        def consume(self, *args: Any, **kwargs: Any) -> Any:
            messages = super().consume(*args, **kwargs)
            sizes.append((kwargs["num_messages"], len(messages)))
            return messages

    runner = ConsumerRunner(settings, lambda t, p: CostlyProcessor(t, p, clock, cost_s), clock=clock,
                            consumer_factory=SizedConsumer)
    worker = RunnerThread(runner).start()
    try:
        wait_until(lambda: reached([runner], kafka_names.topic, ends) or worker.done, 120, "all events applied")
    finally:
        worker.finish(30)
    assert worker.error is None, worker.error
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert max(gaps) <= 0.5 + cost_s + 1e-9, max(gaps)
    first = next(i for i, (_, got) in enumerate(sizes) if got)  # polls before it wait for the assignment
    asked = [wanted for wanted, _ in sizes[first + 1:]]
    assert sizes[first][0] == 2000 and max(asked) <= 25, sizes[:40]
    assert min(asked) <= 13, sizes[:40]  # a batch before a checkpoint's write: half of the budget
    metrics = runner.metrics()
    assert metrics.lost_assignments == 0 and metrics.checkpoints >= 5, metrics
    states = final_states(kafka_bootstrap, kafka_names, 2)
    reference = reference_states(kafka_bootstrap, kafka_names.topic, 2)
    for p in range(2):
        assert states[p]["counts"] == reference[p]["counts"] and states[p]["digest"] == reference[p]["digest"]
        assert states[p]["duplicates"] == 0 and states[p]["next_offset"] == ends[p]


def test_a_stop_in_a_long_batch_checkpoints_what_is_applied_and_commits_nothing_past_it(
        kafka_bootstrap: str, kafka_names: Names) -> None:
    """The stop arrives after 30 of 400 records of one batch: the runner stops at the next slice (about
    0.6 s of work, 13 records), not after the batch; the final snapshot and the commit cover exactly the
    records applied, and restoring it gives the state of an uninterrupted run over those records."""
    make_topic(kafka_bootstrap, kafka_names.topic, 1)
    ends = produce(kafka_bootstrap, kafka_names.topic, model_events(400, 1))
    clock = FakeClock()
    stop = threading.Event()
    processors: list[CostlyProcessor] = []

    def stop_after_30(processor: CostlyProcessor) -> None:
        if processor.records >= 30:
            stop.set()

    def factory(topic: str, partition: int) -> CostlyProcessor:
        processor = CostlyProcessor(topic, partition, clock, 0.05, after=stop_after_30)
        processors.append(processor)
        return processor

    settings = settings_for_test(kafka_bootstrap, kafka_names, batch_size=400, max_batch_s=5.0,
                                 poll_gap_target_s=1.25,  # slices of 0.625 s: 13 records
                                 checkpoint_interval_s=600.0, checkpoint_interval_events=100_000)
    runner = ConsumerRunner(settings, factory, clock=clock)
    worker = RunnerThread(runner, stop=stop).start()
    assert worker.thread is not None
    worker.thread.join(60)
    assert worker.done and worker.error is None, worker.error
    applied = processors[-1].records
    assert 30 <= applied <= 30 + 13 < ends[0], applied
    states = final_states(kafka_bootstrap, kafka_names, 1)
    assert states[0]["next_offset"] == applied == states[0]["records"]
    assert committed_offsets(kafka_bootstrap, kafka_names.group, kafka_names.topic, 1) == {0: applied}
    prefix = CountingProcessor(kafka_names.topic, 0)
    prefix.process([Record(i, value, key, None) for i, (_, key, value) in enumerate(model_events(400, 1))][:applied])
    assert states[0]["digest"] == prefix.state()["digest"]


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, _Capture]]:
    capture = _Capture()
    runner_log = logging.getLogger("test-outage-runner")
    runner_log.setLevel(logging.DEBUG)
    runner_log.addHandler(capture)
    try:
        yield runner_log, capture
    finally:
        runner_log.removeHandler(capture)


def test_a_broker_outage_mid_checkpoint_is_survived_and_an_empty_restart_reported(
        kafka_names: Names, captured: tuple[logging.Logger, _Capture]) -> None:
    runner_log, capture = captured
    port = free_loopback_port()
    broker = EmbeddedBroker(port=port)
    bootstrap = broker.start()
    restarted: EmbeddedBroker | None = None
    killed = threading.Event()
    processors: list[CountingProcessor] = []
    armed_at: list[int] = []

    class KillingProcessor(CountingProcessor):
        """Kills the broker (SIGKILL) in the first snapshot taken once every event so far is applied."""

        def snapshot(self) -> bytes:
            data = super().snapshot()
            if armed_at and not killed.is_set() and sum(p.records for p in processors) >= armed_at[0]:
                assert broker.pid is not None
                os.kill(broker.pid, signal.SIGKILL)
                killed.set()
            return data

    def factory(topic: str, partition: int) -> CountingProcessor:
        processor = KillingProcessor(topic, partition)
        processors.append(processor)
        return processor

    try:
        make_topic(bootstrap, kafka_names.topic, 2)
        events = model_events(600, 2)
        ends = produce(bootstrap, kafka_names.topic, events[:300])
        settings = settings_for_test(bootstrap, kafka_names, delivery_timeout_s=1.0, checkpoint_interval_s=0.5,
                                     checkpoint_interval_events=100_000, restore_timeout_s=20.0)
        runner = ConsumerRunner(settings, factory, logger=runner_log)
        worker = RunnerThread(runner).start()
        # a first checkpoint commits (so that this process knows the offsets the broker will lose)
        wait_until(lambda: all(runner.metrics().committed_offsets.get((kafka_names.topic, p)) == ends[p]
                               for p in ends) or worker.done, 60, "the first commit")
        armed_at.append(450)
        ends = produce(bootstrap, kafka_names.topic, events[300:450])
        wait_until(lambda: killed.is_set() or worker.done, 60, "the broker killed in a checkpoint")
        broker.stop()
        wait_until(lambda: runner.metrics().checkpoint_waiting_since is not None or worker.done, 30,
                   "the checkpoint to stall")
        errors_at_stall = runner.metrics().client_errors
        # well past delivery_timeout_s and the session timeout, with the broker still away
        wait_until(lambda: worker.done or (runner.metrics().client_errors >= errors_at_stall + 10
                   and runner.metrics().lost_assignments >= 1), 60, "the outage to go on")
        assert not worker.done, f"the runner stopped during the outage: {worker.error!r}"
        assert runner.metrics().assigned == ()
        outage_lines = [r for r in capture.records if r.levelno >= logging.WARNING]
        restarted = EmbeddedBroker(port=port)
        restarted.start()
        # the producers come back at once and auto-create the topic (Tansu: 4 partitions, not 2)
        more = produce(bootstrap, kafka_names.topic, events[450:])
        wait_until(lambda: worker.done or runner.metrics().checkpoint_waiting_since is None, 60,
                   "the snapshot to be delivered to the restarted broker")
        wait_until(lambda: worker.done or reached([runner], kafka_names.topic, more), 60, "the rest applied")
        worker.finish(30)
        assert worker.error is None, worker.error
        metrics = runner.metrics()
        states = final_states(bootstrap, kafka_names, 2)
    finally:
        broker.stop()
        if restarted is not None:
            restarted.stop()
    # the counts and event ids of an uninterrupted run over the same 600 events: none lost, none twice
    for p in range(2):
        expected_ids: dict[str, list[int]] = {}
        for partition, _, value in events:
            if partition == p:
                event = json.loads(value)
                expected_ids.setdefault(event["model"], []).append(event["event_id"])
        assert states[p]["counts"] == {m: len(ids) for m, ids in sorted(expected_ids.items())}
        assert states[p]["event_ids"] == {m: sorted(ids) for m, ids in sorted(expected_ids.items())}
        assert states[p]["duplicates"] == 0
    assert metrics.checkpoint_stalls >= 1 and metrics.state_losses >= 1 and metrics.state_loss_notes
    warnings = [r.getMessage() for r in capture.records if r.levelno >= logging.WARNING]
    assert any("Kafka lost state or offsets" in w for w in warnings), warnings
    # rate-limited: a handful of lines for the whole outage, against every client error counted
    client_lines = [w for w in outage_lines if "kafka client" in w.getMessage()]
    print(f"outage: {metrics.client_errors} client errors, {len(outage_lines)} WARNING+ lines until the restart "
          f"({len(client_lines)} about the client), {len(capture.records)} log records in all")
    assert len(client_lines) <= 3 < metrics.client_errors, [r.getMessage() for r in outage_lines]


class SleepyProcessor(CountingProcessor):
    """Really slow: sleeps ``per_record_s`` per record (a batch made slow on purpose, not a race)."""

    def __init__(self, topic: str, partition: int, per_record_s: float) -> None:
        super().__init__(topic, partition)
        self.per_record_s = per_record_s

    def process(self, records: Sequence[Record]) -> list[Rejected]:
        time.sleep(self.per_record_s * len(records))
        return super().process(records)


def test_a_batch_longer_than_max_poll_interval_keeps_the_member_in_its_group(kafka_bootstrap: str,
                                                                            kafka_names: Names) -> None:
    """One consumed batch of 1,200 records at 10 ms each is 12 s of work, over max.poll.interval.ms (10 s,
    librdkafka's clock): applied whole, the member would leave the group (MAXPOLL) and lose its partition.
    Cut at max_batch_s=2 it polls in time: no lost assignment, and the state of an uninterrupted run."""
    make_topic(kafka_bootstrap, kafka_names.topic, 1)
    ends = produce(kafka_bootstrap, kafka_names.topic, model_events(1200, 1))
    settings = settings_for_test(kafka_bootstrap, kafka_names, batch_size=1200, max_batch_s=2.0,
                                 max_poll_interval_ms=10_000, checkpoint_interval_s=600.0,
                                 checkpoint_interval_events=100_000)
    runner = ConsumerRunner(settings, lambda t, p: SleepyProcessor(t, p, 0.01))
    worker = RunnerThread(runner).start()
    try:
        wait_until(lambda: reached([runner], kafka_names.topic, ends) or worker.done, 120, "all events applied")
    finally:
        worker.finish(30)
    assert worker.error is None, worker.error
    metrics = runner.metrics()
    assert metrics.lost_assignments == 0 and metrics.batches_cut >= 1, metrics
    states = final_states(kafka_bootstrap, kafka_names, 1)
    reference = reference_states(kafka_bootstrap, kafka_names.topic, 1)
    assert states[0]["digest"] == reference[0]["digest"] and states[0]["duplicates"] == 0


def test_a_stop_during_an_outage_ends_the_runner_without_committing(
        kafka_names: Names, captured: tuple[logging.Logger, _Capture]) -> None:
    """SIGTERM while a checkpoint waits for a dead broker: the runner stops (it does not wait for the broker
    to come back), without an error, and says that the final checkpoint was not made."""
    runner_log, capture = captured
    broker = EmbeddedBroker(port=free_loopback_port())
    bootstrap = broker.start()
    killed = threading.Event()

    class KillingProcessor(CountingProcessor):
        def snapshot(self) -> bytes:
            if self.records >= 100 and not killed.is_set():
                assert broker.pid is not None
                os.kill(broker.pid, signal.SIGKILL)
                killed.set()
            return super().snapshot()

    try:
        make_topic(bootstrap, kafka_names.topic, 1)
        produce(bootstrap, kafka_names.topic, model_events(100, 1))
        settings = settings_for_test(bootstrap, kafka_names, delivery_timeout_s=1.0, shutdown_grace_s=2.0,
                                     checkpoint_interval_s=0.5, checkpoint_interval_events=100_000)
        runner = ConsumerRunner(settings, KillingProcessor, logger=runner_log)
        worker = RunnerThread(runner).start()
        wait_until(lambda: worker.done or runner.metrics().checkpoint_waiting_since is not None, 60,
                   "the checkpoint to stall on the dead broker")
        assert not worker.done, worker.error
        worker.finish(60)
        assert worker.error is None, worker.error
        messages = [r.getMessage() for r in capture.records]
        assert any("stopping without the final checkpoint" in m for m in messages), messages
    finally:
        broker.stop()
