"""The consumer loop: poll batches, apply them per partition in slices, dead-letter, pause and resume.

The loop wires two helpers: :class:`~nlpmon.kafka.checkpoints.Checkpointer` (the checkpoint policy: when to
snapshot and commit, what stays pending while the broker has not acknowledged) and
:class:`~nlpmon.kafka.rebalance.Rebalancer` (the rebalance callbacks: where each assigned partition starts,
restoring its snapshot; revoked partitions checkpointed, lost ones dropped).

Checkpoint order, for the partitions that moved since the last checkpoint:

1. every dead letter produced so far is acknowledged,
2. each partition's snapshot (with the next offset it covers) is written and acknowledged,
3. the offsets are committed synchronously (committed = last processed offset + 1, never backwards).

A periodic checkpoint never waits for the broker on the loop: it produces the snapshots and is *in flight*
while the loop keeps polling and applying; each iteration looks at the acknowledgements without waiting, and
the one that finds them all commits what the snapshots cover (no new checkpoint starts meanwhile; see
:mod:`~nlpmon.kafka.checkpoints`). A delivery the broker refuses in 1 or 2 stops the runner before 3. A
delivery still unacknowledged is not a failure: the producer retries it for as long as the broker is away (no
message timeout), and ``min(delivery_timeout_s, max_batch_s)`` after the checkpoint started the loop pauses
consumption and keeps polling (heartbeats, rebalances, stop requests); it completes, and commits, when the
acknowledgements arrive. A failed commit loses nothing (the snapshot already covers the work and restore seeks to the
snapshot's offset) and is retried at the next checkpoint; after ``max_consecutive_commit_failures`` in a row
the runner stops.

**The loop's budget.** The loop aims to poll again within ``loop_budget_s`` (``poll_gap_target_s``, 0.5 s by
default, or ``max_batch_s`` if lower) of the last poll. A batch is applied in slices sized, from the cost of
recent slices, to take about half of it and to end by the batch's deadline: the poll + the budget, or + half
of it when a checkpoint writes snapshots in the same iteration (one is in flight with snapshots left to write,
or due; a checkpoint that becomes due during a batch that left it no time starts at the next iteration). Once
not even one record fits before the deadline (each batch applies at least one slice), or a stop is requested,
the rest of the batch is not applied: each partition is sought back to its first record left and fetched
again. The messages taken per poll follow the same cost (what fits in the batch's share, at most
``batch_size``), so cut batches stay rare. The checkpoint writes its partitions' snapshots for at most half
of the budget per iteration (at least one), and the caller's ``on_poll`` reads :attr:`ConsumerRunner.poll_due`
to spread its own work (events held for a calibration) over iterations.

**Back-pressure.** ``hold()`` (the service's: the events its monitors hold for pending calibrations are over
their memory budget) is asked after every poll; while it says so, the assigned partitions are paused as for
the breaker (the loop keeps polling, so the member stays in its group, and applies the calibrations that
finish, which frees the held events) and resumed when it no longer does. Nothing is skipped: a paused
partition is fetched again from its next offset.

**A broker that came back empty** (committed offsets lower than this process committed, a snapshot gone,
more partitions than before) is reported on assignment: a WARNING per partition, ``state_losses``, and a note
for /readyz. A snapshot that reached the new broker after the restart is restored and the new log read from
its start (:func:`~nlpmon.kafka.rebalance.plan_start`).

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
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from .checkpoints import Checkpointer, CheckpointSchedule, CommitError, RunnerError, copy_store_counters
from .circuit_breaker import CircuitBreaker
from .client_config import consumer_config, producer_config
from .client_log import CLIENT_LOG_LEVEL, ClientErrorGate
from .client_statistics import StatisticsReader
from .dead_letter import DeadLetterWriter
from .partition_progress import PartitionProgress, not_yet_applied
from .processor import (
    LabelledPartitionProcessor,
    ProcessorFactory,
    Record,
    Rejected,
)
from .rebalance import Rebalancer
from .runner_metrics import BatchReport, PartitionBatch, RunnerMetrics, TopicPartitionKey
from .settings import KafkaSettings
from .slicing import SliceSizer
from .state_loss import StateLossDetector
from .state_store import StateStore
from .topics import TopicSetup

_T = TypeVar("_T")
#: A loop iteration away from Kafka longer than this is logged with where the time went (the target of the
#: longest poll gap, issue 14).
SLOW_LOOP_S = 1.0
ConsumerFactory = Callable[[dict[str, Any]], Consumer]
ProducerFactory = Callable[[dict[str, Any]], Producer]


class ConsumerRunner:
    """Runs the consume -> process -> dead-letter -> snapshot -> commit loop for one group member.

    ``settings.bootstrap_servers`` must be set (see ``broker.bootstrap_servers_for``). ``on_batch`` is
    called on the loop thread after each processed batch, ``on_poll`` after every poll (also empty ones),
    for work that must happen when the stream is idle (refreshing reports); ``hold`` after it, True while
    consumption must pause for the processors to catch up (module docstring, "Back-pressure").
    ``clock`` drives checkpoint timing and the circuit breaker. ``consumer_factory``/``producer_factory``
    build the clients from a librdkafka config (tests inject failures through them).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        processor_factory: ProcessorFactory,
        *,
        on_batch: Callable[[BatchReport], None] | None = None,
        on_poll: Callable[[], None] | None = None,
        hold: Callable[[], bool] | None = None,
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
        self._hold = hold
        self._held = False  # hold() said so at the last poll: consumption paused for it
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
        # when the next checkpoint is due; the Checkpointer (built in run(), with the clients) runs them
        self._schedule = CheckpointSchedule(settings.checkpoint_interval_events, settings.checkpoint_interval_s,
                                            last_at=clock())
        self._checkpointer: Checkpointer | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._dead_letters: DeadLetterWriter | None = None
        self._store: StateStore | None = None
        self._gate = ClientErrorGate(self._log, where=f"Kafka at {self._bootstrap}", clock=clock)
        self._client_paused = False  # what the consumer was last told (pause for the breaker or a stall)
        self._stop_event: threading.Event | None = None
        self._stopping = False
        self._slices = SliceSizer(target_s=settings.loop_budget_s / 2)
        self._poll_due = clock()  # when the loop aims to poll again (the last poll + loop_budget_s)
        self._batch_applied = False  # has the batch being applied applied anything yet?
        self._cut_logged = False
        # this process's memory of each input partition, to notice a broker that lost them
        self._losses = StateLossDetector(settings.state_topic)

    # ------------------------------------------------------------------ public

    @property
    def circuit_breaker(self) -> CircuitBreaker:
        return self._breaker

    @property
    def poll_due(self) -> float:
        """When (``clock`` time) the loop aims to poll again: the last poll + ``loop_budget_s``
        (``poll_gap_target_s``). Work after the poll (``on_poll``) that can wait spreads over the next
        iterations once it is reached."""
        return self._poll_due

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
        consumption pauses (see :meth:`Checkpointer.checkpoint`); the runner does not stop for an outage.
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
        checkpointer = self._checkpointer = Checkpointer(
            settings, consumer=consumer, store=self._store, dead_letters=self._dead_letters,
            schedule=self._schedule, partitions=self._partitions, counters=self._counters, lock=self._lock,
            losses=self._losses, on_stall_change=self._apply_pause, clock=self._clock, logger=self._log)
        rebalance = Rebalancer(
            settings, self._factory, store=self._store, losses=self._losses, partitions=self._partitions,
            high_watermarks=self._hi_offsets, counters=self._counters, lock=self._lock,
            checkpoint=checkpointer.checkpoint, may_checkpoint=lambda: not self._failed and not self._stopping,
            consumption_paused=lambda: self._client_paused, logger=self._log)
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
        consumer.subscribe(topics, on_assign=self._marking_failure(rebalance.on_assign),
                           on_revoke=self._marking_failure(rebalance.on_revoke), on_lost=rebalance.on_lost)
        try:
            while not stop_event.is_set():
                self._poll_once()
            self._log.info("stop requested: checkpointing %d partitions", len(self._partitions))
            checkpointer.shutdown(list(self._partitions.values()), settings.shutdown_grace_s)
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
        checkpointer = self._require(self._checkpointer)
        # a checkpoint writing snapshots after this batch gets half of the iteration (module docstring)
        reserved = checkpointer.writes_next()
        share = settings.loop_budget_s / 2 if reserved else settings.loop_budget_s
        called = self._clock()
        messages = consumer.consume(num_messages=self._messages_within(share), timeout=settings.poll_timeout_s)
        now = self._clock()
        self._poll_due = now + settings.loop_budget_s
        member = bool(consumer.memberid())
        with self._lock:
            if self._counters.last_poll_monotonic is not None:  # the loop's time away from Kafka before this call
                gap = called - self._counters.last_poll_monotonic
                self._counters.longest_poll_gap_s = max(self._counters.longest_poll_gap_s, gap)
            self._counters.last_poll_monotonic = now
            self._counters.group_member = member
        if messages:
            self._process_batch(messages, now + share)
        processed = self._clock()
        if self._breaker.is_open and not self._paused and self._partitions:
            self._set_paused(
                True,
                f"circuit breaker OPEN ({self._breaker.last_reason}): pausing "
                f"{len(self._partitions)} partitions for {settings.circuit_pause_s:.0f} s; "
                f"rejected events are in {settings.dead_letter_topic}",
            )
        checkpointer.after_poll(list(self._partitions.values()), min(settings.delivery_timeout_s, settings.max_batch_s),
                                may_start=reserved or not messages)
        checked = self._clock()
        if self._on_poll is not None:
            self._on_poll()
        if self._hold is not None:
            self._set_held(self._hold())
        away = self._clock() - now
        if away > SLOW_LOOP_S:  # what held the next poll back, to find the cause of a long poll gap
            self._log.info("%.2f s away from Kafka after a poll: batch %.2f s (%d messages), checkpoint %.2f s, "
                           "after-poll work (held events, reports) %.2f s", away, processed - now, len(messages),
                           checked - processed, away - (checked - now))

    def _messages_within(self, seconds: float) -> int:
        """Messages to take in the next poll: what the recent slices say is applied in ``seconds`` (at least
        one, at most ``batch_size``; ``batch_size`` before anything is measured)."""
        cost = self._slices.cost()
        batch_size = self._settings.batch_size
        if cost is None:
            return batch_size
        return max(1, min(batch_size, cost.records_within(seconds)))

    def _process_batch(self, messages: Sequence[Message], deadline: float) -> None:
        """Apply a consumed batch, partition by partition, in slices sized to end by ``deadline`` (at least
        one slice per batch); stop there or at a stop request, and seek every partition with records left
        back to its first one not applied (they are fetched again), so that nlpmon's own work never holds the
        next poll back for long."""
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
        self._batch_applied = False
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
        """Apply ``records`` in slices sized to take about half of ``loop_budget_s`` each and to end by
        ``deadline``; stop when not even one record fits before it (once the batch applied something: each
        batch applies at least one slice) or a stop was requested. Returns the merged report of what was
        applied (None if nothing) and the offset of the first record left (None if none)."""
        done, events, rejected_total = 0, 0, 0
        stop = self._stop_event
        while done < len(records):
            if stop is not None and stop.is_set():
                break
            within = deadline - self._clock() if self._batch_applied else None
            size = self._slices.next_size(len(records) - done, within)
            if size <= 0:
                break
            self._batch_applied = True
            part = records[done : done + size]
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
            self._log.info(
                "a batch did not fit in the loop's budget (poll_gap_target_s=%.2f s, max_batch_s=%.1f s): the rest "
                "is fetched again after the next poll (logged once; counted in nlpmon_batches_cut_total)",
                self._settings.poll_gap_target_s, self._settings.max_batch_s)

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
        self._schedule.count(len(records))

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

    def _set_held(self, held: bool) -> None:
        if held == self._held:
            return
        with self._lock:
            self._held = self._counters.held_paused = held
            self._counters.held_pauses += held
        self._apply_pause()

    def _apply_pause(self) -> None:
        """Pause the assigned partitions while the breaker is open, a checkpoint waits for the broker or the
        processors hold too much (``hold``)."""
        want = self._paused or self._held or (self._checkpointer is not None and self._checkpointer.stalled)
        if want == self._client_paused:
            return
        consumer = self._require_consumer()
        partitions = [TopicPartition(t, p) for t, p in self._assigned_keys()]
        if partitions:
            (consumer.pause if want else consumer.resume)(partitions)
        self._client_paused = want

    def _close(self, consumer: Consumer, producer: Producer) -> None:
        try:
            consumer.close()  # runs on_revoke: a no-op after a clean shutdown, skipped after a failure
        except (KafkaException, RuntimeError) as exc:
            self._log.warning("closing the consumer: %s", exc)
        finally:
            settings = self._settings
            checkpointer = self._checkpointer
            unacknowledged = self._failed or (checkpointer is not None and checkpointer.pending)
            producer.flush(1.0 if unacknowledged else min(settings.delivery_timeout_s, settings.shutdown_grace_s))
            with self._lock:
                self._partitions.clear()
                self._paused = self._held = self._counters.held_paused = False
            if checkpointer is not None:
                checkpointer.forget_pending()
            if self._store is not None:
                with self._lock:
                    copy_store_counters(self._counters, self._store)
            self._consumer = self._producer = None
            self._dead_letters = self._store = None
            self._log.info("consumer closed")

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

    def _marking_failure(self, callback: Callable[[Consumer, list[TopicPartition]], None]
                       ) -> Callable[[Consumer, list[TopicPartition]], None]:
        """``callback`` marking the runner failed when it raises (the closing consumer then skips the revoke
        checkpoint and the producer is not waited for)."""

        def marked(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            try:
                callback(consumer, partitions)
            except BaseException:
                self._failed = True
                raise

        return marked

    def _require_consumer(self) -> Consumer:
        return self._require(self._consumer)

    @staticmethod
    def _require(value: _T | None) -> _T:
        if value is None:
            raise RuntimeError("the runner is not running")
        return value


__all__ = ["CommitError", "ConsumerRunner", "RunnerError"]  # the errors live in checkpoints; imported from here too
