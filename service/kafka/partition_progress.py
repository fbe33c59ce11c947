"""Where each assigned partition stands: applied, snapshotted and committed offsets, and a pending
checkpoint's bookkeeping. Plain data, no Kafka calls."""

from __future__ import annotations

from dataclasses import dataclass, field

from .processor import PartitionProcessor, Record
from .runner_metrics import TopicPartitionKey


@dataclass(slots=True)
class PartitionProgress:
    """One input partition (and the ground-truth partition of the same number) and its processor."""

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

    @property
    def key(self) -> TopicPartitionKey:
        return self.topic, self.partition

    def moved(self) -> bool:
        """Has anything been applied since the last snapshot?"""
        return self.next_offset > self.snapshot_offset or self.label_next > self.label_snapshot

    def uncommitted(self) -> bool:
        """Is anything applied and not committed?"""
        return self.next_offset > self.committed_offset or self.label_next > self.label_committed


@dataclass(frozen=True, slots=True)
class CoveredOffsets:
    """The next offsets a written snapshot covers: input partition and ground-truth partition (-1: none)."""

    next_offset: int
    label_next_offset: int


@dataclass(slots=True)
class PendingCheckpoint:
    """A checkpoint waiting for acknowledgements: first the dead letters, then the snapshots it writes.

    ``started_at`` (clock time) and ``stall_after_s``: how long it may stay in flight without progress while
    the loop keeps consuming before it stalls (0: at once); ``progress_at``: when it last made progress (it
    started, or wrote a snapshot), from which that time counts, so that writing a large checkpoint over
    many iterations is not a stall, nor is the time its last snapshot took to write.
    ``commit_at``: what a partition in ``to_commit`` but not in
    ``to_snapshot`` may commit, read when the checkpoint started (its last acknowledged snapshot covers it;
    the partition may move on while the checkpoint is in flight). ``covers``: what each written snapshot
    covers (each is read when its snapshot is written: with ``write_budget_s`` the snapshots of one
    checkpoint may be written over several loop iterations)."""

    to_snapshot: list[PartitionProgress]
    to_commit: list[PartitionProgress]
    started_at: float = 0.0
    stall_after_s: float = 0.0
    progress_at: float = 0.0
    commit_at: dict[TopicPartitionKey, CoveredOffsets] = field(default_factory=dict)
    covers: dict[TopicPartitionKey, CoveredOffsets] = field(default_factory=dict)
    write_budget_s: float | None = None  # time on the loop per call to write snapshots; None: all at once
    next_to_write: int = 0  # index in to_snapshot of the next snapshot to write
    written: bool = False


def not_yet_applied(records: list[Record], next_offset: int) -> list[Record]:
    """``records`` from ``next_offset`` on (a re-read after a seek or restore repeats the ones already in the
    state); all of them when the position is unknown (-1). Records arrive in offset order."""
    if next_offset >= 0 and records and records[0].offset < next_offset:
        return [r for r in records if r.offset >= next_offset]
    return records


__all__ = ["CoveredOffsets", "PartitionProgress", "PendingCheckpoint", "not_yet_applied"]
