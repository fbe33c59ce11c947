"""Property tests: the msgspec hot path and the pydantic schema accept exactly the same events.

Valid events are generated from the contract; invalid ones are valid events with one mutation
(a value swapped for another JSON value, a key dropped, a corrupted base64 payload, a broken
span, a truncated document, a non-standard number token...). For every input both decoders
must agree on accept/reject; on reject they must agree on the reason code and the field path,
and on accept they must produce the same values.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nlpmon.events import Event, InvalidEvent, PredictionEvent, decode_event, pydantic_validate
from nlpmon.events.schema import FLOAT32_MAX, embedding_array

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Json = dict[str, Any]

# ----------------------------------------------------------------------------- valid events

names = st.text(min_size=1, max_size=12)
scores = st.floats(min_value=0.0, max_value=1.0) | st.sampled_from([0, 1])
f32_values = st.floats(min_value=-FLOAT32_MAX, max_value=FLOAT32_MAX) | st.integers(-(2**60), 2**60)
offsets = st.timedeltas(
    min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
)


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    offset = timedelta(minutes=draw(offsets) // timedelta(minutes=1))
    moment = draw(st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1)))
    text = moment.replace(tzinfo=timezone(offset)).isoformat(
        timespec=draw(st.sampled_from(["seconds", "microseconds"]))
    )
    if text.endswith("+00:00") and draw(st.booleans()):
        text = text[:-6] + draw(st.sampled_from(["Z", "z"]))
    return text


@st.composite
def packed_embeddings(draw: st.DrawFn) -> Json:
    dtype = draw(st.sampled_from(["float32", "float16"]))
    finite = st.floats(width=32, allow_nan=False, allow_infinity=False)
    if dtype == "float16":
        finite = st.floats(width=16, allow_nan=False, allow_infinity=False)
    values = draw(st.lists(finite, min_size=1, max_size=8))
    data = np.asarray(values, dtype="<f4" if dtype == "float32" else "<f2").tobytes()
    return {"dtype": dtype, "base64": base64.b64encode(data).decode("ascii")}


embeddings = st.lists(f32_values, min_size=1, max_size=8) | packed_embeddings()
json_leaves = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
)


def optional(draw: st.DrawFn, out: Json, key: str, strategy: st.SearchStrategy[Any]) -> None:
    """Draw whether ``key`` is absent, null (when allowed by the caller's strategy) or a value."""
    if draw(st.booleans()):
        out[key] = draw(strategy)


@st.composite
def entities(draw: st.DrawFn) -> Json:
    out: Json = {"label": draw(names)}
    optional(draw, out, "score", st.none() | scores)
    start, length = draw(st.integers(0, 10**6)), draw(st.integers(0, 50))
    optional(draw, out, "start", st.none() | st.just(start))
    optional(draw, out, "end", st.none() | st.just(start + length))
    optional(draw, out, "text", st.none() | st.text(max_size=10))
    optional(draw, out, "embedding", st.none() | embeddings)
    optional(draw, out, "x-extra", json_values)
    return out


@st.composite
def tokens(draw: st.DrawFn) -> Json:
    out: Json = {"tag": draw(names)}
    optional(draw, out, "text", st.none() | st.text(max_size=10))
    optional(draw, out, "score", st.none() | scores)
    start, length = draw(st.integers(0, 10**6)), draw(st.integers(0, 20))
    end = start + length
    optional(draw, out, "start", st.none() | st.just(start))
    optional(draw, out, "end", st.none() | st.just(end))
    return out


@st.composite
def predictions(draw: st.DrawFn) -> Json:
    out: Json = {"label": draw(names)}
    optional(draw, out, "score", st.none() | scores)
    optional(draw, out, "probabilities", st.none() | st.dictionaries(names, scores, max_size=4))
    return out


@st.composite
def valid_events(draw: st.DrawFn) -> Json:
    out: Json = {"event_id": draw(names), "model": draw(st.text(min_size=1, max_size=256))}
    optional(draw, out, "model_version", st.text(min_size=1, max_size=8))
    optional(draw, out, "timestamp", st.none() | rfc3339() | st.floats(-1e12, 1e12) | st.integers(0, 2**40))
    optional(draw, out, "task", st.sampled_from(["token-classification", "text-classification"]))
    optional(draw, out, "split", st.sampled_from(["production", "reference"]))
    optional(draw, out, "text", st.none() | st.text(max_size=20))
    optional(draw, out, "embedding", st.none() | embeddings)
    optional(draw, out, "entities", st.lists(entities(), max_size=3))
    optional(draw, out, "tokens", st.lists(tokens(), max_size=3))
    optional(draw, out, "prediction", st.none() | predictions())
    optional(draw, out, "metadata", st.dictionaries(st.text(max_size=5), json_values, max_size=3))
    optional(draw, out, "schema_version", json_values)  # unknown fields are ignored
    return out


def dumps(event: Json, ascii_only: bool = True) -> str:
    return json.dumps(event, allow_nan=False, ensure_ascii=ascii_only)


# ----------------------------------------------------------------------------- mutations

PathT = tuple[str | int, ...]
REPLACEMENTS: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2,
    0.5,
    1.5,
    -0.5,
    1e39,
    10**30,
    "",
    "x",
    "float64",
    "qa",
    "2026-11-20",
    "2026-11-20T13:41:00Z",
    [],
    [1.0],
    ["x"],
    [True],
    {},
    {"dtype": "float32"},
    {"label": "X"},
    {"tag": "X"},
    {"dtype": "float16", "base64": "AAA="},
]


