"""The snapshot format: a partition's processor state with the offsets it covers, in chunk messages.

**Body.** A snapshot of input partition ``p`` is a small versioned header (topic, partition, next_offset,
and ``label_next_offset``, the next offset of partition ``p`` of the ground-truth topic whose labels the
processor state already holds, -1 when none) followed by the processor's own bytes:

    b"NLPMSNAP" | version (1 byte) | header length (4 bytes, big-endian) | header JSON | processor bytes

No pickle: the processor bytes are opaque here and versioned by the processor.

**Parts.** A processor may split its state into a small main body and *parts* (``PartitionSnapshot.parts``:
content id -> bytes, the id being the sha256 of the bytes), for instance one per model and one per
reference profile. A body that references parts has format version 2 and lists their ids and its
*lineage* in its header (older builds refuse it by its version). Each part is written once per lineage
under its own chunk keys, ``<base>#p-<lineage>-<first 40 hex digits of its id>#<index>`` (the chunk
header carries the whole id), before the first body that references it; a later snapshot that references
the same content writes only its body. A lineage is one writer's run over one assignment of the
partition (a random id): keys are never shared between two writers, so a member that lost the partition
and tombstones its own stale parts cannot delete a part that the new owner references. A snapshot is
complete when its chunks and every part it references are: otherwise it is skipped like a torn write.

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

Pure: no Kafka here (service/kafka/state_store.py writes and reads these messages).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from ..errors import UserError
from ..state import content_id

MAGIC = b"NLPMSNAP"
FORMAT_VERSION = 1  # a body without parts (what builds before parts wrote)
PARTS_FORMAT_VERSION = 2  # a body that references parts
#: Hex digits of a part id in its chunk keys (160 bits); the chunk header carries all 64.
PART_KEY_HEX = 40
_LINEAGE_HEX = 16
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
_H = TypeVar("_H", bound=msgspec.Struct)


class SnapshotFormatError(ValueError):
    """The bytes are not a snapshot (or chunk) this version can read."""


class SnapshotTooLargeError(UserError, ValueError):
    """A snapshot is larger than ``max_snapshot_bytes``: nothing of it was written."""


@dataclass(frozen=True, slots=True)
class PartitionSnapshot:
    """A processor state of ``topic[partition]`` that covers every offset below ``next_offset``."""

    topic: str
    partition: int
    next_offset: int
    payload: bytes
    label_next_offset: int = -1  # next offset of the same partition of the ground-truth topic; -1: none
    parts: Mapping[str, bytes] = field(default_factory=dict)  # part id (sha256 hex of the bytes) -> bytes


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
    parts: tuple[str, ...] = ()  # ids of the parts the body references (format version 2)
    lineage: str = ""  # the writer lineage whose part keys hold them


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


def part_id(data: bytes) -> str:
    """The content id of a part: the sha256 of its bytes, in hex (``nlpmon.state.content_id``)."""
    return content_id(data)


def new_lineage() -> str:
    """A writer lineage id: 16 random hex digits."""
    return secrets.token_hex(_LINEAGE_HEX // 2)


def part_chunk_id(lineage: str, pid: str) -> str:
    """The chunk id (in place of a snapshot id) of part ``pid`` written by ``lineage``.

    >>> part_chunk_id("00ff00ff00ff00ff", "ab" * 32)
    'p-00ff00ff00ff00ff-abababababababababababababababababababab'
    """
    return f"p-{lineage}-{pid[:PART_KEY_HEX]}"


def _header(snapshot: PartitionSnapshot, lineage: str) -> _Header:
    if snapshot.parts and not (len(lineage) == _LINEAGE_HEX and all(c in "0123456789abcdef" for c in lineage)):
        raise ValueError(f"lineage {lineage!r}: a snapshot with parts needs {_LINEAGE_HEX} lowercase hex digits")
    return _Header(snapshot.topic, snapshot.partition, snapshot.next_offset, snapshot.label_next_offset,
                   tuple(sorted(snapshot.parts)), lineage if snapshot.parts else "")


def encode_snapshot(snapshot: PartitionSnapshot, lineage: str = "") -> bytes:
    """Serialise a snapshot body (header + processor bytes; the ids of its parts, not their bytes). Pure."""
    header = msgspec.json.encode(_header(snapshot, lineage))
    version = PARTS_FORMAT_VERSION if snapshot.parts else FORMAT_VERSION
    return _PREFIX.pack(MAGIC, version, len(header)) + header + snapshot.payload


def snapshot_body_length(snapshot: PartitionSnapshot, lineage: str = "") -> int:
    """``len(encode_snapshot(snapshot))`` without copying the payload (parts not included)."""
    header = msgspec.json.encode(_header(snapshot, lineage))
    return _PREFIX.size + len(header) + len(snapshot.payload)


def _read_prefixed(data: bytes, magic: bytes, versions: tuple[int, ...], header_type: type[_H], what: str,
                   kind: str) -> tuple[_H, int]:
    """The JSON header after ``magic | version | header length`` and where it ends; the one parser of the
    prefix of snapshots and chunks. Raises SnapshotFormatError naming ``what`` on anything else."""
    if len(data) < _PREFIX.size:
        raise SnapshotFormatError(f"{what} too short ({len(data)} bytes)")
    found_magic, found_version, header_length = _PREFIX.unpack_from(data)
    if found_magic != magic:
        raise SnapshotFormatError(f"not {kind} (bad magic)")
    if found_version not in versions:
        readable = " and ".join(str(v) for v in versions)
        raise SnapshotFormatError(f"{what} format version {found_version}; this build reads {readable}")
    end = _PREFIX.size + header_length
    try:
        header = msgspec.json.decode(data[_PREFIX.size : end], type=header_type)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:  # deep unknown fields recurse
        raise SnapshotFormatError(f"bad {what} header: {exc}") from None
    return header, end


class _Incomplete(SnapshotFormatError):
    """Chunks or parts are missing (a torn write): not corruption."""


def _read_body(data: bytes) -> tuple[_Header, int]:
    header, end = _read_prefixed(data, MAGIC, (FORMAT_VERSION, PARTS_FORMAT_VERSION), _Header, "snapshot",
                                 "an nlpmon snapshot")
    version = data[len(MAGIC)]
    if header.next_offset < 0 or header.partition < 0 or (version == PARTS_FORMAT_VERSION) != bool(header.parts):
        raise SnapshotFormatError(f"bad snapshot header: {header}")
    return header, end


def decode_snapshot(data: bytes, parts: Mapping[str, bytes] | None = None) -> PartitionSnapshot:
    """Parse :func:`encode_snapshot` output; the parts a body references are taken from ``parts`` (each
    checked against its id). Raises SnapshotFormatError on anything else (a subclass of it when a part is
    missing).

    >>> s = PartitionSnapshot("t", 2, 41, b"state")
    >>> decode_snapshot(encode_snapshot(s)) == s
    True
    >>> p = PartitionSnapshot("t", 2, 41, b"main", parts={part_id(b"model"): b"model"})
    >>> decode_snapshot(encode_snapshot(p, lineage="0" * 16), dict(p.parts)) == p
    True
    """
    header, end = _read_body(data)
    found: dict[str, bytes] = {}
    for pid in header.parts:
        content = (parts or {}).get(pid)
        if content is None:
            raise _Incomplete(f"part {pid[:PART_KEY_HEX]} of the snapshot is missing")
        if part_id(content) != pid:
            raise SnapshotFormatError(f"part {pid[:PART_KEY_HEX]} fails its sha256 check")
        found[pid] = content
    return PartitionSnapshot(header.topic, header.partition, header.next_offset, data[end:],
                             max(header.label_next_offset, -1), found)


def encode_chunks(
    snapshot: PartitionSnapshot,
    base_key: bytes,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    snapshot_id: str | None = None,
    lineage: str = "",
) -> list[tuple[bytes, bytes]]:
    """The ``(key, value)`` chunk messages of ``snapshot``'s body, each value at most ``chunk_bytes``
    (its parts, written by ``lineage``, are not included: :func:`part_chunks`). Pure (apart from a random
    snapshot id when none is given).

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
    return _chunks(encode_snapshot(snapshot, lineage), base_key, sid, chunk_bytes)


