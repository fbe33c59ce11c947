"""Snapshots in parts (service/kafka/snapshot_format.py, "Parts"): the codec and the selection (pure), the
store's write-once and retention rules over a fake producer, a new lineage after a restore on a real broker,
and the monitor's parts: a checkpoint after one model's events writes that model's state and nothing of the
idle models or of any reference profile."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import pytest
from kafka_test_helpers import Names, compacted_view, make_topic
from test_kafka_state_chunks import BASE, FakeProducer, corrupt, fake_store, idempotent_producer, live_of, real_store

from nlpmon.demo import SyntheticStream
from nlpmon.kafka.snapshot_format import (
    MIN_CHUNK_BYTES,
    PartitionSnapshot,
    decode_chunk,
    encode_chunks,
    part_chunks,
    part_id,
    select_latest,
)
from nlpmon.monitor.calibration_jobs import PackedEvents
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.pipeline import Pipeline
from nlpmon.monitor.reference import SEGMENT_EVENTS, ReferenceSample
from nlpmon.state import PartSet, codec, encode_state
from tests.core.test_calibration_jobs import ManualExecutor

LINEAGE = "0123456789abcdef"


def with_parts(next_offset: int, *contents: bytes, payload: bytes = b"main") -> PartitionSnapshot:
    return PartitionSnapshot("t", 3, next_offset, payload, parts={part_id(c): c for c in contents})


def log_of(snapshot: PartitionSnapshot, sid: str, lineage: str = LINEAGE) -> list[tuple[bytes, bytes | None]]:
    """The chunk messages of ``snapshot``: its parts first, then its body (as the store writes them)."""
    out: list[tuple[bytes, bytes | None]] = []
    for data in snapshot.parts.values():
        out += part_chunks(data, BASE, lineage, chunk_bytes=MIN_CHUNK_BYTES)
    out += encode_chunks(snapshot, BASE, chunk_bytes=MIN_CHUNK_BYTES, snapshot_id=sid, lineage=lineage)
    return out


# ---------------------------------------------------------------------- codec and selection (no broker)


@pytest.mark.parametrize("seed", range(20))
def test_a_snapshot_with_parts_round_trips_and_its_parts_are_no_candidates(seed: int) -> None:
    rng = random.Random(seed)
    contents = [rng.randbytes(rng.randrange(0, 5000)) for _ in range(rng.randrange(1, 5))]
    snapshot = with_parts(100 + seed, *contents, payload=rng.randbytes(rng.randrange(0, 3000)))
    log = log_of(snapshot, f"{100 + seed}-s")
    rng.shuffle(log)
    selection = select_latest("t", 3, BASE, live_of(log))
    assert selection.snapshot == snapshot
    assert set(selection.snapshot_keys) == {key for key, _ in log}  # its parts' keys are its own
    assert selection.skipped == ()


def test_a_missing_part_makes_a_snapshot_incomplete_and_a_corrupt_one_unreadable() -> None:
    older = with_parts(10, b"a" * 3000, b"b" * 10)
    newer = with_parts(20, b"a" * 3000, b"c" * 2000)
    base_log = log_of(older, "10-x") + log_of(newer, "20-y")
    c_keys = {k for k, _ in part_chunks(b"c" * 2000, BASE, LINEAGE, chunk_bytes=MIN_CHUNK_BYTES)}
    torn = [(k, v) for k, v in base_log if k not in c_keys]  # newer's own part never arrived
    selection = select_latest("t", 3, BASE, live_of(torn))
    assert selection.snapshot == older and not selection.unreadable
    assert any("incomplete" in r and "is missing" in r for r in selection.skipped)

    first_c = min(c_keys)
    damaged = [(k, corrupt(v) if k == first_c and v is not None else v) for k, v in base_log]
    selection = select_latest("t", 3, BASE, live_of(damaged))
    assert selection.snapshot == older  # falls back past the corrupt part
    assert any("unreadable" in r for r in selection.skipped)
    # the part both share is corrupt: nothing readable is left, and that is an error, not an empty start
    a_keys = {k for k, _ in part_chunks(b"a" * 3000, BASE, LINEAGE, chunk_bytes=MIN_CHUNK_BYTES)}
    shared = [(k, corrupt(v) if k == min(a_keys) and v is not None else v) for k, v in base_log]
    selection = select_latest("t", 3, BASE, live_of(shared))
    assert selection.snapshot is None and selection.unreadable


def test_a_body_with_parts_needs_a_lineage_and_reads_only_with_its_parts() -> None:
    snapshot = with_parts(5, b"part")
    with pytest.raises(ValueError, match="lineage"):
        encode_chunks(snapshot, BASE, snapshot_id="5-a")
    body_only = encode_chunks(snapshot, BASE, snapshot_id="5-a", lineage=LINEAGE)
    selection = select_latest("t", 3, BASE, live_of(body_only))
    assert selection.snapshot is None and not selection.unreadable  # incomplete: a torn write


# ---------------------------------------------------------------------- the store over a fake producer


def test_store_writes_each_part_once_and_tombstones_those_no_kept_snapshot_references() -> None:
    producer = FakeProducer()
    store = fake_store(producer)  # keeps the two newest acknowledged snapshots
    shared, first, second, third = b"profile" * 500, b"state 1" * 300, b"state 2" * 300, b"state 3" * 300
    for offset, state in ((10, first), (20, second), (30, third)):
        before = len(producer.log)
        store.write(with_parts(offset, shared, state))
        store.wait_all_acked(1)
        written = {decode_chunk(v).snapshot_id for _, k, v in producer.log[before:] if v is not None}
        parts = {sid for sid in written if sid.startswith("p-")}
        # the shared part once, with the first snapshot; each snapshot's own state part with it
        assert len(parts) == (2 if offset == 10 else 1)
    assert store.parts_written_total == 4
    live = producer.live(3)
    live_parts = {decode_chunk(v).sha256 for v in (value for _, value in live.values())
                  if decode_chunk(v).snapshot_id.startswith("p-")}
    # snapshot 10 fell out of the kept two: its own part went with it, the shared one stays
    assert live_parts == {part_id(shared), part_id(second), part_id(third)}
    newest = select_latest("t", 3, BASE, live).snapshot
    assert newest == with_parts(30, shared, third)
    assert store.bytes_written_total == sum(len(v) for _, _, v in producer.log if v is not None)


def test_store_rewrites_nothing_for_an_unchanged_state() -> None:
    producer = FakeProducer()
    store = fake_store(producer)
    for offset in (10, 20, 30, 40):
        store.write(with_parts(offset, b"profile" * 500, b"idle model" * 300))
        store.wait_all_acked(1)
    assert store.parts_written_total == 2
    # after the first, each checkpoint wrote one body chunk (and tombstoned the oldest body)
    assert store.chunks_written_total == len(log_of(with_parts(10, b"profile" * 500, b"idle model" * 300), "10-a"))\
        + 3


# ---------------------------------------------------------------------- a real broker


@pytest.mark.broker
def test_a_restore_starts_a_new_lineage_and_the_old_parts_go_with_the_restored_snapshot(
        kafka_bootstrap: str, kafka_names: Names) -> None:
    make_topic(kafka_bootstrap, kafka_names.state_topic, 1)
    t = kafka_names.topic
    first = real_store(kafka_bootstrap, kafka_names, chunk_bytes=MIN_CHUNK_BYTES)
    profile, state = b"profile" * 500, b"state" * 300
    first.write(PartitionSnapshot(t, 0, 10, b"main", parts={part_id(profile): profile, part_id(state): state}))
    first.wait_all_acked(15)

    producer = idempotent_producer(kafka_bootstrap)
    second = real_store(kafka_bootstrap, kafka_names, producer, chunk_bytes=MIN_CHUNK_BYTES)
    restored = second.read_latest(t, [0])[0]
    assert restored.next_offset == 10 and dict(restored.parts) == {part_id(profile): profile, part_id(state): state}
    changed = b"state, later" * 300
    for offset in (20, 30):
        second.write(PartitionSnapshot(t, 0, offset, b"main", parts={part_id(profile): profile,
                                                                     part_id(changed): changed}))
        second.wait_all_acked(15)
    assert second.parts_written_total == 2  # both parts again, under its own lineage, once
    assert producer.flush(15) == 0  # wait_all_acked does not wait for the tombstones
    chunks = [decode_chunk(v) for v in compacted_view(kafka_bootstrap, kafka_names.state_topic, 0).values()]
    lineages = {c.snapshot_id.split("-")[1] for c in chunks if c.snapshot_id.startswith("p-")}
    assert len(lineages) == 1  # the restored snapshot fell out of the kept two: the old lineage's parts went
    assert sorted({int(c.snapshot_id.split("-")[0]) for c in chunks if not c.snapshot_id.startswith("p-")}) == [20, 30]
    latest = real_store(kafka_bootstrap, kafka_names).read_latest(t, [0])[0]
    assert latest.next_offset == 30 and dict(latest.parts) == {part_id(profile): profile, part_id(changed): changed}


# ---------------------------------------------------------------------- the monitor's parts


def test_a_checkpoint_after_one_models_events_writes_that_models_state_only() -> None:
    """Three calibrated models in one partition; after events of one of them the next snapshot writes its
    body and that model's state part: no reference profile, nothing of the idle models. Restoring it
    gives the state that the classic single-body snapshot gives."""
    config = MonitorConfig(auto_baseline_events=300, calibration_splits=2)
    pipeline = Pipeline(config)
    streams = [SyntheticStream(seed=k, model=f"m{k}") for k in range(3)]
    for stream in streams:
        pipeline.process_lines([json.dumps(e).encode() for e in stream.events(400)])
    pipeline.finish()
    producer = FakeProducer()
    store = fake_store(producer, chunk_bytes=64 * 1024)
    main, parts = pipeline.snapshot_parts()
    assert len(parts) == 6  # a state and a profile per model
    store.write(PartitionSnapshot("t", 3, 1200, main, parts=parts))
    store.wait_all_acked(1)
    profiles_and_idle = store.bytes_written_total

    pipeline.process_lines([json.dumps(e).encode() for e in streams[1].events(20)])
    main, parts = pipeline.snapshot_parts()
    before = store.bytes_written_total
    store.write(PartitionSnapshot("t", 3, 1220, main, parts=parts))
    store.wait_all_acked(1)
    assert store.parts_written_total == 7  # one new part: m1's state
    delta = store.bytes_written_total - before
    assert delta < profiles_and_idle / 4, (delta, profiles_and_idle)
    restored = select_latest("t", 3, BASE, producer.live(3)).snapshot
    assert restored is not None
    from_parts, classic = Pipeline(config), Pipeline(config)
    from_parts.restore_parts(restored.payload, dict(restored.parts))
    classic.restore(pipeline.snapshot())
    assert from_parts.snapshot() == classic.snapshot() == pipeline.snapshot()


def test_while_a_calibration_is_pending_a_snapshot_adds_only_the_newest_held_events() -> None:
    """The sample handed to a pending calibration and each batch of events held for it are parts of their
    own, written once: the next snapshot writes the model's small state and the batches held since. A
    restore holds the same events, and after the calibration both give the same state."""
    config = MonitorConfig(auto_baseline_events=300, calibration_splits=2)
    executor = ManualExecutor()
    pipeline = Pipeline(config, executor=executor)
    lines = [json.dumps(e).encode() for e in SyntheticStream(seed=4, dim=32, model="m").events(600)]
    pipeline.process_lines(lines[:300])  # the auto-baseline fills: its calibration is pending
    pipeline.process_lines(lines[300:450])  # held
    assert pipeline.calibrating == 1 and executor.jobs
    _, first = pipeline.snapshot_parts()
    pipeline.process_lines(lines[450:520])  # held too
    main, second = pipeline.snapshot_parts()
    new = {pid: data for pid, data in second.items() if pid not in first}
    assert len(new) == 2  # the model's state and the newest held batch
    whole = sum(len(data) for data in second.values())
    assert sum(len(data) for data in new.values()) < whole / 2, ([len(d) for d in new.values()], whole)

    restored_jobs = ManualExecutor()
    restored = Pipeline(config, executor=restored_jobs)
    restored.restore_parts(main, second)
    assert restored.calibrating == 1 and restored.snapshot() == pipeline.snapshot()
    for p, jobs in ((pipeline, executor), (restored, restored_jobs)):
        while jobs.complete_one():
            pass
        p.process_lines(lines[520:])
        p.finish()
    assert without_wall_time(restored) == without_wall_time(pipeline)
    (mon,) = pipeline.monitors.monitors.values()  # what was held and the sample are not kept for their part ids
    assert not [v for v in mon._part_cache.values() if isinstance(v[0], PackedEvents | ReferenceSample)]


def test_while_the_baseline_is_collected_a_snapshot_adds_only_its_newest_segments() -> None:
    """The auto-baseline being collected is in segments of ``SEGMENT_EVENTS`` events, each full one a part
    written once: the next snapshot writes the model's state (with the short tail) and the segments filled
    since. Its calibration's sample is the same segments (the last one short). Restores at each point give
    the same state, and after the calibration the same monitor."""
    # duplicate ids remembered beyond the events here: a restored ring of more ids than it holds is the same
    # set of ids, but its count of ids admitted restarts at its capacity (not this test's concern)
    config = MonitorConfig(auto_baseline_events=1000, calibration_splits=2, duplicate_window_events=5000)
    executor = ManualExecutor()
    pipeline = Pipeline(config, executor=executor)
    lines = [json.dumps(e).encode() for e in SyntheticStream(seed=5, dim=32, model="m").events(1400)]
    pipeline.process_lines(lines[:450])
    _, first = pipeline.snapshot_parts()
    assert len(first) == 1 + 450 // SEGMENT_EVENTS  # the model's state and two segments
    pipeline.process_lines(lines[450:950])
    main, second = pipeline.snapshot_parts()
    new = {pid: data for pid, data in second.items() if pid not in first}
    assert len(new) == 1 + 950 // SEGMENT_EVENTS - 450 // SEGMENT_EVENTS
    whole = sum(len(data) for data in second.values())
    assert sum(len(data) for data in new.values()) < 0.7 * whole, ([len(d) for d in new.values()], whole)
    restored = Pipeline(config, executor=ManualExecutor())
    restored.restore_parts(main, second)
    assert restored.snapshot() == pipeline.snapshot()

    pipeline.process_lines(lines[950:1100])  # the baseline fills at 1,000: pending; the rest held
    assert pipeline.calibrating == 1
    main, third = pipeline.snapshot_parts()
    segments = [pid for pid in second if pid in third]
    assert len(segments) == 950 // SEGMENT_EVENTS  # the calibration's sample reuses every written segment
    restored_jobs = ManualExecutor()
    restored = Pipeline(config, executor=restored_jobs)
    restored.restore_parts(main, third)
    assert restored.calibrating == 1 and restored.snapshot() == pipeline.snapshot()
    for p, jobs in ((pipeline, executor), (restored, restored_jobs)):
        while jobs.complete_one():
            pass
        p.process_lines(lines[1100:])
        p.finish()
    assert without_wall_time(restored) == without_wall_time(pipeline)


def test_a_sample_that_evicted_is_whole_in_the_state_until_frozen_then_in_fresh_segments() -> None:
    """Reference events beyond ``reference_reservoir`` evict: no segment is fixed any more (the sample is
    in the model's state part), and once a calibration takes it its segments are new parts, never the
    ones cached before the eviction (same positions, other events)."""
    config = MonitorConfig(reference_reservoir=300, min_reference_events=200, calibration_splits=2)
    executor = ManualExecutor()
    pipeline = Pipeline(config, executor=executor)
    stream = SyntheticStream(seed=6, dim=32, model="m")
    ref = [json.dumps(e).encode() for e in stream.events(700, "reference")]
    prod = [json.dumps(e).encode() for e in stream.events(300)]
    pipeline.process_lines(ref[:250])
    _, before = pipeline.snapshot_parts()
    assert len(before) == 2  # the state and one full segment
    pipeline.process_lines(ref[250:])  # 700 offered, 300 kept
    main, evicted = pipeline.snapshot_parts()
    assert len(evicted) == 1
    back = Pipeline(config, executor=ManualExecutor())
    back.restore_parts(main, evicted)
    assert back.snapshot() == pipeline.snapshot()
    pipeline.process_lines(prod[:100])  # its calibration is pending, the sample frozen
    assert pipeline.calibrating == 1
    main, frozen = pipeline.snapshot_parts()  # PartSet checks each part's bytes against its id
    assert not set(before) & set(frozen)
    assert all(part_id(frozen[pid]) == pid for pid in frozen)
    back_jobs = ManualExecutor()
    back = Pipeline(config, executor=back_jobs)
    back.restore_parts(main, frozen)
    assert back.snapshot() == pipeline.snapshot()
    for p, jobs in ((pipeline, executor), (back, back_jobs)):
        while jobs.complete_one():
            pass
        p.process_lines(prod[100:])
        p.finish()
    assert without_wall_time(back) == without_wall_time(pipeline)


def test_an_unchanged_monitor_encodes_nothing_and_its_parts_are_made_again_when_asked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot of monitors that saw nothing since the last one encodes nothing and names the same parts;
    a store that has not written them gets the same bytes (``PartSet`` checks them against their ids). A
    batch of duplicates only (the shell counts them on the monitor) changes the state, and so its part."""
    from nlpmon.monitor import model_monitor

    config = MonitorConfig(auto_baseline_events=300, calibration_splits=2)
    pipeline = Pipeline(config)
    lines = [json.dumps(e).encode() for e in SyntheticStream(seed=7, dim=32, model="m").events(500)]
    pipeline.process_lines(lines[:250])  # collecting: a segment, a tail
    pipeline.process_lines(lines[250:450])  # calibrated: a profile
    main, first = pipeline.snapshot_parts()
    for mon in pipeline.monitors.monitors.values():
        mon.page_view()  # what the pages read changes nothing of the state
    encoded: list[int] = []
    real = model_monitor.encode_state
    monkeypatch.setattr(model_monitor, "encode_state", lambda tree: encoded.append(1) or real(tree))
    again, second = pipeline.snapshot_parts()
    monkeypatch.setattr(model_monitor, "encode_state", real)
    assert encoded == [] and again == main and list(second) == list(first)
    assert all(second[pid] == first[pid] for pid in first)  # made again, checked against their ids
    pipeline.process_lines(lines[400:450])  # duplicates only
    (mon,) = pipeline.monitors.monitors.values()
    assert mon.duplicates == 50
    after, parts = pipeline.snapshot_parts()
    assert after != main
    restored = Pipeline(config)
    restored.restore_parts(after, parts)
    assert restored.snapshot() == pipeline.snapshot()


def test_a_model_waiting_for_its_calibration_is_not_encoded_again_until_it_is_applied(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Polling a model whose calibration has not finished changes nothing: the next snapshot encodes nothing
    of it. Once the calibration is applied (and its held events processed) the state and its part change."""
    from nlpmon.monitor import model_monitor

    config = MonitorConfig(auto_baseline_events=300, calibration_splits=2)
    executor = ManualExecutor()
    pipeline = Pipeline(config, executor=executor)
    lines = [json.dumps(e).encode() for e in SyntheticStream(seed=8, dim=32, model="m").events(350)]
    pipeline.process_lines(lines)  # 300 calibrating, 50 held
    main, _ = pipeline.snapshot_parts()
    pipeline.monitors.poll()  # the calibration has not finished
    encoded: list[int] = []
    real = model_monitor.encode_state
    monkeypatch.setattr(model_monitor, "encode_state", lambda tree: encoded.append(1) or real(tree))
    again, _ = pipeline.snapshot_parts()
    monkeypatch.setattr(model_monitor, "encode_state", real)
    assert encoded == [] and again == main
    assert executor.complete_one()
    pipeline.monitors.poll()
    assert not pipeline.calibrating
    after, parts = pipeline.snapshot_parts()
    assert after != main
    restored = Pipeline(config)
    restored.restore_parts(after, parts)
    assert restored.snapshot() == pipeline.snapshot()


def without_wall_time(pipeline: Pipeline) -> bytes:
    """The monitors' state but the time each calibration took (wall time, its only difference)."""
    states = []
    for mon in pipeline.monitors.monitors.values():
        state = mon.state()
        state["profile"].pop("calibration_seconds")
        states.append(state)
    return encode_state(states)


def test_a_part_known_by_its_id_is_made_again_only_when_the_store_has_not_written_it() -> None:
    """``PartSet.add_known``: the bytes of a part whose id is known are not kept; the store asks for them
    only when its lineage has not written that part (a new owner after a restore), and a part that would
    encode differently than its id says is an error, never a silent wrong write."""
    made: list[str] = []

    def maker(data: bytes) -> Callable[[], bytes]:
        def make() -> bytes:
            made.append(data.decode()[:5])
            return data
        return make

    profile = b"profile" * 400
    first = PartSet()
    pid = first.add(profile)
    first.add(b"state 1" * 100)
    producer = FakeProducer()
    store = fake_store(producer)
    store.write(PartitionSnapshot("t", 3, 10, b"main", parts=first))
    store.wait_all_acked(1)
    second = PartSet()
    second.add_known(pid, maker(profile))
    second.add(b"state 2" * 100)
    store.write(PartitionSnapshot("t", 3, 20, b"main", parts=second))
    store.wait_all_acked(1)
    assert made == []  # the store had written the profile: its bytes were never made again
    other = fake_store(FakeProducer())  # another writer (a new lineage): needs them
    other.write(PartitionSnapshot("t", 3, 30, b"main", parts=second))
    assert made == ["profi"]
    wrong = PartSet()
    wrong.add_known(pid, maker(b"changed"))
    with pytest.raises(RuntimeError, match="encodes differently"):
        fake_store(FakeProducer()).write(PartitionSnapshot("t", 3, 40, b"main", parts=wrong))


def test_a_snapshot_in_parts_of_state_format_1_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot in parts that main's build wrote (state format 1: every string list in the JSON headers)
    restores to the state that this build's snapshot of the same pipeline gives: a model collecting its
    baseline, one holding events for a pending calibration, one calibrated."""
    config = MonitorConfig(auto_baseline_events=600, calibration_splits=2)

    executor = ManualExecutor()
    pipeline = Pipeline(config, executor=executor)
    streams = [SyntheticStream(seed=20 + k, dim=32, model=f"m{k}") for k in range(3)]
    pipeline.process_lines([json.dumps(e).encode() for e in streams[0].events(650)])
    executor.complete_one()  # m0 calibrated
    pipeline.process_lines([json.dumps(e).encode() for e in streams[0].events(100)])
    pipeline.process_lines([json.dumps(e).encode() for e in streams[1].events(700)])  # pending, 100 held
    pipeline.process_lines([json.dumps(e).encode() for e in streams[2].events(450)])  # collecting
    assert pipeline.calibrating == 1
    with monkeypatch.context() as m:
        m.setattr(codec, "STRING_RUN", 10**9)
        m.setattr(codec, "FORMAT_VERSION", 1)
        old_main, old = pipeline.snapshot_parts()
        old_parts = dict(old)
    version = len(codec.MAGIC)
    assert {data[version] for data in (old_main, *old_parts.values())} == {1}
    assert not any(b"__st__" in data for data in old_parts.values())
    from_old = Pipeline(config, executor=ManualExecutor())
    from_old.restore_parts(old_main, old_parts)
    assert from_old.calibrating == 1 and from_old.snapshot() == pipeline.snapshot()
    now_main, now = from_old.snapshot_parts()  # this build's format, of the restored state
    assert {data[version] for data in (now_main, *now.values())} == {2}
    assert any(b"__st__" in data for data in now.values())
    from_now = Pipeline(config, executor=ManualExecutor())
    from_now.restore_parts(now_main, dict(now))
    assert from_now.snapshot() == pipeline.snapshot()
