"""The checkpoint policy with fakes (no Kafka): pending and stalled checkpoints, what a commit covers,
skipped checkpoints and commit failures."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import cast

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from nlpmon.kafka.checkpoints import DEAD_LETTER_WAIT_S, Checkpointer, CheckpointSchedule, CommitError
from nlpmon.kafka.dead_letter import DeadLetterWriter
from nlpmon.kafka.partition_progress import PartitionProgress
from nlpmon.kafka.processor import Record, Rejected
from nlpmon.kafka.publish import DeliveryError
from nlpmon.kafka.runner_metrics import RunnerMetrics, TopicPartitionKey
from nlpmon.kafka.settings import KafkaSettings
from nlpmon.kafka.snapshot_format import PartitionSnapshot
from nlpmon.kafka.state_loss import StateLossDetector
from nlpmon.kafka.state_store import StateStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeProcessor:
    def process(self, records: Sequence[Record]) -> list[Rejected]:
        return []

    def snapshot(self) -> bytes:
        return b"state"

    def restore(self, data: bytes) -> None:
        pass


class FakeConsumer:
    """Commits succeed (returning the offsets) unless ``fail_commits``; ``member`` is the member id."""

    def __init__(self) -> None:
        self.member = "m-1"
        self.fail_commits = False
        self.commits: list[list[tuple[str, int, int]]] = []

    def memberid(self) -> str:
        return self.member

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        assert not asynchronous
        if self.fail_commits:
            raise KafkaException(KafkaError(KafkaError.REQUEST_TIMED_OUT, "injected"))
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])
        return [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in offsets]


class FakeStore:
    """Writes are acknowledged only once ``acked`` is set."""

    def __init__(self) -> None:
        self.acked = True
        self.written: list[PartitionSnapshot] = []
        self.written_total = self.chunks_written_total = self.tombstone_failures_total = 0
        self.parts_written_total = self.bytes_written_total = 0

    def write(self, snapshot: PartitionSnapshot) -> None:
        self.written.append(snapshot)
        self.written_total += 1
        self.chunks_written_total += 2

    def acked_within(self, timeout_s: float) -> bool:
        return self.acked


class FakeDeadLetters:
    def __init__(self) -> None:
        self.acked = True

    def acked_within(self, timeout_s: float) -> bool:
        return self.acked


class Harness:
    def __init__(self, labels: bool = False, max_commit_failures: int = 3) -> None:
        self.settings = KafkaSettings(topic="in", state_topic="st", dead_letter_topic="dlq",
                                      ground_truth_topic="gt" if labels else None,
                                      max_consecutive_commit_failures=max_commit_failures)
        self.clock = Clock()
        self.consumer, self.store, self.dead_letters = FakeConsumer(), FakeStore(), FakeDeadLetters()
        self.partitions: dict[TopicPartitionKey, PartitionProgress] = {}
        self.counters = RunnerMetrics()
        self.losses = StateLossDetector("st")
        self.stall_changes: list[bool] = []
        self.schedule = CheckpointSchedule(interval_events=1000, interval_s=60.0, last_at=self.clock())
        self.checkpointer = Checkpointer(
            self.settings, consumer=cast(Consumer, self.consumer), store=cast(StateStore, self.store),
            dead_letters=cast(DeadLetterWriter, self.dead_letters), schedule=self.schedule,
            partitions=self.partitions, counters=self.counters, lock=threading.Lock(), losses=self.losses,
            on_stall_change=lambda: self.stall_changes.append(self.checkpointer.stalled), clock=self.clock,
            logger=logging.getLogger("test-checkpointer"))

    def add(self, partition: int, next_offset: int, label_next: int = -1) -> PartitionProgress:
        state = PartitionProgress("in", partition, FakeProcessor(), next_offset, -1, -1, label_next=label_next)
        self.partitions[state.key] = state
        return state

    def states(self) -> list[PartitionProgress]:
        return list(self.partitions.values())


def slow_snapshots(h: Harness, states: list[PartitionProgress]) -> None:
    """Each of ``states``' snapshots advances ``h``'s clock by the write budget (one per iteration in flight)."""

    class SlowProcessor(FakeProcessor):
        def snapshot(self) -> bytes:
            h.clock.now += h.checkpointer.write_budget_s
            return b"state"

    for state in states:
        state.processor = SlowProcessor()


def test_a_checkpoint_snapshots_what_moved_then_commits_what_the_snapshot_covers() -> None:
    h = Harness(labels=True)
    a, b = h.add(0, 10, label_next=4), h.add(1, -1)  # partition 1 has not moved
    h.clock.now = 130.0
    assert h.checkpointer.checkpoint(h.states(), 5.0)
    assert [(s.partition, s.next_offset, s.label_next_offset, s.payload) for s in h.store.written] == [
        (0, 10, 4, b"state")]
    assert h.consumer.commits == [[("in", 0, 10), ("gt", 0, 4)]]
    assert (a.snapshot_offset, a.label_snapshot, a.committed_offset, a.label_committed) == (10, 4, 10, 4)
    assert not a.moved() and not a.uncommitted() and b.snapshot_offset == -1
    c = h.counters
    assert (c.checkpoints, c.snapshots_written, c.snapshots_produced, c.snapshot_chunks_produced) == (1, 1, 1, 2)
    assert h.schedule.last_at == 130.0 and not h.checkpointer.pending and h.stall_changes == []
    # nothing moved since: a checkpoint writes and commits nothing
    assert h.checkpointer.checkpoint(h.states(), 5.0)
    assert len(h.store.written) == 1 and len(h.consumer.commits) == 1


def test_a_checkpoint_waits_pending_and_stalled_until_the_broker_acknowledges() -> None:
    h = Harness()
    state = h.add(0, 10)
    h.dead_letters.acked = h.store.acked = False
    assert not h.checkpointer.checkpoint(h.states(), 5.0)
    # dead letters first: no snapshot written yet, consumption paused, one stall counted
    assert h.checkpointer.pending and h.checkpointer.stalled and h.stall_changes == [True]
    assert h.store.written == [] and h.consumer.commits == []
    assert h.counters.checkpoint_stalls == 1 and h.counters.checkpoint_waiting_since == 100.0
    h.clock.now = 200.0  # long overdue: still the pending checkpoint that moves, no new one
    h.checkpointer.after_poll(h.states(), 5.0)
    assert h.store.written == [] and h.stall_changes == [True] and h.counters.checkpoint_stalls == 1
    # the dead letters are acknowledged: the snapshot is written (once), the commit waits for its ack
    h.dead_letters.acked = True
    h.checkpointer.after_poll(h.states(), 5.0)
    state.next_offset = 15  # applied after the snapshot was written: not in this checkpoint
    h.checkpointer.after_poll(h.states(), 5.0)
    assert [s.next_offset for s in h.store.written] == [10] and h.consumer.commits == []
    assert h.checkpointer.stalled and h.counters.checkpoints == 0
    # the snapshot is acknowledged: commit what it covers (10, not 15), resume consumption
    h.store.acked = True
    h.clock.now = 242.0
    h.checkpointer.after_poll(h.states(), 5.0)
    assert h.consumer.commits == [[("in", 0, 10)]] and (state.snapshot_offset, state.committed_offset) == (10, 10)
    assert not h.checkpointer.pending and not h.checkpointer.stalled and h.stall_changes == [True, False]
    assert h.counters.checkpoints == 1 and h.counters.checkpoint_waiting_since is None
    assert state.moved()  # 10..14 are for the next checkpoint


def test_an_earlier_pending_checkpoint_must_complete_before_a_new_one() -> None:
    h = Harness()
    h.add(0, 10)
    h.store.acked = False
    assert not h.checkpointer.checkpoint(h.states(), 5.0)
    h.add(1, 3)
    assert not h.checkpointer.checkpoint(h.states(), 5.0)  # still waiting: partition 1 not written
    assert [s.partition for s in h.store.written] == [0]
    h.store.acked = True
    assert h.checkpointer.checkpoint(h.states(), 5.0)  # completes the old one, then runs the new one
    assert [s.partition for s in h.store.written] == [0, 1]
    assert h.consumer.commits == [[("in", 0, 10)], [("in", 1, 3)]] and h.counters.checkpoints == 2


def test_a_partition_revoked_while_its_checkpoint_waits_is_neither_written_nor_committed() -> None:
    h = Harness()
    h.add(0, 10)
    kept = h.add(1, 20)
    h.dead_letters.acked = False
    assert not h.checkpointer.checkpoint(h.states(), 5.0)
    del h.partitions[("in", 0)]
    h.dead_letters.acked = True
    h.checkpointer.after_poll(h.states(), 5.0)
    assert [s.partition for s in h.store.written] == [1] and h.consumer.commits == [[("in", 1, 20)]]
    assert kept.committed_offset == 20 and h.counters.snapshots_written == 1


def test_a_member_that_left_its_group_writes_and_commits_nothing() -> None:
    h = Harness()
    h.add(0, 10)
    h.consumer.member = ""
    assert h.checkpointer.checkpoint(h.states(), 5.0)
    assert h.store.written == [] and h.consumer.commits == [] and h.counters.checkpoints_skipped == 1
    # left while the snapshots waited for their ack: they are written, the commit is skipped
    h.consumer.member = "m-2"
    h.store.acked = False
    assert not h.checkpointer.checkpoint(h.states(), 5.0)
    h.consumer.member = ""
    h.store.acked = True
    h.checkpointer.after_poll(h.states(), 5.0)
    assert len(h.store.written) == 1 and h.consumer.commits == [] and h.counters.checkpoints_skipped == 2


def test_commits_go_only_forwards_and_failures_stop_the_runner_after_too_many_in_a_row() -> None:
    h = Harness(max_commit_failures=2)
    state = h.add(0, 10)
    state.committed_offset = 12  # committed further by an earlier owner: a commit never goes back
    assert h.checkpointer.checkpoint(h.states(), 5.0)
    assert len(h.store.written) == 1 and h.consumer.commits == []
    state.next_offset = 20
    h.consumer.fail_commits = True
    assert h.checkpointer.checkpoint(h.states(), 5.0)  # one failure: logged, retried at the next checkpoint
    assert h.counters.commit_failures == 1 and state.committed_offset == 12
    h.consumer.fail_commits = False
    assert h.checkpointer.checkpoint(h.states(), 5.0)  # the retry succeeds and resets the count
    assert h.consumer.commits == [[("in", 0, 20)]] and state.committed_offset == 20
    h.consumer.fail_commits = True
    for offset in (30, 40):
        state.next_offset = offset
        if offset == 30:
            assert h.checkpointer.checkpoint(h.states(), 5.0)
        else:
            with pytest.raises(CommitError, match=r"offset commit failed \(2 in a row\): .*retrying"):
                h.checkpointer.checkpoint(h.states(), 5.0)
    assert h.counters.commit_failures == 3


def test_the_schedule_makes_a_checkpoint_due_by_events_or_by_time() -> None:
    h = Harness()
    h.add(0, 10)
    h.clock.now = 159.0
    h.checkpointer.after_poll(h.states(), 5.0)
    assert h.store.written == []  # neither 1000 events nor 60 s
    h.schedule.count(1000)
    h.checkpointer.after_poll(h.states(), 5.0)
    assert len(h.store.written) == 1 and h.schedule.events_since == 0 and h.schedule.last_at == 159.0
    h.states()[0].next_offset = 11
    h.clock.now = 219.0
    h.checkpointer.after_poll(h.states(), 5.0)
    assert len(h.store.written) == 2


def test_a_due_checkpoint_waits_for_an_iteration_that_left_it_time_and_says_when_it_writes_next() -> None:
    """The runner leaves a batch half of the loop's budget when ``writes_next`` says that the checkpoint writes
    after it; one that became due during a batch that took all of it (``may_start=False``) starts at the next
    iteration. Written and in flight, it writes nothing more: no time is reserved for it."""
    h = Harness()
    h.add(0, 10)
    h.store.acked = False
    assert not h.checkpointer.writes_next()
    h.schedule.count(1000)
    assert h.checkpointer.writes_next()
    h.checkpointer.after_poll(h.states(), 5.0, may_start=False)
    assert h.store.written == [] and not h.checkpointer.pending and h.checkpointer.writes_next()
    h.checkpointer.after_poll(h.states(), 5.0, may_start=True)
    assert [s.next_offset for s in h.store.written] == [10] and h.checkpointer.pending
    assert not h.checkpointer.writes_next()  # its one snapshot is written: it only waits for the ack
    assert h.checkpointer.write_budget_s == h.settings.loop_budget_s / 2 == 0.25


def test_a_scheduled_checkpoint_stays_in_flight_while_the_loop_goes_on_and_commits_after_the_ack() -> None:
    h = Harness()
    state = h.add(0, 10)
    h.store.acked = False
    h.schedule.count(1000)
    h.checkpointer.after_poll(h.states(), 5.0)
    # written without waiting: in flight, consumption not paused, nothing committed
    assert [s.next_offset for s in h.store.written] == [10] and h.consumer.commits == []
    assert h.checkpointer.pending and not h.checkpointer.stalled and h.stall_changes == []
    for offset in (15, 20):  # the loop applies more events and polls again; the schedule is due again
        state.next_offset = offset
        h.schedule.count(1000)
        h.clock.now += 1.0
        h.checkpointer.after_poll(h.states(), 5.0)
    assert len(h.store.written) == 1 and h.consumer.commits == [] and h.counters.checkpoints == 0
    assert state.snapshot_offset == -1 and state.committed_offset == -1
    h.store.acked = True
    h.checkpointer.after_poll(h.states(), 5.0)
    # commits what the snapshot covers (10), not what was applied since (20)
    assert h.consumer.commits == [[("in", 0, 10)]] and (state.snapshot_offset, state.committed_offset) == (10, 10)
    assert h.counters.checkpoints == 1 and h.counters.checkpoint_stalls == 0 and h.stall_changes == []
    h.checkpointer.after_poll(h.states(), 5.0)  # the next one (due) starts only now
    assert [s.next_offset for s in h.store.written] == [10, 20]


def test_an_in_flight_checkpoint_stalls_once_unacknowledged_for_its_timeout() -> None:
    h = Harness()
    state = h.add(0, 10)
    h.store.acked = False
    assert not h.checkpointer.checkpoint(h.states(), 5.0, wait=False)
    h.clock.now += 4.9
    h.checkpointer.after_poll(h.states(), 5.0)
    assert not h.checkpointer.stalled and h.counters.checkpoint_stalls == 0
    h.clock.now += 0.1
    h.checkpointer.after_poll(h.states(), 5.0)
    assert h.checkpointer.stalled and h.stall_changes == [True] and h.counters.checkpoint_stalls == 1
    assert h.counters.checkpoint_waiting_since == h.clock.now and h.consumer.commits == []
    h.store.acked = True
    h.checkpointer.after_poll(h.states(), 5.0)
    assert h.stall_changes == [True, False] and h.consumer.commits == [[("in", 0, 10)]]
    assert state.committed_offset == 10


def test_an_in_flight_checkpoint_writes_its_snapshots_only_once_every_dead_letter_so_far_is_acknowledged() -> None:
    h = Harness()
    state = h.add(0, 10)
    h.dead_letters.acked = False
    assert not h.checkpointer.checkpoint(h.states(), 5.0, wait=False)
    assert h.store.written == [] and not h.checkpointer.stalled
    state.next_offset = 12  # applied (and dead-lettered) while the dead letters were pending
    h.checkpointer.after_poll(h.states(), 5.0)
    assert h.store.written == []
    h.dead_letters.acked = True
    h.checkpointer.after_poll(h.states(), 5.0)
    assert [s.next_offset for s in h.store.written] == [12] and h.consumer.commits == [[("in", 0, 12)]]


def test_a_partition_that_moves_while_a_checkpoint_is_in_flight_commits_only_what_its_snapshot_covers() -> None:
    h = Harness()
    moving = h.add(0, 10)
    # snapshotted up to 30 by an earlier checkpoint whose commit failed: committed now, without a new snapshot
    behind = h.add(1, 30)
    behind.snapshot_offset, behind.committed_offset = 30, 25
    h.store.acked = False
    assert not h.checkpointer.checkpoint(h.states(), 5.0, wait=False)
    assert [s.partition for s in h.store.written] == [0]
    moving.next_offset, behind.next_offset = 14, 37  # applied while in flight: not covered by any snapshot
    h.store.acked = True
    h.checkpointer.after_poll(h.states(), 5.0)
    assert h.consumer.commits == [[("in", 0, 10), ("in", 1, 30)]]
    assert (moving.committed_offset, behind.committed_offset) == (10, 30)


def test_a_delivery_failure_in_flight_commits_nothing() -> None:
    h = Harness()
    state = h.add(0, 10)
    h.store.acked = False
    assert not h.checkpointer.checkpoint(h.states(), 5.0, wait=False)

    def refused(timeout_s: float) -> bool:
        raise DeliveryError("snapshots: 1 of 2 messages failed (injected)")

    h.store.acked_within = refused  # type: ignore[method-assign]
    with pytest.raises(DeliveryError, match="injected"):
        h.checkpointer.after_poll(h.states(), 5.0)
    assert h.consumer.commits == [] and state.committed_offset == -1 and state.snapshot_offset == -1
    assert h.counters.checkpoints == 0


def test_a_revocation_completes_an_in_flight_checkpoint_first() -> None:
    h = Harness()
    h.add(0, 10)
    h.store.acked = False
    assert not h.checkpointer.checkpoint(h.states(), 5.0, wait=False)
    h.add(1, 3)
    assert not h.checkpointer.checkpoint(h.states(), 5.0)  # waited on the caller: stalled
    assert h.checkpointer.stalled and [s.partition for s in h.store.written] == [0]
    h.store.acked = True
    assert h.checkpointer.checkpoint(h.states(), 5.0)
    assert h.consumer.commits == [[("in", 0, 10)], [("in", 1, 3)]] and not h.checkpointer.stalled


def test_an_in_flight_checkpoint_spreads_its_snapshots_over_iterations_within_a_write_budget() -> None:
    h = Harness()
    states = [h.add(p, 10 * (p + 1)) for p in range(3)]
    slow_snapshots(h, states)  # each snapshot uses up the iteration's budget
    assert not h.checkpointer.checkpoint(h.states(), 5.0, wait=False)
    assert [s.partition for s in h.store.written] == [0] and h.consumer.commits == []
    states[1].next_offset = 25  # applied between iterations: its snapshot, written next, covers it
    h.dead_letters.acked = False  # a dead letter of those events not acknowledged yet: nothing written
    h.checkpointer.after_poll(h.states(), 5.0)
    assert [s.partition for s in h.store.written] == [0]
    h.dead_letters.acked = True
    h.checkpointer.after_poll(h.states(), 5.0)
    assert [(s.partition, s.next_offset) for s in h.store.written] == [(0, 10), (1, 25)]
    assert h.consumer.commits == [] and not h.checkpointer.stalled
    h.checkpointer.after_poll(h.states(), 5.0)
    assert [(s.partition, s.next_offset) for s in h.store.written] == [(0, 10), (1, 25), (2, 30)]
    assert h.consumer.commits == [[("in", 0, 10), ("in", 1, 25), ("in", 2, 30)]] and h.counters.checkpoints == 1


def test_a_waiting_checkpoint_writes_every_snapshot_at_once() -> None:
    h = Harness()
    states = [h.add(p, 10 * (p + 1)) for p in range(3)]
    slow_snapshots(h, states)
    assert h.checkpointer.checkpoint(h.states(), 5.0)
    assert len(h.store.written) == 3 and len(h.consumer.commits) == 1


def test_an_in_flight_checkpoint_waits_a_moment_for_fresh_dead_letters_and_does_not_stall_on_a_trickle() -> None:
    # a steady trickle of invalid events: the dead letters of the batch just applied are acknowledged within
    # a round trip, never at the instant of the check; a check that does not wait at all never writes
    h = Harness()
    state = h.add(0, 10)
    waits: list[float] = []

    class Trickle(FakeDeadLetters):
        def acked_within(self, timeout_s: float) -> bool:
            waits.append(timeout_s)
            return timeout_s >= 0.01  # acknowledged after ~a round trip

    h.checkpointer._dead_letters = Trickle()  # type: ignore[assignment]
    h.checkpointer.checkpoint(h.states(), 5.0, wait=False)  # the schedule's checkpoint, in flight
    for _ in range(10):  # one iteration per second, each applying events with dead letters
        h.clock.now += 1.0
        state.next_offset += 5
        h.checkpointer.after_poll(h.states(), 5.0)
        if h.consumer.commits:
            break
    assert not h.checkpointer.stalled and h.counters.checkpoint_stalls == 0
    assert h.consumer.commits and 0 < max(waits) <= DEAD_LETTER_WAIT_S


def test_an_in_flight_checkpoint_written_over_many_iterations_is_not_a_stall() -> None:
    # twelve partitions whose snapshots each take the write budget, half a second of batch in between: the
    # write spans ~9 s, past the 5 s timeout, with a healthy broker; the stall clock counts from progress
    h = Harness()
    states = [h.add(p, 10 * (p + 1)) for p in range(12)]
    slow_snapshots(h, states)
    assert not h.checkpointer.checkpoint(h.states(), 5.0, wait=False)
    for _ in range(20):
        h.clock.now += 0.5
        h.checkpointer.after_poll(h.states(), 5.0)
        if h.consumer.commits:
            break
    assert len(h.store.written) == 12 and len(h.consumer.commits) == 1
    assert h.clock.now - 100.0 > 5.0 and h.counters.checkpoint_stalls == 0 and h.stall_changes == []
    # the acknowledgement itself still has its timeout, counted from the last snapshot written
    h.add(12, 5)
    h.store.acked = False
    h.clock.now += 100.0
    h.checkpointer.after_poll(h.states(), 5.0)
    h.clock.now += 4.9
    h.checkpointer.after_poll(h.states(), 5.0)
    assert not h.checkpointer.stalled
    h.clock.now += 0.2
    h.checkpointer.after_poll(h.states(), 5.0)
    assert h.checkpointer.stalled and h.counters.checkpoint_stalls == 1


class CostlyProcessor(FakeProcessor):
    """Its snapshot takes ``cost`` seconds of ``clock`` (changed between checkpoints); keeps the times its
    snapshots were written."""

    def __init__(self, clock: Clock, cost: float) -> None:
        self.clock, self.cost = clock, cost
        self.written_at: list[float] = []

    def snapshot(self) -> bytes:
        self.written_at.append(self.clock.now)
        self.clock.now += self.cost
        return b"state"


def costly(h: Harness, costs: list[float]) -> list[CostlyProcessor]:
    processors = []
    for p, cost in enumerate(costs):
        state = h.add(p, 10)
        state.processor = processor = CostlyProcessor(h.clock, cost)
        processors.append(processor)
    return processors


def in_flight_iterations(h: Harness) -> list[list[int]]:
    """Starts the due checkpoint in flight and polls until it commits: the partitions written per iteration."""
    iterations: list[list[int]] = []
    h.schedule.count(1000)
    for _ in range(20):
        before = len(h.store.written)
        h.checkpointer.after_poll(h.states(), 5.0)
        iterations.append([s.partition for s in h.store.written[before:]])
        h.clock.now += 0.25  # the next batch
        if not h.checkpointer.pending:
            return iterations
    raise AssertionError("the checkpoint did not complete")


def test_a_second_snapshot_starts_only_when_its_predicted_write_fits_in_what_is_left_of_the_budget() -> None:
    h = Harness()
    budget = h.checkpointer.write_budget_s
    assert budget == 0.25
    processors = costly(h, [0.05, 0.15, 0.05])
    # no history: a partition is predicted as the largest cost known so far in the iteration
    # (1: 0.05 known, fits after 0.05 spent; 2: 0.15 known, does not fit after 0.20 spent)
    assert in_flight_iterations(h) == [[0, 1], [2]]
    for state in h.states():
        state.next_offset += 5
    # partition 0 now takes 0.12 s: 0.13 s of the budget is left, under partition 1's predicted 0.15 s, so it
    # waits for the next iteration (stopping only once the budget is spent would have started it and spent
    # 0.27 s); there partition 2's predicted 0.05 s fits after partition 1's 0.15 s
    processors[0].cost = 0.12
    assert in_flight_iterations(h) == [[0], [1, 2]]
    # what each snapshot covers and what is committed are unchanged
    assert [s.next_offset for s in h.store.written] == [10, 10, 10, 15, 15, 15]
    assert h.consumer.commits[-1] == [("in", 0, 15), ("in", 1, 15), ("in", 2, 15)] and h.counters.checkpoints == 2


def test_the_first_snapshot_of_an_iteration_always_starts_even_when_predicted_over_the_budget() -> None:
    h = Harness()
    costly(h, [0.4, 0.01, 0.01])
    # 0 runs over the whole budget alone; 1 (no history: predicted 0.4 s, over the budget) still starts first
    # in the next iteration; 2 (predicted 0.4 s too) does not follow it
    assert in_flight_iterations(h) == [[0], [1], [2]]
    for state in h.states():
        state.next_offset += 5
    assert in_flight_iterations(h) == [[0], [1, 2]]  # now 2 is predicted at 0.01 s: it follows 1
    assert h.counters.checkpoint_stalls == 0 and len(h.consumer.commits) == 2


def test_a_write_far_over_its_prediction_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    processors = costly(h, [0.05])
    assert in_flight_iterations(h) == [[0]]
    h.states()[0].next_offset += 5
    processors[0].cost = 0.08  # over its prediction, not by a lot
    with caplog.at_level(logging.INFO, logger="test-checkpointer"):
        in_flight_iterations(h)
        assert not [r for r in caplog.records if "predicted" in r.getMessage()]
        h.states()[0].next_offset += 5
        processors[0].cost = 0.3
        in_flight_iterations(h)
    logged = [r for r in caplog.records if "predicted" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.INFO
    assert "in[0]: writing its snapshot took 0.30 s, predicted 0.08 s" in logged[0].getMessage()


class SummingProcessor:
    """A state that depends on every record and its order: the count and a running hash of the values."""

    def __init__(self, clock: Clock | None = None, costs: list[float] | None = None) -> None:
        self.count, self.digest = 0, 0
        self.clock, self.costs = clock, costs or []

    def process(self, records: Sequence[Record]) -> list[Rejected]:
        for r in records:
            self.count += 1
            self.digest = (self.digest * 31 + int(r.value or b"0")) % 1_000_000_007
        return []

    def snapshot(self) -> bytes:
        if self.clock is not None and self.costs:
            self.clock.now += self.costs.pop(0)
        return f"{self.count} {self.digest}".encode()

    def restore(self, data: bytes) -> None:
        count, digest = data.split()
        self.count, self.digest = int(count), int(digest)


def test_a_checkpoint_spread_by_predictions_restores_and_commits_the_state_of_an_uninterrupted_run() -> None:
    import random

    rng = random.Random(7)
    h = Harness()
    h.schedule.interval_events = 60  # a checkpoint every few iterations
    partitions = 4
    records = {p: [Record(o, str(rng.randrange(1000)).encode(), None, None) for o in range(400)]
               for p in range(partitions)}
    for p in range(partitions):  # snapshot costs that vary around the write budget, so some iterations cut
        costs = [rng.uniform(0.02, 0.2) for _ in range(100)]
        state = PartitionProgress("in", p, SummingProcessor(h.clock, costs), 0, -1, -1)
        h.partitions[state.key] = state
    writes_per_iteration: list[int] = []
    for start in range(0, 400, 10):  # 40 iterations of 10 records per partition
        for state in h.states():
            state.processor.process(records[state.partition][start:start + 10])
            state.next_offset = start + 10
        h.schedule.count(10 * partitions)
        h.clock.now += 0.1
        before = len(h.store.written)
        h.checkpointer.after_poll(h.states(), 5.0)
        writes_per_iteration.append(len(h.store.written) - before)
    assert max(writes_per_iteration) > 1 and h.counters.checkpoints > 3  # spread, and several completed
    # a crash now: each partition restores its newest snapshot and reads on from the offset it covers
    for p in range(partitions):
        newest = [s for s in h.store.written if s.partition == p][-1]
        restored = SummingProcessor()
        restored.restore(newest.payload)
        restored.process(records[p][newest.next_offset:])
        uninterrupted = SummingProcessor()
        uninterrupted.process(records[p])
        assert (restored.count, restored.digest) == (uninterrupted.count, uninterrupted.digest)
        state = h.partitions[("in", p)]
        assert state.committed_offset <= newest.next_offset and state.committed_offset > 0
    # the final checkpoint commits exactly what was applied, and its snapshots are the uninterrupted states
    h.checkpointer.shutdown(h.states(), 5.0)
    for p in range(partitions):
        newest = [s for s in h.store.written if s.partition == p][-1]
        uninterrupted = SummingProcessor()
        uninterrupted.process(records[p])
        assert newest.payload == f"{uninterrupted.count} {uninterrupted.digest}".encode()
        assert h.partitions[("in", p)].committed_offset == newest.next_offset == 400