def part_chunks(data: bytes, base_key: bytes, lineage: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                pid: str | None = None) -> list[tuple[bytes, bytes]]:
    """The ``(key, value)`` chunk messages of one part (its id: :func:`part_id`) written by ``lineage``.
    Pure. ``pid``: the part's id when the caller knows it (a ``PartSet`` took it of these very bytes), so
    that the bytes are not hashed again; it is also the sha256 the chunk headers carry (the same digest).
    A wrong ``pid`` makes a part that restore refuses (its sha256 check), never one restored wrongly.

    >>> data = b"part" * 1000
    >>> part_chunks(data, b"g/t/0", "0" * 16, chunk_bytes=1024, pid=part_id(data)) == part_chunks(
    ...     data, b"g/t/0", "0" * 16, chunk_bytes=1024)
    True
    """
    if chunk_bytes < MIN_CHUNK_BYTES:
        raise ValueError(f"chunk_bytes={chunk_bytes} is below the minimum of {MIN_CHUNK_BYTES}")
    digest = part_id(data) if pid is None else pid
    return _chunks(data, base_key, part_chunk_id(lineage, digest), chunk_bytes, digest)


def _chunks(data: bytes, base_key: bytes, sid: str, chunk_bytes: int,
            digest: str | None = None) -> list[tuple[bytes, bytes]]:
    body = memoryview(data)
    step = chunk_bytes - CHUNK_OVERHEAD
    count = max(1, math.ceil(len(body) / step))
    if digest is None:
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
    header, end = _read_prefixed(value, CHUNK_MAGIC, (CHUNK_FORMAT_VERSION,), _ChunkHeader, "chunk",
                                 "an nlpmon snapshot chunk")
    if not 0 <= header.index < header.count or header.total_length < 0 or len(header.sha256) != 64:
        raise SnapshotFormatError(f"bad chunk header: {header}")
    return SnapshotChunk(
        header.snapshot_id, header.index, header.count, header.total_length, header.sha256, value[end:]
    )


