"""The prediction-event contract and its decoders.

- :mod:`nlpmon.events.schema`: the authoritative pydantic v2 models and :func:`json_schema`.
- :mod:`nlpmon.events.decode`: the msgspec hot-path decoder, :func:`decode_event` and
  :func:`decode_lines`, which accept and reject exactly what the schema does.
- :mod:`nlpmon.events.errors`: :class:`InvalidEvent` and its stable reason codes.

See ``docs/events.md`` for the field table, examples and the rejection reasons.
"""

from .decode import (
    EntityOut,
    Event,
    EventDecoder,
    PredictionOut,
    TokenOut,
    decode_event,
    decode_lines,
    pydantic_validate,
)
from .errors import REASONS, InvalidEvent, Reason
from .schema import (
    EmbeddingB64,
    Entity,
    Prediction,
    PredictionEvent,
    Token,
    json_schema,
)

__all__ = [
    "REASONS",
    "EmbeddingB64",
    "Entity",
    "EntityOut",
    "Event",
    "EventDecoder",
    "InvalidEvent",
    "Prediction",
    "PredictionEvent",
    "PredictionOut",
    "Reason",
    "Token",
    "TokenOut",
    "decode_event",
    "decode_lines",
    "json_schema",
    "pydantic_validate",
]
