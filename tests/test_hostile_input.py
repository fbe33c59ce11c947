"""Hostile bytes (RELIABILITY.md scenario 15): no input escapes the decoders, the partition processor or the
snapshot codec as anything but a rejection with a reason (or, for state, a SnapshotError).

Inputs are raw bytes, and JSON text built to hurt: nesting of any depth anywhere (top level, ``metadata``,
``entities``, unknown fields), numbers too large for a float or an int, ``NaN``/``Infinity`` tokens, lone
surrogates (escaped, and in ``str`` input), invalid UTF-8, duplicate keys and a wrong JSON type for every
field; and valid events at the extremes (huge floats, timestamps of year 1 and 9999, control characters in
names) that reach the monitor itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nlpmon.app.processor import MonitorPartitionProcessor, References
from nlpmon.demo import SyntheticStream
from nlpmon.events import (
    REASONS,
    Event,
    EventDecoder,
    InvalidEvent,
    PredictionOut,
    decode_event,
    pydantic_validate,
)
from nlpmon.events.depth import MAX_JSON_DEPTH, nesting_depth
from nlpmon.kafka.processor import Record
from nlpmon.monitor.config import MonitorConfig
from nlpmon.quality import QualityConfig
from nlpmon.quality.events import GroundTruth, decode_ground_truth, pydantic_validate_ground_truth
from nlpmon.state import SnapshotError, decode_state, encode_state
from tests.test_events_decode_property import mutated_events, valid_events

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW_FUZZ = settings(max_examples=120, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
PROCESSOR_REASONS = {*REASONS, "clock_skew"}

# ----------------------------------------------------------------------------- hostile JSON text

NUMBER_TOKENS = ["1e400", "-1e400", "1" + "0" * 400, "-" + "9" * 5000, "1e-400", "-0", "0.0", "1E308", "2e308",
                 "NaN", "-NaN", "Infinity", "-Infinity", "inf", "nan", "01", "1.", ".5", "+1", "0x10", "1e", "--1"]
STRING_TOKENS = ['"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', '"\\uZZZZ"', '"\\x41"', '"a\\"', '"\\\\"', '"\\""',
                 '"\n"', '"\\n\\r\\u2028"', '"]]]}}}"', '"[[[{{{"', '""', '"2026-11-20T13:41:00Z"',
                 '"9999-12-31T23:59:59Z"', '"0001-01-01T00:00:00Z"', '"float32"', '"reference"']
KEYS = ["event_id", "model", "model_version", "timestamp", "task", "split", "text", "embedding", "entities",
        "tokens", "prediction", "metadata", "label", "score", "start", "end", "tag", "dtype", "base64",
        "probabilities", "x-unknown", ""]


def nested(depth: int, inner: str, kind: str) -> str:
    if kind == "array":
        return "[" * depth + inner + "]" * depth
    if kind == "object":
        return '{"k": ' * depth + inner + "}" * depth
    if kind == "unclosed":
        return "[" * depth + inner
    return '[{"a": ' * (depth // 2) + inner + "}]" * (depth // 2)  # alternating


@st.composite
def json_text(draw: st.DrawFn, budget: int = 3) -> str:
    """One JSON-ish value as text: valid values, hostile tokens, deep nesting, duplicate keys."""
    choice = draw(st.integers(0, 9 if budget > 0 else 4))
    if choice == 0:
        return draw(st.sampled_from(NUMBER_TOKENS))
    if choice == 1:
        return draw(st.sampled_from(STRING_TOKENS))
    if choice == 2:
        return json.dumps(draw(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                               | st.text(max_size=8)))
    if choice == 3:
        return draw(st.sampled_from(["0.5", "1", "-1", "true", "null", '"x"', '"PER"', "[]", "{}", "[0.5, 1]"]))
    if choice == 4:
        depth = draw(st.sampled_from([MAX_JSON_DEPTH - 2, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1,
                                      800, 1_000, 10_000, 100_000]))
        return nested(depth, draw(st.sampled_from(["1", '"s"', "", "[]"])),
                      draw(st.sampled_from(["array", "object", "unclosed", "mixed"])))
    if choice in (5, 6):
        items = draw(st.lists(json_text(budget - 1), max_size=3))
        return "[" + ", ".join(items) + "]"
    pairs = draw(st.lists(st.tuples(st.sampled_from(KEYS), json_text(budget - 1)), max_size=4))
    if pairs and draw(st.booleans()):
        pairs.append(pairs[0])  # a duplicate key
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in pairs) + "}"


@st.composite
def hostile_documents(draw: st.DrawFn) -> bytes | str:
    """An event-shaped object whose every field may be hostile, possibly spliced with invalid UTF-8."""
    pairs = [("event_id", draw(st.sampled_from(['"e1"', "1", "null"]) | json_text(1))),
             ("model", draw(st.sampled_from(['"m"', '"m\\nINFO fake line"', '""']) | json_text(1)))]
    pairs += draw(st.lists(st.tuples(st.sampled_from(KEYS), json_text()), max_size=5))
    if draw(st.booleans()):
        pairs.append(("label", '"PER"'))
    if draw(st.booleans()):
        pairs.insert(draw(st.integers(0, len(pairs))), pairs[draw(st.integers(0, len(pairs) - 1))])
    text = "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in pairs) + "}"
    if draw(st.booleans()):
        text = draw(st.sampled_from(["", " ", "[", "{", "x", "}"])) + text
    if draw(st.booleans()):
        return text  # str input: escaped surrogates may decode to lone ones
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xf4\x90\x80\x80"])) \
            + raw[at:]
    return raw


any_bytes = st.binary(max_size=200) | st.text(max_size=60) | hostile_documents()


def verdict(decoder: Any, raw: bytes | str) -> Any:
    try:
        return decoder(raw)
    except InvalidEvent as exc:
        assert exc.reason in REASONS, exc
        assert exc.detail and "\n" not in exc.detail, exc.detail
        return exc


@FUZZ
@given(any_bytes)
def test_prediction_decoder_raises_nothing_but_invalid_event(raw: bytes | str) -> None:
    out = verdict(decode_event, raw)
    assert isinstance(out, Event | InvalidEvent)
    if nesting_depth(raw) > MAX_JSON_DEPTH:
        assert isinstance(out, InvalidEvent) and out.reason == "too_deep", out
    reference = verdict(pydantic_validate, raw)  # the schema path holds as well, with the same depth verdict
    assert (getattr(out, "reason", None) == "too_deep") == (getattr(reference, "reason", None) == "too_deep")


@FUZZ
@given(any_bytes)
def test_label_decoder_raises_nothing_but_invalid_event(raw: bytes | str) -> None:
    out = verdict(decode_ground_truth, raw)
    assert isinstance(out, GroundTruth | InvalidEvent)
    if nesting_depth(raw) > MAX_JSON_DEPTH:
        assert isinstance(out, InvalidEvent) and out.reason == "too_deep", out
    reference = verdict(pydantic_validate_ground_truth, raw)
    assert (getattr(out, "reason", None) == "too_deep") == (getattr(reference, "reason", None) == "too_deep")


@pytest.mark.parametrize("where", ["top", "metadata", "entities", "unknown", "tokens", "prediction", "embedding"])
@pytest.mark.parametrize("depth", [1_000, 10_000])
def test_deep_nesting_anywhere_is_too_deep(where: str, depth: int) -> None:
    """The inputs of the issue: 1,000+ levels raised RecursionError (a crash loop of the service)."""
    deep = "[" * depth + "]" * depth
    raw = deep if where == "top" else json.dumps({"event_id": "e", "model": "m", "label": "X"})[:-1] + \
        f', "{ {"unknown": "x-extra"}.get(where, where)}": {deep}}}'
    for decoder in (decode_event, pydantic_validate, decode_ground_truth, pydantic_validate_ground_truth):
        out = verdict(decoder, raw.encode())
        assert isinstance(out, InvalidEvent) and out.reason == "too_deep", (decoder, out)


def test_the_depth_limit_is_exact() -> None:
    def with_metadata(levels: int) -> str:  # the event object is level 1, metadata level 2
        return '{"event_id": "e", "model": "m", "metadata": {"x": ' + "[" * (levels - 2) + "]" * (levels - 2) + "}}"

    assert nesting_depth(with_metadata(MAX_JSON_DEPTH)) == MAX_JSON_DEPTH
    assert isinstance(decode_event(with_metadata(MAX_JSON_DEPTH)), Event)
    assert verdict(decode_event, with_metadata(MAX_JSON_DEPTH + 1)).reason == "too_deep"
    # brackets inside strings, escaped quotes included, do not count
    text = json.dumps("[" * 500 + '\\"' + "{" * 500)
    assert isinstance(decode_event(f'{{"event_id": "e", "model": "m", "text": {text}}}'), Event)


# ----------------------------------------------------------------------------- the whole partition processor

CONFIG = MonitorConfig(auto_baseline_events=200, min_reference_events=200, reference_reservoir=400,
                       embedding_windows=(5, 20), distribution_windows=(20, 40), block_events=20,
                       calibration_splits=2, random_features=32, pca_components=4)
QUALITY = QualityConfig()


def synthetic(n: int, seed: int = 3, dim: int = 16) -> list[dict[str, Any]]:
    return list(SyntheticStream(seed=seed, dim=dim, model="fuzz").events(n))


@pytest.fixture(scope="module")
def calibrated_snapshot() -> bytes:
    """A processor past its auto-baseline (so hostile events reach every signal), as a snapshot."""
    p = MonitorPartitionProcessor("t", 0, CONFIG, References(), quality=QUALITY)
    rejected = p.process([Record(i, json.dumps(e).encode(), b"fuzz", 1_700_000_000_000 + i)
                          for i, e in enumerate(synthetic(260))])
    assert rejected == []
    assert p.report()["fuzz/1"]["status"] == "monitoring"
    return p.snapshot()


EXTREME_FLOATS = [3.4028234663852886e38, -3.4028234663852886e38, 1e-45, 0.0, -0.0, 1e38]


@st.composite
def extreme_valid_events(draw: st.DrawFn) -> bytes:
    """A valid event of the calibrated model with extreme but legal values."""
    e = synthetic(1, seed=draw(st.integers(0, 50)))[0]
    e["event_id"] = draw(st.sampled_from(["fuzz-1", "dup", "x" * 1000, "\n", "\u202e"]))
    kind = draw(st.sampled_from(["timestamp", "embedding", "entities", "text", "tokens", "names", "prediction"]))
    if kind == "timestamp":
        e["timestamp"] = draw(st.sampled_from([-62135596800.0, 253402300799.0, 0, -1e12, 1e12, 1.7e9,
                                               "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+23:59"]))
    elif kind == "embedding":
        values = draw(st.lists(st.sampled_from(EXTREME_FLOATS), min_size=1, max_size=20))
        e["embedding"] = draw(st.sampled_from([
            values, {"dtype": "float32", "base64": base64.b64encode(np.asarray(values, "<f4").tobytes()).decode()},
            {"dtype": "float16", "base64": base64.b64encode(np.full(16, 65504, "<f2").tobytes()).decode()}]))
    elif kind == "entities":
        e["entities"] = [{"label": draw(st.text(min_size=1, max_size=5)),
                          "score": draw(st.sampled_from([0, 1, 1e-300])),
                          "start": 0, "end": 2**62, "embedding": [draw(st.sampled_from(EXTREME_FLOATS))] * 16}
                         for _ in range(draw(st.integers(0, 30)))]
    elif kind == "text":
        e["text"] = draw(st.sampled_from(["", "\x00" * 100, "x" * 200_000, "\ud7ff\ue000\n\r\x1b[31m"]))
    elif kind == "tokens":
        e["tokens"] = [{"tag": draw(st.text(min_size=1, max_size=3))} for _ in range(draw(st.integers(0, 300)))]
    elif kind == "names":
        e["model_version"] = draw(st.sampled_from(["1", "1\nnlpmon: 0 events", "\x1b[2J", "v" * 256]))
    else:
        e["prediction"] = {"label": "A", "score": 1.0, "probabilities": {str(i): 1e-300 for i in range(50)}}
    return json.dumps(e, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


record_values = st.none() | any_bytes.map(lambda r: r.encode("utf-8", "surrogatepass") if isinstance(r, str) else r) \
    | extreme_valid_events()


@st.composite
def record_batches(draw: st.DrawFn) -> list[Record]:
    values = draw(st.lists(record_values, min_size=1, max_size=12))
    stamps = st.none() | st.sampled_from([0, -1, 1, 1_700_000_000_000, 2**62, 253402300799000])
    return [Record(100 + i, v, draw(st.none() | st.binary(max_size=4)), draw(stamps)) for i, v in enumerate(values)]


@SLOW_FUZZ
@given(batches=st.lists(record_batches(), min_size=1, max_size=3), labels=record_batches())
def test_the_partition_processor_rejects_with_a_reason_and_never_raises(
        calibrated_snapshot: bytes, batches: list[list[Record]], labels: list[Record]) -> None:
    p = MonitorPartitionProcessor("t", 0, CONFIG, References(), quality=QUALITY)
    p.restore(calibrated_snapshot)
    for records in batches:
        rejected = p.process(records)
        offsets = [r.offset for r in records]
        assert [r.offset for r in rejected] == sorted(r.offset for r in rejected)
        assert all(r.offset in offsets and r.reason in PROCESSOR_REASONS and r.detail for r in rejected), rejected
        for r in records:
            if r.value is not None and nesting_depth(r.value) > MAX_JSON_DEPTH:
                assert any(x.offset == r.offset and x.reason == "too_deep" for x in rejected)
    rejected = p.process_labels(labels)
    assert all(r.reason in PROCESSOR_REASONS for r in rejected)
    p.report()  # the pages' and metrics' view of whatever got in
    again = MonitorPartitionProcessor("t", 0, CONFIG, References(), quality=QUALITY)
    again.restore(p.snapshot())  # whatever got in survives a snapshot


# ----------------------------------------------------------------------------- snapshots

@st.composite
def corrupt_snapshots(draw: st.DrawFn, good: bytes) -> bytes:
    how = draw(st.sampled_from(["flip", "truncate", "header", "random"]))
    if how == "flip":
        data = bytearray(good)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if how == "truncate":
        return good[: draw(st.integers(0, len(good) - 1))]
    if how == "random":
        return b"NLPMON" + draw(st.binary(max_size=64))
    header = draw(json_text()).encode("utf-8", "surrogatepass")
    return b"NLPMON" + (1).to_bytes(2, "little") + len(header).to_bytes(4, "little") + header


@SLOW_FUZZ
@given(data=st.data())
def test_a_corrupt_or_hostile_snapshot_is_a_snapshot_error(calibrated_snapshot: bytes, data: st.DataObject) -> None:
    """The runner turns a ValueError of ``restore`` into StateRestoreError (its documented path); nothing
    else may escape: not a RecursionError from a deep header, nor a KeyError from a tree of the wrong shape."""
    raw = data.draw(corrupt_snapshots(calibrated_snapshot))
    with contextlib.suppress(SnapshotError):
        decode_state(raw)
    p = MonitorPartitionProcessor("t", 0, CONFIG, References(), quality=QUALITY)
    try:
        p.restore(raw)
    except SnapshotError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize("tree", [
    {"kind": "nlpmon.partition", "monitor_set": "oops", "quality": {}},
    {"kind": "nlpmon.partition"},
    [1, 2, 3],
    {"kind": "nlpmon.monitor_set", "embedding_dims": {}, "monitors": [{"model": "m"}]},
    {"kind": "nlpmon.partition", "monitor_set": np.frombuffer(encode_state({"kind": "nlpmon.monitor_set",
     "embedding_dims": [], "monitors": []}), np.uint8), "quality": {"kind": "x"}},
])
def test_a_well_formed_state_of_the_wrong_shape_is_a_snapshot_error(tree: Any) -> None:
    p = MonitorPartitionProcessor("t", 0, CONFIG, References(), quality=QUALITY)
    with pytest.raises(SnapshotError):
        p.restore(encode_state(tree))


def test_a_deeply_nested_state_header_is_a_snapshot_error() -> None:
    header = b'{"kind": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    raw = b"NLPMON" + (1).to_bytes(2, "little") + len(header).to_bytes(4, "little") + header
    with pytest.raises(SnapshotError, match="deeper"):
        decode_state(raw)
    p = MonitorPartitionProcessor("t", 0, CONFIG, References(), quality=QUALITY)
    with pytest.raises(SnapshotError):
        p.restore(raw)


# ----------------------------------------------------------------------------- the two decoding paths

def same_event(a: Event, b: Event) -> None:
    for field in ("event_id", "model", "model_version", "timestamp", "task", "split", "text", "metadata"):
        assert getattr(a, field) == getattr(b, field), field
    # the strict path's tokens and prediction are instances of subclasses of TokenOut and PredictionOut
    assert [(t.text, t.tag, t.score) for t in a.tokens] == [(t.text, t.tag, t.score) for t in b.tokens]
    pa, pb = a.prediction, b.prediction
    assert (pa is None and pb is None) or (pa is not None and pb is not None and isinstance(pa, PredictionOut)
                                           and (pa.label, pa.score, pa.probabilities)
                                           == (pb.label, pb.score, pb.probabilities))
    for x, y in ((a.embedding, b.embedding), *((p.embedding, q.embedding)
                                                for p, q in zip(a.entities, b.entities, strict=True))):
        assert (x is None and y is None) or np.array_equal(x, y)
    assert [(e.label, e.score, e.start, e.end, e.text) for e in a.entities] == \
        [(e.label, e.score, e.start, e.end, e.text) for e in b.entities]


def both_paths(raw: bytes | str) -> None:
    """The strict fast path (no unknown fields) and the lenient one reach the same verdict."""
    fast, lenient = verdict(EventDecoder().decode, raw), verdict(EventDecoder(strict_misses=0).decode, raw)
    if isinstance(fast, InvalidEvent) or isinstance(lenient, InvalidEvent):
        assert (fast.reason, fast.detail) == (lenient.reason, lenient.detail), (fast, lenient)
    else:
        same_event(fast, lenient)


@FUZZ
@given(any_bytes | valid_events().map(json.dumps) | mutated_events())
def test_the_strict_and_the_lenient_decoding_paths_agree(raw: bytes | str) -> None:
    both_paths(raw)


def test_ignored_fields_and_strings_full_of_brackets_are_measured_exactly() -> None:
    """The lenient path counts the brackets that decoded known fields do not account for."""
    tokens = [{"tag": "X"}] * 200
    for levels in (MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, 0):
        doc = {"event_id": "e", "model": "m", "tokens": tokens, "x": json.loads("[" * levels + "]" * levels)
               if levels else 0, "text": "[{" * 300}
        raw = json.dumps(doc)
        depth = nesting_depth(raw)
        assert depth == max(3, 1 + levels)
        for decode in (EventDecoder().decode, EventDecoder(strict_misses=0).decode):
            out = verdict(decode, raw)
            assert isinstance(out, InvalidEvent) == (depth > MAX_JSON_DEPTH), (levels, out)
