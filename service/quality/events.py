"""The ground-truth (label) event contract and its two decoders.

Human review publishes one JSON object per reviewed prediction, joined to the prediction by
``event_id``:

* token classification: ``{"event_id", "model", "model_version"?, "timestamp"?,
  "entities": [{"label": str, "start": int >= 0, "end": int >= start}]}`` (``[]`` means "the
  document has no entities", a valid gold standard);
* text classification: ``{"event_id", "model", "model_version"?, "timestamp"?, "label": str}``.

Exactly one of ``entities`` / ``label`` is given (``null`` is the same as absent). Field rules are
those of the prediction contract (docs/events.md): strict types, unknown fields ignored,
``model``/``model_version`` 1-256 characters, ``timestamp`` RFC 3339 with an offset or epoch seconds.

:class:`GroundTruthEvent` (pydantic) is the authoritative schema; :func:`decode_ground_truth`
(msgspec) accepts and rejects exactly the same inputs, with the same :class:`InvalidEvent` reason
code and field path (a property test holds them together). Rejections specific to this contract:

* neither ``entities`` nor ``label``: ``missing_field`` at ``<event>``;
* both: ``unknown_task`` at ``<event>`` (the task is ambiguous);
* ``start > end``: ``bad_span``; a negative offset: ``bad_span``; a missing offset: ``missing_field``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Final

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError, from_json

from ..events.decode import decode_batch, decode_wire
from ..events.depth import MAX_JSON_DEPTH, exceeds_depth
from ..events.errors import InvalidEvent, from_pydantic_error, malformed_json, too_deep
from ..events.schema import MAX_LABEL_CHARS, Timestamp, parse_timestamp

__all__ = [
    "GoldSpan",
    "GoldSpanModel",
    "GroundTruth",
    "GroundTruthEvent",
    "decode_ground_truth",
    "decode_ground_truth_lines",
    "pydantic_validate_ground_truth",
]

_NEITHER: Final = "<event>: exactly one of entities or label is required"
_BOTH: Final = "<event>: both entities and label are given; exactly one is allowed"

# ----------------------------------------------------------------------------- msgspec hot path

_Offset = Annotated[int, msgspec.Meta(ge=0)]
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_MetricLabel = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LABEL_CHARS)]


class GoldSpan(msgspec.Struct, frozen=True):
    """One gold entity span (also its own wire type); offsets are characters, ``end`` exclusive."""

    label: _NonEmpty
    start: _Offset
    end: _Offset


class GroundTruth(msgspec.Struct, kw_only=True, eq=False):
    """One decoded, validated label event. Exactly one of ``entities`` / ``label`` is not None."""

    event_id: str
    model: str
    model_version: str
    timestamp: float | None
    entities: list[GoldSpan] | None
    label: str | None


class _WireGroundTruth(msgspec.Struct):
    event_id: _NonEmpty
    model: _MetricLabel
    model_version: _MetricLabel = "unversioned"
    timestamp: float | str | None = None
    entities: list[GoldSpan] | None = None
    label: _NonEmpty | None = None


_DECODER: Final = msgspec.json.Decoder(_WireGroundTruth)


def _build(wire: _WireGroundTruth) -> GroundTruth:
    if wire.entities is not None:
        for index, span in enumerate(wire.entities):
            if span.start > span.end:
                raise InvalidEvent("bad_span", f"entities[{index}]: start {span.start} is after end {span.end}")
    if wire.entities is None and wire.label is None:
        raise InvalidEvent("missing_field", _NEITHER)
    if wire.entities is not None and wire.label is not None:
        raise InvalidEvent("unknown_task", _BOTH)
    timestamp: float | None
    if isinstance(wire.timestamp, str):
        try:
            timestamp = parse_timestamp(wire.timestamp)
        except InvalidEvent as exc:
            raise exc.at("timestamp") from None
    else:
        timestamp = wire.timestamp
    return GroundTruth(
        event_id=wire.event_id,
        model=wire.model,
        model_version=wire.model_version,
        timestamp=timestamp,
        entities=wire.entities,
        label=wire.label,
    )


def decode_ground_truth(raw: bytes | str) -> GroundTruth:
    """Decode and validate one JSON label event.

    Raises:
        InvalidEvent: nested too deep (``too_deep``), not valid JSON (``malformed_json``) or breaks the
            contract; never any other exception, whatever the bytes.
    """
    return _build(decode_wire(_DECODER, raw))


def decode_ground_truth_lines(
    lines: Iterable[bytes | str],
) -> tuple[list[GroundTruth], list[tuple[int, InvalidEvent]]]:
    """Decode a batch: the good label events, and ``(input index, error)`` for the others. Never raises."""
    return decode_batch(decode_ground_truth, lines)


# ----------------------------------------------------------------------------- pydantic schema


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class GoldSpanModel(_Strict):
    """One gold entity span."""

    label: str = Field(min_length=1, description="Entity type, e.g. `PER`.")
    start: int = Field(ge=0, description="Start character offset (inclusive), >= 0.")
    end: int = Field(ge=0, description="End character offset (exclusive), >= start.")

    @model_validator(mode="after")
    def _check_span(self) -> GoldSpanModel:
        if self.start > self.end:
            raise PydanticCustomError(
                "bad_span", "start {start} is after end {end}", {"start": self.start, "end": self.end}
            )
        return self


class GroundTruthEvent(_Strict):
    """The ground truth of one prediction, joined to it by ``event_id``."""

    model_config = ConfigDict(title="nlpmon ground-truth event")

    event_id: str = Field(min_length=1, description="The `event_id` of the labelled prediction.")
    model: str = Field(min_length=1, max_length=MAX_LABEL_CHARS, description="Model name.")
    model_version: str = Field(
        default="unversioned", min_length=1, max_length=MAX_LABEL_CHARS, description="Model version."
    )
    timestamp: Timestamp = None
    entities: list[GoldSpanModel] | None = Field(default=None, description="Gold spans (token classification).")
    label: str | None = Field(default=None, min_length=1, description="Gold class (text classification).")

    @model_validator(mode="after")
    def _exactly_one(self) -> GroundTruthEvent:
        if self.entities is None and self.label is None:
            raise PydanticCustomError("missing_field", "exactly one of entities or label is required")
        if self.entities is not None and self.label is not None:
            raise PydanticCustomError("unknown_task", "both entities and label are given; exactly one is allowed")
        return self


def pydantic_validate_ground_truth(raw: bytes | str) -> GroundTruthEvent:
    """Validate one JSON label event with the pydantic schema (the reference for tests).

    Raises:
        InvalidEvent: same reason codes and field paths as :func:`decode_ground_truth`.
    """
    if exceeds_depth(raw):
        raise too_deep(MAX_JSON_DEPTH)
    try:
        data = from_json(raw, allow_inf_nan=False)
    except (ValueError, TypeError) as exc:  # TypeError: a str that UTF-8 cannot encode (lone surrogates)
        raise malformed_json(exc) from None
    try:
        return GroundTruthEvent.model_validate(data, strict=True)
    except ValidationError as exc:
        raise from_pydantic_error(exc) from None
