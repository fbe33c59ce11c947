"""The consumer loop: batches in, per-partition processors, dead letters, snapshots, then commits.

Checkpoint order, for the partitions that moved since the last checkpoint:

1. every dead letter produced so far is acknowledged,
2. each partition's snapshot (with the next offset it covers) is written and acknowledged,
3. the offsets are committed synchronously (committed = last processed offset + 1, never backwards).

A failure in 1 or 2 stops the runner before 3. A failed commit loses nothing (the snapshot already covers
the work and restore seeks to the snapshot's offset) and is retried at the next checkpoint; after
``max_consecutive_commit_failures`` in a row the runner stops.

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
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
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

from service.kafka.circuit_breaker import CircuitBreaker, CircuitState
from service.kafka.dead_letter import DeadLetterWriter
from service.kafka.processor import (
    LabelledPartitionProcessor,
    PartitionProcessor,
    ProcessorFactory,
    Record,
    Rejected,
)
from service.kafka.publish import create_topic, topic_partition_count
from service.kafka.settings import KafkaSettings
from service.kafka.state_store import PartitionSnapshot, StateRestoreError, StateStore

_T = TypeVar("_T")
TopicPartitionKey = tuple[str, int]
ConsumerFactory = Callable[[dict[str, Any]], Consumer]
ProducerFactory = Callable[[dict[str, Any]], Producer]


class RunnerError(RuntimeError):
    """The runner stopped without committing past the last safe checkpoint."""


class CommitError(RunnerError):
    """Offset commits kept failing."""


class TopicSetupError(RunnerError):
    """An input, state or dead-letter topic is missing or has the wrong shape."""


@dataclass(frozen=True, slots=True)
class PartitionBatch:
    """What one consumed batch did to one partition."""

    topic: str
    partition: int
    events: int
    rejected: int
    first_offset: int
    next_offset: int


@dataclass(frozen=True, slots=True)
class BatchReport:
    """Passed to ``on_batch`` after each non-empty batch is processed (before any checkpoint it triggers)."""

    partitions: tuple[PartitionBatch, ...]
    circuit_state: CircuitState


@dataclass(frozen=True, slots=True)
class RunnerMetrics:
    """A consistent copy of the counters, for the metrics layer and health checks (any thread)."""

    events_processed: dict[TopicPartitionKey, int]
    invalid_events: dict[TopicPartitionKey, int]
    dead_letters_sent: int
    batches: int
    checkpoints: int
    checkpoints_skipped: int
    snapshots_written: int
    commit_failures: int
    rebalances: int
    lost_assignments: int
    offset_gaps: int
    last_poll_monotonic: float | None
    assigned: tuple[TopicPartitionKey, ...]
    paused: bool
    next_offsets: dict[TopicPartitionKey, int]
    committed_offsets: dict[TopicPartitionKey, int]
    lag: dict[TopicPartitionKey, int]
    circuit_state: str
    circuit_trips: int
    circuit_reason: str
    last_client_error: str
    broker_reachable: bool | None  # None until the first statistics arrive


@dataclass(slots=True)
class _PartitionState:
    topic: str
    partition: int
    processor: PartitionProcessor
    next_offset: int  # first offset not yet applied; -1 = unknown until the first record arrives
    snapshot_offset: int  # next_offset covered by the last acknowledged (or restored) snapshot; -1 = none
    committed_offset: int  # last committed next offset; -1 = none
    # the same three for partition `partition` of the ground-truth topic (all -1 without one)
    label_next: int = -1
    label_snapshot: int = -1
    label_committed: int = -1

    def moved(self) -> bool:
        """Has anything been applied since the last snapshot?"""
        return self.next_offset > self.snapshot_offset or self.label_next > self.label_snapshot

    def uncommitted(self) -> bool:
        return self.next_offset > self.committed_offset or self.label_next > self.label_committed


@dataclass(slots=True)
class _Counters:
    events: dict[TopicPartitionKey, int] = field(default_factory=dict)
    invalid: dict[TopicPartitionKey, int] = field(default_factory=dict)
    batches: int = 0
    dead_letters: int = 0
    snapshots: int = 0
    checkpoints: int = 0
    checkpoints_skipped: int = 0
    commit_failures: int = 0
    rebalances: int = 0
    lost: int = 0
    offset_gaps: int = 0
    hi_offsets: dict[TopicPartitionKey, int] = field(default_factory=dict)
    last_poll: float | None = None
    last_client_error: str = ""
    broker_up: bool | None = None  # from librdkafka statistics: any broker connection in state UP


class _StatsPartition(msgspec.Struct):
    hi_offset: int = -1


class _StatsTopic(msgspec.Struct):
    partitions: dict[str, _StatsPartition] = {}


class _StatsBroker(msgspec.Struct):
    state: str = ""


class _Stats(msgspec.Struct):
    topics: dict[str, _StatsTopic] = {}
    brokers: dict[str, _StatsBroker] = {}


_stats_decoder = msgspec.json.Decoder(_Stats)


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
        self._counters = _Counters()
        self._partitions: dict[TopicPartitionKey, _PartitionState] = {}
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

    # ------------------------------------------------------------------ public

    @property
    def circuit_breaker(self) -> CircuitBreaker:
        return self._breaker

    def metrics(self) -> RunnerMetrics:
        """A copy of every counter; safe from any thread, costs a lock and a few dict copies."""
        with self._lock:
            c = self._counters
            next_offsets = {k: s.next_offset for k, s in self._partitions.items() if s.next_offset >= 0}
            labels_topic = self._settings.ground_truth_topic
            label_next = {(labels_topic, p): s.label_next for (_, p), s in self._partitions.items()
                          if labels_topic is not None and s.label_next >= 0}
            next_offsets.update(label_next)
            lag = {
                k: max(0, c.hi_offsets[k] - offset)
                for k, offset in next_offsets.items()
                if c.hi_offsets.get(k, -1) >= 0
            }
            return RunnerMetrics(
                events_processed=dict(c.events),
                invalid_events=dict(c.invalid),
                dead_letters_sent=c.dead_letters,
                batches=c.batches,
                checkpoints=c.checkpoints,
                checkpoints_skipped=c.checkpoints_skipped,
                snapshots_written=c.snapshots,
                commit_failures=c.commit_failures,
                rebalances=c.rebalances,
                lost_assignments=c.lost,
                offset_gaps=c.offset_gaps,
                last_poll_monotonic=c.last_poll,
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
                last_client_error=c.last_client_error,
                broker_reachable=c.broker_up,
            )

    def _assigned_keys(self) -> list[TopicPartitionKey]:
        keys = list(self._partitions)
        labels_topic = self._settings.ground_truth_topic
        if labels_topic is not None:
            keys += [(labels_topic, p) for _, p in self._partitions]
        return keys

    def run(self, stop_event: threading.Event) -> None:
        """Consume until ``stop_event`` is set, then finish the in-flight batch, checkpoint and close.

        Blocks the calling thread; once per instance. Creates the dead-letter and state topics if
        missing (when allowed).
        Raises TopicSetupError, StateRestoreError, DeliveryError, CommitError or a processor's exception;
        in every error case nothing is committed past the last complete checkpoint.
        """
        if self._started:
            raise RuntimeError("ConsumerRunner.run() runs once per instance; build a new runner")
        self._started = True
        settings = self._settings
        self._prepare_topics()
        common = {
            **settings.librdkafka_options,
            "bootstrap.servers": self._bootstrap,
            "client.id": settings.client_id,
        }
        producer = self._producer_factory(
            {
                "linger.ms": 5,
                **common,
                **settings.producer_options,
                "enable.idempotence": True,
                "acks": "all",
                "message.timeout.ms": int(settings.delivery_timeout_s * 1000),
                "error_cb": self._on_client_error,
            }
        )
        consumer = self._consumer_factory(
            {
                "auto.offset.reset": "earliest",
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": settings.effective_heartbeat_ms(),
                "max.poll.interval.ms": settings.max_poll_interval_ms,
                "statistics.interval.ms": settings.statistics_interval_ms,
                **common,
                **settings.consumer_options,
                "group.id": settings.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "stats_cb": self._on_stats,
                "error_cb": self._on_client_error,
                **({"partition.assignment.strategy": "range"} if settings.ground_truth_topic else {}),
            }
        )
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
            client_options={**settings.librdkafka_options, "client.id": settings.client_id},
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
            self._shutdown(self._clock() + settings.shutdown_grace_s)
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
        with self._lock:
            self._counters.last_poll = now
        if messages:
            self._process_batch(messages)
        if self._breaker.is_open and not self._paused and self._partitions:
            self._set_paused(
                True,
                f"circuit breaker OPEN ({self._breaker.last_reason}): pausing "
                f"{len(self._partitions)} partitions for {settings.circuit_pause_s:.0f} s; "
                f"rejected events are in {settings.dead_letter_topic}",
            )
        due = (
            self._events_since_checkpoint >= settings.checkpoint_interval_events
            or self._clock() - self._last_checkpoint >= settings.checkpoint_interval_s
        )
        if due:
            self._checkpoint(list(self._partitions.values()), self._settings.delivery_timeout_s)
        if self._on_poll is not None:
            self._on_poll()

    def _process_batch(self, messages: Sequence[Message]) -> None:
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
        reports: list[PartitionBatch] = []
        key: TopicPartitionKey
        labels_topic = self._settings.ground_truth_topic
        for key, records in grouped.items():
            if key[0] == labels_topic:
                report = self._process_labels(key, records)
                if report is not None:
                    reports.append(report)
                continue
            state = self._partitions.get(key)
            if state is None:
                continue  # fetched before a revocation: the new owner reads it again
            if state.next_offset >= 0 and records[0].offset < state.next_offset:
                records = [r for r in records if r.offset >= state.next_offset]  # already in the state
                if not records:
                    continue
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
            rejected = state.processor.process(records)
            with self._lock:
                state.next_offset = records[-1].offset + 1
            reports.append(self._account(key, records, rejected, state.next_offset))
        with self._lock:
            self._counters.batches += 1
        if reports and self._on_batch is not None:
            self._on_batch(BatchReport(tuple(reports), self._breaker.state))

    def _process_labels(self, key: TopicPartitionKey, records: list[Record]) -> PartitionBatch | None:
        """Hand ground-truth records to the processor of the same input partition."""
        state = self._partitions.get((self._settings.topic, key[1]))
        if state is None:
            return None  # fetched before a revocation: the new owner reads it again
        if state.label_next >= 0 and records[0].offset < state.label_next:
            records = [r for r in records if r.offset >= state.label_next]  # already in the state
            if not records:
                return None
        processor = state.processor
        assert isinstance(processor, LabelledPartitionProcessor)  # checked on assignment
        rejected = processor.process_labels(records)
        with self._lock:
            state.label_next = records[-1].offset + 1
        return self._account(key, records, rejected, state.label_next)

    def _account(self, key: TopicPartitionKey, records: list[Record], rejected: list[Rejected],
                 next_offset: int) -> PartitionBatch:
        """Dead-letter the rejected records, feed the circuit breaker, count; the batch's report."""
        self._require(self._dead_letters).send(key[0], key[1], records, rejected)
        if rejected:
            rejected_offsets = {r.offset for r in rejected}
            self._breaker.observe(bytes(r.offset in rejected_offsets for r in records))
        else:
            self._breaker.observe(bytes(len(records)))
        with self._lock:
            c = self._counters
            c.events[key] = c.events.get(key, 0) + len(records)
            c.invalid[key] = c.invalid.get(key, 0) + len(rejected)
            c.dead_letters += len(rejected)
        self._events_since_checkpoint += len(records)
        return PartitionBatch(key[0], key[1], len(records), len(rejected), records[0].offset, next_offset)

    def _on_message_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        with self._lock:
            self._counters.last_client_error = error.str()
        if error.fatal():
            raise KafkaException(error)
        self._log.warning("consumer: %s", error.str())

    def _set_paused(self, paused: bool, message: str) -> None:
        consumer = self._require_consumer()
        partitions = [TopicPartition(t, p) for t, p in self._partitions]
        if partitions:
            (consumer.pause if paused else consumer.resume)(partitions)
        with self._lock:
            self._paused = paused
        (self._log.error if paused else self._log.info)(message)

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint(self, states: Sequence[_PartitionState], timeout_s: float) -> None:
        """Dead letters acked -> snapshots acked -> commit. Raises DeliveryError before any commit."""
        self._events_since_checkpoint = 0
        self._last_checkpoint = self._clock()
        to_snapshot = [s for s in states if s.moved()]
        to_commit = [s for s in states if s.uncommitted()]
        if not to_snapshot and not to_commit:
            return
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
            return
        store = self._require(self._store)
        self._require(self._dead_letters).wait_all_acked(timeout_s)
        for state in to_snapshot:
            # labels may move before the first input record: offset 0 then means "from the start"
            # (an offset below the log start resets to earliest, as an unknown position would)
            store.write(PartitionSnapshot(state.topic, state.partition, max(state.next_offset, 0),
                                          state.processor.snapshot(), state.label_next))
        store.wait_all_acked(timeout_s)
        with self._lock:
            for state in to_snapshot:
                state.snapshot_offset = state.next_offset
                state.label_snapshot = state.label_next
            self._counters.checkpoints += 1
            self._counters.snapshots += len(to_snapshot)
        self._commit(to_commit)

    def _commit(self, states: Sequence[_PartitionState]) -> None:
        """Synchronously commit each state's next_offset (only forwards). Raises CommitError after too
        many consecutive failures."""
        if not states:
            return
        consumer = self._require_consumer()
        offsets = [TopicPartition(s.topic, s.partition, s.next_offset) for s in states
                   if s.next_offset > s.committed_offset]
        labels_topic = self._settings.ground_truth_topic
        if labels_topic is not None:
            offsets += [TopicPartition(labels_topic, s.partition, s.label_next) for s in states
                        if s.label_next > s.label_committed]
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

    def _shutdown(self, deadline: float) -> None:
        remaining = max(0.1, deadline - self._clock())
        self._checkpoint(list(self._partitions.values()), min(self._settings.delivery_timeout_s, remaining))

    def _close(self, consumer: Consumer, producer: Producer) -> None:
        try:
            consumer.close()  # runs on_revoke: a no-op after a clean shutdown, skipped after a failure
        except (KafkaException, RuntimeError) as exc:
            self._log.warning("closing the consumer: %s", exc)
        finally:
            settings = self._settings
            producer.flush(
                1.0 if self._failed else min(settings.delivery_timeout_s, settings.shutdown_grace_s)
            )
            with self._lock:
                self._partitions.clear()
                self._paused = False
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
        states: dict[TopicPartitionKey, _PartitionState] = {}
        for tp in inputs:
            key = (tp.topic, tp.partition)
            processor = self._factory(tp.topic, tp.partition)
            if labels_topic is not None and not isinstance(processor, LabelledPartitionProcessor):
                raise TypeError(f"{type(processor).__name__} has no process_labels(); it cannot take {labels_topic}")
            committed_offset = committed.get(key, OFFSET_INVALID)
            committed_offset = committed_offset if committed_offset >= 0 else -1
            snapshot = snapshots.get(key)
            if snapshot is not None:
                try:
                    processor.restore(snapshot.payload)
                except ValueError as exc:
                    raise StateRestoreError(
                        f"snapshot of {tp.topic}[{tp.partition}] rejected: {exc}"
                    ) from exc
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
            state = states[key] = _PartitionState(
                tp.topic, tp.partition, processor, start, snapshot_offset, committed_offset
            )
            label_tp = label_tps.get(tp.partition)
            if label_tp is not None:
                self._place_labels(state, label_tp, snapshot, committed.get((label_tp.topic, label_tp.partition)))
        consumer.assign(partitions)
        with self._lock:
            self._partitions.update(states)
            self._counters.rebalances += 1
            paused = self._paused
        if paused:
            consumer.pause(partitions)
        self._log.info(
            "assigned %s",
            ", ".join(
                f"{t}[{p}]@{s.next_offset if s.next_offset >= 0 else 'reset'}" for (t, p), s in states.items()
            )
            or "nothing",
        )

    def _place_labels(self, state: _PartitionState, tp: TopicPartition, snapshot: PartitionSnapshot | None,
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
            if not self._failed and states:
                self._checkpoint(states, self._settings.delivery_timeout_s)
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
            self._counters.lost += 1
        self._log.warning(
            "lost %s (session timeout or max.poll.interval.ms): dropped their state without committing",
            ", ".join(f"{t}[{p}]" for t, p in keys),
        )

    def _drop(self, keys: Sequence[TopicPartitionKey]) -> None:
        """Forget the partitions (a label partition goes with the input partition of its number)."""
        with self._lock:
            for key in keys:
                self._partitions.pop(key, None)
                self._counters.hi_offsets.pop(key, None)
                if key[0] == self._settings.ground_truth_topic:
                    self._partitions.pop((self._settings.topic, key[1]), None)

    # ------------------------------------------------------------------ client callbacks

    def _on_stats(self, raw: str) -> None:
        """librdkafka statistics: keep each assigned partition's high watermark (from fetches)."""
        try:
            stats = _stats_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        with self._lock:
            self._counters.broker_up = any(b.state == "UP" for b in stats.brokers.values())
            names = [self._settings.topic] + [t for t in (self._settings.ground_truth_topic,) if t is not None]
            for name in names:
                topic = stats.topics.get(name)
                if topic is None:
                    continue
                for number, partition in topic.partitions.items():
                    key = (name, int(number))
                    if (self._settings.topic, key[1]) in self._partitions and partition.hi_offset >= 0:
                        self._counters.hi_offsets[key] = partition.hi_offset

    def _on_client_error(self, error: KafkaError) -> None:
        with self._lock:
            self._counters.last_client_error = error.str()
        self._log.warning("kafka client: %s", error.str())

    # ------------------------------------------------------------------ set-up

    def _prepare_topics(self) -> None:
        settings = self._settings
        options = {**settings.librdkafka_options, "client.id": settings.client_id}
        try:
            partitions = topic_partition_count(self._bootstrap, settings.topic, client_options=options)
        except KafkaException as exc:
            raise TopicSetupError(
                f"cannot reach Kafka at {self._bootstrap} ({exc.args[0].str() if exc.args else exc}); "
                "check bootstrap_servers and that the broker is up"
            ) from None
        if partitions is None:
            raise TopicSetupError(
                f"input topic {settings.topic} does not exist on {self._bootstrap}; create it first "
                "(its partition count sets the parallelism)"
            )
        for name, config in (
            (settings.state_topic, {"cleanup.policy": "compact"}),
            (settings.dead_letter_topic, {}),
            *([(settings.ground_truth_topic, {})] if settings.ground_truth_topic else []),
        ):
            existing = topic_partition_count(self._bootstrap, name, client_options=options)
            if name == settings.ground_truth_topic and existing is not None and existing != partitions:
                raise TopicSetupError(
                    f"ground-truth topic {name} has {existing} partitions but {settings.topic} has {partitions}; "
                    "they must match (labels of a model must land on its predictions' partition)"
                )
            if existing is None:
                if not settings.create_missing_topics:
                    raise TopicSetupError(f"topic {name} does not exist and create_missing_topics is off")
                create_topic(self._bootstrap, name, partitions, config, client_options=options)
            elif name == settings.state_topic and existing < partitions:
                raise TopicSetupError(
                    f"state topic {name} has {existing} partitions but {settings.topic} has {partitions}; "
                    "add partitions to the state topic"
                )

    def _require_consumer(self) -> Consumer:
        return self._require(self._consumer)

    @staticmethod
    def _require(value: _T | None) -> _T:
        if value is None:
            raise RuntimeError("the runner is not running")
        return value
