"""Per-partition snapshots in a compacted Kafka topic, each stored together with the offset it covers.

**Body.** A snapshot of input partition ``p`` is a small versioned header (topic, partition, next_offset,
and ``label_next_offset``, the next offset of partition ``p`` of the ground-truth topic whose labels the
processor state already holds, -1 when none) followed by the processor's own bytes:

    b"NLPMSNAP" | version (1 byte) | header length (4 bytes, big-endian) | header JSON | processor bytes

No pickle: the processor bytes are opaque here and versioned by the processor.

**Chunks.** The body, of any size up to ``max_snapshot_bytes`` (256 MiB by default), is written to state
partition ``p`` as N chunk messages of at most ``chunk_bytes`` each (512 KiB by default, below Kafka's
default 1 MB message limit):

    key   = b"<group>/<topic>/<p>#<snapshot id>#<chunk index>"
    value = b"NLPMCHNK" | version (1 byte) | header length (4 bytes) | header JSON | slice of the body

The chunk header holds the snapshot id (``<next_offset>-<random 64-bit hex>``, new for every write), the
chunk index, the chunk count, the body's total length and the sha256 of the whole body.

**Why every chunk has its own key, unique to its snapshot.** The state topic is ``cleanup.policy=compact``:
Kafka eventually keeps only the last value of each key. With one key for all chunks, compaction would keep
only the last chunk of a snapshot. With one key per chunk index (``base#i``), generation N+1's chunk i
would replace generation N's chunk i; after a torn write (a crash after chunk 0 of N+1) compaction could
leave chunk 0 of N+1 next to chunks 1.. of N, so no complete snapshot at all; a snapshot that shrinks would
also leave stray chunks behind. So no snapshot ever reuses a key of another, and compaction alone never
removes a chunk. Old snapshots are deleted explicitly, with tombstones (null values): once a snapshot of a
partition is acknowledged (:meth:`StateStore.wait_all_acked`), every snapshot of it older than the newest
``keep_snapshots`` (2 by default) acknowledged ones is tombstoned. What a crash leaves over (a torn write,
unsent tombstones) is deleted by the partition's next owner after its first acknowledged snapshot: it
tombstones every key it read on restore except the snapshot it restored.

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
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from service.errors import UserError
from service.kafka.publish import DeliveryError, DeliveryTracker, produce_with_backpressure

MAGIC = b"NLPMSNAP"
FORMAT_VERSION = 1
CHUNK_MAGIC = b"NLPMCHNK"
CHUNK_FORMAT_VERSION = 1
_PREFIX = struct.Struct(">8sBI")

#: Default largest chunk message value (bytes): below Kafka's default 1 MB ``message.max.bytes``.
DEFAULT_CHUNK_BYTES = 512 * 1024
#: Default largest snapshot body (bytes).
DEFAULT_MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024
#: Bytes of a chunk value reserved for its prefix and header; the rest carries the body.
CHUNK_OVERHEAD = 512
#: Acknowledged snapshots kept per partition: the newest, and one to fall back to if it is corrupt.
DEFAULT_KEEP_SNAPSHOTS = 2
#: Smallest allowed chunk size.
MIN_CHUNK_BYTES = 1024
_MAX_SNAPSHOT_ID = 64

StateKey = tuple[str, int]


class SnapshotFormatError(ValueError):
    """The bytes are not a snapshot (or chunk) this version can read."""


class SnapshotTooLargeError(UserError, ValueError):
    """A snapshot is larger than ``max_snapshot_bytes``: nothing of it was written."""


class StateRestoreError(UserError, RuntimeError):
    """The latest snapshot of a partition could not be read in time or is unreadable."""


@dataclass(frozen=True, slots=True)
class PartitionSnapshot:
    """A processor state of ``topic[partition]`` that covers every offset below ``next_offset``."""

    topic: str
    partition: int
    next_offset: int
    payload: bytes
    label_next_offset: int = -1  # next offset of the same partition of the ground-truth topic; -1: none


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """One decoded chunk message: its header and its slice of the snapshot body."""

    snapshot_id: str
    index: int
    count: int
    total_length: int
    sha256: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Selection:
    """What :func:`select_latest` found for one partition.

    ``snapshot`` is the newest valid snapshot (None when there is none) and ``snapshot_keys`` its keys;
    ``keys`` every live key of the partition; ``skipped`` why newer candidates were passed over;
    ``unreadable`` is True when there is no valid snapshot but at least one complete, corrupt one
    (restoring nothing would lose state).
    """

    snapshot: PartitionSnapshot | None
    snapshot_keys: tuple[bytes, ...]
    keys: tuple[bytes, ...]
    skipped: tuple[str, ...]
    unreadable: bool


class _Header(msgspec.Struct, frozen=True, omit_defaults=True):
    topic: str
    partition: int
    next_offset: int
    label_next_offset: int = -1  # absent in snapshots of builds without the ground-truth topic


class _ChunkHeader(msgspec.Struct, frozen=True):
    snapshot_id: str
    index: int
    count: int
    total_length: int
    sha256: str


def snapshot_key(group_id: str, topic: str, partition: int) -> bytes:
    """The base key of a partition's snapshots: ``group/topic/partition`` (chunks append ``#id#index``)."""
    return f"{group_id}/{topic}/{partition}".encode()


