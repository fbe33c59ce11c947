"""Hot-path event decoder: msgspec typed structs, then a few numpy/Python checks.

Accepts and rejects exactly what :class:`nlpmon.events.schema.PredictionEvent` does (the
property tests hold the two together), at a fraction of the cost. Rejections raise
:class:`InvalidEvent` with a stable ``reason`` code and a one-line ``detail``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import attrgetter, gt
from typing import Annotated, Any, Final, TypeVar

import msgspec
import numpy as np
from pydantic import ValidationError
from pydantic_core import from_json

from .depth import MAX_JSON_DEPTH, exceeds_depth
from .errors import (
    InvalidEvent,
    constraint_error,
    from_msgspec_error,
    from_pydantic_error,
    malformed_json,
    too_deep,
)
from .schema import (
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
    "EventDecoder",
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


# gc=False on the structs of one item (token, entity, packed embedding): their fields are strings, numbers,
# bytes, float arrays or such structs, so they cannot be part of a reference cycle; untracked, the ~30 tokens
# of an event add no work to the garbage collector's passes over the events a batch holds.
class _B64(msgspec.Struct, gc=False):
    dtype: Dtype
    base64: bytes  # msgspec decodes (strict, padded) base64 natively for bytes fields


_WireEmbedding = _EmbeddingList | _B64 | None


class TokenOut(msgspec.Struct, kw_only=True, gc=False):
    """One decoded token (also its own wire type)."""

    text: str | None = None
    tag: _NonEmpty
    score: _Score | None = None
    start: _Offset | None = None  # character offsets into the event's text; start <= end checked by ``_build``
    end: _Offset | None = None


class PredictionOut(msgspec.Struct, kw_only=True):
    """A decoded document-level prediction (also its own wire type)."""

    label: _NonEmpty
    score: _Score | None = None
    probabilities: dict[str, float] | None = None  # range checked after decoding, to name the key


class EntityOut(msgspec.Struct, kw_only=True, eq=False, gc=False):
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


class _WireEntity(msgspec.Struct, gc=False):
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


# The same wire types refusing unknown fields: an event without any (the usual case) decodes in one typed pass
# whose nesting is bounded by the schema everywhere but in ``metadata``, whose depth is then counted on the
# decoded values, so it needs no depth scan of its bytes. Anything else this decoder refuses (an unknown
# field, an invalid event) is decoded again by ``_DECODER`` (see ``_lenient_wire``).
class _StrictB64(_B64, forbid_unknown_fields=True):
    pass


_StrictEmbedding = _EmbeddingList | _StrictB64 | None


class _StrictToken(TokenOut, forbid_unknown_fields=True):
    pass


class _StrictPrediction(PredictionOut, forbid_unknown_fields=True):
    pass


class _StrictEntity(_WireEntity, forbid_unknown_fields=True):
    embedding: _StrictEmbedding = None


class _StrictEvent(_WireEvent, forbid_unknown_fields=True):
    embedding: _StrictEmbedding = None
    entities: list[_StrictEntity] = []  # type: ignore[assignment]
    tokens: list[_StrictToken] = []  # type: ignore[assignment]
    prediction: _StrictPrediction | None = None


_STRICT_DECODER: Final = msgspec.json.Decoder(_StrictEvent)
#: Deepest level of the contract's own containers (event, entities, an entity, its embedding): an ignored
#: field sits in one of them, so its value starts at most one level below.
_SCHEMA_LEVELS: Final = 4


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


_START: Final = attrgetter("start")
_END: Final = attrgetter("end")


def _check_token_spans(tokens: list[TokenOut]) -> None:
    """Raise ``bad_span`` at the first token whose ``start`` is after its ``end`` (both given)."""
    if not any(map(_START, tokens)):  # every start None or 0 (never after its end): C-level, no list
        return
    starts = list(map(_START, tokens))
    ends = list(map(_END, tokens))
    try:
        if not any(map(gt, starts, ends)):  # tokens all with both offsets: C-level passes only
            return
    except TypeError:  # some offsets missing: token by token
        pass
    for index, (start, end) in enumerate(zip(starts, ends, strict=True)):
        if start is not None and end is not None and start > end:
            raise InvalidEvent("bad_span", f"tokens[{index}]: start {start} is after end {end}")


def _build(wire: _WireEvent) -> Event:
    # Checks in the schema's field order, so that an event breaking two rules is refused for the same one
    # as by pydantic (which reports the first field's error).
    timestamp: float | None
    if isinstance(wire.timestamp, str):
        try:
            timestamp = parse_timestamp(wire.timestamp)
        except InvalidEvent as exc:
            raise exc.at("timestamp") from None
    else:
        timestamp = wire.timestamp  # msgspec floats are always finite
    embedding = None if wire.embedding is None else _embedding(wire.embedding, "embedding")
    entities = [_entity(e, i) for i, e in enumerate(wire.entities)]
    tokens = wire.tokens
    if tokens:
        _check_token_spans(tokens)
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
        embedding=embedding,
        entities=entities,
        tokens=tokens,
        prediction=prediction,
        metadata=wire.metadata,
    )


def _containers(value: object) -> tuple[int, int]:
    """(nesting depth, number of arrays and objects) of a decoded JSON value; iterative."""
    deepest = count = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            count += 1
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest, count


def _known_containers(wire: _WireEvent, metadata_containers: int) -> int:
    """A lower bound of the arrays and objects the decoded known fields of ``wire`` were written with."""
    n = 1 + metadata_containers
    if wire.entities:
        n += 1 + len(wire.entities) + sum(1 for e in wire.entities if e.embedding is not None)
    if wire.tokens:
        n += 1 + len(wire.tokens)
    if wire.embedding is not None:
        n += 1
    if wire.prediction is not None:
        n += 1 + (wire.prediction.probabilities is not None)
    return n


def _checked_metadata(wire: _WireEvent) -> int:
    """Raise ``too_deep`` when ``metadata`` nests past the limit; returns its number of containers."""
    if not wire.metadata:
        return 0
    depth, count = _containers(wire.metadata)
    if 1 + depth > MAX_JSON_DEPTH:  # the event object holds it
        raise too_deep(MAX_JSON_DEPTH)
    return count


def _lenient_wire(raw: bytes | str) -> _WireEvent:
    """The permissive typed decode (unknown fields ignored), with the depth limit enforced exactly.

    At most ``MAX_JSON_DEPTH`` opening brackets in all: nothing to check. Otherwise the typed decode goes
    first (it recurses only through ``metadata`` and ignored fields; ``RecursionError`` means too deep):
    ``metadata`` is measured on its decoded values, and the byte scan runs only when the opening brackets
    not accounted for by decoded known fields (those of ignored fields, or inside strings) could nest
    past the limit. An invalid event is scanned before its error is explained (which parses it again).
    """
    opening = raw.count("[") + raw.count("{") if isinstance(raw, str) else raw.count(b"[") + raw.count(b"{")
    if opening <= MAX_JSON_DEPTH:
        return decode_wire(_DECODER, raw, scanned=True)
    try:
        wire = _DECODER.decode(raw)
    except RecursionError:
        raise too_deep(MAX_JSON_DEPTH) from None
    except (msgspec.MsgspecError, UnicodeError):
        return decode_wire(_DECODER, raw)  # raises: too_deep, or the reason of the invalid event
    unaccounted = opening - _known_containers(wire, _checked_metadata(wire))
    if _SCHEMA_LEVELS + unaccounted > MAX_JSON_DEPTH and exceeds_depth(raw):
        raise too_deep(MAX_JSON_DEPTH)
    return wire


class EventDecoder:
    """Decodes the events of one batch (or stream); the verdicts are those of :func:`decode_event`.

    Tries first the typed decode that refuses unknown fields (one pass, no depth scan: its nesting is
    bounded by the schema but in ``metadata``, measured on the decoded values). An event it refuses is
    decoded permissively (:func:`_lenient_wire`); after ``strict_misses`` valid events with unknown fields,
    the strict attempt is skipped for the rest of the batch (a producer that adds fields adds them to
    every event). Pure; the choice changes the cost, never the result.
    """

    def __init__(self, strict_misses: int = 8) -> None:
        self.misses_left = strict_misses

    def decode(self, raw: bytes | str) -> Event:
        """Decode and validate one JSON event (UTF-8 bytes or str).

        Raises:
            InvalidEvent: the input nests too deep (``too_deep``), is not valid JSON (``malformed_json``)
                or breaks the contract; never any other exception, whatever the bytes.
        """
        if self.misses_left > 0:
            try:
                strict: _WireEvent = _STRICT_DECODER.decode(raw)
            except (msgspec.MsgspecError, UnicodeError, RecursionError):
                pass
            else:
                _checked_metadata(strict)
                return _build(strict)
            wire = _lenient_wire(raw)
            self.misses_left -= 1  # valid JSON of the contract's types, with unknown fields
            return _build(wire)
        return _build(_lenient_wire(raw))


def decode_wire(decoder: msgspec.json.Decoder[T], raw: bytes | str, *, scanned: bool = False) -> T:
    """``decoder.decode(raw)`` for any input: every failure becomes an :class:`InvalidEvent`.

    Nesting deeper than ``MAX_JSON_DEPTH`` is refused (``too_deep``) before parsing (``scanned``: the
    caller knows it is not), so that no parser recurses past it; the ``RecursionError`` guard is for a
    caller deep in the stack already.
    """
    if not scanned and exceeds_depth(raw):
        raise too_deep(MAX_JSON_DEPTH)
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise from_msgspec_error(exc, raw) from None
    except (msgspec.DecodeError, UnicodeError) as exc:
        raise malformed_json(exc) from None
    except RecursionError:
        raise too_deep(MAX_JSON_DEPTH) from None


def decode_event(raw: bytes | str) -> Event:
    """Decode and validate one JSON event (UTF-8 bytes or str); see :class:`EventDecoder`.

    Raises:
        InvalidEvent: the input nests too deep (``too_deep``), is not valid JSON (``malformed_json``) or
            breaks the contract; never any other exception, whatever the bytes.
    """
    return EventDecoder().decode(raw)


def decode_lines(lines: Iterable[bytes | str]) -> tuple[list[Event], list[tuple[int, InvalidEvent]]]:
    """Decode a batch; returns the good events and ``(input index, error)`` for the rejected ones.

    Every item is one event: blank lines are rejected as ``malformed_json``. Never raises
    :class:`InvalidEvent`.
    """
    return decode_batch(EventDecoder().decode, lines)


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
    if exceeds_depth(raw):
        raise too_deep(MAX_JSON_DEPTH)
    try:
        data = from_json(raw, allow_inf_nan=False)
    except (ValueError, TypeError) as exc:  # TypeError: a str that UTF-8 cannot encode (lone surrogates)
        raise malformed_json(exc) from None
    try:
        return PredictionEvent.model_validate(data, strict=True)
    except ValidationError as exc:
        raise from_pydantic_error(exc) from None
