"""The consumer loop: batches in, per-partition processors, dead letters, snapshots, then commits.

Checkpoint order, for the partitions that moved since the last checkpoint:

1. every dead letter produced so far is acknowledged,
2. each partition's snapshot (with the next offset it covers) is written and acknowledged,
3. the offsets are committed synchronously (committed = last processed offset + 1, never backwards).

A delivery the broker refuses in 1 or 2 stops the runner before 3. A delivery still unacknowledged is not a
failure: the producer retries it for as long as the broker is away (no message timeout), and after
``min(delivery_timeout_s, max_batch_s)`` the checkpoint stays pending while the loop pauses consumption and
keeps polling (heartbeats, rebalances, stop requests); it completes, and commits, when the acknowledgements
arrive. A failed commit loses nothing (the snapshot already covers the work and restore seeks to the
snapshot's offset) and is retried at the next checkpoint; after ``max_consecutive_commit_failures`` in a row
the runner stops.

**Batches** are applied in slices; once ``max_batch_s`` has passed since the poll, or a stop is requested,
the rest of the batch is not applied: each partition is sought back to its first record left and fetched
again, so the loop polls in time to stay in the group and stops within a slice.

**A broker that came back empty** (committed offsets lower than this process committed, a snapshot gone,
more partitions than before) is reported on assignment: a WARNING per partition, ``state_losses``, and a note
for /readyz. A snapshot that reached the new broker after the restart is restored and the new log read from
its start.

Checkpoints happen every ``checkpoint_interval_events`` events or ``checkpoint_interval_s`` seconds, on
revocation, and on shutdown. On assignment each partition's latest snapshot is restored into a fresh
processor and consumption starts at its ``next_offset``. Lost partitions are dropped without a commit.

**Ground truth.** With ``ground_truth_topic`` set, the runner also subscribes to it. Both topics are keyed
by model and have the same partition count, and the range assignor gives partition ``p`` of both to one
member, so the records of label partition ``p`` go to the processor of input partition ``p``
(``process_labels``). That processor's snapshot covers both: its header carries ``label_next_offset``,
restore seeks the label partition there, and a checkpoint commits both offsets after the one snapshot is
acknowledged. A crash therefore neither loses nor double-joins a label.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from service.errors import UserError
from service.kafka.circuit_breaker import CircuitBreaker
from service.kafka.client_config import consumer_config, producer_config
from service.kafka.client_log import CLIENT_LOG_LEVEL, ClientErrorGate
from service.kafka.client_statistics import StatisticsReader
from service.kafka.dead_letter import DeadLetterWriter
from service.kafka.partition_progress import CoveredOffsets, PartitionProgress, PendingCheckpoint, not_yet_applied
from service.kafka.processor import (
    LabelledPartitionProcessor,
    ProcessorFactory,
    Record,
    Rejected,
)
from service.kafka.runner_metrics import BatchReport, PartitionBatch, RunnerMetrics, TopicPartitionKey
from service.kafka.settings import KafkaSettings
from service.kafka.slicing import SliceSizer
from service.kafka.snapshot_format import PartitionSnapshot
from service.kafka.state_loss import StateLossDetector
from service.kafka.state_store import StateRestoreError, StateStore
from service.kafka.topics import TopicSetup, TopicSetupError

_T = TypeVar("_T")
ConsumerFactory = Callable[[dict[str, Any]], Consumer]
ProducerFactory = Callable[[dict[str, Any]], Producer]


class RunnerError(UserError, RuntimeError):
    """The runner stopped without committing past the last safe checkpoint."""


class CommitError(RunnerError):
    """Offset commits kept failing."""


#: State-loss notes kept for /readyz.
_MAX_LOSS_NOTES = 5


class ConsumerRunner:
    """Runs the consume -> process -> dead-letter -> snapshot -> commit loop for one group member.

    ``settings.bootstrap_servers`` must be set (see ``broker.bootstrap_servers_for``). ``on_batch`` is
    called on the loop thread after each processed batch, ``on_poll`` after every poll (also empty ones),
    for work that must happen when the stream is idle (refreshing reports). ``clock`` drives checkpoint timing and the
    circuit breaker. ``consumer_factory``/``producer_factory`` build the clients from a librdkafka config
    (tests inject failures through them).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        processor_factory: ProcessorFactory,
        *,
        on_batch: Callable[[BatchReport], None] | None = None,
        on_poll: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
        consumer_factory: ConsumerFactory = Consumer,
        producer_factory: ProducerFactory = Producer,
    ) -> None:
        if settings.bootstrap_servers is None:
            raise ValueError(
                "ConsumerRunner needs settings.bootstrap_servers; use broker.bootstrap_servers_for"
            )
        self._settings = settings
        self._bootstrap: str = settings.bootstrap_servers
        self._factory = processor_factory
        self._on_batch = on_batch
        self._on_poll = on_poll
        self._clock = clock
        self._log = logger or logging.getLogger(__name__)
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self._breaker = CircuitBreaker(
            window_events=settings.circuit_window_events,
            min_events=settings.circuit_min_events,
            max_invalid_ratio=settings.circuit_max_invalid_ratio,
            max_consecutive_invalid=settings.circuit_max_consecutive_invalid,
            pause_s=settings.circuit_pause_s,
            clock=clock,
        )
        self._lock = threading.Lock()
        self._counters = RunnerMetrics()  # counts and state; metrics() copies it with the derived fields
        self._hi_offsets: dict[TopicPartitionKey, int] = {}  # high watermarks from the statistics
        self._statistics = StatisticsReader(self._log)
        self._partitions: dict[TopicPartitionKey, PartitionProgress] = {}
        self._paused = False
        self._started = False
        self._failed = False
        self._consecutive_commit_failures = 0
        self._events_since_checkpoint = 0
        self._last_checkpoint = clock()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._dead_letters: DeadLetterWriter | None = None
        self._store: StateStore | None = None
        self._gate = ClientErrorGate(self._log, where=f"Kafka at {self._bootstrap}", clock=clock)
        self._pending: PendingCheckpoint | None = None
        self._stalled = False
        self._client_paused = False  # what the consumer was last told (pause for the breaker or a stall)
        self._stop_event: threading.Event | None = None
        self._stopping = False
        self._slices = SliceSizer(target_s=settings.max_batch_s / 8)
        self._cut_logged = False
        # this process's memory of each input partition, to notice a broker that lost them
        self._losses = StateLossDetector(settings.state_topic)

    # ------------------------------------------------------------------ public

    @property
    def circuit_breaker(self) -> CircuitBreaker:
        return self._breaker

    def metrics(self) -> RunnerMetrics:
        """A copy of every counter; safe from any thread, costs a lock and a few dict copies."""
        with self._lock:
            next_offsets = {k: s.next_offset for k, s in self._partitions.items() if s.next_offset >= 0}
            labels_topic = self._settings.ground_truth_topic
            label_next = {(labels_topic, p): s.label_next for (_, p), s in self._partitions.items()
                          if labels_topic is not None and s.label_next >= 0}
            next_offsets.update(label_next)
            lag = {
                k: max(0, self._hi_offsets[k] - offset)
                for k, offset in next_offsets.items()
                if self._hi_offsets.get(k, -1) >= 0
            }
            return self._counters.copy(
                assigned=tuple(sorted(self._assigned_keys())),
                paused=self._paused,
                next_offsets=next_offsets,
                committed_offsets={
                    **{k: s.committed_offset for k, s in self._partitions.items()},
                    **{(labels_topic, p): s.label_committed for (_, p), s in self._partitions.items()
                       if labels_topic is not None},
                },
                lag=lag,
                circuit_state=self._breaker.state.value,
                circuit_trips=self._breaker.trips,
                circuit_reason=self._breaker.last_reason,
                client_errors=self._gate.errors_total,
                statistics_undecodable=self._statistics.undecodable,
            )

    def _assigned_keys(self) -> list[TopicPartitionKey]:
        keys = list(self._partitions)
        labels_topic = self._settings.ground_truth_topic
        if labels_topic is not None:
            keys += [(labels_topic, p) for _, p in self._partitions]
        return keys

    def run(self, stop_event: threading.Event) -> None:
        """Consume until ``stop_event`` is set, then checkpoint what is applied and close.

        Blocks the calling thread; once per instance. Creates the dead-letter and state topics if
        missing (when allowed). A stop is seen between slices of a batch (the rest of the batch is not
        applied) and the final checkpoint is bounded by ``shutdown_grace_s``: if the broker does not
        acknowledge it in time the runner stops without it (nothing committed past the last complete one).
        While the broker is away, deliveries are retried by the client for as long as it takes and
        consumption pauses (see :meth:`_checkpoint`); the runner does not stop for an outage.
        Raises TopicSetupError, StateRestoreError, DeliveryError (a delivery the broker refused), CommitError
        or a processor's exception; in every error case nothing is committed past the last complete checkpoint.
        """
        if self._started:
            raise RuntimeError("ConsumerRunner.run() runs once per instance; build a new runner")
        self._started = True
        self._stop_event = stop_event
        settings = self._settings
        self._prepare_topics()
        producer = self._producer_factory(producer_config(settings, self._bootstrap, self._on_client_error))
        consumer = self._consumer_factory(
            consumer_config(settings, self._bootstrap, self._on_stats, self._on_client_error))
        self._producer, self._consumer = producer, consumer
        self._dead_letters = DeadLetterWriter(
            producer,
            settings.dead_letter_topic,
            queue_timeout_s=settings.delivery_timeout_s,
            clock=self._clock,
        )
        self._store = StateStore(
            bootstrap_servers=self._bootstrap,
            state_topic=settings.state_topic,
            group_id=settings.group_id,
            producer=producer,
            client_options={"log_level": CLIENT_LOG_LEVEL, **settings.client_options()},
            restore_timeout_s=settings.restore_timeout_s,
            queue_timeout_s=settings.delivery_timeout_s,
            max_snapshot_bytes=settings.max_snapshot_bytes,
            chunk_bytes=settings.snapshot_chunk_bytes,
            clock=self._clock,
            logger=self._log,
        )
        self._log.info(
            "consuming %s as group %s from %s (batch %d, checkpoint every %d events or %.0f s)",
            settings.topic,
            settings.group_id,
            self._bootstrap,
            settings.batch_size,
            settings.checkpoint_interval_events,
            settings.checkpoint_interval_s,
        )
        topics = [settings.topic] + ([settings.ground_truth_topic] if settings.ground_truth_topic else [])
        consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        try:
            while not stop_event.is_set():
                self._poll_once()
            self._log.info("stop requested: checkpointing %d partitions", len(self._partitions))
            self._shutdown(settings.shutdown_grace_s)
            self._stopping = True  # closing revokes the partitions: their checkpoint is the one just made
        except BaseException:
            self._failed = True
            self._log.error("runner failed: nothing is committed past the last complete checkpoint")
            raise
        finally:
            self._close(consumer, producer)

    # ------------------------------------------------------------------ loop

    def _poll_once(self) -> None:
        consumer = self._require_consumer()
        settings = self._settings
        if self._paused and not self._breaker.is_open:
            self._set_paused(False, "circuit breaker half-open: resuming consumption for a trial batch")
        messages = consumer.consume(num_messages=settings.batch_size, timeout=settings.poll_timeout_s)
        now = self._clock()
        member = bool(consumer.memberid())
        with self._lock:
            self._counters.last_poll_monotonic = now
            self._counters.group_member = member
        if messages:
            self._process_batch(messages, now)
        if self._breaker.is_open and not self._paused and self._partitions:
            self._set_paused(
                True,
                f"circuit breaker OPEN ({self._breaker.last_reason}): pausing "
                f"{len(self._partitions)} partitions for {settings.circuit_pause_s:.0f} s; "
                f"rejected events are in {settings.dead_letter_topic}",
            )
        if self._pending is not None:
            self._advance_pending(0.0)  # a stalled checkpoint: has the broker acknowledged it by now?
        elif (
            self._events_since_checkpoint >= settings.checkpoint_interval_events
            or self._clock() - self._last_checkpoint >= settings.checkpoint_interval_s
        ):
            self._checkpoint(list(self._partitions.values()), min(settings.delivery_timeout_s, settings.max_batch_s))
        if self._on_poll is not None:
            self._on_poll()

    def _process_batch(self, messages: Sequence[Message], polled_at: float) -> None:
        """Apply a consumed batch, partition by partition, in slices; stop at ``max_batch_s`` after the poll
        or at a stop request, and seek every partition with records left back to its first one not applied
        (they are fetched again), so that nlpmon's own work never holds the next poll back for long."""
        # Messages without an error always have topic, partition and offset; typed loosely for speed.
        grouped: dict[Any, list[Record]] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                self._on_message_error(error)
                continue
            kind, timestamp = message.timestamp()
            record = Record(
                message.offset(),  # type: ignore[arg-type]
                message.value(),
                message.key(),
                None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp,
            )
            message_key = (message.topic(), message.partition())
            bucket = grouped.get(message_key)
            if bucket is None:
                grouped[message_key] = [record]
            else:
                bucket.append(record)
        deadline = polled_at + self._settings.max_batch_s
        keys = list(grouped)
        if len(keys) > 1:  # start with another partition each batch: a slow one cannot starve the others
            turn = self._counters.batches % len(keys)
            keys = keys[turn:] + keys[:turn]
        reports: list[PartitionBatch] = []
        cut: list[TopicPartition] = []
        labels_topic = self._settings.ground_truth_topic
        key: TopicPartitionKey
        for key in keys:
            records = grouped[key]
            if key[0] == labels_topic:
                report, rest = self._process_labels(key, records, deadline)
            else:
                report, rest = self._process_input(key, records, deadline)
            if report is not None:
                reports.append(report)
            if rest is not None:
                cut.append(TopicPartition(key[0], key[1], rest))
        if cut:
            self._seek_back(cut)
        with self._lock:
            self._counters.batches += 1
        if reports and self._on_batch is not None:
            self._on_batch(BatchReport(tuple(reports), self._breaker.state))

    def _process_input(self, key: TopicPartitionKey, records: list[Record],
                       deadline: float) -> tuple[PartitionBatch | None, int | None]:
        state = self._partitions.get(key)
        if state is None:
            return None, None  # fetched before a revocation: the new owner reads it again
        records = not_yet_applied(records, state.next_offset)
        if not records:
            return None, None
        if state.next_offset >= 0 and records[0].offset > state.next_offset:
            self._log.warning(
                "%s[%d]: offsets %d..%d skipped by the broker (compaction, transaction markers or "
                "retention)",
                key[0],
                key[1],
                state.next_offset,
                records[0].offset - 1,
            )
            with self._lock:
                self._counters.offset_gaps += 1

        def applied(next_offset: int) -> None:
            state.next_offset = next_offset

        return self._apply_slices(key, records, state.processor.process, applied, deadline)

    def _process_labels(self, key: TopicPartitionKey, records: list[Record],
                        deadline: float) -> tuple[PartitionBatch | None, int | None]:
        """Hand ground-truth records to the processor of the same input partition."""
        state = self._partitions.get((self._settings.topic, key[1]))
        if state is None:
            return None, None  # fetched before a revocation: the new owner reads it again
        records = not_yet_applied(records, state.label_next)
        if not records:
            return None, None
        processor = state.processor
        assert isinstance(processor, LabelledPartitionProcessor)  # checked on assignment

        def applied(next_offset: int) -> None:
            state.label_next = next_offset

        return self._apply_slices(key, records, processor.process_labels, applied, deadline)

    def _apply_slices(self, key: TopicPartitionKey, records: list[Record],
                      process: Callable[[list[Record]], list[Rejected]], applied: Callable[[int], None],
                      deadline: float) -> tuple[PartitionBatch | None, int | None]:
        """Apply ``records`` in slices sized to take about an eighth of ``max_batch_s`` each; before each
        slice, stop if the batch is out of time or a stop was requested. Returns the merged report of what
        was applied (None if nothing) and the offset of the first record left (None if none)."""
        done, events, rejected_total = 0, 0, 0
        while done < len(records):
            if self._must_yield(deadline):
                break
            part = records[done : done + self._slices.next_size(len(records) - done)]
            started = self._clock()
            rejected = process(part)
            self._slices.observe(len(part), self._clock() - started)
            with self._lock:
                applied(part[-1].offset + 1)
            self._account(key, part, rejected)
            done += len(part)
            events += len(part)
            rejected_total += len(rejected)
        rest = records[done].offset if done < len(records) else None
        if not done:
            return None, rest
        return PartitionBatch(key[0], key[1], events, rejected_total, records[0].offset,
                              records[done - 1].offset + 1), rest

    def _must_yield(self, deadline: float) -> bool:
        stop = self._stop_event
        return (stop is not None and stop.is_set()) or self._clock() >= deadline

    def _seek_back(self, positions: list[TopicPartition]) -> None:
        """Fetch the records not applied again: seek each partition to its first one left."""
        consumer = self._require_consumer()
        for tp in positions:
            try:
                consumer.seek(tp)
            except KafkaException as exc:  # not assigned any more: its next owner reads it
                self._log.warning("%s[%d]: cannot seek back to %d: %s", tp.topic, tp.partition, tp.offset, exc)
        with self._lock:
            self._counters.batches_cut += 1
        stopping = self._stop_event is not None and self._stop_event.is_set()
        if not self._cut_logged and not stopping:
            self._cut_logged = True
            self._log.warning(
                "a batch took over max_batch_s=%.1f s: the rest is fetched again after the next poll (logged "
                "once; counted in nlpmon_batches_cut_total)", self._settings.max_batch_s)

    def _account(self, key: TopicPartitionKey, records: list[Record], rejected: list[Rejected]) -> None:
        """Dead-letter the rejected records, feed the circuit breaker, count."""
        dead_letters = self._require(self._dead_letters)
        dead_letters.send(key[0], key[1], records, rejected)
        if rejected:
            rejected_offsets = {r.offset for r in rejected}
            self._breaker.observe(bytes(r.offset in rejected_offsets for r in records))
        else:
            self._breaker.observe(bytes(len(records)))
        with self._lock:
            c = self._counters
            c.events_processed[key] = c.events_processed.get(key, 0) + len(records)
            c.invalid_events[key] = c.invalid_events.get(key, 0) + len(rejected)
            c.dead_letters_sent = dead_letters.sent_total
        self._events_since_checkpoint += len(records)

    def _on_message_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        with self._lock:
            self._counters.last_client_error = error.str()
        if error.fatal():
            raise KafkaException(error)
        self._gate.error(error)

    def _set_paused(self, paused: bool, message: str) -> None:
        with self._lock:
            self._paused = paused
        self._apply_pause()
        (self._log.error if paused else self._log.info)(message)

    def _apply_pause(self) -> None:
        """Pause the assigned partitions while the breaker is open or a checkpoint waits for the broker."""
        want = self._paused or self._stalled
        if want == self._client_paused:
            return
        consumer = self._require_consumer()
        partitions = [TopicPartition(t, p) for t, p in self._assigned_keys()]
        if partitions:
            (consumer.pause if want else consumer.resume)(partitions)
        self._client_paused = want

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint(self, states: Sequence[PartitionProgress], timeout_s: float) -> bool:
        """Dead letters acked -> snapshots acked -> commit. Returns True when done (or nothing to do), False
        when it waits for the broker: consumption is then paused and each poll looks again (the client
        retries the deliveries for as long as the broker is away); a commit happens only once the
        acknowledgements arrived. Blocks up to about ``timeout_s`` (twice that when an earlier checkpoint
        was still waiting). Raises DeliveryError for a delivery the broker refused, before any commit."""
        self._events_since_checkpoint = 0
        self._last_checkpoint = self._clock()
        deadline = self._last_checkpoint + timeout_s
        if self._pending is not None and not self._advance_pending(timeout_s):
            return False
        to_snapshot = [s for s in states if s.moved()]
        to_commit = [s for s in states if s.uncommitted()]
        if not to_snapshot and not to_commit:
            return True
        if not self._require_consumer().memberid():
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
        self._pending = PendingCheckpoint(to_snapshot, to_commit)
        return self._advance_pending(max(0.0, deadline - self._clock()))

    def _owned(self, state: PartitionProgress) -> bool:
        return self._partitions.get((state.topic, state.partition)) is state

    def _advance_pending(self, timeout_s: float) -> bool:
        """Move the pending checkpoint on as far as the acknowledgements allow within ``timeout_s``."""
        pending = self._pending
        assert pending is not None
        deadline = self._clock() + timeout_s
        store = self._require(self._store)
        if not pending.written:
            if not self._require(self._dead_letters).acked_within(timeout_s):
                return self._stall()
            for state in pending.to_snapshot:
                if not self._owned(state):
                    continue  # lost or revoked while waiting: its next owner has its own state
                # labels may move before the first input record: offset 0 then means "from the start"
                # (an offset below the log start resets to earliest, as an unknown position would)
                next_offset = max(state.next_offset, 0)
                store.write(PartitionSnapshot(state.topic, state.partition, next_offset,
                                              state.processor.snapshot(), state.label_next))
                pending.covers[state.key] = CoveredOffsets(state.next_offset, state.label_next)
            pending.written = True
        if not store.acked_within(max(0.0, deadline - self._clock())):
            return self._stall()
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
            self._copy_store_counters(store)
        self._unstall()
        to_commit = [s for s in pending.to_commit if self._owned(s)]
        if to_commit and not self._require_consumer().memberid():
            with self._lock:
                self._counters.checkpoints_skipped += 1
            self._log.warning("not a group member any more: the snapshots are written, the commit of %d "
                              "partitions is skipped", len(to_commit))
            return True
        self._commit(to_commit, pending.covers)
        return True

    def _stall(self) -> bool:
        if not self._stalled:
            pending = self._require(self._pending)
            self._stalled = True
            with self._lock:
                self._counters.checkpoint_stalls += 1
                self._counters.checkpoint_waiting_since = self._clock()
            self._apply_pause()
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
        self._apply_pause()
        self._log.warning("checkpoint acknowledged after waiting %.0f s for the broker: consumption resumed",
                          self._clock() - (since if since is not None else self._clock()))

    def _commit(self, states: Sequence[PartitionProgress],
                covers: dict[TopicPartitionKey, CoveredOffsets] | None = None) -> None:
        """Synchronously commit each state's next_offset, or what ``covers`` says its snapshot covers (only
        forwards). Raises CommitError after too many consecutive failures."""
        if not states:
            return
        covers = covers or {}
        consumer = self._require_consumer()
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
            result = consumer.commit(offsets=offsets, asynchronous=False) or []
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

    def _shutdown(self, grace_s: float) -> None:
        """The final checkpoint, within ``grace_s``; without it when the broker does not acknowledge in time."""
        timeout_s = max(0.1, min(grace_s, self._settings.delivery_timeout_s))
        if not self._checkpoint(list(self._partitions.values()), timeout_s):
            self._log.error(
                "stopping without the final checkpoint: the broker did not acknowledge it within %.0f s; nothing "
                "is committed past the last complete checkpoint (the next owner re-reads from there)", grace_s)

    def _close(self, consumer: Consumer, producer: Producer) -> None:
        try:
            consumer.close()  # runs on_revoke: a no-op after a clean shutdown, skipped after a failure
        except (KafkaException, RuntimeError) as exc:
            self._log.warning("closing the consumer: %s", exc)
        finally:
            settings = self._settings
            unacknowledged = self._failed or self._pending is not None
            producer.flush(1.0 if unacknowledged else min(settings.delivery_timeout_s, settings.shutdown_grace_s))
            with self._lock:
                self._partitions.clear()
                self._paused = False
            self._pending = None
            if self._store is not None:
                with self._lock:
                    self._copy_store_counters(self._store)
            self._consumer = self._producer = None
            self._dead_letters = self._store = None
            self._log.info("consumer closed")

    # ------------------------------------------------------------------ rebalance callbacks

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Restore each partition's latest snapshot into a fresh processor and start at its offset."""
        try:
            self._assign(consumer, partitions)
        except BaseException:
            self._failed = True
            raise

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        store = self._require(self._store)
        labels_topic = self._settings.ground_truth_topic
        label_tps = {tp.partition: tp for tp in partitions if tp.topic == labels_topic}
        inputs = [tp for tp in partitions if tp.topic != labels_topic]
        if labels_topic is not None and set(label_tps) != {tp.partition for tp in inputs}:
            raise TopicSetupError(
                f"assigned {self._settings.topic} partitions {sorted(tp.partition for tp in inputs)} but "
                f"{labels_topic} partitions {sorted(label_tps)}: both topics need the same partition count and "
                "every group member the range assignor (partition.assignment.strategy=range)"
            )
        by_topic: dict[str, list[int]] = {}
        for tp in inputs:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        snapshots = {
            (topic, p): snap
            for topic, ps in by_topic.items()
            for p, snap in store.read_latest(topic, ps).items()
        }
        committed_list = consumer.committed(partitions, timeout=self._settings.restore_timeout_s)
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
            committed_offset = committed.get(key, OFFSET_INVALID)
            committed_offset = committed_offset if committed_offset >= 0 else -1
            snapshot = snapshots.get(key)
            if self._state_lost(tp, snapshot, committed_offset, partition_count) and snapshot is not None:
                # the snapshot reached the broker after it restarted: its offsets are those of the old log
                try:
                    processor.restore(snapshot.payload)
                except ValueError as exc:
                    raise StateRestoreError(self._rejected(tp, exc)) from exc
                tp.offset = OFFSET_BEGINNING
                # snapshot offset -2: the next checkpoint writes the state at "the start of the new log" (0),
                # so that no later assignment restores the old log's offset
                states[key] = PartitionProgress(tp.topic, tp.partition, processor, -1, -2, -1)
                label_tp = label_tps.get(tp.partition)
                if label_tp is not None:
                    label_tp.offset = OFFSET_BEGINNING
                continue
            if snapshot is not None:
                try:
                    processor.restore(snapshot.payload)
                except ValueError as exc:
                    raise StateRestoreError(self._rejected(tp, exc)) from exc
                tp.offset = start = snapshot.next_offset
                if committed_offset > start:
                    self._log.warning(
                        "%s[%d]: snapshot covers up to %d but offset %d is committed; "
                        "re-reading from the snapshot",
                        tp.topic,
                        tp.partition,
                        start,
                        committed_offset,
                    )
                snapshot_offset = start
            elif committed_offset >= 0:
                self._log.warning(
                    "%s[%d]: no snapshot in %s; starting with empty state at committed offset %d",
                    tp.topic,
                    tp.partition,
                    self._settings.state_topic,
                    committed_offset,
                )
                tp.offset = start = committed_offset
                snapshot_offset = -1
            else:
                tp.offset = OFFSET_INVALID  # auto.offset.reset decides (earliest by default)
                start = snapshot_offset = -1
            state = states[key] = PartitionProgress(
                tp.topic, tp.partition, processor, start, snapshot_offset, committed_offset
            )
            label_tp = label_tps.get(tp.partition)
            if label_tp is not None:
                self._place_labels(state, label_tp, snapshot, committed.get((label_tp.topic, label_tp.partition)))
        self._losses.input_partitions = partition_count
        consumer.assign(partitions)
        with self._lock:
            self._partitions.update(states)
            self._counters.rebalances += 1
        # paused while the breaker is open or a checkpoint waits for the broker; else resumed explicitly: the
        # client keeps a partition's pause across a lost assignment
        (consumer.pause if self._client_paused else consumer.resume)(partitions)
        self._log.info(
            "assigned %s",
            ", ".join(
                f"{t}[{p}]@{s.next_offset if s.next_offset >= 0 else 'reset'}" for (t, p), s in states.items()
            )
            or "nothing",
        )

    def _rejected(self, tp: TopicPartition, exc: Exception) -> str:
        return (f"snapshot of {tp.topic}[{tp.partition}] in {self._settings.state_topic} rejected by the processor "
                f"({exc}); run the nlpmon version that wrote it, or delete that partition's snapshots "
                "(StateStore.delete) to start it from scratch at its committed offset")

    def _state_lost(self, tp: TopicPartition, snapshot: PartitionSnapshot | None, committed: int,
                    partition_count: int | None) -> bool:
        """Did the broker lose this partition's state or offsets since this process last saw them (a broker
        that came back empty, or topics recreated)? Warns, counts and keeps a note for /readyz when so."""
        note = self._losses.check((tp.topic, tp.partition), snapshot, committed, partition_count)
        if note is None:
            return False
        with self._lock:
            self._counters.state_losses += 1
            self._counters.state_loss_notes = (*self._counters.state_loss_notes, note)[-_MAX_LOSS_NOTES:]
        self._log.warning("%s: the broker restarted empty or the topics were recreated; check the broker's "
                          "storage (nlpmon_state_losses_total, /readyz notes)", note)
        return True

    def _place_labels(self, state: PartitionProgress, tp: TopicPartition, snapshot: PartitionSnapshot | None,
                      committed: int | None) -> None:
        """Where the label partition starts: the snapshot's label offset, else the committed one, else reset."""
        state.label_committed = committed if committed is not None and committed >= 0 else -1
        if snapshot is not None:
            # the state holds exactly the labels below the snapshot's label offset (none when it has none)
            start = snapshot.label_next_offset
            tp.offset = start if start >= 0 else OFFSET_BEGINNING
            state.label_next = state.label_snapshot = start
        elif state.label_committed >= 0:
            tp.offset = state.label_next = state.label_committed  # no snapshot at all: as for the input
        else:
            tp.offset = OFFSET_INVALID

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Checkpoint (snapshot + commit) the revoked partitions, then drop their state."""
        keys = [(tp.topic, tp.partition) for tp in partitions]
        states = [self._partitions[k] for k in keys if k in self._partitions]  # input partitions only
        try:
            checkpoint = not self._failed and not self._stopping and states
            if checkpoint and not self._checkpoint(states, self._settings.delivery_timeout_s):
                    self._log.warning("revoked %d partitions while their checkpoint waits for the broker: dropped "
                                  "without a commit (the next owner restores the last acknowledged snapshot)",
                                  len(states))
        except BaseException:
            self._failed = True
            raise
        finally:
            self._drop(keys)
        self._log.info("revoked %s", ", ".join(f"{t}[{p}]" for t, p in keys) or "nothing")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group moved on without us: commit nothing, drop the state (the new owner restores it)."""
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._drop(keys)
        with self._lock:
            self._counters.lost_assignments += 1
        self._log.warning(
            "lost %s (session timeout or max.poll.interval.ms): dropped their state without committing",
            ", ".join(f"{t}[{p}]" for t, p in keys),
        )

    def _drop(self, keys: Sequence[TopicPartitionKey]) -> None:
        """Forget the partitions (a label partition goes with the input partition of its number)."""
        with self._lock:
            for key in keys:
                self._partitions.pop(key, None)
                self._hi_offsets.pop(key, None)
                if key[0] == self._settings.ground_truth_topic:
                    self._partitions.pop((self._settings.topic, key[1]), None)

    # ------------------------------------------------------------------ client callbacks

    def _on_stats(self, raw: str) -> None:
        """librdkafka statistics: keep each assigned partition's high watermark (from fetches)."""
        stats = self._statistics.read(raw)
        if stats is None:
            return  # counted and logged once by the reader
        up = stats.broker_up()
        if up:
            self._gate.reachable()
        with self._lock:
            self._counters.broker_reachable = up
            names = [self._settings.topic] + [t for t in (self._settings.ground_truth_topic,) if t is not None]
            for name in names:
                topic = stats.topics.get(name)
                if topic is None:
                    continue
                for number, partition in topic.partitions.items():
                    key = (name, int(number))
                    if (self._settings.topic, key[1]) in self._partitions and partition.hi_offset >= 0:
                        self._hi_offsets[key] = partition.hi_offset

    def _on_client_error(self, error: KafkaError) -> None:
        """error_cb of both clients: one log line per broker state change (see client_log), all counted."""
        with self._lock:
            self._counters.last_client_error = error.str()
        self._gate.error(error)

    # ------------------------------------------------------------------ set-up

    def _prepare_topics(self) -> None:
        self._losses.input_partitions = TopicSetup(self._settings).prepare()

    def _copy_store_counters(self, store: StateStore) -> None:
        """The state store's own counts into the runner's (under the lock)."""
        c = self._counters
        c.snapshots_produced = store.written_total
        c.snapshot_chunks_produced = store.chunks_written_total
        c.snapshot_tombstone_failures = store.tombstone_failures_total

    def _require_consumer(self) -> Consumer:
        return self._require(self._consumer)

    @staticmethod
    def _require(value: _T | None) -> _T:
        if value is None:
            raise RuntimeError("the runner is not running")
        return value
