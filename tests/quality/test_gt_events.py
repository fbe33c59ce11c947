"""The ground-truth contract: the msgspec decoder and the pydantic schema accept and reject the same inputs."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nlpmon.events import InvalidEvent
from nlpmon.quality.events import (
    GroundTruth,
    GroundTruthEvent,
    decode_ground_truth,
    decode_ground_truth_lines,
    pydantic_validate_ground_truth,
)

Json = dict[str, Any]
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.text(min_size=1, max_size=8)
timestamps = st.none() | st.floats(-1e12, 1e12) | st.integers(0, 2**40) | st.sampled_from(
    ["2026-11-20T13:41:00Z", "2026-11-20T13:41:00.25+02:00", "1999-01-01 00:00:00z"])


@st.composite
def spans(draw: st.DrawFn) -> Json:
    start = draw(st.integers(0, 10**6))
    out: Json = {"label": draw(names), "start": start, "end": start + draw(st.integers(0, 40))}
    if draw(st.booleans()):
        out["text"] = "ignored"
    return out


@st.composite
def valid(draw: st.DrawFn) -> Json:
    out: Json = {"event_id": draw(names), "model": draw(st.text(min_size=1, max_size=256))}
    if draw(st.booleans()):
        out["model_version"] = draw(names)
    if draw(st.booleans()):
        out["timestamp"] = draw(timestamps)
    if draw(st.booleans()):
        out["entities"] = draw(st.lists(spans(), max_size=3))
        if draw(st.booleans()):
            out["label"] = None
    else:
        out["label"] = draw(names)
        if draw(st.booleans()):
            out["entities"] = None
    if draw(st.booleans()):
        out["reviewer"] = {"id": 3}  # unknown fields are ignored
    return out


REPLACEMENTS: list[Any] = [None, True, 0, -1, 1.5, 1e39, 10**30, "", "x", "2026-11-20", [], [{}], {},
                           {"label": "X", "start": 1, "end": 0}, {"label": "X", "start": 0, "end": 1}]


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    children = (list(node.items()) if isinstance(node, dict)
                else list(enumerate(node)) if isinstance(node, list) else [])
    out = []
    for key, child in children:
        out.append((*prefix, key))
        out.extend(paths(child, (*prefix, key)))
    return out


def parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


@st.composite
def mutated(draw: st.DrawFn) -> str:
    event = draw(valid())
    kind = draw(st.sampled_from(["replace", "delete", "add", "swap", "text"]))
    if kind == "replace":
        path = draw(st.sampled_from(paths(event)))
        parent(event, path)[path[-1]] = draw(st.sampled_from(REPLACEMENTS))
    elif kind == "delete":
        path = draw(st.sampled_from([p for p in paths(event) if isinstance(p[-1], str)]))
        del parent(event, path)[path[-1]]
    elif kind == "add":
        event[draw(st.sampled_from(["entities", "label", "timestamp", "model_version"]))] = draw(
            st.sampled_from(REPLACEMENTS))
    elif kind == "swap":
        event["entities"], event["label"] = [{"label": "A", "start": 2, "end": 1}], "x"
    text = json.dumps(event)
    if kind == "text":
        text = text[: draw(st.integers(0, len(text) - 1))]
    return text


def outcome(fn: Any, raw: str) -> tuple[str, str] | None:
    try:
        fn(raw)
    except InvalidEvent as exc:
        return exc.reason, exc.detail.split(": ", 1)[0]
    return None


def same_values(a: GroundTruth, b: GroundTruthEvent) -> None:
    assert (a.event_id, a.model, a.model_version, a.label) == (b.event_id, b.model, b.model_version, b.label)
    assert (a.timestamp is None) == (b.timestamp is None)
    if a.timestamp is not None and b.timestamp is not None:
        assert math.isclose(a.timestamp, b.timestamp)
    want = None if b.entities is None else [(s.label, s.start, s.end) for s in b.entities]
    assert (None if a.entities is None else [(s.label, s.start, s.end) for s in a.entities]) == want


@SETTINGS
@given(valid())
def test_valid_events_decode_identically(event: Json) -> None:
    raw = json.dumps(event)
    same_values(decode_ground_truth(raw), pydantic_validate_ground_truth(raw))


@SETTINGS
@given(mutated())
def test_decoders_agree_on_mutations(raw: str) -> None:
    fast, slow = outcome(decode_ground_truth, raw), outcome(pydantic_validate_ground_truth, raw)
    assert fast == slow, raw
    if fast is None:
        same_values(decode_ground_truth(raw), pydantic_validate_ground_truth(raw))


@pytest.mark.parametrize(("raw", "reason", "path"), [
    ('{"event_id": "e", "model": "m"}', "missing_field", "<event>"),
    ('{"event_id": "e", "model": "m", "label": null, "entities": null}', "missing_field", "<event>"),
    ('{"event_id": "e", "model": "m", "label": "x", "entities": []}', "unknown_task", "<event>"),
    ('{"event_id": "e", "model": "m", "entities": [{"label": "A", "start": 3, "end": 2}]}', "bad_span",
     "entities[0]"),
    ('{"event_id": "e", "model": "m", "entities": [{"label": "A", "start": -1, "end": 2}]}', "bad_span",
     "entities[0].start"),
    ('{"event_id": "e", "model": "m", "entities": [{"label": "A", "end": 2}]}', "missing_field",
     "entities[0].start"),
    ('{"event_id": "e", "model": "m", "entities": [{"label": "A", "start": 0, "end": 2.0}]}', "wrong_type",
     "entities[0].end"),
    ('{"event_id": "e", "model": "m", "label": ""}', "out_of_range", "label"),
    ('{"event_id": "e", "model": "m", "label": "x", "timestamp": "2026-11-20"}', "bad_timestamp", "timestamp"),
    ('{"model": "m", "label": "x"}', "missing_field", "event_id"),
    ('{"event_id": "e", "model": "m", "label": "x"', "malformed_json", "<event>"),
])
def test_rejections(raw: str, reason: str, path: str) -> None:
    assert outcome(decode_ground_truth, raw) == (reason, path)
    assert outcome(pydantic_validate_ground_truth, raw) == (reason, path)


def test_accepts_both_tasks_and_empty_gold() -> None:
    ner = decode_ground_truth(b'{"event_id": "e", "model": "m", "timestamp": "2026-11-20T13:41:00Z", '
                              b'"entities": [{"label": "PER", "start": 11, "end": 15}]}')
    assert ner.entities is not None and ner.entities[0].label == "PER" and ner.label is None
    assert ner.timestamp == 1795182060.0 and ner.model_version == "unversioned"
    empty = decode_ground_truth('{"event_id": "e", "model": "m", "entities": []}')
    assert empty.entities == []
    clf = decode_ground_truth('{"event_id": "e", "model": "m", "model_version": "2", "label": "POS"}')
    assert clf.label == "POS" and clf.entities is None
    good, bad = decode_ground_truth_lines([b'{"event_id": "e", "model": "m", "label": "x"}', b""])
    assert len(good) == 1 and bad[0][0] == 1 and bad[0][1].reason == "malformed_json"