def paths(node: Any, prefix: PathT = ()) -> list[PathT]:
    """Every path to a value inside ``node`` (not the root)."""
    out: list[PathT] = []
    children: list[tuple[str | int, Any]] = (
        list(node.items())
        if isinstance(node, dict)
        else list(enumerate(node))
        if isinstance(node, list)
        else []
    )
    for key, child in children:
        out.append((*prefix, key))
        out.extend(paths(child, (*prefix, key)))
    return out


def parent_of(event: Json, path: PathT) -> Any:
    node: Any = event
    for key in path[:-1]:
        node = node[key]
    return node


@st.composite
def mutated_events(draw: st.DrawFn) -> str:
    event = draw(valid_events())
    kind = draw(st.sampled_from(["replace", "delete", "add", "base64", "span", "text"]))
    all_paths = paths(event)
    if kind == "replace":
        path = draw(st.sampled_from(all_paths))
        parent_of(event, path)[path[-1]] = draw(st.sampled_from(REPLACEMENTS))
    elif kind == "delete":
        keyed = [p for p in all_paths if isinstance(p[-1], str)]
        path = draw(st.sampled_from(keyed))
        del parent_of(event, path)[path[-1]]
    elif kind == "add":
        key = draw(
            st.sampled_from(["timestamp", "task", "split", "embedding", "entities", "tokens", "prediction"])
        )
        event[key] = draw(st.sampled_from(REPLACEMENTS))
    elif kind == "base64":
        dtype, code = (
            draw(st.sampled_from(["<f4", "<f2"])),
            draw(st.sampled_from(["nan", "inf", "odd", "chars", "pad"])),
        )
        payload = {"dtype": "float32" if dtype == "<f4" else "float16"}
        data = np.asarray([0.5, {"nan": np.nan, "inf": -np.inf}.get(code, 1.0)], dtype=dtype).tobytes()
        text = base64.b64encode(data[:-1] if code == "odd" else data).decode("ascii")
        if code == "chars":
            text = text[:2] + draw(st.sampled_from(["*", "-", "_", " ", "\n", "é"])) + text[3:]
        elif code == "pad":
            text = text.rstrip("=") + draw(st.sampled_from(["", "=", "===", "===="]))
        payload["base64"] = text
        target = draw(st.sampled_from(["top", "entity"]))
        if target == "top":
            event["embedding"] = payload
        else:
            event["entities"] = [{"label": "PER", "embedding": payload}]
    elif kind == "span":
        start = draw(st.integers(-3, 10))
        span = {"start": start, "end": start - draw(st.integers(-2, 3))}
        if draw(st.booleans()):
            event["entities"] = [{"label": "PER", **span}]
        else:  # a token's offsets, after valid tokens (path tokens[i])
            event["tokens"] = [*event.get("tokens", [])[: draw(st.integers(0, 2))], {"tag": "X", **span}]
    else:
        raw = dumps(event)
        how = draw(st.sampled_from(["truncate", "nan", "huge", "trailing"]))
        if how == "truncate":
            return raw[: draw(st.integers(0, len(raw) - 1))]
        if how == "trailing":
            return raw + draw(st.sampled_from([",", " x", "{}", " \n"]))
        token = "NaN" if how == "nan" else draw(st.sampled_from(["1e400", "-1e400", "1" + "0" * 400]))
        field = draw(st.sampled_from(["timestamp", "metadata", "ignored_extra", "entities"]))
        value = {"metadata": f'{{"k": {token}}}', "entities": f'[{{"label": "P", "score": {token}}}]'}.get(
            field, token
        )
        return raw[:-1] + (", " if len(raw) > 2 else "") + f'"{field}": {value}}}'
    return dumps(event, ascii_only=draw(st.booleans()))


