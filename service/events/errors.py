"""Why an event was rejected: one stable reason code plus one human line.

Both decoders (the msgspec hot path and the pydantic schema) report rejections as
:class:`InvalidEvent`. The two ``from_*_error`` functions translate each library's
validation error into the same reason codes and the same field paths
(``entities[2].score``), so the two can be compared in tests.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final, Literal, get_args

import msgspec
from pydantic import ValidationError

from .depth import MAX_JSON_DEPTH

Reason = Literal[
    "too_deep",
    "malformed_json",
    "wrong_type",
    "missing_field",
    "non_finite",
    "out_of_range",
    "bad_embedding",
    "unknown_task",
    "unknown_split",
    "bad_timestamp",
    "bad_span",
]
REASONS: Final[tuple[Reason, ...]] = get_args(Reason)

PathPart = str | int

# Discriminator tags of the embedding union: pydantic puts them in the error location.
_UNION_TAGS: Final = frozenset({"list", "b64"})
_DICT_FIELDS: Final = frozenset({"probabilities", "metadata"})
_LENGTH_LIMITED: Final = frozenset({"model", "model_version"})


class InvalidEvent(ValueError):
    """An event that breaks the contract.

    ``reason`` is one of :data:`REASONS` (stable, usable as a metric label);
    ``detail`` is one human-readable line naming the field path; ``str(exc)`` is ``detail``.
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason: Reason = reason
        self.detail: str = detail

    def __str__(self) -> str:
        return self.detail

    def __repr__(self) -> str:
        return f"InvalidEvent({self.reason!r}, {self.detail!r})"

    def __reduce__(self) -> tuple[type[InvalidEvent], tuple[Reason, str]]:
        return (InvalidEvent, (self.reason, self.detail))

    def at(self, path: str) -> InvalidEvent:
        """Return a copy whose detail is prefixed with ``path: ``."""
        return InvalidEvent(self.reason, f"{path}: {self.detail}")


def format_path(parts: Sequence[PathPart]) -> str:
    """``("entities", 2, "score")`` -> ``"entities[2].score"``; the empty path is ``"<event>"``."""
    out = ""
    parent: PathPart | None = None
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif parent in _DICT_FIELDS:
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
        parent = part
    return out or "<event>"


def json_type(value: object) -> str:
    """The JSON type name of a decoded value, in msgspec's vocabulary."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def constraint_error(parts: Sequence[PathPart], value: object, fallback: str) -> InvalidEvent:
    """Explain a value of the right type that breaks a range/length constraint.

    ``value`` is the offending value, or ``...`` when the caller could not recover it.
    """
    path = format_path(parts)
    field = parts[-1] if parts else ""
    parent = parts[-2] if len(parts) > 1 else ""
    known = value is not ...
    if field in ("start", "end"):
        return InvalidEvent("bad_span", f"{path}: {value!r} is negative" if known else f"{path}: {fallback}")
    if field == "embedding":
        return InvalidEvent("bad_embedding", f"{path}: must not be empty")
    if "embedding" in parts and isinstance(field, int):
        msg = f"{value!r} is outside the float32 range" if known else fallback
        return InvalidEvent("out_of_range", f"{path}: {msg}")
    if field == "score" or parent == "probabilities":
        msg = f"{value!r} is outside [0, 1]" if known else fallback
        return InvalidEvent("out_of_range", f"{path}: {msg}")
    if field in _LENGTH_LIMITED and isinstance(value, str):
        return InvalidEvent("out_of_range", f"{path}: must be 1 to 256 characters, got {len(value)}")
    if isinstance(value, str) and not value:
        return InvalidEvent("out_of_range", f"{path}: must not be empty")
    return InvalidEvent("out_of_range", f"{path}: {fallback}")


def _enum_error(parts: Sequence[PathPart], value: object) -> InvalidEvent:
    path = format_path(parts)
    field = parts[-1] if parts else ""
    shown = "" if value is ... else f" {value!r}"
    if field == "task":
        return InvalidEvent("unknown_task", f"{path}: unknown task{shown}")
    if field == "split":
        return InvalidEvent("unknown_split", f"{path}: unknown split{shown}")
    return InvalidEvent("bad_embedding", f"{path}: unknown dtype{shown} (use 'float32' or 'float16')")


# ----------------------------------------------------------------------------- msgspec

_MSGSPEC_MESSAGE: Final = re.compile(r"(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.DOTALL)
_MSGSPEC_PATH_PART: Final = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_MISSING_FIELD: Final = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_WRONG_TYPE: Final = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`")
_ENUM: Final = re.compile(r"Invalid enum value (?P<value>.*)")


def _split_msgspec_path(path: str) -> list[PathPart]:
    parts: list[PathPart] = []
    for name, index in _MSGSPEC_PATH_PART.findall(path):
        if index == "...":  # msgspec does not name dict keys: stop at the dict
            break
        parts.append(name or int(index))
    return parts


def _lookup(tree: object, parts: Sequence[PathPart]) -> object:
    """The value at ``parts`` in the generically decoded document, or ``...`` if it isn't there."""
    node: Any = tree
    try:
        for part in parts:
            node = node[part]
    except (LookupError, TypeError):
        return ...
    return node


