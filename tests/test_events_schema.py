"""Hand-written examples of the event contract, run against both decoders.

Every rule has one rejected example that names its reason code and field path; the same
input must get the same verdict from the msgspec hot path and from the pydantic schema.
"""

from __future__ import annotations

import base64
import json
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from nlpmon.events import (
    REASONS,
    Event,
    InvalidEvent,
    PredictionEvent,
    decode_event,
    decode_lines,
    json_schema,
    pydantic_validate,
)

Decoder = Callable[[bytes | str], Any]
DECODERS: list[Decoder] = [decode_event, pydantic_validate]
VALUES = [0.5, -1.25, 2.0, 0.125, -3.0]  # exactly representable in float16 and float32


def b64(values: list[float], dtype: str) -> dict[str, str]:
    data = np.asarray(values, dtype="<f4" if dtype == "float32" else "<f2").tobytes()
    return {"dtype": dtype, "base64": base64.b64encode(data).decode("ascii")}


NER_EVENT: dict[str, Any] = {
    "event_id": "7f9c0001",
    "model": "ner-en",
    "model_version": "3",
    "timestamp": "2026-11-20T13:41:00Z",
    "task": "token-classification",
    "split": "production",
    "text": "My name is Omar",
    "embedding": VALUES,
    "entities": [
        {
            "label": "PER",
            "score": 0.998,
            "start": 11,
            "end": 15,
            "text": "Omar",
            "embedding": b64(VALUES, "float16"),
        }
    ],
    "tokens": [{"text": "My", "tag": "PRON", "score": 0.99, "start": 0, "end": 2}, {"tag": "NOUN"}],
    "metadata": {"request_id": "abc", "latency_ms": 12.5},
}
CLS_EVENT: dict[str, Any] = {
    "event_id": "7f9c0002",
    "model": "sentiment",
    "task": "text-classification",
    "text": "great product",
    "embedding": b64(VALUES, "float32"),
    "prediction": {
        "label": "POSITIVE",
        "score": 0.9998,
        "probabilities": {"POSITIVE": 0.9998, "NEGATIVE": 0.0002},
    },
}


def event(**changes: Any) -> str:
    """NER_EVENT with fields replaced (``...`` deletes a field), as JSON."""
    out = json.loads(json.dumps(NER_EVENT))
    for key, value in changes.items():
        if value is ...:
            del out[key]
        else:
            out[key] = value
    return json.dumps(out)


def entity(**fields: Any) -> str:
    return event(entities=[{"label": "PER", **fields}])


def reject(decoder: Decoder, raw: str | bytes) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        decoder(raw)
    return info.value


@pytest.fixture(params=DECODERS, ids=["msgspec", "pydantic"])
def decoder(request: pytest.FixtureRequest) -> Decoder:
    decoder: Decoder = request.param
    return decoder


# ----------------------------------------------------------------------------- accepted


@pytest.mark.parametrize("raw", [json.dumps(NER_EVENT), json.dumps(CLS_EVENT)], ids=["ner", "classification"])
def test_documented_examples_are_accepted(decoder: Decoder, raw: str) -> None:
    decoder(raw)
    decoder(raw.encode())


def test_ner_event_values() -> None:
    ev = decode_event(json.dumps(NER_EVENT).encode())
    assert isinstance(ev, Event)
    assert (ev.event_id, ev.model, ev.model_version) == ("7f9c0001", "ner-en", "3")
    assert ev.timestamp == 1795182060.0
    assert (ev.task, ev.split, ev.text) == ("token-classification", "production", "My name is Omar")
    [ent] = ev.entities
    assert (ent.label, ent.score, ent.start, ent.end, ent.text) == ("PER", 0.998, 11, 15, "Omar")
    assert [(t.text, t.tag, t.score, t.start, t.end) for t in ev.tokens] == [
        ("My", "PRON", 0.99, 0, 2), (None, "NOUN", None, None, None)
    ]
    assert ev.prediction is None
    assert ev.metadata == {"request_id": "abc", "latency_ms": 12.5}


def test_classification_event_values() -> None:
    ev = decode_event(json.dumps(CLS_EVENT))
    assert ev.prediction is not None
    assert (ev.prediction.label, ev.prediction.score) == ("POSITIVE", 0.9998)
    assert ev.prediction.probabilities == {"POSITIVE": 0.9998, "NEGATIVE": 0.0002}
    assert ev.entities == [] and ev.tokens == []


def test_defaults() -> None:
    raw = '{"event_id": "e", "model": "m"}'
    ev, model = decode_event(raw), pydantic_validate(raw)
    for obj in (ev, model):
        assert obj.model_version == "unversioned"
        assert obj.timestamp is None
        assert (obj.task, obj.split) == ("token-classification", "production")
        assert obj.text is None and obj.embedding is None and obj.prediction is None
        assert obj.entities == [] and obj.tokens == [] and obj.metadata == {}


