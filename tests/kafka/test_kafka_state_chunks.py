"""Chunked snapshots: the chunk codec and the selection (pure, hypothesis), the store's retention and
acknowledgement rules over a fake producer, and round trips, torn writes, corruption and a multi-MB runner
checkpoint on a real broker."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, Producer
from counting_processor import CountingProcessor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_test_helpers import (
    Names,
    RunnerThread,
    assert_commits_never_backwards,
    compacted_view,
    make_topic,
    model_events,
    produce,
    reached,
    read_partition,
    recording_factories,
    reference_states,
    settings_for_test,
    wait_until,
)

from nlpmon.kafka.publish import DeliveryError
from nlpmon.kafka.runner import ConsumerRunner
from nlpmon.kafka.settings import KafkaSettings
from nlpmon.kafka.snapshot_format import (
    CHUNK_OVERHEAD,
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_SNAPSHOT_BYTES,
    MIN_CHUNK_BYTES,
    PartitionSnapshot,
    SnapshotChunk,
    SnapshotFormatError,
    SnapshotTooLargeError,
    assemble_chunks,
    chunk_key,
    decode_chunk,
    encode_chunks,
    encode_snapshot,
    select_latest,
    snapshot_key,
)
from nlpmon.kafka.state_store import StateRestoreError, StateStore

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASE = snapshot_key("g", "t", 3)


def chunks_of(
    payload: bytes, next_offset: int, sid: str, chunk_bytes: int = MIN_CHUNK_BYTES
) -> list[tuple[bytes, bytes]]:
    snapshot = PartitionSnapshot("t", 3, next_offset, payload)
    return encode_chunks(snapshot, BASE, chunk_bytes=chunk_bytes, snapshot_id=sid)


def corrupt(value: bytes) -> bytes:
    """Flip the last byte of a chunk value (in its slice of the body, so only the sha256 can tell)."""
    return value[:-1] + bytes([value[-1] ^ 0x01])


def live_of(messages: Sequence[tuple[bytes, bytes | None]]) -> dict[bytes, tuple[int, bytes]]:
    """What compaction keeps of a log of ``(key, value)`` messages, with their offsets."""
    live: dict[bytes, tuple[int, bytes]] = {}
    for offset, (key, value) in enumerate(messages):
        if value is None:
            live.pop(key, None)
        else:
            live[key] = (offset, value)
    return live


# ---------------------------------------------------------------------- codec and selection (no broker)


@PROPERTY
@given(
    payload=st.binary(max_size=12_000),
    chunk_bytes=st.integers(MIN_CHUNK_BYTES, 6000),
    next_offset=st.integers(0, 2**63 - 1),
    order=st.randoms(use_true_random=False),
)
def test_chunk_codec_round_trips_any_bytes_any_chunk_size(
    payload: bytes, chunk_bytes: int, next_offset: int, order: random.Random
) -> None:
    snapshot = PartitionSnapshot("nlpmon.predictions", 3, next_offset, payload)
    chunks = encode_chunks(snapshot, BASE, chunk_bytes=chunk_bytes)
    body_length = len(encode_snapshot(snapshot))
    assert len(chunks) == max(1, -(-body_length // (chunk_bytes - CHUNK_OVERHEAD)))
    assert all(len(value) <= chunk_bytes for _, value in chunks)
    assert len({key for key, _ in chunks}) == len(chunks)
    assert all(key.startswith(BASE + b"#") for key, _ in chunks)
    decoded = [decode_chunk(value) for _, value in chunks]
    order.shuffle(decoded)
    assert assemble_chunks(decoded) == snapshot
    live = {key: (offset, value) for offset, (key, value) in enumerate(order.sample(chunks, len(chunks)))}
    selection = select_latest("nlpmon.predictions", 3, BASE, live)
    assert selection.snapshot == snapshot and set(selection.snapshot_keys) == {k for k, _ in chunks}


@PROPERTY
@given(
    kinds=st.lists(st.sampled_from(["complete", "torn", "corrupt"]), min_size=1, max_size=6),
    sizes=st.lists(st.integers(0, 4000), min_size=6, max_size=6),
    seed=st.integers(0, 2**32),
)
def test_select_latest_is_the_newest_complete_uncorrupted_snapshot(
    kinds: list[str], sizes: list[int], seed: int
) -> None:
    """Whatever mix of complete, torn and corrupt snapshots a partition holds, restore takes the newest
    complete valid one; with none, it restores nothing, and says "unreadable" only if one was corrupt."""
    rng = random.Random(seed)
    log: list[tuple[bytes, bytes | None]] = []
    expected: PartitionSnapshot | None = None
    for i, kind in enumerate(kinds):
        snapshot = PartitionSnapshot("t", 3, 100 * (i + 1), rng.randbytes(sizes[i]))
        chunks = chunks_of(snapshot.payload, snapshot.next_offset, f"s{i}")
        if kind == "torn" and len(chunks) > 1:
            chunks = chunks[: rng.randrange(1, len(chunks))]
        elif kind == "corrupt":
            victim = rng.randrange(len(chunks))
            chunks[victim] = (chunks[victim][0], corrupt(chunks[victim][1]))
        else:
            expected = snapshot
        log += chunks
    log.append((snapshot_key("g", "t", 4) + b"#x#0", b"another partition"))
    selection = select_latest("t", 3, BASE, live_of(log))
    assert selection.snapshot == expected
    assert selection.unreadable == (expected is None and "corrupt" in kinds)


def test_chunk_codec_rejects_missing_duplicate_mixed_and_corrupt_chunks() -> None:
    payload = random.Random(1).randbytes(3000)
    a = [decode_chunk(v) for _, v in chunks_of(payload, 10, "a")]
    b = [decode_chunk(v) for _, v in chunks_of(payload, 20, "b")]
    assert len(a) == 6
    flipped = decode_chunk(corrupt(chunks_of(payload, 10, "a")[2][1]))
    swapped = SnapshotChunk(a[1].snapshot_id, 1, a[1].count, a[1].total_length, a[1].sha256, a[2].data)
    for chunks, message in (
        (a[:-1], "incomplete"),
        ([*a, a[0]], "twice"),
        ([*a[:3], *b[3:]], "disagree"),
        ([*a[:2], flipped, *a[3:]], "sha256"),
        ([a[0], swapped, *a[2:]], "sha256"),
        ([], "no chunks"),
    ):
        with pytest.raises(SnapshotFormatError, match=message):
            assemble_chunks(chunks)
    value = chunks_of(b"x", 1, "x")[0][1]
    for bad in (b"", b"NLPMSNAP" + value[8:], value[:8] + b"\x07" + value[9:], value[:20]):
        with pytest.raises(SnapshotFormatError):
            decode_chunk(bad)
    for bad_id in ("", "a#b", "é", "x" * 65):
        with pytest.raises(ValueError, match="snapshot id"):
            chunks_of(b"x", 1, bad_id)
    with pytest.raises(ValueError, match="chunk_bytes"):
        chunks_of(b"x", 1, "x", chunk_bytes=MIN_CHUNK_BYTES - 1)
    assert chunk_key(BASE, "7-ab", 12) == b"g/t/3#7-ab#12"


def test_select_latest_reads_first_format_snapshots_and_ignores_other_keys() -> None:
    legacy = PartitionSnapshot("t", 3, 50, b"old format")
    log: list[tuple[bytes, bytes | None]] = [
        (BASE, encode_snapshot(legacy)),
        (BASE + b"0", b"key of partition 30"),
        (BASE + b"#junk", b"not a chunk key"),
    ]
    selection = select_latest("t", 3, BASE, live_of(log))
    assert selection.snapshot == legacy and selection.snapshot_keys == (BASE,)
    newer = chunks_of(b"new", 60, "n")
    selection = select_latest("t", 3, BASE, live_of([*log, *newer]))
    assert selection.snapshot is not None and selection.snapshot.payload == b"new"
    other = encode_chunks(PartitionSnapshot("t", 4, 70, b"wrong"), BASE, snapshot_id="w")
    selection = select_latest("t", 3, BASE, live_of([*log, *newer, *other]))
    assert selection.snapshot is not None and selection.snapshot.payload == b"new"
    assert any("describes t[4]" in reason for reason in selection.skipped)


# ---------------------------------------------------------------------- the store over a fake producer


class _Message:
    def __init__(self, topic: str, partition: int) -> None:
        self._topic, self._partition = topic, partition

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition


class FakeProducer:
    """Records what is produced; delivers on poll/flush, failing the deliveries numbered in ``fail``."""

    def __init__(self, fail: frozenset[int] = frozenset()) -> None:
        self.log: list[tuple[int, bytes, bytes | None]] = []
        self.fail = fail
        self._pending: list[tuple[int, Any]] = []

    def produce(self, *, topic: str, partition: int, key: bytes, value: bytes | None, on_delivery: Any) -> None:
        self._pending.append((len(self.log), lambda err: on_delivery(err, _Message(topic, partition))))
        self.log.append((partition, key, value))

    def poll(self, timeout: float = 0) -> int:
        pending, self._pending = self._pending, []
        for number, deliver in pending:
            deliver(KafkaError(KafkaError._MSG_TIMED_OUT, "injected") if number in self.fail else None)
        return len(pending)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0

    def live(self, partition: int) -> dict[bytes, tuple[int, bytes]]:
        return live_of([(key, value) for p, key, value in self.log if p == partition])


def fake_store(producer: FakeProducer, **options: Any) -> StateStore:
    return StateStore(
        bootstrap_servers="unused:9092",
        state_topic="state",
        group_id="g",
        producer=cast(Producer, producer),
        **{"chunk_bytes": MIN_CHUNK_BYTES, **options},
    )


def test_store_keeps_the_two_newest_acknowledged_snapshots_and_tombstones_the_rest() -> None:
    producer = FakeProducer()
    store = fake_store(producer)
    for offset in (10, 20, 30, 40):
        store.write(PartitionSnapshot("t", 3, offset, bytes([offset]) * 2500))
        store.wait_all_acked(1)
        snapshots = {decode_chunk(v).snapshot_id for _, v in producer.live(3).values()}
        assert sorted(int(s.split("-")[0]) for s in snapshots) == sorted({max(10, offset - 10), offset})
    assert store.chunks_written_total == 4 * 5 and store.tombstones_written_total == 2 * 5
    assert all(value is None for _, _, value in producer.log[-5:])
    newest = select_latest("t", 3, BASE, producer.live(3)).snapshot
    assert newest is not None and newest.next_offset == 40

    # keep_snapshots=1: only the newest acknowledged snapshot stays.
    single = FakeProducer()
    store = fake_store(single, keep_snapshots=1)
    for offset in (10, 20):
        store.write(PartitionSnapshot("t", 3, offset, b"s"))
        store.wait_all_acked(1)
    assert [decode_chunk(v).snapshot_id.split("-")[0] for _, v in single.live(3).values()] == ["20"]


def test_store_commits_nothing_to_retention_until_every_chunk_is_acknowledged() -> None:
    """Retention (tombstoning the snapshots that fall out of the newest two) happens only once every chunk
    of the newer snapshot is acknowledged: a failed chunk raises DeliveryError (the runner then never
    commits) and tombstones nothing, so the two previous snapshots stay and the newest complete one is what
    a restore finds. The same writes with every chunk acknowledged do tombstone the oldest one."""

    def three_snapshots(producer: FakeProducer) -> StateStore:
        store = fake_store(producer)
        for offset in (10, 20):
            store.write(PartitionSnapshot("t", 3, offset, bytes([offset]) * 2500))
            store.wait_all_acked(1)
        store.write(PartitionSnapshot("t", 3, 30, b"c" * 2500))
        return store

    healthy = FakeProducer()
    three_snapshots(healthy).wait_all_acked(1)
    assert [v for _, _, v in healthy.log].count(None) == 5  # snapshot 10's five chunks tombstoned

    failing = FakeProducer(fail=frozenset({12}))  # the 3rd chunk of the third snapshot
    store = three_snapshots(failing)
    with pytest.raises(DeliveryError, match="1 of 5 messages failed"):
        store.wait_all_acked(1)
    assert len(failing.log) == 15 and all(value is not None for _, _, value in failing.log)
    assert store.tombstones_written_total == 0
    delivered = live_of([(key, value) for i, (_, key, value) in enumerate(failing.log) if i not in failing.fail])
    assert sorted({int(decode_chunk(v).snapshot_id.split("-")[0]) for _, v in delivered.values()}) == [10, 20, 30]
    restored = select_latest("t", 3, BASE, delivered).snapshot
    assert restored is not None and restored.next_offset == 20  # the torn one is not taken


def test_store_refuses_an_oversized_snapshot_in_one_line_and_writes_nothing() -> None:
    producer = FakeProducer()
    store = fake_store(producer, max_snapshot_bytes=10_000)
    with pytest.raises(SnapshotTooLargeError, match="max_snapshot_bytes=10,000") as caught:
        store.write(PartitionSnapshot("t", 3, 1, b"x" * 10_000))
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)
    assert producer.log == []
    with pytest.raises(ValueError, match="keep_snapshots"):
        fake_store(producer, keep_snapshots=0)


def test_settings_chunk_defaults_and_bounds() -> None:
    settings = KafkaSettings()
    assert settings.snapshot_chunk_bytes == DEFAULT_CHUNK_BYTES == 512 * 1024
    assert settings.max_snapshot_bytes == DEFAULT_MAX_SNAPSHOT_BYTES == 256 * 1024 * 1024
    for bad, message in (
        ({"snapshot_chunk_bytes": MIN_CHUNK_BYTES - 1},
         rf"snapshot_chunk_bytes\s+Input should be greater than or equal to {MIN_CHUNK_BYTES}"),
        ({"snapshot_chunk_bytes": 65 * 1024 * 1024},
         r"snapshot_chunk_bytes\s+Input should be less than or equal to 67108864"),
    ):
        with pytest.raises(ValueError, match=message):
            KafkaSettings(**bad)
    with pytest.raises(ValueError, match=r"snapshot_chunk_bytes=999500 leaves no room .*message\.max\.bytes=1000000"):
        KafkaSettings(snapshot_chunk_bytes=999_500)
    # a chunk larger than the default message.max.bytes is accepted once the producer's limit is raised
    with pytest.raises(ValueError, match=r"message\.max\.bytes=1000000"):
        KafkaSettings(snapshot_chunk_bytes=2 * 1024 * 1024)
    raised = {"message.max.bytes": 4_000_000}
    settings = KafkaSettings(snapshot_chunk_bytes=2 * 1024 * 1024, producer_options=raised)
    assert settings.snapshot_chunk_bytes == 2 * 1024 * 1024 and settings.producer_options == raised


# ---------------------------------------------------------------------- a real broker


def idempotent_producer(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})


def real_store(bootstrap: str, names: Names, producer: Producer | None = None, **options: Any) -> StateStore:
    return StateStore(
        bootstrap_servers=bootstrap,
        state_topic=names.state_topic,
        group_id=names.group,
        producer=producer or idempotent_producer(bootstrap),
        restore_timeout_s=15,
        **options,
    )


def snapshot_ids(bootstrap: str, topic: str, partition: int) -> set[str]:
    return {decode_chunk(value).snapshot_id for value in compacted_view(bootstrap, topic, partition).values()}


@pytest.mark.broker
def test_3mb_snapshot_round_trips_through_a_real_topic(kafka_bootstrap: str, kafka_names: Names) -> None:
    make_topic(kafka_bootstrap, kafka_names.state_topic, 2)
    payload = random.Random(3).randbytes(3 * 1024 * 1024)  # incompressible
    snapshot = PartitionSnapshot(kafka_names.topic, 1, 123_456, payload)
    writer = real_store(kafka_bootstrap, kafka_names)
    writer.write(snapshot)
    writer.wait_all_acked(15)
    assert writer.chunks_written_total == 7
    messages = read_partition(kafka_bootstrap, kafka_names.state_topic, 1)
    assert len(messages) == 7
    assert all(len(m.value()) <= DEFAULT_CHUNK_BYTES for m in messages)
    assert read_partition(kafka_bootstrap, kafka_names.state_topic, 0) == []
    assert real_store(kafka_bootstrap, kafka_names).read_latest(kafka_names.topic, [0, 1]) == {1: snapshot}


@pytest.mark.broker
def test_torn_write_restores_the_previous_complete_snapshot(kafka_bootstrap: str, kafka_names: Names) -> None:
    """A crash after 3 of 6 chunks of the newest snapshot: restore takes the previous complete one; after
    the new owner's first acknowledged snapshot the torn chunks (and the oldest snapshot) are tombstoned."""
    make_topic(kafka_bootstrap, kafka_names.state_topic, 1)
    t, chunk = kafka_names.topic, 64 * 1024
    old = real_store(kafka_bootstrap, kafka_names, chunk_bytes=chunk)
    previous = [PartitionSnapshot(t, 0, offset, random.Random(offset).randbytes(300_000)) for offset in (100, 200)]
    for snapshot in previous:
        old.write(snapshot)
        old.wait_all_acked(15)
    torn = encode_chunks(
        PartitionSnapshot(t, 0, 300, b"t" * 300_000), snapshot_key(kafka_names.group, t, 0), chunk_bytes=chunk
    )
    assert len(torn) == 5
    produce(kafka_bootstrap, kafka_names.state_topic, [(0, key, value) for key, value in torn[:3]])

    producer = idempotent_producer(kafka_bootstrap)
    owner = real_store(kafka_bootstrap, kafka_names, producer, chunk_bytes=chunk)
    assert owner.read_latest(t, [0]) == {0: previous[1]}
    assert len(snapshot_ids(kafka_bootstrap, kafka_names.state_topic, 0)) == 3
    owner.write(PartitionSnapshot(t, 0, 250, b"next"))
    owner.wait_all_acked(15)
    assert producer.flush(15) == 0  # wait_all_acked does not wait for the tombstones
    ids = snapshot_ids(kafka_bootstrap, kafka_names.state_topic, 0)
    assert sorted(int(sid.split("-")[0]) for sid in ids) == [200, 250]
    assert real_store(kafka_bootstrap, kafka_names).read_latest(t, [0])[0].payload == b"next"


