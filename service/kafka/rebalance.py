"""Rebalances: where each assigned partition starts, and what happens to revoked or lost ones.

:func:`plan_start` is pure: from the committed offset, the latest snapshot and whether the broker lost this
process's state, it says where an input partition (and the ground-truth partition of the same number) starts
and why (:class:`StartPlan`). :class:`Rebalancer` holds the consumer's three callbacks that apply it:

- ``on_assign``: read the snapshots and committed offsets, restore each snapshot into a fresh processor, seek
  each partition where its plan says, then ``assign``;
- ``on_revoke``: checkpoint the revoked partitions (snapshot + commit), then drop them;
- ``on_lost``: drop them without a commit (the group moved on; the next owner restores the last snapshot).
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, Consumer, TopicPartition

from .partition_progress import PartitionProgress
from .processor import LabelledPartitionProcessor, PartedPartitionProcessor, PartitionProcessor, ProcessorFactory
from .runner_metrics import RunnerMetrics, TopicPartitionKey
from .settings import KafkaSettings
from .snapshot_format import PartitionSnapshot
from .state_loss import StateLossDetector
from .state_store import StateRestoreError, StateStore
from .topics import TopicSetupError

#: State-loss notes kept for /readyz.
MAX_LOSS_NOTES = 5


class StartReason(enum.Enum):
    """Why a partition starts where it does."""

    SNAPSHOT = "snapshot"  # restore the latest snapshot, start at the offset it covers
    SNAPSHOT_AFTER_STATE_LOSS = "snapshot after state loss"  # the broker came back empty; a snapshot reached it
    COMMITTED = "committed"  # no snapshot: empty state from the committed offset
    RESET = "reset"  # neither: empty state, the consumer's auto.offset.reset decides (earliest by default)


@dataclass(frozen=True, slots=True)
class StartPlan:
    """Where one input partition (and its ground-truth partition) starts.

    ``seek_offset``/``label_seek_offset`` are what the consumer is assigned at (an offset, or librdkafka's
    ``OFFSET_BEGINNING``/``OFFSET_INVALID``: the start of the log / auto.offset.reset decides);
    ``label_seek_offset`` is None without a ground-truth topic. The other offsets are the starting
    :class:`PartitionProgress` (-1: none; a ``snapshot_offset`` of -2 makes the next checkpoint write the
    restored state at the start of the new log, so that no later assignment restores the old log's offset).
    """

    reason: StartReason
    seek_offset: int
    next_offset: int
    snapshot_offset: int
    committed_offset: int
    label_seek_offset: int | None = None
    label_next: int = -1
    label_snapshot: int = -1
    label_committed: int = -1

    @property
    def restores_snapshot(self) -> bool:
        """Does the processor start from the snapshot's state (else from empty state)?"""
        return self.reason in (StartReason.SNAPSHOT, StartReason.SNAPSHOT_AFTER_STATE_LOSS)

    @property
    def rereads_committed(self) -> bool:
        """Does a snapshot behind the committed offset make the partition re-read records already committed?"""
        return self.reason is StartReason.SNAPSHOT and self.committed_offset > self.next_offset

    def progress(self, topic: str, partition: int, processor: PartitionProcessor) -> PartitionProgress:
        """The partition's starting progress, for ``processor``."""
        return PartitionProgress(topic, partition, processor, self.next_offset, self.snapshot_offset,
                                 self.committed_offset, self.label_next, self.label_snapshot, self.label_committed)


def plan_start(committed: int, snapshot: PartitionSnapshot | None, *, state_lost: bool = False,
               with_labels: bool = False, label_committed: int = -1) -> StartPlan:
    """Where an input partition starts, given its ``committed`` offset (-1: none), its latest ``snapshot``
    (None: none) and whether the broker lost what this process saw of it (``state_lost``, from
    :class:`StateLossDetector`). With ``with_labels``, also where the ground-truth partition of the same number
    starts, given its ``label_committed`` offset (-1: none).

    - state lost and a snapshot: the snapshot reached the broker after it restarted, so its offsets are those
      of the old log: restore it and read both partitions of the new log from their start;
    - a snapshot: restore it and start at the offsets it covers (even when the committed offset is ahead: the
      state must see every record after its snapshot; :attr:`StartPlan.rereads_committed` says so);
    - no snapshot, a committed offset: empty state from the committed offsets;
    - neither: empty state, auto.offset.reset decides.

    >>> plan_start(-1, None).reason
    <StartReason.RESET: 'reset'>
    >>> plan_start(40, PartitionSnapshot("t", 0, 30, b"")).seek_offset
    30
    """
    if state_lost and snapshot is not None:
        return StartPlan(StartReason.SNAPSHOT_AFTER_STATE_LOSS, OFFSET_BEGINNING, -1, -2, -1,
                         OFFSET_BEGINNING if with_labels else None)
    if not with_labels:
        label_seek, label_next, label_committed = None, -1, -1
    elif snapshot is not None:
        # the state holds exactly the labels below the snapshot's label offset (none when it has none)
        label_next = snapshot.label_next_offset
        label_seek = label_next if label_next >= 0 else OFFSET_BEGINNING
        label_committed = max(label_committed, -1)
    else:
        label_next = label_committed = max(label_committed, -1)
        label_seek = label_committed if label_committed >= 0 else OFFSET_INVALID
    if snapshot is not None:
        return StartPlan(StartReason.SNAPSHOT, snapshot.next_offset, snapshot.next_offset, snapshot.next_offset,
                         committed, label_seek, label_next, label_next, label_committed)
    if committed >= 0:
        return StartPlan(StartReason.COMMITTED, committed, committed, -1, committed, label_seek, label_next, -1,
                         label_committed)
    return StartPlan(StartReason.RESET, OFFSET_INVALID, -1, -1, committed, label_seek, label_next, -1,
                     label_committed)


def _known(offset: int | None) -> int:
    """A committed offset as the plan takes it: -1 when there is none (None, or a librdkafka logical offset)."""
    return offset if offset is not None and offset >= 0 else -1


class Rebalancer:
    """The consumer's rebalance callbacks for one run of the loop.

    Shares with the runner ``partitions`` (input partition -> progress), ``high_watermarks`` and ``counters``,
    changing them under ``lock``. ``checkpoint(states, timeout_s)`` is the runner's checkpoint (True when
    complete); ``may_checkpoint()`` says whether a revocation is checkpointed (not after a failure or once
    the final checkpoint is made); ``consumption_paused()`` whether new partitions start paused. Runs on the
    loop thread, inside the consumer's poll.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        processor_factory: ProcessorFactory,
        *,
        store: StateStore,
        losses: StateLossDetector,
        partitions: dict[TopicPartitionKey, PartitionProgress],
        high_watermarks: dict[TopicPartitionKey, int],
        counters: RunnerMetrics,
        lock: threading.Lock,
        checkpoint: Callable[[Sequence[PartitionProgress], float], bool],
        may_checkpoint: Callable[[], bool],
        consumption_paused: Callable[[], bool],
        logger: logging.Logger,
    ) -> None:
        self._settings = settings
        self._factory = processor_factory
        self._store = store
        self._losses = losses
        self._partitions = partitions
        self._high_watermarks = high_watermarks
        self._counters = counters
        self._lock = lock
        self._checkpoint = checkpoint
        self._may_checkpoint = may_checkpoint
        self._consumption_paused = consumption_paused
        self._log = logger

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Restore each partition's latest snapshot into a fresh processor and start where :func:`plan_start`
        says. Raises TopicSetupError (ground-truth partitions that do not match the input ones),
        StateRestoreError (a snapshot the processor rejects) or TypeError (a processor without
        ``process_labels`` for a ground-truth topic); nothing is assigned then."""
        settings = self._settings
        labels_topic = settings.ground_truth_topic
        label_tps = {tp.partition: tp for tp in partitions if tp.topic == labels_topic}
        inputs = [tp for tp in partitions if tp.topic != labels_topic]
        if labels_topic is not None and set(label_tps) != {tp.partition for tp in inputs}:
            raise TopicSetupError(
                f"assigned {settings.topic} partitions {sorted(tp.partition for tp in inputs)} but "
                f"{labels_topic} partitions {sorted(label_tps)}: both topics need the same partition count and "
                "every group member the range assignor (partition.assignment.strategy=range)"
            )
        by_topic: dict[str, list[int]] = {}
        for tp in inputs:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        snapshots = {
            (topic, p): snap
            for topic, ps in by_topic.items()
            for p, snap in self._store.read_latest(topic, ps).items()
        }
        committed_list = consumer.committed(partitions, timeout=settings.restore_timeout_s)
        committed = {(tp.topic, tp.partition): tp.offset for tp in committed_list if tp.error is None}
        # a partition beyond the known count: the topic has more now (no metadata request here: a client call
        # that serves callbacks inside this callback makes confluent-kafka abort the process, CallState_get)
        partition_count = self._losses.input_partitions
        if inputs and partition_count is not None:
            partition_count = max(partition_count, 1 + max(tp.partition for tp in inputs))
        states: dict[TopicPartitionKey, PartitionProgress] = {}
        for tp in inputs:
            key = (tp.topic, tp.partition)
            processor = self._factory(tp.topic, tp.partition)
            if labels_topic is not None and not isinstance(processor, LabelledPartitionProcessor):
                raise TypeError(f"{type(processor).__name__} has no process_labels(); it cannot take {labels_topic}")
            committed_offset = _known(committed.get(key, OFFSET_INVALID))
            snapshot = snapshots.get(key)
            label_tp = label_tps.get(tp.partition)
            plan = plan_start(
                committed_offset, snapshot,
                state_lost=self._state_lost(tp, snapshot, committed_offset, partition_count),
                with_labels=label_tp is not None,
                label_committed=_known(committed.get((label_tp.topic, label_tp.partition))) if label_tp else -1,
            )
            if plan.restores_snapshot:
                assert snapshot is not None
                try:
                    if snapshot.parts:
                        if not isinstance(processor, PartedPartitionProcessor):
                            raise ValueError("the snapshot has parts; this processor cannot read them")
                        processor.restore_parts(snapshot.payload, dict(snapshot.parts))
                    else:
                        processor.restore(snapshot.payload)
                except ValueError as exc:
                    raise StateRestoreError(self._rejected(tp, exc)) from exc
            self._log_start(tp, plan)
            tp.offset = plan.seek_offset
            if label_tp is not None and plan.label_seek_offset is not None:
                label_tp.offset = plan.label_seek_offset
            states[key] = plan.progress(tp.topic, tp.partition, processor)
        self._losses.input_partitions = partition_count
        consumer.assign(partitions)
        with self._lock:
            self._partitions.update(states)
            self._counters.rebalances += 1
        # paused while the breaker is open or a checkpoint waits for the broker; else resumed explicitly: the
        # client keeps a partition's pause across a lost assignment
        (consumer.pause if self._consumption_paused() else consumer.resume)(partitions)
        self._log.info(
            "assigned %s",
            ", ".join(
                f"{t}[{p}]@{s.next_offset if s.next_offset >= 0 else 'reset'}" for (t, p), s in states.items()
            )
            or "nothing",
        )

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Checkpoint (snapshot + commit) the revoked partitions, then drop their state (also when the
        checkpoint raises; a checkpoint still waiting for the broker drops them without a commit)."""
        keys = [(tp.topic, tp.partition) for tp in partitions]
        states = [self._partitions[k] for k in keys if k in self._partitions]  # input partitions only
        try:
            if self._may_checkpoint() and states and not self._checkpoint(states, self._settings.delivery_timeout_s):
                self._log.warning("revoked %d partitions while their checkpoint waits for the broker: dropped "
                                  "without a commit (the next owner restores the last acknowledged snapshot)",
                                  len(states))
        finally:
            self.drop(keys)
        self._log.info("revoked %s", ", ".join(f"{t}[{p}]" for t, p in keys) or "nothing")

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group moved on without us: commit nothing, drop the state (the new owner restores it)."""
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.drop(keys)
        with self._lock:
            self._counters.lost_assignments += 1
        self._log.warning(
            "lost %s (session timeout or max.poll.interval.ms): dropped their state without committing",
            ", ".join(f"{t}[{p}]" for t, p in keys),
        )

    def drop(self, keys: Sequence[TopicPartitionKey]) -> None:
        """Forget the partitions (a label partition goes with the input partition of its number)."""
        with self._lock:
            for key in keys:
                self._partitions.pop(key, None)
                self._high_watermarks.pop(key, None)
                if key[0] == self._settings.ground_truth_topic:
                    self._partitions.pop((self._settings.topic, key[1]), None)

    def _state_lost(self, tp: TopicPartition, snapshot: PartitionSnapshot | None, committed: int,
                    partition_count: int | None) -> bool:
        """Did the broker lose this partition's state or offsets since this process last saw them (a broker
        that came back empty, or topics recreated)? Warns, counts and keeps a note for /readyz when so."""
        note = self._losses.check((tp.topic, tp.partition), snapshot, committed, partition_count)
        if note is None:
            return False
        with self._lock:
            self._counters.state_losses += 1
            self._counters.state_loss_notes = (*self._counters.state_loss_notes, note)[-MAX_LOSS_NOTES:]
        self._log.warning("%s: the broker restarted empty or the topics were recreated; check the broker's "
                          "storage (nlpmon_state_losses_total, /readyz notes)", note)
        return True

    def _log_start(self, tp: TopicPartition, plan: StartPlan) -> None:
        if plan.rereads_committed:
            self._log.warning(
                "%s[%d]: snapshot covers up to %d but offset %d is committed; re-reading from the snapshot",
                tp.topic, tp.partition, plan.next_offset, plan.committed_offset)
        elif plan.reason is StartReason.COMMITTED:
            self._log.warning("%s[%d]: no snapshot in %s; starting with empty state at committed offset %d",
                              tp.topic, tp.partition, self._settings.state_topic, plan.committed_offset)

    def _rejected(self, tp: TopicPartition, exc: Exception) -> str:
        return (f"snapshot of {tp.topic}[{tp.partition}] in {self._settings.state_topic} rejected by the processor "
                f"({exc}); run the nlpmon version that wrote it, or delete that partition's snapshots "
                "(StateStore.delete) to start it from scratch at its committed offset")


__all__ = ["MAX_LOSS_NOTES", "Rebalancer", "StartPlan", "StartReason", "plan_start"]
