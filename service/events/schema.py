"""The prediction-event contract as pydantic v2 models: the documented, authoritative schema.

One JSON object per Kafka message / JSONL line. :func:`json_schema` returns the JSON Schema
(``nlpmon schema``). The hot path does not build these models: ``nlpmon.events.decode``
accepts and rejects exactly the same inputs with msgspec, and shares the value rules defined
here (:func:`parse_timestamp`, :func:`embedding_from_list`, :func:`embedding_from_bytes`).

Validation is strict: no coercion (``"1"`` is not a number, ``true`` is not a number, an
integer is accepted where a float is expected). Unknown fields are ignored.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .errors import InvalidEvent

FLOAT32_MAX: Final = float(np.finfo(np.float32).max)
MAX_LABEL_CHARS: Final = 256
TASKS: Final = ("token-classification", "text-classification")
SPLITS: Final = ("production", "reference")
DTYPES: Final[dict[str, np.dtype[Any]]] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
BASE64_PATTERN: Final = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"

Task = Literal["token-classification", "text-classification"]
Split = Literal["production", "reference"]
Dtype = Literal["float32", "float16"]

_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


# ----------------------------------------------------------------------------- shared value rules


def parse_timestamp(text: str) -> float:
    """RFC 3339 date-time (``Z`` or ``±HH:MM`` offset required) -> float epoch seconds.

    Raises:
        InvalidEvent: reason ``bad_timestamp`` (path-less detail).
    """
    if _RFC3339.fullmatch(text) is not None:
        try:
            return datetime.fromisoformat(text.upper().replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError):
            pass
    raise InvalidEvent("bad_timestamp", f"{text!r} is not an RFC 3339 date-time such as 2026-11-20T13:41:00Z")


def embedding_from_list(values: list[float]) -> np.ndarray:
    """A validated list of numbers (non-empty, within float32 range) -> 1-D float32 array."""
    return np.asarray(values, dtype=np.float32)


_FINITE: Final = np.isfinite
_ALL: Final = np.logical_and.reduce


def embedding_from_bytes(data: bytes, dtype: str) -> np.ndarray:
    """Little-endian ``float32``/``float16`` bytes -> 1-D float32 array (a fresh, writable copy).

    Raises:
        InvalidEvent: ``bad_embedding`` (empty, or not a whole number of values) or
            ``non_finite`` (NaN or infinity); the detail is path-less.
    """
    wire = DTYPES[dtype]
    if not data:
        raise InvalidEvent("bad_embedding", "must not be empty")
    if len(data) % wire.itemsize:
        raise InvalidEvent(
            "bad_embedding", f"{len(data)} bytes is not a multiple of {wire.itemsize} ({dtype})"
        )
    packed = np.frombuffer(data, dtype=wire)
    array = packed.copy() if packed.dtype == np.float32 else packed.astype(np.float32)
    if not _ALL(_FINITE(array)):  # two C loops, no float64 cast, no overflow warning
        raise InvalidEvent("non_finite", "contains NaN or infinity")
    return array


def _custom(exc: InvalidEvent) -> PydanticCustomError:
    return PydanticCustomError(exc.reason, "{detail}", {"detail": exc.detail})


def _timestamp_before(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_timestamp(value)
        except InvalidEvent as exc:
            raise _custom(exc) from None
    return value  # numbers and wrong types go on to strict float validation


def _finite_tree(value: Any) -> bool:
    if isinstance(value, float):
        return value - value == 0.0
    if isinstance(value, dict):
        return all(_finite_tree(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_tree(v) for v in value)
    return True


def _finite_metadata(value: dict[str, Any]) -> dict[str, Any]:
    if not _finite_tree(value):
        raise PydanticCustomError("non_finite", "number is too large to be a finite float")
    return value


def _embedding_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict | EmbeddingB64):
        return "b64"
    return None


# ----------------------------------------------------------------------------- models


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


Score = Annotated[float, Field(ge=0.0, le=1.0, description="A probability in [0, 1].")]
Offset = Annotated[int, Field(ge=0, description="Character offset into `text`, >= 0.")]
NonEmptyStr = Annotated[str, Field(min_length=1)]
MetricLabel = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]
EmbeddingValue = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
EmbeddingList = Annotated[list[EmbeddingValue], Field(min_length=1)]


class EmbeddingB64(_Strict):
    """An embedding packed as little-endian floats, base64-encoded (about 10x cheaper to decode)."""

    dtype: Dtype = Field(description="Element type of the packed little-endian floats.")
    base64: str = Field(
        pattern=BASE64_PATTERN,
        description="Standard base64 (RFC 4648 alphabet, padded) of the packed floats; "
        "the byte length must be a non-zero multiple of the dtype size.",
    )

    @model_validator(mode="after")
    def _check_payload(self) -> EmbeddingB64:
        try:
            embedding_from_bytes(base64.b64decode(self.base64, validate=True), self.dtype)
        except InvalidEvent as exc:
            raise _custom(exc) from None
        return self

    def array(self) -> np.ndarray:
        """The decoded values as a 1-D float32 array."""
        return embedding_from_bytes(base64.b64decode(self.base64, validate=True), self.dtype)


Embedding = Annotated[
    Annotated[EmbeddingList, Tag("list")] | Annotated[EmbeddingB64, Tag("b64")],
    Discriminator(
        _embedding_kind,
        custom_error_type="wrong_type",
        custom_error_message="expected array or object",
    ),
    Field(description="A dense embedding: a non-empty list of numbers, or packed base64 floats."),
]
Timestamp = Annotated[
    float | None,
    BeforeValidator(_timestamp_before),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "number"},
                {"type": "null"},
            ],
            "description": "RFC 3339 date-time with `Z` or an offset, or epoch seconds. "
            "Decoded to float epoch seconds.",
        }
    ),
]


def embedding_array(value: list[float] | EmbeddingB64 | None) -> np.ndarray | None:
    """The 1-D float32 array of a validated embedding field (either wire form), or None."""
    if value is None:
        return None
    if isinstance(value, EmbeddingB64):
        return value.array()
    return embedding_from_list(value)


class Entity(_Strict):
    """One predicted entity span (token classification)."""

    label: NonEmptyStr = Field(description="Entity type, e.g. `PER`.")
    score: Score | None = Field(default=None, description="Model confidence in [0, 1].")
    start: Offset | None = Field(default=None, description="Start character offset (inclusive).")
    end: Offset | None = Field(default=None, description="End character offset (exclusive), >= start.")
    text: str | None = Field(default=None, description="The surface text of the span.")
    embedding: Embedding | None = Field(default=None, description="Optional span embedding.")

    @model_validator(mode="after")
    def _check_span(self) -> Entity:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise PydanticCustomError(
                "bad_span", "start {start} is after end {end}", {"start": self.start, "end": self.end}
            )
        return self

    def embedding_array(self) -> np.ndarray | None:
        """The span embedding as a 1-D float32 array, or None."""
        return embedding_array(self.embedding)


class Token(_Strict):
    """One tagged token (e.g. POS or BIO tags)."""

    text: str | None = Field(default=None, description="The token text.")
    tag: NonEmptyStr = Field(description="The predicted tag.")
    score: Score | None = Field(default=None, description="Model confidence in [0, 1].")
    start: Offset | None = Field(
        default=None, description="Start character offset of the token in the event's `text` (inclusive)."
    )
    end: Offset | None = Field(
        default=None, description="End character offset of the token in the event's `text` (exclusive), >= start."
    )

    @model_validator(mode="after")
    def _check_span(self) -> Token:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise PydanticCustomError(
                "bad_span", "start {start} is after end {end}", {"start": self.start, "end": self.end}
            )
        return self


class Prediction(_Strict):
    """A document-level prediction; used for text classification."""

    label: NonEmptyStr = Field(description="The predicted class.")
    score: Score | None = Field(default=None, description="Confidence of `label` in [0, 1].")
    probabilities: dict[str, Score] | None = Field(
        default=None, description="Per-class probabilities, each in [0, 1]."
    )


class PredictionEvent(_Strict):
    """One model prediction, as published by a serving team (one JSON object per message)."""

    model_config = ConfigDict(title="nlpmon prediction event")

    event_id: NonEmptyStr = Field(description="Unique id of this prediction.")
    model: MetricLabel = Field(description="Model name; becomes a metric label (1-256 chars).")
    model_version: MetricLabel = Field(
        default="unversioned", description="Model version; becomes a metric label (1-256 chars)."
    )
    timestamp: Timestamp = None
    task: Task = Field(default="token-classification", description="Which prediction fields apply.")
    split: Split = Field(default="production", description="`reference` events build the baseline profile.")
    text: str | None = Field(default=None, description="The input text.")
    embedding: Embedding | None = Field(default=None, description="Optional document embedding.")
    entities: list[Entity] = Field(default_factory=list, description="Entity spans (NER).")
    tokens: list[Token] = Field(default_factory=list, description="Per-token tags.")
    prediction: Prediction | None = Field(
        default=None, description="Document-level prediction (text classification; accepted on any task)."
    )
    metadata: Annotated[dict[str, Any], AfterValidator(_finite_metadata)] = Field(
        default_factory=dict, description="Free-form object, carried along unvalidated."
    )

    def embedding_array(self) -> np.ndarray | None:
        """The document embedding as a 1-D float32 array, or None."""
        return embedding_array(self.embedding)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one prediction event, with titles and descriptions."""
    schema = PredictionEvent.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