def test_null_means_absent_for_optional_fields(decoder: Decoder) -> None:
    raw = event(timestamp=None, text=None, embedding=None, prediction=None)
    decoder(raw)
    decoder(entity(score=None, start=None, end=None, text=None, embedding=None))


@pytest.mark.parametrize(
    "form",
    [
        VALUES,
        b64(VALUES, "float32"),
        b64(VALUES, "float16"),
        [int(v) if v.is_integer() else v for v in VALUES],
    ],
    ids=["list", "base64-float32", "base64-float16", "list-with-ints"],
)
def test_embedding_forms_decode_to_the_same_float32_values(form: Any) -> None:
    ev = decode_event(event(embedding=form, entities=[{"label": "X", "embedding": form}]))
    model = pydantic_validate(event(embedding=form))
    for array in (ev.embedding, ev.entities[0].embedding, model.embedding_array()):
        assert isinstance(array, np.ndarray)
        assert array.dtype == np.float32 and array.ndim == 1 and array.flags.c_contiguous
        assert array.flags.writeable
        np.testing.assert_array_equal(array, np.asarray(VALUES, dtype=np.float32))


@pytest.mark.parametrize(
    ("stamp", "epoch"),
    [
        ("2026-11-20T13:41:00Z", 1795182060.0),
        ("2026-11-20t13:41:00z", 1795182060.0),
        ("2026-11-20T15:41:00+02:00", 1795182060.0),
        ("2026-11-20T08:11:00-05:30", 1795182060.0),
        ("2026-11-20 13:41:00Z", 1795182060.0),
        ("2026-11-20T13:41:00.25Z", 1795182060.25),
        (1795182060, 1795182060.0),
        (1795182060.5, 1795182060.5),
    ],
)
def test_timestamp_forms(decoder: Decoder, stamp: Any, epoch: float) -> None:
    assert decoder(event(timestamp=stamp)).timestamp == epoch


def test_unknown_fields_are_ignored(decoder: Decoder) -> None:
    raw = json.dumps(
        {
            **NER_EVENT,
            "schema_version": 2,
            "new_block": {"anything": [1, None]},
            "entities": [{"label": "PER", "confidence_v2": 0.3}],
            "tokens": [{"tag": "X", "lemma": "x"}],
            "prediction": {"label": "A", "logits": [1, 2]},
        }
    )
    decoder(raw)


def test_prediction_is_accepted_on_any_task(decoder: Decoder) -> None:
    decoder(event(task="token-classification", prediction={"label": "A"}))


# ----------------------------------------------------------------------------- rejected

NAN_F32 = b64([0.5, float("nan")], "float32")
INF_F16 = b64([float("inf"), 0.5], "float16")

