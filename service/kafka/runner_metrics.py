"""What the consumer loop reports: its counters (:class:`RunnerMetrics`, one type, every count exported as
a Prometheus metric by service/observability/metrics.py) and what each batch did (:class:`BatchReport`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .circuit_breaker import CircuitState

TopicPartitionKey = tuple[str, int]


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


@dataclass(slots=True)
class RunnerMetrics:
    """The consumer loop's counters and state. The runner keeps one and updates it under its lock;
    ``ConsumerRunner.metrics()`` hands out a :meth:`copy` (safe from any thread: changing it changes
    nothing in the runner). Every ``int`` count below is exported (service/observability/metrics.py)."""

    events_processed: dict[TopicPartitionKey, int] = field(default_factory=dict)
    invalid_events: dict[TopicPartitionKey, int] = field(default_factory=dict)
    dead_letters_sent: int = 0  # dead letters produced (DeadLetterWriter.sent_total)
    batches: int = 0
    checkpoints: int = 0  # checkpoints whose snapshots the broker acknowledged
    checkpoints_skipped: int = 0  # checkpoints skipped because this member had left the group
    snapshots_written: int = 0  # partition snapshots acknowledged in those checkpoints
    snapshots_produced: int = 0  # snapshots handed to the producer (StateStore.written_total)
    snapshot_chunks_produced: int = 0  # their chunks (StateStore.chunks_written_total)
    snapshot_parts_produced: int = 0  # parts of them written once (StateStore.parts_written_total)
    snapshot_bytes_produced: int = 0  # bytes of those chunks, bodies and parts (StateStore.bytes_written_total)
    snapshot_tombstone_failures: int = 0  # stale chunks whose tombstone failed (StateStore.tombstone_failures_total)
    commit_failures: int = 0
    rebalances: int = 0
    lost_assignments: int = 0  # partitions lost (session timeout, max.poll.interval.ms): dropped, not committed
    offset_gaps: int = 0  # offsets the broker skipped (compaction, transaction markers, retention)
    statistics_undecodable: int = 0  # librdkafka statistics that could not be read (lag not updated from them)
    last_poll_monotonic: float | None = None  # clock time the last poll returned
    longest_poll_gap_s: float = 0.0  # longest time from a poll's return to the next poll's call, since start-up
    assigned: tuple[TopicPartitionKey, ...] = ()
    paused: bool = False
    next_offsets: dict[TopicPartitionKey, int] = field(default_factory=dict)
    committed_offsets: dict[TopicPartitionKey, int] = field(default_factory=dict)
    lag: dict[TopicPartitionKey, int] = field(default_factory=dict)
    circuit_state: str = CircuitState.CLOSED.value
    circuit_trips: int = 0
    circuit_reason: str = ""
    last_client_error: str = ""
    broker_reachable: bool | None = None  # None until the first statistics arrive
    group_member: bool = False  # a member id at the last poll (False after leaving or before joining the group)
    client_errors: int = 0  # client errors reported (each logged or counted, see client_log)
    checkpoint_stalls: int = 0  # checkpoints that paused consumption to wait for the broker
    checkpoint_waiting_since: float | None = None  # clock time the current stalled checkpoint began waiting
    held_pauses: int = 0  # times consumption paused because the events held for calibrations reached their budget
    held_paused: bool = False  # consumption paused for that now
    batches_cut: int = 0  # batches cut short at max_batch_s or a stop (the rest fetched again)
    state_losses: int = 0  # partitions found without their state or committed offsets (broker came back empty)
    state_loss_notes: tuple[str, ...] = ()  # the latest few, one line each

    def copy(self, **derived: object) -> RunnerMetrics:
        """A copy with its own dicts, and ``derived`` fields (offsets, lag, circuit...) replaced."""
        return dataclasses.replace(self, events_processed=dict(self.events_processed),
                                   invalid_events=dict(self.invalid_events), **derived)  # type: ignore[arg-type]


__all__ = ["BatchReport", "PartitionBatch", "RunnerMetrics", "TopicPartitionKey"]