# ----------------------------------------------------------------------------- comparison


def outcome(decoder: Any, raw: str | bytes) -> Any:
    try:
        return decoder(raw)
    except InvalidEvent as exc:
        return exc


def assert_same_array(a: np.ndarray | None, b: np.ndarray | None) -> None:
    if a is None or b is None:
        assert a is None and b is None
        return
    assert a.dtype == np.float32 and a.ndim == 1 and a.flags.c_contiguous
    np.testing.assert_array_equal(a, b)


def assert_same_values(event: Event, model: PredictionEvent) -> None:
    for field in ("event_id", "model", "model_version", "timestamp", "task", "split", "text", "metadata"):
        assert getattr(event, field) == getattr(model, field), field
    assert_same_array(event.embedding, model.embedding_array())
    assert len(event.entities) == len(model.entities)
    for got, want in zip(event.entities, model.entities, strict=True):
        assert (got.label, got.score, got.start, got.end, got.text) == (
            want.label,
            want.score,
            want.start,
            want.end,
            want.text,
        )
        assert_same_array(got.embedding, embedding_array(want.embedding))
    assert [(t.text, t.tag, t.score, t.start, t.end) for t in event.tokens] == [
        (t.text, t.tag, t.score, t.start, t.end) for t in model.tokens
    ]
    if event.prediction is None or model.prediction is None:
        assert event.prediction is None and model.prediction is None
    else:
        got_p, want_p = event.prediction, model.prediction
        assert (got_p.label, got_p.score, got_p.probabilities) == (
            want_p.label,
            want_p.score,
            want_p.probabilities,
        )


def field_path(exc: InvalidEvent) -> str:
    """The path an error names, up to any dict key (msgspec does not report dict keys)."""
    return re.split(r"\[['\"]", exc.detail.partition(": ")[0])[0]


def assert_equivalent(raw: str | bytes) -> Event | InvalidEvent:
    fast, reference = outcome(decode_event, raw), outcome(pydantic_validate, raw)
    if isinstance(fast, InvalidEvent) or isinstance(reference, InvalidEvent):
        assert isinstance(fast, InvalidEvent), f"msgspec accepted what pydantic rejected: {reference!r}"
        assert isinstance(reference, InvalidEvent), f"pydantic accepted what msgspec rejected: {fast!r}"
        assert fast.reason == reference.reason, (fast, reference)
        assert field_path(fast) == field_path(reference), (fast, reference)
        return fast
    assert_same_values(fast, reference)
    return fast


# ----------------------------------------------------------------------------- properties


def expected_embedding(value: Any) -> np.ndarray:
    if isinstance(value, list):
        return np.asarray(value, dtype=np.float64).astype(np.float32)
    data = base64.b64decode(value["base64"])
    return np.frombuffer(data, dtype="<f4" if value["dtype"] == "float32" else "<f2").astype(np.float32)


@SETTINGS
@given(valid_events(), st.booleans())
def test_valid_events_decode_identically(event: Json, as_bytes: bool) -> None:
    raw = dumps(event, ascii_only=not as_bytes)
    decoded = assert_equivalent(raw.encode() if as_bytes else raw)
    assert isinstance(decoded, Event), decoded
    # ... and to the values that were encoded, independently of both decoders.
    assert decoded.event_id == event["event_id"] and decoded.model == event["model"]
    assert decoded.model_version == event.get("model_version", "unversioned")
    assert decoded.task == event.get("task", "token-classification")
    assert decoded.split == event.get("split", "production")
    stamp = event.get("timestamp")
    if isinstance(stamp, str):
        assert decoded.timestamp == datetime.fromisoformat(stamp.upper().replace("Z", "+00:00")).timestamp()
    else:
        assert decoded.timestamp == stamp
    if event.get("embedding") is not None:
        assert_same_array(decoded.embedding, expected_embedding(event["embedding"]))
    for got, source in zip(decoded.entities, event.get("entities", []), strict=True):
        if source.get("embedding") is not None:
            assert_same_array(got.embedding, expected_embedding(source["embedding"]))


@SETTINGS
@given(mutated_events())
def test_mutated_events_get_the_same_verdict(raw: str) -> None:
    assert_equivalent(raw)


@SETTINGS
@given(st.binary(max_size=40) | st.text(max_size=40))
def test_arbitrary_input_gets_the_same_verdict(raw: bytes | str) -> None:
    assert isinstance(assert_equivalent(raw), InvalidEvent)