def chunk_key(base_key: bytes, snapshot_id: str, index: int) -> bytes:
    """The key of one chunk: ``base#snapshot_id#index``, unique to its snapshot (see the module doc).

    >>> chunk_key(b"g/t/3", "41-00ff", 2)
    b'g/t/3#41-00ff#2'
    """
    return b"%s#%s#%d" % (base_key, snapshot_id.encode(), index)


def new_snapshot_id(next_offset: int) -> str:
    """``<next_offset>-<16 random hex digits>``: readable, and unique per write."""
    return f"{next_offset}-{secrets.token_hex(8)}"


def _header(snapshot: PartitionSnapshot) -> _Header:
    return _Header(snapshot.topic, snapshot.partition, snapshot.next_offset, snapshot.label_next_offset)


def encode_snapshot(snapshot: PartitionSnapshot) -> bytes:
    """Serialise a snapshot body (header + processor bytes). Pure."""
    header = msgspec.json.encode(_header(snapshot))
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header + snapshot.payload


def snapshot_body_length(snapshot: PartitionSnapshot) -> int:
    """``len(encode_snapshot(snapshot))`` without copying the payload."""
    header = msgspec.json.encode(_header(snapshot))
    return _PREFIX.size + len(header) + len(snapshot.payload)


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
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:  # deep unknown fields recurse
        raise SnapshotFormatError(f"bad snapshot header: {exc}") from None
    if header.next_offset < 0 or header.partition < 0:
        raise SnapshotFormatError(f"bad snapshot header: {header}")
    return PartitionSnapshot(header.topic, header.partition, header.next_offset, data[end:],
                             max(header.label_next_offset, -1))


def encode_chunks(
    snapshot: PartitionSnapshot,
    base_key: bytes,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    snapshot_id: str | None = None,
) -> list[tuple[bytes, bytes]]:
    """The ``(key, value)`` chunk messages of ``snapshot``, each value at most ``chunk_bytes``. Pure
    (apart from a random snapshot id when none is given).

    >>> chunks = encode_chunks(PartitionSnapshot("t", 0, 7, b"x" * 3000), b"g/t/0", chunk_bytes=1024,
    ...                        snapshot_id="7-ab")
    >>> [key for key, _ in chunks]
    [b'g/t/0#7-ab#0', b'g/t/0#7-ab#1', b'g/t/0#7-ab#2', b'g/t/0#7-ab#3', b'g/t/0#7-ab#4', b'g/t/0#7-ab#5']
    >>> assemble_chunks([decode_chunk(value) for _, value in chunks]).next_offset
    7
    """
    if chunk_bytes < MIN_CHUNK_BYTES:
        raise ValueError(f"chunk_bytes={chunk_bytes} is below the minimum of {MIN_CHUNK_BYTES}")
    sid = snapshot_id if snapshot_id is not None else new_snapshot_id(snapshot.next_offset)
    if not 0 < len(sid) <= _MAX_SNAPSHOT_ID or "#" in sid or not sid.isascii() or not sid.isprintable():
        raise ValueError(f"snapshot id {sid!r}: use 1-{_MAX_SNAPSHOT_ID} printable ASCII characters, no '#'")
    body = memoryview(encode_snapshot(snapshot))
    step = chunk_bytes - CHUNK_OVERHEAD
    count = max(1, math.ceil(len(body) / step))
    digest = hashlib.sha256(body).hexdigest()
    out: list[tuple[bytes, bytes]] = []
    for index in range(count):
        header = msgspec.json.encode(_ChunkHeader(sid, index, count, len(body), digest))
        prefix = _PREFIX.pack(CHUNK_MAGIC, CHUNK_FORMAT_VERSION, len(header))
        value = b"".join((prefix, header, body[index * step : (index + 1) * step]))
        if len(value) > chunk_bytes:  # cannot happen with the id bounded above; never send one over
            raise AssertionError(f"chunk of {len(value)} bytes over chunk_bytes={chunk_bytes}")
        out.append((chunk_key(base_key, sid, index), value))
    return out


