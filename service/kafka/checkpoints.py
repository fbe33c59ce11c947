"""The checkpoint policy: when to snapshot, when to commit, and what stays pending while the broker has not
acknowledged the deliveries.

A checkpoint, for the partitions that moved since the last one:

1. every dead letter produced so far is acknowledged,
2. each partition's snapshot (with the next offsets it covers) is written and acknowledged,
3. the offsets are committed synchronously (committed = what the snapshot covers, never backwards).

:class:`CheckpointSchedule` says when one is due (every ``checkpoint_interval_events`` events or
``checkpoint_interval_s`` seconds). :class:`Checkpointer` runs it.

**In flight.** A scheduled checkpoint (:meth:`Checkpointer.after_poll`) never waits for the broker on the
loop: it writes the snapshots (once every dead letter so far is acknowledged) and returns; the loop keeps
polling and applying events while the checkpoint is *in flight* (:class:`PendingCheckpoint`), each poll
looks at the acknowledgements without waiting, and the commit of what the snapshots cover happens in the
iteration that finds every one acknowledged. Its partitions' snapshots are written over several iterations
when writing them takes long: an iteration writes for at most half of ``KafkaSettings.loop_budget_s``
(``poll_gap_target_s``), and starts another partition's snapshot only if that partition's predicted write (its
last measured one; with no history, the largest known, or alone when none is known:
:class:`~nlpmon.kafka.write_costs.SnapshotWriteCosts`) fits in what is left of it; the next partition waits for
the next iteration (at least one per iteration; before each, every dead letter so far must be acknowledged;
each snapshot covers what was applied when it is written). No new checkpoint starts while one is in flight. A crash in
flight leaves the previous acknowledged snapshots (nothing is tombstoned before the acknowledgement) and the
previous committed offsets: restore takes the newest complete snapshot, whose offsets it reads on from.

**Stalled.** A checkpoint in flight for ``timeout_s`` without progress (since it started, or since it wrote
its last snapshot) *stalls*: the runner pauses
consumption (``on_stall_change``) and each poll looks again; once acknowledged the commit happens and
consumption resumes. The checkpoints of a revocation and of shutdown (:meth:`Checkpointer.checkpoint`)
wait up to their timeout on the caller, completing an in-flight one first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from ..errors import UserError
from .dead_letter import DeadLetterWriter
from .partition_progress import CoveredOffsets, PartitionProgress, PendingCheckpoint
from .processor import PartedPartitionProcessor
from .runner_metrics import RunnerMetrics, TopicPartitionKey
from .settings import KafkaSettings
from .snapshot_format import PartitionSnapshot
from .state_loss import StateLossDetector
from .state_store import StateStore
from .write_costs import SnapshotWriteCosts

#: Writing a checkpoint's snapshots for longer than this on the loop is logged with where the time went.
SLOW_WRITE_S = 0.5
#: In flight, the longest an iteration waits for the dead letters produced so far before writing snapshots
#: (they were handed to the client moments ago: one round trip acknowledges them on a healthy broker).
DEAD_LETTER_WAIT_S = 0.1
#: A snapshot whose write takes more than this many times its prediction (and over it by more than a quarter
#: of the write budget) is logged: the prediction let the iteration run over its budget.
OVERRUN_FACTOR = 2.0


class RunnerError(UserError, RuntimeError):
    """The runner stopped without committing past the last safe checkpoint."""


class CommitError(RunnerError):
    """Offset commits kept failing."""


@dataclass(slots=True)
class CheckpointSchedule:
    """When the next checkpoint is due: after ``interval_events`` events or ``interval_s`` seconds since the
    last one started (``last_at``, clock time). Plain bookkeeping, no clock of its own.

    >>> schedule = CheckpointSchedule(interval_events=100, interval_s=5.0, last_at=0.0)
    >>> schedule.count(99); schedule.due(lambda: 4.0)
    False
    >>> schedule.count(1); schedule.due(lambda: 4.0)
    True
    >>> schedule.restart(now=4.0); schedule.due(lambda: 8.0), schedule.due(lambda: 9.0)
    (False, True)
    """

    interval_events: int
    interval_s: float
    last_at: float
    events_since: int = 0

    def count(self, events: int) -> None:
        """``events`` applied since the last checkpoint."""
        self.events_since += events

    def due(self, clock: Callable[[], float]) -> bool:
        """Is a checkpoint due now? Reads ``clock`` only when the event count is not reached."""
        return self.events_since >= self.interval_events or clock() - self.last_at >= self.interval_s

    def restart(self, now: float) -> None:
        """A checkpoint starts at ``now``: count again from zero."""
        self.events_since = 0
        self.last_at = now


def copy_store_counters(counters: RunnerMetrics, store: StateStore) -> None:
    """The state store's own counts into the runner's (call under the runner's lock)."""
    counters.snapshots_produced = store.written_total
    counters.snapshot_chunks_produced = store.chunks_written_total
    counters.snapshot_parts_produced = store.parts_written_total
    counters.snapshot_bytes_produced = store.bytes_written_total
    counters.snapshot_tombstone_failures = store.tombstone_failures_total


class Checkpointer:
    """Runs checkpoints for one run of the loop: dead letters acked -> snapshots acked -> commit.

    Owns the pending checkpoint, the stall state and the consecutive commit failures. Shares with the runner
    ``partitions`` (read: a state no longer in it was revoked or lost and is skipped) and ``counters``
    (changed under ``lock``); tells ``losses`` what was snapshotted and committed. ``on_stall_change()`` is
    called when :attr:`stalled` changes (the runner pauses or resumes consumption). Not thread-safe: the
    loop thread uses it (the rebalance callbacks run on it too).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        consumer: Consumer,
        store: StateStore,
        dead_letters: DeadLetterWriter,
        schedule: CheckpointSchedule,
        partitions: Mapping[TopicPartitionKey, PartitionProgress],
        counters: RunnerMetrics,
        lock: threading.Lock,
        losses: StateLossDetector,
        on_stall_change: Callable[[], None],
        clock: Callable[[], float],
        logger: logging.Logger,
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._store = store
        self._dead_letters = dead_letters
        self.schedule = schedule
        self._partitions = partitions
        self._counters = counters
        self._lock = lock
        self._losses = losses
        self._on_stall_change = on_stall_change
        self._clock = clock
        self._log = logger
        self._pending: PendingCheckpoint | None = None
        self._stalled = False
        self._consecutive_commit_failures = 0
        self._write_costs = SnapshotWriteCosts()

    @property
    def pending(self) -> bool:
        """Is a checkpoint waiting for the broker's acknowledgements (in flight or stalled)?"""
        return self._pending is not None

    @property
    def write_budget_s(self) -> float:
        """An in-flight checkpoint writes for at most this long per loop iteration (half of ``loop_budget_s``):
        after the first snapshot, it starts another only if that snapshot's predicted write fits in what is left
        (the rest follow in the next iterations, at least one snapshot per iteration)."""
        return self._settings.loop_budget_s / 2

    def writes_next(self) -> bool:
        """Will the next :meth:`after_poll` write snapshots (one is due, or in flight with some unwritten)? The
        runner then leaves that iteration's batch half of its time."""
        pending = self._pending
        if pending is not None:
            return not pending.written
        return self.schedule.due(self._clock)

    @property
    def stalled(self) -> bool:
        """Has the pending checkpoint waited past its timeout (consumption should be paused)?"""
        return self._stalled

    def after_poll(self, states: Sequence[PartitionProgress], timeout_s: float, *, may_start: bool = True) -> None:
        """Called after every poll, never waits for the broker: a pending checkpoint moves on as far as the
        acknowledgements allow (it stalls once in flight for ``timeout_s``); else a due one starts for
        ``states`` in flight (see :meth:`checkpoint` with ``wait=False``), unless ``may_start`` is False (the
        runner did not leave this iteration time for it: it starts at the next one). Blocks only for encoding
        and producing the snapshots (and a full producer queue, up to ``delivery_timeout_s``)."""
        if self._pending is not None:
            self.advance_pending(0.0)  # in flight or stalled: has the broker acknowledged it by now?
        elif may_start and self.schedule.due(self._clock):
            self.checkpoint(states, timeout_s, wait=False)

    def checkpoint(self, states: Sequence[PartitionProgress], timeout_s: float, *, wait: bool = True) -> bool:
        """Dead letters acked -> snapshots acked -> commit. Returns True when done (or nothing to do), False
        when it waits for the broker (the client retries the deliveries for as long as the broker is away);
        a commit happens only once the acknowledgements arrived (with ``wait=False``: in a later call of
        :meth:`after_poll`).

        ``wait=True`` (revocation, shutdown): blocks up to about ``timeout_s`` (twice that when an earlier
        checkpoint was still waiting), then stalls (consumption paused). ``wait=False`` (the schedule): waits
        for nothing, the checkpoint stays in flight while the loop consumes and stalls only ``timeout_s``
        after it started; a pending one is only looked at (no new one starts). Writes nothing when this
        member left its group. Raises DeliveryError for a delivery the broker refused, before any commit,
        and CommitError (see :meth:`commit`)."""
        now = self._clock()
        self.schedule.restart(now)
        deadline = now + timeout_s
        if self._pending is not None and not self.advance_pending(timeout_s if wait else 0.0):
            return False
        to_snapshot = [s for s in states if s.moved()]
        to_commit = [s for s in states if s.uncommitted()]
        if not to_snapshot and not to_commit:
            return True
        if not self._consumer.memberid():
            # Left the group (max.poll.interval.ms or session timeout): the partitions are lost even if the
            # callback has not run yet. Write nothing: a commit without a generation may still be accepted.
            with self._lock:
                self._counters.checkpoints_skipped += 1
            self._log.warning(
                "not a group member any more: skipping the checkpoint of %d partitions (their assignment is "
                "lost; the next owner restores the last snapshot)",
                len(states),
            )
            return True
        moved = {s.key for s in to_snapshot}
        self._write_costs.keep_only(self._partitions.keys())
        self._pending = PendingCheckpoint(
            to_snapshot, to_commit, started_at=now, progress_at=now, stall_after_s=0.0 if wait else timeout_s,
            write_budget_s=None if wait else self.write_budget_s,
            commit_at={s.key: CoveredOffsets(s.next_offset, s.label_next) for s in to_commit if s.key not in moved})
        return self.advance_pending(max(0.0, deadline - self._clock()) if wait else 0.0)

    def advance_pending(self, timeout_s: float) -> bool:
        """Move the pending checkpoint on as far as the acknowledgements allow within ``timeout_s``: write
        the snapshots once the dead letters are acked (every dead letter produced so far, so also those of
        events applied while it waited), commit once the snapshots are. Returns True when it completed,
        False when it still waits: in flight, or stalled (after waiting ``timeout_s`` > 0 here, or once it
        started ``stall_after_s`` ago)."""
        pending = self._pending
        assert pending is not None
        deadline = self._clock() + timeout_s
        store = self._store
        if not pending.written:
            # In flight (timeout 0) the dead letters of the batch just applied are still in the client's queue
            # or on their way: wait for them a bounded moment (a round trip) rather than not at all, else a
            # steady trickle of dead letters would hold the checkpoint until it stalls.
            dead_letters_wait = timeout_s if timeout_s > 0 else min(DEAD_LETTER_WAIT_S, pending.write_budget_s or 0.0)
            if not self._dead_letters.acked_within(dead_letters_wait):
                return self._waiting(pending, waited=timeout_s > 0)
            started, encoding, bytes_before, count = self._clock(), 0.0, store.bytes_written_total, 0
            budget = pending.write_budget_s if timeout_s == 0 else None  # a caller that waits gets it all
            while pending.next_to_write < len(pending.to_snapshot):
                state = pending.to_snapshot[pending.next_to_write]
                if not self._owned(state):
                    pending.next_to_write += 1
                    continue  # lost or revoked while waiting: its next owner has its own state
                predicted = self._write_costs.predict(state.key)
                if budget is not None and count:
                    spent = self._clock() - started
                    if predicted is None or spent >= budget or spent + predicted > budget:
                        break  # the rest in the next iterations, once the dead letters so far are acked again
                pending.next_to_write += 1
                count += 1
                write_started = self._clock()
                # labels may move before the first input record: offset 0 then means "from the start"
                # (an offset below the log start resets to earliest, as an unknown position would)
                next_offset = max(state.next_offset, 0)
                processor = state.processor
                encode_started = self._clock()
                if isinstance(processor, PartedPartitionProcessor):
                    main, parts = processor.snapshot_parts()
                    snapshot = PartitionSnapshot(state.topic, state.partition, next_offset, main,
                                                 state.label_next, parts)
                else:
                    snapshot = PartitionSnapshot(state.topic, state.partition, next_offset,
                                                 processor.snapshot(), state.label_next)
                encoding += self._clock() - encode_started
                store.write(snapshot)
                pending.covers[state.key] = CoveredOffsets(state.next_offset, state.label_next)
                pending.progress_at = self._clock()
                self._observe_write(state, pending.progress_at - write_started, predicted)
            took = self._clock() - started
            if took > SLOW_WRITE_S:  # where a checkpoint's time on the loop goes (issue 14: poll gaps)
                self._log.info("checkpoint wrote %d snapshots (%.1f MB) in %.2f s: processors' snapshots %.2f s, "
                               "producing (new parts read, chunked, handed to the client) %.2f s",
                               count, (store.bytes_written_total - bytes_before) / 1e6, took, encoding,
                               took - encoding)
            if pending.next_to_write < len(pending.to_snapshot):
                return self._waiting(pending, waited=False)
            pending.written = True
        if not store.acked_within(max(0.0, deadline - self._clock())):
            return self._waiting(pending, waited=timeout_s > 0)
        self._pending = None
        with self._lock:
            for state in pending.to_snapshot:
                key = (state.topic, state.partition)
                covered = pending.covers.get(key)
                if covered is None:
                    continue
                self._losses.snapshot_written(key, covered.next_offset)
                if self._owned(state):
                    state.snapshot_offset, state.label_snapshot = covered.next_offset, covered.label_next_offset
            self._counters.checkpoints += 1
            self._counters.snapshots_written += len(pending.covers)
            copy_store_counters(self._counters, store)
        self._unstall()
        commit_to = {**pending.commit_at, **pending.covers}
        # only what this checkpoint covers: never a partition's current position, which is past its snapshot
        to_commit = [s for s in pending.to_commit if self._owned(s) and s.key in commit_to]
        if to_commit and not self._consumer.memberid():
            with self._lock:
                self._counters.checkpoints_skipped += 1
            self._log.warning("not a group member any more: the snapshots are written, the commit of %d "
                              "partitions is skipped", len(to_commit))
            return True
        self.commit(to_commit, commit_to)
        return True

    def commit(self, states: Sequence[PartitionProgress],
               covers: Mapping[TopicPartitionKey, CoveredOffsets] | None = None) -> None:
        """Synchronously commit each state's next_offset, or what ``covers`` says its snapshot covers (only
        forwards). A failed commit is logged and retried at the next checkpoint; raises CommitError after
        ``max_consecutive_commit_failures`` in a row."""
        if not states:
            return
        covers = covers or {}
        positions = {s.key: covers.get(s.key, CoveredOffsets(s.next_offset, s.label_next)) for s in states}
        offsets = [TopicPartition(s.topic, s.partition, positions[s.key].next_offset) for s in states
                   if positions[s.key].next_offset > s.committed_offset]
        labels_topic = self._settings.ground_truth_topic
        if labels_topic is not None:
            offsets += [TopicPartition(labels_topic, s.partition, positions[s.key].label_next_offset)
                        for s in states if positions[s.key].label_next_offset > s.label_committed]
        if not offsets:
            return
        failures: list[str] = []
        result: list[TopicPartition] = []
        try:
            result = self._consumer.commit(offsets=offsets, asynchronous=False) or []
        except KafkaException as exc:
            failures.append(str(exc.args[0] if exc.args else exc))
        committed = {(tp.topic, tp.partition): tp.offset for tp in result if tp.error is None}
        failures += [f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in result if tp.error is not None]
        with self._lock:
            for state in states:
                offset = committed.get((state.topic, state.partition))
                if offset is not None and offset > state.committed_offset:
                    state.committed_offset = offset
                    key = (state.topic, state.partition)
                    self._losses.committed(key, offset)
                offset = committed.get((labels_topic, state.partition)) if labels_topic else None
                if offset is not None and offset > state.label_committed:
                    state.label_committed = offset
            if failures:
                self._counters.commit_failures += 1
        if not failures:
            self._consecutive_commit_failures = 0
            return
        self._consecutive_commit_failures += 1
        message = (
            f"offset commit failed ({self._consecutive_commit_failures} in a row): {'; '.join(failures)}; "
            "the snapshots cover the work, retrying at the next checkpoint"
        )
        if self._consecutive_commit_failures >= self._settings.max_consecutive_commit_failures:
            raise CommitError(message)
        self._log.warning(message)

    def shutdown(self, states: Sequence[PartitionProgress], grace_s: float) -> None:
        """The final checkpoint, within ``grace_s``; without it when the broker does not acknowledge in time
        (logged: nothing is committed past the last complete checkpoint)."""
        timeout_s = max(0.1, min(grace_s, self._settings.delivery_timeout_s))
        if not self.checkpoint(states, timeout_s):
            self._log.error(
                "stopping without the final checkpoint: the broker did not acknowledge it within %.0f s; nothing "
                "is committed past the last complete checkpoint (the next owner re-reads from there)", grace_s)

    def forget_pending(self) -> None:
        """Drop the pending checkpoint (the runner is closing: its deliveries are abandoned)."""
        self._pending = None

    def _observe_write(self, state: PartitionProgress, took: float, predicted: float | None) -> None:
        """Remember what ``state``'s snapshot took to write; log one that ran over its prediction by a lot."""
        self._write_costs.observe(state.key, took)
        if predicted is not None and took > OVERRUN_FACTOR * predicted and took - predicted > self.write_budget_s / 4:
            self._log.info("%s[%d]: writing its snapshot took %.2f s, predicted %.2f s from its last write (the "
                           "write budget per iteration is %.2f s)", state.topic, state.partition, took, predicted,
                           self.write_budget_s)

    def _owned(self, state: PartitionProgress) -> bool:
        return self._partitions.get((state.topic, state.partition)) is state

    def _waiting(self, pending: PendingCheckpoint, *, waited: bool) -> bool:
        """Not acknowledged yet: stall after a wait on the caller, or once in flight for ``stall_after_s``
        without progress (since it started or wrote its last snapshot).
        Returns False."""
        if waited or self._clock() - pending.progress_at >= pending.stall_after_s:
            return self._stall()
        return False

    def _stall(self) -> bool:
        if not self._stalled:
            pending = self._pending
            assert pending is not None
            self._stalled = True
            with self._lock:
                self._counters.checkpoint_stalls += 1
                self._counters.checkpoint_waiting_since = self._clock()
            self._on_stall_change()
            self._log.warning(
                "checkpoint waiting for the broker (%s not acknowledged): consumption of %d partitions paused, "
                "the client retries the deliveries with backoff for as long as it takes; nothing is committed "
                "meanwhile", "snapshots" if pending.written else "dead letters", len(self._partitions))
        return False

    def _unstall(self) -> None:
        if not self._stalled:
            return
        self._stalled = False
        with self._lock:
            since, self._counters.checkpoint_waiting_since = self._counters.checkpoint_waiting_since, None
        self._on_stall_change()
        self._log.warning("checkpoint acknowledged after waiting %.0f s for the broker: consumption resumed",
                          self._clock() - (since if since is not None else self._clock()))


__all__ = ["CheckpointSchedule", "Checkpointer", "CommitError", "RunnerError", "copy_store_counters"]
