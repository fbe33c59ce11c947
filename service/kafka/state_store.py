"""Per-partition snapshots in a compacted Kafka topic, each stored together with the offset it covers: the
Kafka I/O (writing chunks, tombstoning old ones, reading the latest back). The bytes and keys are those of
service/kafka/snapshot_format.py (body, chunks, why every chunk has its own key).

**Restore** reads the state partition to its end and keeps, per key, the last value (a null value deletes
the key): exactly what compaction keeps, so compaction, whenever it runs, does not change the result (as
long as a restore takes less than the topic's ``delete.retention.ms``, 24 h by default). It groups the
chunks by snapshot id and takes, newest first (by the offset of its last chunk), the first snapshot that
is complete, whose length and sha256 match and whose body decodes and describes this partition. An
incomplete snapshot (a crash mid-write) is skipped with a warning, and so is a corrupt one; a corrupt one
is an error (StateRestoreError) only when no valid snapshot is left, because starting empty would silently
lose the state. Single-message snapshots of the first format (the body alone under the key
``<group>/<topic>/<p>``) are still read, and deleted like the others; older builds cannot read chunked
snapshots (no downgrade past this format).

**The guarantee, after compaction.** The runner writes a checkpoint's snapshots, waits until every chunk
is acknowledged, and only then commits. The store tombstones a valid snapshot only once at least
``keep_snapshots`` newer complete ones exist (torn or corrupt ones found on restore go after the next
acknowledged snapshot), so it never deletes the newest acknowledged one. So once a partition
has committed an offset, its state partition holds at least one complete acknowledged snapshot covering
that offset or more, whatever compaction did, and restore uses it or something newer (a snapshot that was
written completely but whose acknowledgement never arrived, which covers more). A torn newest snapshot
falls back to the newest acknowledged one; a corrupt newest one to the previous one (``keep_snapshots``
>= 2), whose ``next_offset`` may lie below the committed offset: the runner then re-reads from the
snapshot's offset (the input topic must still hold it). "No snapshot" with a committed offset happens only
when the snapshots were deleted on purpose (:meth:`StateStore.delete`) or the log lost data; the runner
then starts empty at the committed offset. Every snapshot carries the offset it covers, so any complete
snapshot is self-consistent: restoring it and reading on from ``next_offset`` applies each event to the
state exactly once, whatever the group's committed offset says.

**Parts** (snapshot_format: content-addressed pieces of a state, e.g. one per model and one per reference
profile). The store writes a part once per lineage (its own run over one assignment of the partition) and
afterwards only the bodies that reference it, so a checkpoint writes what changed. A part stays while a
kept snapshot references it; once none does (after an acknowledgement) it is tombstoned with them. After a
restore the store starts a new lineage: the first snapshot rewrites every part under new keys, and the
restored snapshot's parts go with it when it falls out of the kept ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from ..errors import UserError
from .client_config import restore_consumer_config
from .publish import DeliveryError, DeliveryTracker, produce_with_backpressure
from .snapshot_format import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_KEEP_SNAPSHOTS,
    DEFAULT_MAX_SNAPSHOT_BYTES,
    MIN_CHUNK_BYTES,
    PartitionSnapshot,
    SnapshotTooLargeError,
    StateKey,
    base_key_of,
    encode_chunks,
    new_lineage,
    part_chunks,
    select_latest,
    snapshot_body_length,
    snapshot_key,
)

ConsumerFactory = Callable[[dict[str, Any]], Consumer]


class StateRestoreError(UserError, RuntimeError):
    """The latest snapshot of a partition could not be read in time or is unreadable."""


@dataclass(frozen=True, slots=True)
class _Written:
    """One snapshot written (or restored): the keys of its chunks (a restored one: also of its parts) and
    the ids of the parts of this writer's lineage that it references."""

    keys: tuple[bytes, ...]
    parts: frozenset[str] = frozenset()