def assemble_chunks(chunks: Iterable[SnapshotChunk], parts: Mapping[str, bytes] | None = None) -> PartitionSnapshot:
    """Join the chunks of one snapshot (any order), check them against their headers, and take the parts
    its body references from ``parts``.

    Raises SnapshotFormatError when they are of different snapshots, incomplete, duplicated, or when the
    length or sha256 of the whole does not match.
    """
    return decode_snapshot(_join_chunks(chunks), parts)


def _join_chunks(chunks: Iterable[SnapshotChunk]) -> bytes:
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
    return body


def base_key_of(key: bytes) -> bytes:
    """The base key (``group/topic/partition``) a snapshot key belongs to: the key itself for a
    first-format snapshot, the part before ``#id#index`` for a chunk.

    >>> base_key_of(b"g/t/3#41-00ff#2"), base_key_of(b"g/t/3")
    (b'g/t/3', b'g/t/3')
    """
    return key.rsplit(b"#", 2)[0] if key.count(b"#") >= 2 else key


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

    Candidates are the chunk groups (by the snapshot id in their keys; part chunks are not candidates)
    and a first-format snapshot under ``base_key``, newest first by the offset of their last record. A
    candidate whose parts are not all there is incomplete. The selection's ``snapshot_keys`` are the keys
    of the snapshot and of its parts.
    """
    groups: dict[str, list[tuple[int, int, bytes]]] = {}  # snapshot or part chunk id -> [(offset, index, value)]
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
        if not sid.startswith("p-"):
            candidates.append((max(offset for offset, _, _ in records), sid, records))
    candidates.sort(key=lambda c: c[0], reverse=True)
    skipped: list[str] = []
    corrupt = False
    for offset, name, content in candidates:
        where = f"{f'snapshot {name}' if name else 'single-message snapshot'} (ending at offset {offset})"
        try:
            body = content if isinstance(content, bytes) else _assemble(name, content)
            header, _ = _read_body(body)
            parts: dict[str, bytes] = {}
            part_keys: list[bytes] = []
            for pid in header.parts:
                cid = part_chunk_id(header.lineage, pid)
                if cid not in groups:
                    raise _Incomplete(f"its part {cid} is missing")
                parts[pid] = _assemble(cid, groups[cid], pid)
                part_keys += group_keys[cid]
            snapshot = decode_snapshot(body, parts)
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
        own = (base_key,) if isinstance(content, bytes) else (*group_keys[name], *part_keys)
        return Selection(snapshot, own, tuple(live), tuple(skipped), False)
    return Selection(None, (), tuple(live), tuple(skipped), corrupt)


def _assemble(chunk_id: str, records: list[tuple[int, int, bytes]], sha256: str | None = None) -> bytes:
    """The body joined from the chunk records of ``chunk_id`` (checked; a part's also against its id)."""
    chunks = []
    for offset, index, value in records:
        chunk = decode_chunk(value)
        if (chunk.snapshot_id, chunk.index) != (chunk_id, index):
            raise SnapshotFormatError(f"the chunk at offset {offset} has the key of another chunk")
        if sha256 is not None and chunk.sha256 != sha256:
            raise SnapshotFormatError(f"the chunk at offset {offset} is not of part {chunk_id}")
        chunks.append(chunk)
    count = chunks[0].count
    if len(chunks) < count and all(c.count == count for c in chunks):
        raise _Incomplete(f"{len(chunks)} of {count} chunks")
    return _join_chunks(chunks)