def too_deep(limit: int) -> InvalidEvent:
    """The rejection for input nested deeper than ``limit`` levels (checked before parsing)."""
    return InvalidEvent("too_deep", f"<event>: arrays and objects nested deeper than {limit} levels; "
                        "flatten it (metadata included)")


def malformed_json(exc: Exception) -> InvalidEvent:
    """The rejection for input that is not one well-formed JSON document."""
    return InvalidEvent("malformed_json", f"<event>: malformed JSON ({exc})")


def from_msgspec_error(exc: msgspec.ValidationError, raw: bytes | str) -> InvalidEvent:
    """Translate a msgspec validation error for ``raw`` into an :class:`InvalidEvent`.

    The typed decoder stops at the first wrong value, possibly before a syntax error further
    on; like the pydantic path, a document that is not well-formed JSON is ``malformed_json``. The
    caller checked the nesting depth (``nlpmon.events.depth``) first: this parses ``raw`` again.
    """
    try:
        tree: object = msgspec.json.decode(raw)
    except msgspec.ValidationError:  # a number out of float range; reported below
        tree = ...
    except (msgspec.DecodeError, UnicodeError) as decode_exc:
        return malformed_json(decode_exc)
    except RecursionError:  # not below MAX_JSON_DEPTH; a guard should a caller skip the depth check
        return too_deep(MAX_JSON_DEPTH)
    match = _MSGSPEC_MESSAGE.fullmatch(str(exc))
    msg = match["msg"] if match else str(exc)
    parts = _split_msgspec_path(match["path"] or "") if match else []
    if missing := _MISSING_FIELD.fullmatch(msg):
        parts.append(missing["field"])
        return InvalidEvent("missing_field", f"{format_path(parts)}: required field is missing")
    if wrong := _WRONG_TYPE.fullmatch(msg):
        detail = f"{format_path(parts)}: expected {wrong['want']}, got {wrong['got']}"
        return InvalidEvent("wrong_type", detail)
    if _ENUM.fullmatch(msg):
        return _enum_error(parts, _lookup(tree, parts))
    if msg == "Invalid base64 encoded string":
        return InvalidEvent("bad_embedding", f"{format_path(parts)}: not valid base64 (standard, padded)")
    if msg == "Number out of range":
        return InvalidEvent("non_finite", f"{format_path(parts)}: number is too large to be a finite float")
    if msg.startswith("Expected `"):
        return constraint_error(parts, _lookup(tree, parts), msg[0].lower() + msg[1:])
    return InvalidEvent("wrong_type", f"{format_path(parts)}: {msg}")


# ----------------------------------------------------------------------------- pydantic

_PYDANTIC_EXPECTED: Final = {
    "float_type": "float",
    "int_type": "int",
    "string_type": "str",
    "list_type": "array",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
}


def _pydantic_parts(loc: Sequence[PathPart]) -> list[PathPart]:
    parts: list[PathPart] = []
    for part in loc:
        if part in _UNION_TAGS and parts and parts[-1] == "embedding":
            continue
        parts.append(part)
    return parts


def from_pydantic_error(exc: ValidationError) -> InvalidEvent:
    """Translate the first error of a pydantic ``ValidationError`` into an :class:`InvalidEvent`."""
    err = exc.errors(include_url=False)[0]
    kind: str = err["type"]
    value: object = err.get("input", ...)
    parts = _pydantic_parts(err["loc"])
    path = format_path(parts)
    if kind in REASONS:  # raised by our own validators (PydanticCustomError)
        return InvalidEvent(kind, f"{path}: {err['msg']}")
    if kind == "missing":
        return InvalidEvent("missing_field", f"{path}: required field is missing")
    if kind == "finite_number" or (kind == "float_type" and type(value) is int):
        return InvalidEvent("non_finite", f"{path}: number is too large to be a finite float")
    if kind == "literal_error":
        if isinstance(value, str):
            return _enum_error(parts, value)
        return InvalidEvent("wrong_type", f"{path}: expected str, got {json_type(value)}")
    if kind == "string_pattern_mismatch":
        return InvalidEvent("bad_embedding", f"{path}: not valid base64 (standard, padded)")
    if kind in ("greater_than_equal", "less_than_equal", "string_too_short", "string_too_long", "too_short"):
        return constraint_error(parts, value, err["msg"])
    want = _PYDANTIC_EXPECTED.get(kind, "another type")
    return InvalidEvent("wrong_type", f"{path}: expected {want}, got {json_type(value)}")