class StateStore:
    """Writes chunked snapshots through a shared producer and reads the latest ones back on assignment.

    Keeps the newest ``keep_snapshots`` acknowledged snapshots of each partition and tombstones the older
    ones (see the module doc). Not thread-safe: one runner thread uses it (delivery callbacks run inside
    its producer calls).
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        state_topic: str,
        group_id: str,
        producer: Producer,
        client_options: Mapping[str, Any] | None = None,
        restore_timeout_s: float = 30.0,
        queue_timeout_s: float = 30.0,
        max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
        consumer_factory: ConsumerFactory = Consumer,
    ) -> None:
        if chunk_bytes < MIN_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes={chunk_bytes} is below the minimum of {MIN_CHUNK_BYTES}")
        if keep_snapshots < 1:
            raise ValueError(f"keep_snapshots={keep_snapshots}: keep at least the newest snapshot")
        self._bootstrap = bootstrap_servers
        self._topic = state_topic
        self._group = group_id
        self._producer = producer
        self._client_options = dict(client_options or {})
        self._consumer_factory = consumer_factory
        self._restore_timeout_s = restore_timeout_s
        self._queue_timeout_s = queue_timeout_s
        self._max_bytes = max_snapshot_bytes
        self._chunk_bytes = chunk_bytes
        self._keep = keep_snapshots
        self._clock = clock
        self._log = logger or logging.getLogger(__name__)
        self._tracker = DeliveryTracker(name=f"snapshots to {state_topic}")
        # Per partition: the keys of the snapshots kept (acknowledged or restored, oldest first), of the
        # snapshots written since the last acknowledgement (in order), and the keys to tombstone once a
        # newer snapshot is acknowledged (found on restore, torn writes, tombstones that failed to send).
        self._kept: dict[StateKey, list[_Written]] = {}
        self._unacked: dict[StateKey, list[_Written]] = {}
        self._garbage: dict[StateKey, list[bytes]] = {}
        # Per partition: this writer's lineage and the parts written under it (part id -> chunk keys).
        self._lineage: dict[StateKey, str] = {}
        self._parts: dict[StateKey, dict[str, tuple[bytes, ...]]] = {}
        self.written_total = 0
        self.chunks_written_total = 0
        self.parts_written_total = 0  # parts produced (each once per lineage)
        self.bytes_written_total = 0  # chunk value bytes produced (bodies and parts)
        self.tombstones_written_total = 0
        self.tombstone_failures_total = 0

    @property
    def topic(self) -> str:
        return self._topic

    def write(self, snapshot: PartitionSnapshot) -> None:
        """Produce ``snapshot`` as chunks to its state partition (asynchronous; see :meth:`wait_all_acked`).

        Its parts that this writer's lineage has not written yet go first, each under its own keys (only
        their bytes are read from ``snapshot.parts``, whose ids are taken as their sha256, not hashed again:
        a ``PartSet`` took them of the same bytes); the body references them all. Raises
        SnapshotTooLargeError (a ValueError) when the body and the parts to write exceed
        ``max_snapshot_bytes``, DeliveryError when the producer queue stays full, KafkaException when the
        client refuses a chunk (larger than its ``message.max.bytes``). After an error the chunks of an
        unfinished part or body are garbage, tombstoned after the partition's next acknowledged snapshot.
        """
        state_key = (snapshot.topic, snapshot.partition)
        lineage = self._lineage.setdefault(state_key, new_lineage()) if snapshot.parts else ""
        written = self._parts.setdefault(state_key, {})
        new = {pid: snapshot.parts[pid] for pid in snapshot.parts if pid not in written}  # made only if new
        size = snapshot_body_length(snapshot, lineage) + sum(len(data) for data in new.values())
        if size > self._max_bytes:
            raise SnapshotTooLargeError(
                f"snapshot of {snapshot.topic}[{snapshot.partition}] is {size:,} bytes to write, over "
                f"max_snapshot_bytes={self._max_bytes:,}; the processor state must shrink (or raise the limit)"
            )
        base = snapshot_key(self._group, snapshot.topic, snapshot.partition)
        produced: list[bytes] = []
        try:
            for pid, data in new.items():
                chunks = part_chunks(data, base, lineage, chunk_bytes=self._chunk_bytes, pid=pid)
                written[pid] = self._produce_chunks(snapshot.partition, chunks, produced)
                produced = []
                self.parts_written_total += 1
            chunks = encode_chunks(snapshot, base, chunk_bytes=self._chunk_bytes, lineage=lineage)
            keys = self._produce_chunks(snapshot.partition, chunks, produced)
        except BaseException:
            self._garbage.setdefault(state_key, []).extend(produced)
            raise
        self._unacked.setdefault(state_key, []).append(_Written(keys, frozenset(snapshot.parts)))
        self.written_total += 1

    def _produce_chunks(self, partition: int, chunks: list[tuple[bytes, bytes]],
                        produced: list[bytes]) -> tuple[bytes, ...]:
        """Produce ``chunks`` in order, appending each key to ``produced`` (what an error leaves behind)."""
        for key, value in chunks:
            self._produce(partition, key, value, self._tracker.on_delivery)
            self._tracker.produced += 1
            produced.append(key)
            self.chunks_written_total += 1
            self.bytes_written_total += len(value)
        return tuple(key for key, _ in chunks)

    def wait_all_acked(self, timeout_s: float) -> None:
        """Block until every chunk written so far is acknowledged (flushes the shared producer), then
        tombstone the snapshots that fall out of the newest ``keep_snapshots`` of their partition, and the
        garbage (without waiting for those tombstones: a lost one only leaves garbage behind).

        Raises DeliveryError if a chunk failed or is unacknowledged after ``timeout_s``; nothing is
        tombstoned then.
        """
        self._tracker.wait_all_acked(self._producer, timeout_s)
        self._acknowledged()

    def acked_within(self, timeout_s: float) -> bool:
        """Like :meth:`wait_all_acked`, but returns False instead of raising while chunks are still pending
        (the client keeps retrying them; call again later). DeliveryError only for a failed delivery."""
        if not self._tracker.acked_within(self._producer, timeout_s):
            return False
        self._acknowledged()
        return True

    def _acknowledged(self) -> None:
        """Every chunk written so far is acknowledged: keep the newest snapshots, tombstone the rest."""
        unacked, self._unacked = self._unacked, {}
        for state_key, writes in unacked.items():
            kept = self._kept.get(state_key, []) + writes
            self._kept[state_key] = kept[-self._keep :]
            stale = self._garbage.pop(state_key, []) + [key for w in kept[: -self._keep] for key in w.keys]
            parts = self._parts.get(state_key, {})
            referenced = frozenset().union(*(w.parts for w in self._kept[state_key]))
            for pid in [pid for pid in parts if pid not in referenced]:
                stale += parts.pop(pid)
            self._tombstone(state_key, stale)

    def read_latest(self, topic: str, partitions: Iterable[int]) -> dict[int, PartitionSnapshot]:
        """The latest valid snapshot of each ``topic[p]`` (absent when there is none or it was deleted).

        Reads state partitions ``p`` from their start to their end (partition EOF, never the watermark
        answer, which Tansu gets wrong for batched writes) with a private assign-only consumer that never
        commits. Remembers the restored snapshot as kept, and every other key read (torn, corrupt or older
        snapshots) as garbage to tombstone after the partition's next acknowledged snapshot. Blocks up to
        ``restore_timeout_s``; raises StateRestoreError on timeout, on a broker error, or when no valid
        snapshot is left but a corrupt one is.
        """
        live = self._scan(topic, partitions)
        result: dict[int, PartitionSnapshot] = {}
        for partition, records in live.items():
            base = snapshot_key(self._group, topic, partition)
            selection = select_latest(topic, partition, base, records)
            own = set(selection.snapshot_keys)
            unacked = [key for w in self._unacked.pop((topic, partition), []) for key in w.keys]
            # a new lineage: parts written before (under an earlier assignment) are garbage unless restored
            self._lineage.pop((topic, partition), None)
            unacked += [key for keys in self._parts.pop((topic, partition), {}).values() for key in keys]
            self._kept[(topic, partition)] = [_Written(selection.snapshot_keys)] if own else []
            self._garbage[(topic, partition)] = [
                key for key in dict.fromkeys((*selection.keys, *unacked)) if key not in own
            ]
            for reason in selection.skipped:
                self._log.warning("%s[%d] in %s: skipped %s", topic, partition, self._topic, reason)
            if selection.unreadable:
                raise StateRestoreError(
                    f"no readable snapshot of {topic}[{partition}] in {self._topic} "
                    f"({'; '.join(selection.skipped)}); to start that partition from scratch at its committed "
                    f"offset, delete its snapshots (StateStore.delete: a null value under {base.decode()} and "
                    f"every key starting with {base.decode()}#)"
                )
            if selection.snapshot is not None:
                result[partition] = selection.snapshot
        return result

    def delete(self, topic: str, partitions: Iterable[int], timeout_s: float = 30.0) -> int:
        """Tombstone every snapshot key (all chunks, both formats) of ``topic[p]``: its next owner starts
        with empty state at the committed offset. Returns the number of tombstones; blocks until they are
        acknowledged (raises DeliveryError otherwise)."""
        live = self._scan(topic, partitions)
        count = 0
        for partition, records in live.items():
            for key in records:
                self._produce(partition, key, None, self._tracker.on_delivery)
                self._tracker.produced += 1
                count += 1
            for registry in (self._kept, self._unacked, self._garbage, self._lineage, self._parts):
                registry.pop((topic, partition), None)
        self._tracker.wait_all_acked(self._producer, timeout_s)
        self._log.warning(
            "deleted the snapshots of %s %s in %s (%d keys)", topic, sorted(live), self._topic, count
        )
        return count

    # ------------------------------------------------------------------ internals

    def _produce(
        self,
        partition: int,
        key: bytes,
        value: bytes | None,
        callback: Callable[[KafkaError | None, Message], None],
    ) -> None:
        produce_with_backpressure(
            self._producer,
            self._queue_timeout_s,
            self._clock,
            topic=self._topic,
            partition=partition,
            key=key,
            value=value,
            on_delivery=callback,
        )
        self._producer.poll(0)

    def _tombstone(self, state_key: StateKey, keys: list[bytes]) -> None:
        """Produce a tombstone for each key; on a producer error keep the rest as garbage (never fatal)."""
        for done, key in enumerate(keys):
            try:
                self._produce(state_key[1], key, None, self._on_tombstone_delivery)
            except (DeliveryError, KafkaException) as exc:
                self._garbage.setdefault(state_key, []).extend(keys[done:])
                self.tombstone_failures_total += 1
                self._log.warning(
                    "could not tombstone old snapshot chunks of %s[%d] in %s (%s); retrying after the next "
                    "snapshot",
                    *state_key,
                    self._topic,
                    exc,
                )
                return
            self.tombstones_written_total += 1

    def _on_tombstone_delivery(self, err: KafkaError | None, msg: Message) -> None:
        # A lost tombstone only leaves garbage that the next owner deletes: never fatal.
        if err is not None:
            self.tombstone_failures_total += 1
            self._log.warning("tombstone of an old snapshot chunk in %s failed: %s", self._topic, err.str())

    def _scan(self, topic: str, partitions: Iterable[int]) -> dict[int, dict[bytes, tuple[int, bytes]]]:
        """Every live ``key -> (offset, value)`` of ``topic[p]``'s snapshots, read to partition EOF."""
        wanted = sorted(set(partitions))
        live: dict[int, dict[bytes, tuple[int, bytes]]] = {p: {} for p in wanted}
        if not wanted:
            return live
        bases = {snapshot_key(self._group, topic, p): p for p in wanted}
        consumer = self._consumer_factory(restore_consumer_config(self._client_options, self._bootstrap, self._group))
        started = self._clock()
        deadline = started + self._restore_timeout_s
        at_end: set[int] = set()
        records = 0
        try:
            # Offset 0, not OFFSET_BEGINNING: saves an offset lookup; a truncated log resets to earliest.
            consumer.assign([TopicPartition(self._topic, p, 0) for p in wanted])
            while len(at_end) < len(wanted):
                if self._clock() >= deadline:
                    missing = sorted(set(wanted) - at_end)
                    raise StateRestoreError(
                        f"reading snapshots of {topic} partitions {missing} from {self._topic} took over "
                        f"{self._restore_timeout_s:.0f} s; is the broker reachable?"
                    )
                for message in consumer.consume(10_000, 0.1):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            at_end.add(message.partition() or 0)
                            continue
                        if error.fatal() or not error.retriable():
                            raise StateRestoreError(f"reading {self._topic}: {error.str()}")
                        self._log.warning("reading %s: %s (retrying)", self._topic, error.str())
                        continue
                    records += 1
                    key = message.key() or b""
                    partition = bases.get(base_key_of(key))
                    if partition is None:
                        continue
                    value = message.value()
                    if value is None:
                        live[partition].pop(key, None)  # a tombstone deletes the key, as compaction does
                    else:
                        live[partition][key] = (message.offset() or 0, value)
                    at_end.discard(message.partition() or 0)
        except KafkaException as exc:
            raise StateRestoreError(f"reading {self._topic}: {exc}") from exc
        finally:
            consumer.close()
        self._log.info(
            "read the snapshots of %s partitions %s from %s (%d records, %d live keys) in %.2f s",
            topic,
            wanted,
            self._topic,
            records,
            sum(len(v) for v in live.values()),
            self._clock() - started,
        )
        return live