@pytest.mark.broker
def test_corrupted_chunk_is_skipped_for_the_previous_snapshot(
    kafka_bootstrap: str, kafka_names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    """A chunk of the newest snapshot fails the sha256 check: restore skips it (with a warning) and takes
    the previous one, kept for that. With every snapshot corrupt, restore refuses in one line."""
    make_topic(kafka_bootstrap, kafka_names.state_topic, 1)
    t = kafka_names.topic
    producer = idempotent_producer(kafka_bootstrap)
    store = real_store(kafka_bootstrap, kafka_names, producer, chunk_bytes=64 * 1024)
    snapshots = [PartitionSnapshot(t, 0, offset, random.Random(offset).randbytes(200_000)) for offset in (10, 20, 30)]
    for snapshot in snapshots:
        store.write(snapshot)
        store.wait_all_acked(15)
    assert producer.flush(15) == 0
    view = compacted_view(kafka_bootstrap, kafka_names.state_topic, 0)
    by_id: dict[str, list[tuple[bytes, bytes]]] = {}
    for key, value in view.items():
        by_id.setdefault(decode_chunk(value).snapshot_id, []).append((key, value))
    assert sorted(int(sid.split("-")[0]) for sid in by_id) == [20, 30]  # the oldest was tombstoned
    newest, older = (by_id[sid] for sid in sorted(by_id, key=lambda s: -int(s.split("-")[0])))

    produce(kafka_bootstrap, kafka_names.state_topic, [(0, newest[1][0], corrupt(newest[1][1]))])
    with caplog.at_level(logging.WARNING):
        assert real_store(kafka_bootstrap, kafka_names).read_latest(t, [0]) == {0: snapshots[1]}
    assert any("fails its sha256 check" in r.getMessage() for r in caplog.records)

    produce(kafka_bootstrap, kafka_names.state_topic, [(0, older[0][0], corrupt(older[0][1]))])
    with pytest.raises(StateRestoreError, match="no readable snapshot") as caught:
        real_store(kafka_bootstrap, kafka_names).read_latest(t, [0])
    assert "\n" not in str(caught.value) and "sha256" in str(caught.value)


# ---------------------------------------------------------------------- the runner with a multi-MB state

BALLAST = 1_200_000


class BallastProcessor(CountingProcessor):
    """A CountingProcessor whose snapshot carries ~1.2 MB of incompressible bytes derived from its state
    (so a snapshot spans several chunks and restore can check every byte)."""

    def snapshot(self) -> bytes:
        counting = super().snapshot()
        return counting + b"\n" + random.Random(counting).randbytes(BALLAST)

    def restore(self, data: bytes) -> None:
        counting, _, ballast = data.partition(b"\n")
        if ballast != random.Random(counting).randbytes(BALLAST):
            raise ValueError("ballast does not match the counting state")
        super().restore(counting)


def ballast_factory(topic: str, partition: int) -> BallastProcessor:
    return BallastProcessor(topic, partition)


def chunk_recording_factory(timeline: list[tuple[str, Any]], state_topic: str) -> Any:
    """Producers that record each state-topic message produced and acknowledged (by key)."""

    class ChunkRecordingProducer(Producer):
        def produce(self, *args: Any, **kwargs: Any) -> Any:
            callback = kwargs.get("on_delivery")
            if kwargs.get("topic") == state_topic and kwargs.get("value") is not None:
                key = kwargs.get("key")
                timeline.append(("chunk-produced", key))

                def on_delivery(err: KafkaError | None, msg: Any) -> None:
                    timeline.append(("chunk-acked" if err is None else "chunk-failed", key))
                    if callback is not None:
                        callback(err, msg)

                kwargs["on_delivery"] = on_delivery
            return super().produce(*args, **kwargs)

    return ChunkRecordingProducer


def run_to_end(settings: KafkaSettings, ends: dict[int, int], timeline: list[tuple[str, Any]]) -> ConsumerRunner:
    factories = recording_factories(timeline)
    runner = ConsumerRunner(
        settings,
        ballast_factory,
        consumer_factory=factories["consumer_factory"],
        producer_factory=chunk_recording_factory(timeline, settings.state_topic),
    )
    worker = RunnerThread(runner).start()
    try:
        wait_until(lambda: reached([runner], settings.topic, ends) or worker.done, 40, "all events processed")
    finally:
        worker.finish(20)
    assert worker.error is None, worker.error
    return runner


@pytest.mark.broker
@pytest.mark.slow
def test_runner_acks_every_chunk_before_committing_and_restores_a_multi_mb_state(
    kafka_bootstrap: str, kafka_names: Names
) -> None:
    make_topic(kafka_bootstrap, kafka_names.topic, 2)
    ends = produce(kafka_bootstrap, kafka_names.topic, model_events(1200, 2))
    settings = settings_for_test(
        kafka_bootstrap, kafka_names, snapshot_chunk_bytes=256 * 1024, checkpoint_interval_events=400
    )
    timeline: list[tuple[str, Any]] = []
    run_to_end(settings, ends, timeline)

    unacked: set[bytes] = set()
    commits = chunks_before_first_commit = 0
    for kind, value in timeline:
        if kind == "chunk-produced":
            unacked.add(value)
        elif kind == "chunk-acked":
            unacked.discard(value)
            if commits == 0:
                chunks_before_first_commit += 1
        elif kind == "commit":
            assert not unacked, f"committed {value} with {len(unacked)} snapshot chunks unacknowledged"
            commits += 1
        assert kind not in ("chunk-failed", "commit-failed"), (kind, value)
    assert commits >= 2 and chunks_before_first_commit >= 5
    assert_commits_never_backwards(timeline)
    for p in range(2):  # the two newest snapshots of each partition, the older ones tombstoned
        # (how many were written depends on how far the loop got while a checkpoint was in flight)
        base = snapshot_key(kafka_names.group, kafka_names.topic, p) + b"#"
        written = list(dict.fromkeys(key[len(base):].split(b"#")[0].decode() for kind, key in timeline
                                     if kind == "chunk-produced" and key.startswith(base)))
        assert written and snapshot_ids(kafka_bootstrap, kafka_names.state_topic, p) == set(written[-2:])

    more = produce(kafka_bootstrap, kafka_names.topic, model_events(600, 2, start_id=1200))
    restarted = run_to_end(settings, more, timeline)
    assert sum(restarted.metrics().events_processed.values()) == 600  # resumed from the snapshots

    restored = real_store(kafka_bootstrap, kafka_names).read_latest(kafka_names.topic, [0, 1])
    reference = reference_states(kafka_bootstrap, kafka_names.topic, 2)
    for p, snapshot in restored.items():
        processor = BallastProcessor(kafka_names.topic, p)
        processor.restore(snapshot.payload)
        assert snapshot.next_offset == more[p]
        assert processor.state() == reference[p]
    assert json.loads(restored[0].payload.partition(b"\n")[0])["duplicates"] == 0