REJECTED: list[tuple[str, str | bytes, str, str]] = [
    # id, raw, reason, detail prefix (the field path)
    ("not-json", "{not json", "malformed_json", "<event>"),
    ("deep-metadata", '{"event_id": "e", "model": "m", "metadata": {"x": ' + "[" * 10_000 + "]" * 10_000 + "}}",
     "too_deep", "<event>"),
    ("deep-entities", '{"event_id": "e", "model": "m", "entities": ' + "[" * 1_000 + "]" * 1_000 + "}",
     "too_deep", "<event>"),
    ("deep-top-level", "[" * 10_000 + "]" * 10_000, "too_deep", "<event>"),
    ("deep-unclosed", '{"event_id": "e", "model": "m", "x": ' + '{"a": ' * 65, "too_deep", "<event>"),
    ("nan-token", '{"event_id": "e", "model": "m", "metadata": {"x": NaN}}', "malformed_json", "<event>"),
    ("trailing-garbage", event() + "x", "malformed_json", "<event>"),
    ("bad-utf8", b'{"event_id": "\xff", "model": "m"}', "malformed_json", "<event>"),
    ("empty-line", "", "malformed_json", "<event>"),
    ("not-an-object", "[1, 2]", "wrong_type", "<event>"),
    ("missing-event-id", event(event_id=...), "missing_field", "event_id"),
    ("missing-model", event(model=...), "missing_field", "model"),
    ("missing-entity-label", event(entities=[{"score": 0.5}]), "missing_field", "entities[0].label"),
    ("missing-token-tag", event(tokens=[{"text": "a"}]), "missing_field", "tokens[0].tag"),
    ("missing-prediction-label", event(prediction={"score": 0.5}), "missing_field", "prediction.label"),
    ("missing-dtype", event(embedding={"base64": "AAAAAA=="}), "missing_field", "embedding.dtype"),
    ("event-id-number", event(event_id=7), "wrong_type", "event_id"),
    ("model-null", event(model=None), "wrong_type", "model"),
    ("text-number", event(text=3), "wrong_type", "text"),
    ("bool-score", entity(score=True), "wrong_type", "entities[0].score"),
    ("string-score", entity(score="0.5"), "wrong_type", "entities[0].score"),
    ("float-start", entity(start=1.0), "wrong_type", "entities[0].start"),
    ("bool-in-embedding", event(embedding=[0.5, True]), "wrong_type", "embedding[1]"),
    ("string-embedding", event(embedding="0.5,0.25"), "wrong_type", "embedding"),
    ("entities-not-list", event(entities={"label": "PER"}), "wrong_type", "entities"),
    ("metadata-not-object", event(metadata=[1]), "wrong_type", "metadata"),
    ("task-number", event(task=1), "wrong_type", "task"),
    ("timestamp-bool", event(timestamp=True), "wrong_type", "timestamp"),
    ("empty-event-id", event(event_id=""), "out_of_range", "event_id"),
    ("empty-model", event(model=""), "out_of_range", "model"),
    ("long-model", event(model="m" * 257), "out_of_range", "model"),
    ("long-model-version", event(model_version="v" * 257), "out_of_range", "model_version"),
    ("score-above-one", entity(score=1.7), "out_of_range", "entities[0].score"),
    ("score-below-zero", event(tokens=[{"tag": "X", "score": -0.1}]), "out_of_range", "tokens[0].score"),
    ("prediction-score", event(prediction={"label": "A", "score": 2}), "out_of_range", "prediction.score"),
    (
        "probability",
        event(prediction={"label": "A", "probabilities": {"A": 1.5}}),
        "out_of_range",
        "prediction.probabilities",
    ),
    ("beyond-float32", event(embedding=[1e39]), "out_of_range", "embedding[0]"),
    (
        "huge-score",
        '{"event_id": "e", "model": "m", "prediction": {"label": "A", "score": 1e400}}',
        "non_finite",
        "prediction.score",
    ),
    ("huge-timestamp", event(timestamp=...)[:-1] + ', "timestamp": -1e999}', "non_finite", "timestamp"),
    ("huge-metadata", event(metadata=...)[:-1] + ', "metadata": {"x": [1e400]}}', "non_finite", "metadata"),
    ("nan-in-base64", event(embedding=NAN_F32), "non_finite", "embedding"),
    ("inf-in-float16", entity(embedding=INF_F16), "non_finite", "entities[0].embedding"),
    ("empty-embedding", event(embedding=[]), "bad_embedding", "embedding"),
    ("empty-base64", event(embedding={"dtype": "float32", "base64": ""}), "bad_embedding", "embedding"),
    (
        "base64-not-whole-values",
        event(embedding={"dtype": "float32", "base64": "AAAAAAA="}),
        "bad_embedding",
        "embedding",
    ),
    (
        "base64-bad-chars",
        event(embedding={"dtype": "float32", "base64": "AA*AAA=="}),
        "bad_embedding",
        "embedding.base64",
    ),
    (
        "base64-urlsafe",
        event(embedding={"dtype": "float16", "base64": "AA-_"}),
        "bad_embedding",
        "embedding.base64",
    ),
    (
        "base64-no-padding",
        event(embedding={"dtype": "float16", "base64": "AAA"}),
        "bad_embedding",
        "embedding.base64",
    ),
    (
        "unknown-dtype",
        event(embedding={"dtype": "float64", "base64": "AAAAAAAAAAA="}),
        "bad_embedding",
        "embedding.dtype",
    ),
    ("unknown-task", event(task="question-answering"), "unknown_task", "task"),
    ("unknown-split", event(split="staging"), "unknown_split", "split"),
    ("naive-timestamp", event(timestamp="2026-11-20T13:41:00"), "bad_timestamp", "timestamp"),
    ("date-only", event(timestamp="2026-11-20"), "bad_timestamp", "timestamp"),
    ("impossible-date", event(timestamp="2026-02-30T00:00:00Z"), "bad_timestamp", "timestamp"),
    ("basic-format", event(timestamp="20261120T134100Z"), "bad_timestamp", "timestamp"),
    ("epoch-as-string", event(timestamp="1795182060"), "bad_timestamp", "timestamp"),
    ("non-ascii-digits", event(timestamp="２０26-11-20T13:41:00Z"), "bad_timestamp", "timestamp"),
    ("negative-start", entity(start=-1), "bad_span", "entities[0].start"),
    ("negative-end", entity(end=-4), "bad_span", "entities[0].end"),
    (
        "start-after-end",
        event(entities=[{"label": "A"}, {"label": "B", "start": 9, "end": 4}]),
        "bad_span",
        "entities[1]",
    ),
    ("negative-token-start", event(tokens=[{"tag": "X", "start": -1}]), "bad_span", "tokens[0].start"),
    ("negative-token-end", event(tokens=[{"tag": "X", "start": 0, "end": -2}]), "bad_span", "tokens[0].end"),
    (
        "token-start-after-end",
        event(tokens=[{"tag": "X", "start": 0, "end": 1}, {"tag": "Y", "start": 5, "end": 3}]),
        "bad_span",
        "tokens[1]",
    ),
    (
        "token-start-after-end-after-a-token-without-end",
        event(tokens=[{"tag": "X", "start": 1}, {"tag": "Y"}, {"tag": "Z", "start": 5, "end": 3}]),
        "bad_span",
        "tokens[2]",
    ),
    ("token-offset-not-int", event(tokens=[{"tag": "X", "start": 1.5}]), "wrong_type", "tokens[0].start"),
]


