"""Where an assigned partition starts (the pure planner, no Kafka), and the rebalance callbacks with fakes."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Sequence
from typing import Any, cast

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, Consumer, TopicPartition

from nlpmon.kafka.partition_progress import PartitionProgress
from nlpmon.kafka.processor import Record, Rejected
from nlpmon.kafka.rebalance import MAX_LOSS_NOTES, Rebalancer, StartPlan, StartReason, plan_start
from nlpmon.kafka.runner_metrics import RunnerMetrics, TopicPartitionKey
from nlpmon.kafka.settings import KafkaSettings
from nlpmon.kafka.snapshot_format import PartitionSnapshot
from nlpmon.kafka.state_loss import StateLossDetector
from nlpmon.kafka.state_store import StateRestoreError, StateStore
from nlpmon.kafka.topics import TopicSetupError


def snapshot(next_offset: int, label_next_offset: int = -1) -> PartitionSnapshot:
    return PartitionSnapshot("in", 0, next_offset, b"state", label_next_offset)


# ---------------------------------------------------------------------------------------------- the planner


def test_no_snapshot_and_nothing_committed_lets_auto_offset_reset_decide() -> None:
    plan = plan_start(-1, None)
    assert plan == StartPlan(StartReason.RESET, OFFSET_INVALID, -1, -1, -1)
    assert not plan.restores_snapshot and not plan.rereads_committed and plan.label_seek_offset is None


def test_no_snapshot_starts_empty_at_the_committed_offset() -> None:
    plan = plan_start(42, None)
    assert plan == StartPlan(StartReason.COMMITTED, 42, 42, -1, 42)
    assert not plan.restores_snapshot and not plan.rereads_committed


def test_a_snapshot_ahead_of_the_committed_offset_is_restored_and_read_on_from() -> None:
    plan = plan_start(40, snapshot(50))
    assert plan == StartPlan(StartReason.SNAPSHOT, 50, 50, 50, 40)
    assert plan.restores_snapshot and not plan.rereads_committed
    assert plan_start(-1, snapshot(50)) == StartPlan(StartReason.SNAPSHOT, 50, 50, 50, -1)  # never committed


def test_a_snapshot_behind_the_committed_offset_rereads_from_the_snapshot() -> None:
    plan = plan_start(40, snapshot(30))
    assert plan == StartPlan(StartReason.SNAPSHOT, 30, 30, 30, 40)
    assert plan.restores_snapshot and plan.rereads_committed
    assert not plan_start(30, snapshot(30)).rereads_committed


def test_state_lost_with_a_snapshot_restores_it_and_reads_the_new_log_from_its_start() -> None:
    plan = plan_start(5, snapshot(900, 700), state_lost=True, with_labels=True, label_committed=3)
    assert plan == StartPlan(StartReason.SNAPSHOT_AFTER_STATE_LOSS, OFFSET_BEGINNING, -1, -2, -1,
                             OFFSET_BEGINNING, -1, -1, -1)
    assert plan.restores_snapshot and not plan.rereads_committed
    progress = plan.progress("in", 0, cast(Any, object()))
    assert progress.moved()  # snapshot offset -2: the next checkpoint writes the state at the new log's start
    assert plan_start(5, snapshot(900), state_lost=True).label_seek_offset is None  # no ground truth


def test_state_lost_without_a_snapshot_starts_empty_as_without_a_loss() -> None:
    for committed in (-1, 0, 17):
        assert plan_start(committed, None, state_lost=True, with_labels=True, label_committed=4) == plan_start(
            committed, None, with_labels=True, label_committed=4)


def test_labels_start_at_the_snapshots_label_offset_else_the_committed_one_else_reset() -> None:
    with_label_offset = plan_start(10, snapshot(12, 7), with_labels=True, label_committed=5)
    assert (with_label_offset.label_seek_offset, with_label_offset.label_next, with_label_offset.label_snapshot,
            with_label_offset.label_committed) == (7, 7, 7, 5)
    # a snapshot that holds no labels: read the label partition from its start, whatever is committed
    no_labels_yet = plan_start(10, snapshot(12, -1), with_labels=True, label_committed=5)
    assert (no_labels_yet.label_seek_offset, no_labels_yet.label_next, no_labels_yet.label_snapshot,
            no_labels_yet.label_committed) == (OFFSET_BEGINNING, -1, -1, 5)
    # no snapshot at all: the committed label offset, as for the input
    committed_only = plan_start(10, None, with_labels=True, label_committed=9)
    assert (committed_only.label_seek_offset, committed_only.label_next, committed_only.label_snapshot,
            committed_only.label_committed) == (9, 9, -1, 9)
    for nothing in (-1, OFFSET_INVALID):  # a logical offset from the broker counts as none
        plan = plan_start(-1, None, with_labels=True, label_committed=nothing)
        assert (plan.label_seek_offset, plan.label_next, plan.label_snapshot, plan.label_committed) == (
            OFFSET_INVALID, -1, -1, -1)
    # without a ground-truth topic the snapshot's label offset is ignored
    assert plan_start(10, snapshot(12, 7)) == StartPlan(StartReason.SNAPSHOT, 12, 12, 12, 10)


def _pre_split_start(committed: int, snap: PartitionSnapshot | None, lost: bool, labels: bool,
                     label_committed: int | None) -> tuple[int, int | None, tuple[int, ...]]:
    """The branches of ConsumerRunner._assign and _place_labels before the split, transcribed (the seek
    offsets and the starting progress), to check that the planner changed no behaviour."""
    progress = [-1, -1, -1, -1, -1, -1]  # next, snapshot, committed, label_next, label_snapshot, label_committed
    label_seek: int | None = None
    if lost and snap is not None:
        seek, progress[1] = OFFSET_BEGINNING, -2
        return seek, OFFSET_BEGINNING if labels else None, tuple(progress)
    if snap is not None:
        seek = progress[0] = progress[1] = snap.next_offset
        progress[2] = committed
    elif committed >= 0:
        seek = progress[0] = progress[2] = committed
    else:
        seek = OFFSET_INVALID
        progress[2] = committed
    if labels:
        progress[5] = label_committed if label_committed is not None and label_committed >= 0 else -1
        if snap is not None:
            start = snap.label_next_offset
            label_seek = start if start >= 0 else OFFSET_BEGINNING
            progress[3] = progress[4] = start
        elif progress[5] >= 0:
            label_seek = progress[3] = progress[5]
        else:
            label_seek = OFFSET_INVALID
    return seek, label_seek, tuple(progress)


def test_the_planner_matches_the_pre_split_branches_on_every_combination() -> None:
    snapshots = [None, snapshot(0), snapshot(30), snapshot(50, -1), snapshot(50, 8), snapshot(50, 0)]
    cases = 0
    for committed, snap, lost, labels, label_committed in itertools.product(
            (-1, 0, 30, 40, 60), snapshots, (False, True), (False, True), (None, OFFSET_INVALID, -1, 0, 8, 12)):
        plan = plan_start(committed, snap, state_lost=lost, with_labels=labels,
                          label_committed=label_committed if label_committed is not None else -1)
        p = plan.progress("in", 0, cast(Any, object()))
        got = (plan.seek_offset, plan.label_seek_offset,
               (p.next_offset, p.snapshot_offset, p.committed_offset, p.label_next, p.label_snapshot,
                p.label_committed))
        assert got == _pre_split_start(committed, snap, lost, labels, label_committed), (
            committed, snap, lost, labels, label_committed)
        cases += 1
    assert cases == 5 * 6 * 2 * 2 * 6


# ---------------------------------------------------------------------------------------------- the callbacks


class FakeProcessor:
    def __init__(self, reject_restore: bool = False) -> None:
        self.restored: list[bytes] = []
        self.reject_restore = reject_restore

    def process(self, records: Sequence[Record]) -> list[Rejected]:
        return []

    def process_labels(self, records: Sequence[Record]) -> list[Rejected]:
        return []

    def snapshot(self) -> bytes:
        return b"state"

    def restore(self, data: bytes) -> None:
        if self.reject_restore:
            raise ValueError("format 9 unknown")
        self.restored.append(data)


class FakeConsumer:
    def __init__(self, committed: dict[TopicPartitionKey, int]) -> None:
        self._committed = committed
        self.assigned: list[tuple[str, int, int]] = []
        self.paused: list[TopicPartitionKey] = []
        self.resumed: list[TopicPartitionKey] = []

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self._committed.get((tp.topic, tp.partition), OFFSET_INVALID))
                for tp in partitions]

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = [(tp.topic, tp.partition, tp.offset) for tp in partitions]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused += [(tp.topic, tp.partition) for tp in partitions]

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.resumed += [(tp.topic, tp.partition) for tp in partitions]


class FakeStore:
    def __init__(self, snapshots: dict[TopicPartitionKey, PartitionSnapshot]) -> None:
        self.snapshots = snapshots

    def read_latest(self, topic: str, partitions: list[int]) -> dict[int, PartitionSnapshot]:
        return {p: self.snapshots[(topic, p)] for p in partitions if (topic, p) in self.snapshots}


class Harness:
    def __init__(self, snapshots: dict[TopicPartitionKey, PartitionSnapshot], labels: bool = False,
                 reject_restore: bool = False, paused: bool = False, may_checkpoint: bool = True,
                 checkpoint_done: bool = True) -> None:
        self.settings = KafkaSettings(topic="in", state_topic="st", dead_letter_topic="dlq",
                                      ground_truth_topic="gt" if labels else None)
        self.processors: dict[int, FakeProcessor] = {}
        self.partitions: dict[TopicPartitionKey, PartitionProgress] = {}
        self.high_watermarks: dict[TopicPartitionKey, int] = {}
        self.counters = RunnerMetrics()
        self.losses = StateLossDetector("st")
        self.checkpoints: list[list[TopicPartitionKey]] = []
        self._checkpoint_done = checkpoint_done

        def factory(topic: str, partition: int) -> FakeProcessor:
            self.processors[partition] = FakeProcessor(reject_restore)
            return self.processors[partition]

        def checkpoint(states: Sequence[PartitionProgress], timeout_s: float) -> bool:
            self.checkpoints.append([s.key for s in states])
            return self._checkpoint_done

        self.rebalancer = Rebalancer(
            self.settings, factory, store=cast(StateStore, FakeStore(snapshots)), losses=self.losses,
            partitions=self.partitions, high_watermarks=self.high_watermarks, counters=self.counters,
            lock=threading.Lock(), checkpoint=checkpoint, may_checkpoint=lambda: may_checkpoint,
            consumption_paused=lambda: paused, logger=logging.getLogger("test-rebalance"))

    def assign(self, committed: dict[TopicPartitionKey, int], keys: list[TopicPartitionKey]) -> FakeConsumer:
        consumer = FakeConsumer(committed)
        self.rebalancer.on_assign(cast(Consumer, consumer), [TopicPartition(t, p) for t, p in keys])
        return consumer


def test_assignment_restores_snapshots_and_seeks_where_the_plan_says(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness({("in", 0): PartitionSnapshot("in", 0, 30, b"s0", 7)}, labels=True)
    with caplog.at_level(logging.WARNING, logger="test-rebalance"):
        consumer = h.assign({("in", 0): 40, ("gt", 0): 5, ("in", 1): 12, ("gt", 1): 3},
                            [("in", 0), ("in", 1), ("gt", 0), ("gt", 1)])
    assert consumer.assigned == [("in", 0, 30), ("in", 1, 12), ("gt", 0, 7), ("gt", 1, 3)]
    assert h.processors[0].restored == [b"s0"] and h.processors[1].restored == []
    p0, p1 = h.partitions[("in", 0)], h.partitions[("in", 1)]
    assert (p0.next_offset, p0.snapshot_offset, p0.committed_offset, p0.label_next, p0.label_committed) == (
        30, 30, 40, 7, 5)
    assert (p1.next_offset, p1.snapshot_offset, p1.committed_offset, p1.label_next, p1.label_committed) == (
        12, -1, 12, 3, 3)
    assert h.counters.rebalances == 1 and consumer.resumed and not consumer.paused
    messages = [r.getMessage() for r in caplog.records]
    assert any("in[0]: snapshot covers up to 30 but offset 40 is committed" in m for m in messages)
    assert any("in[1]: no snapshot in st; starting with empty state at committed offset 12" in m for m in messages)


def test_assignment_while_paused_starts_paused() -> None:
    consumer = Harness({}, paused=True).assign({}, [("in", 0)])
    assert consumer.paused == [("in", 0)] and not consumer.resumed and consumer.assigned == [
        ("in", 0, OFFSET_INVALID)]


def test_a_broker_that_lost_the_offsets_is_counted_noted_and_read_from_the_start() -> None:
    h = Harness({("in", 0): PartitionSnapshot("in", 0, 500, b"s", 70)}, labels=True)
    h.losses.committed(("in", 0), 500)  # this process committed 500 before the broker restarted empty
    consumer = h.assign({}, [("in", 0), ("gt", 0)])
    assert consumer.assigned == [("in", 0, OFFSET_BEGINNING), ("gt", 0, OFFSET_BEGINNING)]
    assert h.processors[0].restored == [b"s"] and h.partitions[("in", 0)].snapshot_offset == -2
    assert h.counters.state_losses == 1 and "committed offset none after 500" in h.counters.state_loss_notes[0]
    for p in range(1, MAX_LOSS_NOTES + 3):  # the notes keep the latest few
        h.losses.committed(("in", p), 10)
        h.assign({}, [("in", p), ("gt", p)])
    assert h.counters.state_losses == MAX_LOSS_NOTES + 3 and len(h.counters.state_loss_notes) == MAX_LOSS_NOTES


def test_assignment_errors_say_what_to_do() -> None:
    with pytest.raises(StateRestoreError, match=r"snapshot of in\[0\] in st rejected by the processor "
                                                r"\(format 9 unknown\); run the nlpmon version that wrote it"):
        Harness({("in", 0): snapshot(3)}, reject_restore=True).assign({}, [("in", 0)])
    with pytest.raises(TopicSetupError, match=r"assigned in partitions \[0, 1\] but gt partitions \[0\]"):
        Harness({}, labels=True).assign({}, [("in", 0), ("in", 1), ("gt", 0)])


def test_revocation_checkpoints_then_drops_and_a_loss_drops_without_a_checkpoint() -> None:
    h = Harness({}, labels=True)
    h.assign({}, [("in", 0), ("in", 1), ("gt", 0), ("gt", 1)])
    h.high_watermarks.update({("in", 0): 9, ("gt", 0): 4})
    consumer = cast(Consumer, FakeConsumer({}))
    h.rebalancer.on_revoke(consumer, [TopicPartition("in", 0), TopicPartition("gt", 0)])
    assert h.checkpoints == [[("in", 0)]] and set(h.partitions) == {("in", 1)} and not h.high_watermarks
    h.rebalancer.on_lost(consumer, [TopicPartition("gt", 1)])  # the label partition takes its input one along
    assert h.checkpoints == [[("in", 0)]] and not h.partitions and h.counters.lost_assignments == 1


def test_revocation_does_not_checkpoint_after_a_failure_or_once_stopping() -> None:
    for may_checkpoint, checkpoint_done in ((False, True), (True, False)):
        h = Harness({}, may_checkpoint=may_checkpoint, checkpoint_done=checkpoint_done)
        h.assign({}, [("in", 0)])
        h.rebalancer.on_revoke(cast(Consumer, FakeConsumer({})), [TopicPartition("in", 0)])
        assert h.checkpoints == ([] if not may_checkpoint else [[("in", 0)]]) and not h.partitions
