"""Per-partition snapshots in a compacted Kafka topic, each stored together with the offset it covers.

A snapshot of input partition ``p`` goes to state partition ``p`` under the key ``group/topic/p``. Its
value is a small versioned header (topic, partition, next_offset) followed by the processor's own bytes:

    b"NLPMSNAP" | version (1 byte) | header length (4 bytes, big-endian) | header JSON | processor bytes

Because every snapshot carries the offset it covers, any snapshot is self-consistent: restoring it and
reading on from ``next_offset`` applies each event to the state exactly once, whatever the group's
committed offset says. No pickle: the processor bytes are opaque here and versioned by the processor.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from service.kafka.publish import DeliveryTracker, produce_with_backpressure

MAGIC = b"NLPMSNAP"
FORMAT_VERSION = 1
_PREFIX = struct.Struct(">8sBI")


class SnapshotFormatError(ValueError):
    """The bytes are not a snapshot this version can read."""


class StateRestoreError(RuntimeError):
    """The latest snapshot of a partition could not be read in time or is unreadable."""


@dataclass(frozen=True, slots=True)
class PartitionSnapshot:
    """A processor state of ``topic[partition]`` that covers every offset below ``next_offset``."""

    topic: str
    partition: int
    next_offset: int
    payload: bytes


class _Header(msgspec.Struct, frozen=True):
    topic: str
    partition: int
    next_offset: int


def snapshot_key(group_id: str, topic: str, partition: int) -> bytes:
    """The compaction key of a partition's snapshots: ``group/topic/partition``."""
    return f"{group_id}/{topic}/{partition}".encode()


def encode_snapshot(snapshot: PartitionSnapshot) -> bytes:
    """Serialise a snapshot (header + processor bytes). Pure."""
    header = msgspec.json.encode(_Header(snapshot.topic, snapshot.partition, snapshot.next_offset))
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header + snapshot.payload


def decode_snapshot(data: bytes) -> PartitionSnapshot:
    """Parse :func:`encode_snapshot` output. Raises SnapshotFormatError on anything else.

    >>> s = PartitionSnapshot("t", 2, 41, b"state")
    >>> decode_snapshot(encode_snapshot(s)) == s
    True
    """
    if len(data) < _PREFIX.size:
        raise SnapshotFormatError(f"snapshot too short ({len(data)} bytes)")
    magic, version, header_length = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise SnapshotFormatError("not an nlpmon snapshot (bad magic)")
    if version != FORMAT_VERSION:
        raise SnapshotFormatError(f"snapshot format version {version}; this build reads {FORMAT_VERSION}")
    end = _PREFIX.size + header_length
    try:
        header = msgspec.json.decode(data[_PREFIX.size : end], type=_Header)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SnapshotFormatError(f"bad snapshot header: {exc}") from None
    if header.next_offset < 0 or header.partition < 0:
        raise SnapshotFormatError(f"bad snapshot header: {header}")
    return PartitionSnapshot(header.topic, header.partition, header.next_offset, data[end:])


class StateStore:
    """Writes snapshots through a shared producer and reads the latest ones back on assignment."""

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
        max_snapshot_bytes: int = 900_000,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._topic = state_topic
        self._group = group_id
        self._producer = producer
        self._client_options = dict(client_options or {})
        self._restore_timeout_s = restore_timeout_s
        self._queue_timeout_s = queue_timeout_s
        self._max_bytes = max_snapshot_bytes
        self._clock = clock
        self._log = logger or logging.getLogger(__name__)
        self._tracker = DeliveryTracker(name=f"snapshots to {state_topic}")
        self.written_total = 0

    @property
    def topic(self) -> str:
        return self._topic

    def write(self, snapshot: PartitionSnapshot) -> None:
        """Produce ``snapshot`` to its state partition (asynchronous; see :meth:`wait_all_acked`).

        Raises ValueError when the encoded snapshot exceeds ``max_snapshot_bytes``, DeliveryError when
        the producer queue stays full.
        """
        value = encode_snapshot(snapshot)
        if len(value) > self._max_bytes:
            raise ValueError(
                f"snapshot of {snapshot.topic}[{snapshot.partition}] is {len(value)} bytes, over "
                f"max_snapshot_bytes={self._max_bytes}; raise it together with the broker's and the "
                "producer's message.max.bytes"
            )
        produce_with_backpressure(
            self._producer,
            self._queue_timeout_s,
            self._clock,
            topic=self._topic,
            partition=snapshot.partition,
            key=snapshot_key(self._group, snapshot.topic, snapshot.partition),
            value=value,
            on_delivery=self._tracker.on_delivery,
        )
        self._tracker.produced += 1
        self.written_total += 1
        self._producer.poll(0)

    def wait_all_acked(self, timeout_s: float) -> None:
        """Block until every snapshot written so far is acknowledged (flushes the shared producer).

        Raises DeliveryError if one failed or is unacknowledged after ``timeout_s``.
        """
        self._tracker.wait_all_acked(self._producer, timeout_s)

    def read_latest(self, topic: str, partitions: Iterable[int]) -> dict[int, PartitionSnapshot]:
        """The latest snapshot of each ``topic[p]`` (absent when there is none or it was deleted).

        Reads state partitions ``p`` from their start to their end (partition EOF, never the watermark
        answer, which Tansu gets wrong for batched writes) with a private assign-only consumer that never
        commits. Blocks up to ``restore_timeout_s``; raises StateRestoreError on timeout, on a broker
        error or when the latest value under a key is unreadable.
        """
        wanted = sorted(set(partitions))
        if not wanted:
            return {}
        keys = {snapshot_key(self._group, topic, p): p for p in wanted}
        latest: dict[int, bytes | None] = {}
        consumer = Consumer(
            {
                **self._client_options,
                "bootstrap.servers": self._bootstrap,
                "group.id": f"{self._group}.state-reader",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 20,
            }
        )
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
                    partition = keys.get(message.key() or b"")
                    if partition is not None:
                        latest[partition] = message.value()
                        at_end.discard(message.partition())
        except KafkaException as exc:
            raise StateRestoreError(f"reading {self._topic}: {exc}") from exc
        finally:
            consumer.close()
        result: dict[int, PartitionSnapshot] = {}
        for partition, value in latest.items():
            if value is None:
                continue  # a tombstone: the state was deleted on purpose
            try:
                snapshot = decode_snapshot(value)
            except SnapshotFormatError as exc:
                raise StateRestoreError(
                    f"latest snapshot of {topic}[{partition}] in {self._topic} is unreadable ({exc}); "
                    "delete it (a null value under its key) to start that partition from scratch"
                ) from None
            if (snapshot.topic, snapshot.partition) != (topic, partition):
                raise StateRestoreError(
                    f"snapshot under the key of {topic}[{partition}] describes "
                    f"{snapshot.topic}[{snapshot.partition}]"
                )
            result[partition] = snapshot
        self._log.info(
            "read %d snapshots of %s from %s (%d records) in %.2f s",
            len(result),
            topic,
            self._topic,
            records,
            self._clock() - started,
        )
        return result