@pytest.mark.parametrize(("raw", "reason", "path"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED])
def test_rejected(decoder: Decoder, raw: str | bytes, reason: str, path: str) -> None:
    exc = reject(decoder, raw)
    assert exc.reason == reason, exc.detail
    assert exc.detail.startswith(f"{path}: ") or exc.detail.startswith(f"{path}["), exc.detail
    assert str(exc) == exc.detail and "\n" not in exc.detail


def test_every_reason_code_has_an_example() -> None:
    assert {case[2] for case in REJECTED} == set(REASONS)


def test_details_name_the_value() -> None:
    raw = event(entities=[{"label": "A"}, {"label": "B"}, {"label": "C", "score": 1.7}])
    for decoder in DECODERS:
        assert reject(decoder, raw).detail == "entities[2].score: 1.7 is outside [0, 1]"
        probs = event(prediction={"label": "A", "probabilities": {"A": 0.5, "B": 1.25}})
        assert reject(decoder, probs).detail == "prediction.probabilities['B']: 1.25 is outside [0, 1]"


def test_invalid_event_is_a_picklable_value_error() -> None:
    exc = InvalidEvent("bad_span", "entities[0]: start 9 is after end 4")
    assert isinstance(exc, ValueError)
    copy = pickle.loads(pickle.dumps(exc))
    assert (copy.reason, copy.detail, str(copy)) == (exc.reason, exc.detail, str(exc))


def test_decode_lines_reports_input_positions() -> None:
    lines: list[bytes | str] = [event().encode(), b"{", event(task="qa"), json.dumps(CLS_EVENT), b""]
    events, errors = decode_lines(lines)
    assert [e.event_id for e in events] == ["7f9c0001", "7f9c0002"]
    assert [(i, e.reason) for i, e in errors] == [
        (1, "malformed_json"),
        (2, "unknown_task"),
        (4, "malformed_json"),
    ]


# ----------------------------------------------------------------------------- JSON Schema

ALL_FIELDS = {
    "event_id", "model", "model_version", "timestamp", "task", "split",
    "text", "embedding", "entities", "tokens", "prediction", "metadata",
}  # fmt: skip


def test_json_schema_describes_every_field() -> None:
    schema = json_schema()
    json.dumps(schema)  # plain JSON
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["type"] == "object"
    assert set(schema["properties"]) == ALL_FIELDS
    assert set(schema["required"]) == {"event_id", "model"}
    assert schema["title"] and schema["description"]
    for name, prop in schema["properties"].items():
        assert prop.get("description"), name
    defs = schema["$defs"]
    assert set(defs) >= {"Entity", "Token", "Prediction", "EmbeddingB64"}
    assert set(defs["Entity"]["properties"]) == {"label", "score", "start", "end", "text", "embedding"}
    assert set(defs["Token"]["properties"]) == {"text", "tag", "score", "start", "end"}
    assert set(defs["Prediction"]["properties"]) == {"label", "score", "probabilities"}
    assert set(defs["EmbeddingB64"]["properties"]) == {"dtype", "base64"}
    assert schema["properties"]["task"]["enum"] == ["token-classification", "text-classification"]
    assert schema["properties"]["model"]["maxLength"] == 256
    assert schema is not json_schema()  # callers may mutate their copy


def test_json_schema_is_valid_and_matches_examples() -> None:
    import jsonschema  # a dev dependency (pyproject.toml): missing means a broken install, not a skip

    validator_cls = jsonschema.Draft202012Validator
    validator_cls.check_schema(json_schema())
    validator = validator_cls(json_schema())
    for example in (NER_EVENT, CLS_EVENT):
        validator.validate(example)
    assert not validator.is_valid({"event_id": "e"})


def test_pydantic_model_is_the_contract() -> None:
    model = PredictionEvent.model_validate_json(json.dumps(NER_EVENT), strict=True)
    assert model.entities[0].embedding_array() is not None
