"""Hot-path event decoder: msgspec typed structs, then a few numpy/Python checks.

Accepts and rejects exactly what :class:`service.events.schema.PredictionEvent` does (the
property tests hold the two together), at a fraction of the cost. Rejections raise
:class:`InvalidEvent` with a stable ``reason`` code and a one-line ``detail``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any, Final, TypeVar

import msgspec
import numpy as np
from pydantic import ValidationError
from pydantic_core import from_json

from service.events.errors import (
    InvalidEvent,
    constraint_error,
    from_msgspec_error,
    from_pydantic_error,
    malformed_json,
)
from service.events.schema import (
    FLOAT32_MAX,
    MAX_LABEL_CHARS,
    Dtype,
    PredictionEvent,
    Split,
    Task,
    embedding_from_bytes,
    parse_timestamp,
)

__all__ = [
    "EntityOut",
    "Event",
    "InvalidEvent",
    "PredictionOut",
    "TokenOut",
    "decode_event",
    "decode_lines",
    "pydantic_validate",
]

T = TypeVar("T")

_Score = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
_Offset = Annotated[int, msgspec.Meta(ge=0)]
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_MetricLabel = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LABEL_CHARS)]
_EmbeddingList = Annotated[
    list[Annotated[float, msgspec.Meta(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]], msgspec.Meta(min_length=1)
]


class _B64(msgspec.Struct):
    dtype: Dtype
    base64: bytes  # msgspec decodes (strict, padded) base64 natively for bytes fields


_WireEmbedding = _EmbeddingList | _B64 | None


class TokenOut(msgspec.Struct, kw_only=True):
    """One decoded token (also its own wire type)."""

    text: str | None = None
    tag: _NonEmpty
    score: _Score | None = None


class PredictionOut(msgspec.Struct, kw_only=True):
    """A decoded document-level prediction (also its own wire type)."""

    label: _NonEmpty
    score: _Score | None = None
    probabilities: dict[str, float] | None = None  # range checked after decoding, to name the key


class EntityOut(msgspec.Struct, kw_only=True, eq=False):
    """One decoded entity span; ``embedding`` is a 1-D float32 array or None."""

    label: str
    score: float | None
    start: int | None
    end: int | None
    text: str | None
    embedding: np.ndarray | None


class Event(msgspec.Struct, kw_only=True, eq=False):
    """One decoded, validated prediction event. ``timestamp`` is float epoch seconds or None."""

    event_id: str
    model: str
    model_version: str
    timestamp: float | None
    task: str
    split: str
    text: str | None
    embedding: np.ndarray | None
    entities: list[EntityOut]
    tokens: list[TokenOut]
    prediction: PredictionOut | None
    metadata: dict[str, Any]


class _WireEntity(msgspec.Struct):
    label: _NonEmpty
    score: _Score | None = None
    start: _Offset | None = None
    end: _Offset | None = None
    text: str | None = None
    embedding: _WireEmbedding = None


class _WireEvent(msgspec.Struct):
    event_id: _NonEmpty
    model: _MetricLabel
    model_version: _MetricLabel = "unversioned"
    timestamp: float | str | None = None
    task: Task = "token-classification"
    split: Split = "production"
    text: str | None = None
    embedding: _WireEmbedding = None
    entities: list[_WireEntity] = []
    tokens: list[TokenOut] = []
    prediction: PredictionOut | None = None
    metadata: dict[str, Any] = {}


_DECODER: Final = msgspec.json.Decoder(_WireEvent)


def _embedding(value: list[float] | _B64, path: str) -> np.ndarray:
    if type(value) is list:  # values already checked: finite and within float32 range
        return np.asarray(value, dtype=np.float32)
    assert isinstance(value, _B64)
    try:
        return embedding_from_bytes(value.base64, value.dtype)
    except InvalidEvent as exc:
        raise exc.at(path) from None


def _entity(wire: _WireEntity, index: int) -> EntityOut:
    start, end = wire.start, wire.end
    if start is not None and end is not None and start > end:
        raise InvalidEvent("bad_span", f"entities[{index}]: start {start} is after end {end}")
    embedding = None if wire.embedding is None else _embedding(wire.embedding, f"entities[{index}].embedding")
    return EntityOut(
        label=wire.label, score=wire.score, start=start, end=end, text=wire.text, embedding=embedding
    )


def _build(wire: _WireEvent) -> Event:
    timestamp: float | None
    if isinstance(wire.timestamp, str):
        try:
            timestamp = parse_timestamp(wire.timestamp)
        except InvalidEvent as exc:
            raise exc.at("timestamp") from None
    else:
        timestamp = wire.timestamp  # msgspec floats are always finite
    prediction = wire.prediction
    if prediction is not None and prediction.probabilities:
        for key, p in prediction.probabilities.items():
            if not 0.0 <= p <= 1.0:
                raise constraint_error(("prediction", "probabilities", key), p, "")
    return Event(
        event_id=wire.event_id,
        model=wire.model,
        model_version=wire.model_version,
        timestamp=timestamp,
        task=wire.task,
        split=wire.split,
        text=wire.text,
        embedding=None if wire.embedding is None else _embedding(wire.embedding, "embedding"),
        entities=[_entity(e, i) for i, e in enumerate(wire.entities)],
        tokens=wire.tokens,
        prediction=prediction,
        metadata=wire.metadata,
    )


def decode_event(raw: bytes | str) -> Event:
    """Decode and validate one JSON event (UTF-8 bytes or str).

    Raises:
        InvalidEvent: the input is not valid JSON (``malformed_json``) or breaks the contract.
    """
    try:
        wire = _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        raise from_msgspec_error(exc, raw) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise malformed_json(exc) from None
    return _build(wire)


def decode_lines(lines: Iterable[bytes | str]) -> tuple[list[Event], list[tuple[int, InvalidEvent]]]:
    """Decode a batch; returns the good events and ``(input index, error)`` for the rejected ones.

    Every item is one event: blank lines are rejected as ``malformed_json``. Never raises
    :class:`InvalidEvent`.
    """
    return decode_batch(decode_event, lines)


def decode_batch(decode: Callable[[bytes | str], T], lines: Iterable[bytes | str],
                 ) -> tuple[list[T], list[tuple[int, InvalidEvent]]]:
    """Apply ``decode`` to each line: the decoded items, and ``(input index, error)`` for the rejected."""
    items: list[T] = []
    errors: list[tuple[int, InvalidEvent]] = []
    for index, line in enumerate(lines):
        try:
            items.append(decode(line))
        except InvalidEvent as exc:
            errors.append((index, exc))
    return items, errors


def pydantic_validate(raw: bytes | str) -> PredictionEvent:
    """Validate one JSON event with the pydantic schema (slow; the reference for tests).

    JSON is parsed without the non-standard ``NaN``/``Infinity`` tokens, like the hot path.

    Raises:
        InvalidEvent: with the same reason codes and field paths as :func:`decode_event`.
    """
    try:
        data = from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        raise malformed_json(exc) from None
    try:
        return PredictionEvent.model_validate(data, strict=True)
    except ValidationError as exc:
        raise from_pydantic_error(exc) from None