def decode_chunk(value: bytes) -> SnapshotChunk:
    """Parse one chunk value of :func:`encode_chunks`. Raises SnapshotFormatError on anything else."""
    if len(value) < _PREFIX.size:
        raise SnapshotFormatError(f"chunk too short ({len(value)} bytes)")
    magic, version, header_length = _PREFIX.unpack_from(value)
    if magic != CHUNK_MAGIC:
        raise SnapshotFormatError("not an nlpmon snapshot chunk (bad magic)")
    if version != CHUNK_FORMAT_VERSION:
        raise SnapshotFormatError(f"chunk format version {version}; this build reads {CHUNK_FORMAT_VERSION}")
    end = _PREFIX.size + header_length
    try:
        header = msgspec.json.decode(value[_PREFIX.size : end], type=_ChunkHeader)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:  # deep unknown fields recurse
        raise SnapshotFormatError(f"bad chunk header: {exc}") from None
    if not 0 <= header.index < header.count or header.total_length < 0 or len(header.sha256) != 64:
        raise SnapshotFormatError(f"bad chunk header: {header}")
    return SnapshotChunk(
        header.snapshot_id, header.index, header.count, header.total_length, header.sha256, value[end:]
    )


def assemble_chunks(chunks: Iterable[SnapshotChunk]) -> PartitionSnapshot:
    """Join the chunks of one snapshot (any order) and check them against their headers.

    Raises SnapshotFormatError when they are of different snapshots, incomplete, duplicated, or when the
    length or sha256 of the whole does not match.
    """
    by_index: dict[int, SnapshotChunk] = {}
    for chunk in chunks:
        if chunk.index in by_index:
            raise SnapshotFormatError(f"chunk {chunk.index} of snapshot {chunk.snapshot_id} twice")
        by_index[chunk.index] = chunk
    if not by_index:
        raise SnapshotFormatError("no chunks")
    first = next(iter(by_index.values()))
    identity = (first.snapshot_id, first.count, first.total_length, first.sha256)
    if any((c.snapshot_id, c.count, c.total_length, c.sha256) != identity for c in by_index.values()):
        raise SnapshotFormatError(f"chunks of snapshot {first.snapshot_id} disagree on their headers")
    missing = sorted(set(range(first.count)) - by_index.keys())
    if missing:
        raise SnapshotFormatError(
            f"snapshot {first.snapshot_id} is incomplete: {len(missing)} of {first.count} chunks missing"
        )
    body = b"".join(by_index[i].data for i in range(first.count))
    if len(body) != first.total_length:
        raise SnapshotFormatError(
            f"snapshot {first.snapshot_id} is {len(body)} bytes, its header says {first.total_length}"
        )
    if hashlib.sha256(body).hexdigest() != first.sha256:
        raise SnapshotFormatError(f"snapshot {first.snapshot_id} fails its sha256 check")
    return decode_snapshot(body)


def _chunk_id(base_key: bytes, key: bytes) -> tuple[str, int] | None:
    """``(snapshot id, index)`` of a chunk key under ``base_key``; None for any other key."""
    if not key.startswith(base_key + b"#"):
        return None
    parts = key[len(base_key) + 1 :].split(b"#")
    if len(parts) != 2 or not parts[1].isdigit():
        return None
    try:
        return parts[0].decode("ascii"), int(parts[1])
    except UnicodeDecodeError:
        return None


