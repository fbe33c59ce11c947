"""The contract between the Kafka shell and the pure core.

The runner hands each partition's processor all of that partition's records of one consumed batch, in
offset order, once. The processor never sees Kafka: no consumer, no clock, no offsets to commit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message of a partition."""

    offset: int
    value: bytes | None
    key: bytes | None
    timestamp_ms: int | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record the processor refused; the runner sends it to the dead-letter topic.

    ``reason`` is a short code (``malformed_json``, ``wrong_embedding_size``...), ``detail`` one human line.
    """

    offset: int
    reason: str
    detail: str


class PartitionProcessor(Protocol):
    """The per-partition state machine the runner drives. One instance per assigned partition."""

    def process(self, records: Sequence[Record]) -> list[Rejected]:
        """Apply ``records`` (offset order) to the state; return those refused.

        Pure and non-blocking. May raise only on programming errors (the runner then stops without
        committing the batch).
        """
        ...

    def snapshot(self) -> bytes:
        """The whole partition state as safe, versioned bytes (never pickle)."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the state by one returned by :meth:`snapshot`; raise ValueError if unreadable."""
        ...


@runtime_checkable
class PartedPartitionProcessor(PartitionProcessor, Protocol):
    """A processor whose state splits into a small main body and content-addressed parts (one per model,
    one per reference profile...), so that a checkpoint writes only the parts that changed
    (service/kafka/snapshot_format.py, "Parts")."""

    def snapshot_parts(self) -> tuple[bytes, Mapping[str, bytes]]:
        """``(main, {part id: part bytes})``: the whole partition state, ``main`` referencing the parts by
        their ids (``snapshot_format.part_id``: the sha256 of the bytes, so equal content gives an equal id).
        The store reads the bytes only of the parts it has not written: the mapping may make them lazily."""
        ...

    def restore_parts(self, main: bytes, parts: dict[str, bytes]) -> None:
        """Replace the state by one returned by :meth:`snapshot_parts`; raise ValueError if unreadable."""
        ...


@runtime_checkable
class LabelledPartitionProcessor(PartitionProcessor, Protocol):
    """A processor that also takes the same partition of the ground-truth topic (see the runner)."""

    def process_labels(self, records: Sequence[Record]) -> list[Rejected]:
        """Apply ground-truth ``records`` (offset order) to the state; return those refused. Pure."""
        ...


#: ``(topic, partition) -> fresh processor``; called on assignment, before any restore.
ProcessorFactory = Callable[[str, int], PartitionProcessor]
