"""Nesting depth of a JSON document, measured before it is parsed.

Every JSON parser nlpmon uses recurses once per nesting level (msgspec and the standard library on the C
stack, pydantic-core up to a limit of its own); a document nested a thousand levels deep makes them raise
``RecursionError`` instead of a decoding error. Events, label events and state headers are therefore
checked against :data:`MAX_JSON_DEPTH` first: the check is exact (brackets inside strings, escaped
quotes included, do not count) and costs two byte counts for the usual event, whose opening brackets
are fewer than the limit; only a document with more opening brackets than the limit is scanned in
full (numpy, a few passes over its bytes).

Depth counts opening brackets not yet closed: ``{}`` is 1, ``{"a": [1]}`` is 2. For a document that is
not well-formed JSON, the same count is taken over its bytes (the parser would stop at the first error
anyway; the count bounds how deep it could recurse before that).
"""

from __future__ import annotations

from typing import Final

import numpy as np

__all__ = ["MAX_JSON_DEPTH", "exceeds_depth", "nesting_depth"]

#: Deepest nesting accepted anywhere: the event contract itself needs 4 levels (event, entities, an
#: entity, its embedding); ``metadata`` is free-form and gets the rest.
MAX_JSON_DEPTH: Final = 64

_QUOTE: Final = 0x22
_OPEN_FOLDED: Final = 0x5B  # "[": "{" is folded onto it, "}" onto "]"
_FOLD: Final = bytes.maketrans(b"{}", b"[]")
_DELETE: Final = bytes(b for b in range(256) if b not in b'"[]{}')
_MAX_PASSES: Final = 16  # "[]"-removal passes before the linear numpy fallback (deep input is rare)


def _as_bytes(raw: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")  # brackets and quotes are ASCII: positions do not matter
    return bytes(raw) if not isinstance(raw, bytes) else raw


def nesting_depth(raw: bytes | bytearray | memoryview | str) -> int:
    """The deepest nesting of brackets outside strings in ``raw`` (exact for well-formed JSON).

    Byte-string operations first (C speed, no Python loop over bytes): escaped backslashes and quotes are
    dropped, every byte but quotes and brackets is deleted (``{}`` folded onto ``[]``), and adjacent quote
    pairs are removed (which keeps every remaining byte's inside/outside-a-string parity). Without brackets
    inside strings, only brackets are left, and each ``replace("[]", "")`` pass removes exactly one level.
    Brackets inside strings, unbalanced ones or deep nesting fall back to a numpy prefix sum over what is left.

    >>> nesting_depth(b'{"a": [1, {"b": "[[[ not counted ]]]"}], "c": "\\\\"}')
    3
    """
    data = _as_bytes(raw)
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    folded = data.translate(_FOLD, _DELETE).replace(b'""', b"")
    if b'"' not in folded:
        left = folded
        for level in range(_MAX_PASSES):
            if not left:
                return level
            shorter = left.replace(b"[]", b"")
            if len(shorter) == len(left):
                break  # unbalanced
            left = shorter
    return _prefix_depth(folded)


def _prefix_depth(left: bytes) -> int:
    """Deepest prefix of unclosed brackets outside strings in a string of quotes and ``[``/``]`` only."""
    b = np.frombuffer(left, dtype=np.uint8)
    quote = b == _QUOTE
    outside = ((np.cumsum(quote) & 1) == 0) & ~quote
    steps = np.where(b[outside] == _OPEN_FOLDED, 1, -1)
    return max(int(np.cumsum(steps).max()), 0) if steps.size else 0


def exceeds_depth(raw: bytes | bytearray | memoryview | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``raw`` nests deeper than ``limit`` levels (see :func:`nesting_depth`).

    Cheap for the usual event: when it holds at most ``limit`` opening brackets in all (strings
    included), it cannot nest deeper, and nothing else is computed.
    """
    if isinstance(raw, str):
        opening = raw.count("[") + raw.count("{")
    else:
        raw = _as_bytes(raw)
        opening = raw.count(b"[") + raw.count(b"{")
    return opening > limit and nesting_depth(raw) > limit