def select_latest(
    topic: str, partition: int, base_key: bytes, live: Mapping[bytes, tuple[int, bytes]]
) -> Selection:
    """Pick the newest valid snapshot of ``topic[partition]`` from the live records of its state
    partition (``key -> (offset, value)``, the last non-null value of each key). Pure.

    Candidates are the chunk groups (by the snapshot id in their keys) and a first-format snapshot under
    ``base_key``, newest first by the offset of their last record.
    """
    groups: dict[str, list[tuple[int, int, bytes]]] = {}  # snapshot id -> [(offset, index, value)]
    group_keys: dict[str, list[bytes]] = {}
    candidates: list[tuple[int, str, list[tuple[int, int, bytes]] | bytes]] = []
    for key, (offset, value) in live.items():
        if key == base_key:
            candidates.append((offset, "", value))
            continue
        ident = _chunk_id(base_key, key)
        if ident is not None:
            groups.setdefault(ident[0], []).append((offset, ident[1], value))
            group_keys.setdefault(ident[0], []).append(key)
    for sid, records in groups.items():
        candidates.append((max(offset for offset, _, _ in records), sid, records))
    candidates.sort(key=lambda c: c[0], reverse=True)
    skipped: list[str] = []
    corrupt = False
    for offset, name, content in candidates:
        where = f"{f'snapshot {name}' if name else 'single-message snapshot'} (ending at offset {offset})"
        try:
            snapshot = decode_snapshot(content) if isinstance(content, bytes) else _assemble(name, content)
        except _Incomplete as exc:
            skipped.append(f"{where}: incomplete, {exc}")
            continue
        except SnapshotFormatError as exc:
            corrupt = True
            skipped.append(f"{where}: unreadable, {exc}")
            continue
        if (snapshot.topic, snapshot.partition) != (topic, partition):
            corrupt = True
            skipped.append(f"{where}: describes {snapshot.topic}[{snapshot.partition}]")
            continue
        own = (base_key,) if isinstance(content, bytes) else tuple(group_keys[name])
        return Selection(snapshot, own, tuple(live), tuple(skipped), False)
    return Selection(None, (), tuple(live), tuple(skipped), corrupt)


class _Incomplete(SnapshotFormatError):
    """Chunks are missing (a torn write): not corruption."""


def _assemble(snapshot_id: str, records: list[tuple[int, int, bytes]]) -> PartitionSnapshot:
    chunks = []
    for offset, index, value in records:
        chunk = decode_chunk(value)
        if (chunk.snapshot_id, chunk.index) != (snapshot_id, index):
            raise SnapshotFormatError(f"the chunk at offset {offset} has the key of another chunk")
        chunks.append(chunk)
    count = chunks[0].count
    if len(chunks) < count and all(c.count == count for c in chunks):
        raise _Incomplete(f"{len(chunks)} of {count} chunks")
    return assemble_chunks(chunks)


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
        self._kept: dict[StateKey, list[list[bytes]]] = {}
        self._unacked: dict[StateKey, list[list[bytes]]] = {}
        self._garbage: dict[StateKey, list[bytes]] = {}
        self.written_total = 0
        self.chunks_written_total = 0
        self.tombstones_written_total = 0
        self.tombstone_failures_total = 0

    @property
    def topic(self) -> str:
        return self._topic

    def write(self, snapshot: PartitionSnapshot) -> None:
        """Produce ``snapshot`` as chunks to its state partition (asynchronous; see :meth:`wait_all_acked`).

        Raises SnapshotTooLargeError (a ValueError) when the encoded snapshot exceeds
        ``max_snapshot_bytes``, DeliveryError when the producer queue stays full, KafkaException when the
        client refuses a chunk (larger than its ``message.max.bytes``). After an error the chunks already
        produced are garbage, tombstoned after the partition's next acknowledged snapshot.
        """
        size = snapshot_body_length(snapshot)
        if size > self._max_bytes:
            raise SnapshotTooLargeError(
                f"snapshot of {snapshot.topic}[{snapshot.partition}] is {size:,} bytes, over "
                f"max_snapshot_bytes={self._max_bytes:,}; the processor state must shrink (or raise the limit)"
            )
        state_key = (snapshot.topic, snapshot.partition)
        base = snapshot_key(self._group, snapshot.topic, snapshot.partition)
        chunks = encode_chunks(snapshot, base, chunk_bytes=self._chunk_bytes)
        produced: list[bytes] = []
        try:
            for key, value in chunks:
                self._produce(snapshot.partition, key, value, self._tracker.on_delivery)
                self._tracker.produced += 1
                produced.append(key)
        except BaseException:
            self._garbage.setdefault(state_key, []).extend(produced)
            raise
        self._unacked.setdefault(state_key, []).append(produced)
        self.written_total += 1
        self.chunks_written_total += len(chunks)

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
            stale = self._garbage.pop(state_key, []) + [key for keys in kept[: -self._keep] for key in keys]
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
            unacked = [key for keys in self._unacked.pop((topic, partition), []) for key in keys]
            self._kept[(topic, partition)] = [list(selection.snapshot_keys)] if own else []
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
            for registry in (self._kept, self._unacked, self._garbage):
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
                    key = message.key() or b""
                    partition = bases.get(key)
                    if partition is None:
                        partition = bases.get(key.rsplit(b"#", 2)[0]) if key.count(b"#") >= 2 else None
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
