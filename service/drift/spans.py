"""Span shape: entity lengths in tokens (or characters) and entities that cross token boundaries. Pure.

Tokens carry text, not offsets: ``align_tokens`` finds each token's text in the event's text, in order,
after the previous token (sub-word markers ``##``, ``Ġ``, ``▁`` stripped). An event whose tokens cannot all
be found is not aligned. ``span_shapes`` then measures every entity with character offsets, vectorised
over a batch: in an aligned event whose tokens reach the entity's end, its length is the number of tokens
it overlaps and it *crosses a token boundary* when its start or end falls strictly inside a token; in an
event without tokens its length is ``end - start`` characters (and it has no boundary to cross).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
_KEY = np.int64(1) << np.int64(32)  # event * _KEY + character offset: one sorted key over a batch
_MARKERS = ("##", "Ġ", "▁")


def align_tokens(text: str, tokens: list[str | None]) -> list[tuple[int, int]] | None:
    """Character (start, end) of each token in ``text``, found in order; None when one is missing."""
    out: list[tuple[int, int]] = []
    pos = 0
    find = text.find
    for tok in tokens:
        if not tok:
            return None
        if tok.startswith(_MARKERS):
            tok = tok[2:] if tok.startswith("##") else tok[1:]
            if not tok:
                return None
        j = find(tok, pos)
        if j < 0:
            return None
        pos = j + len(tok)
        out.append((j, pos))
    return out


@dataclass(frozen=True, slots=True)
class SpanShapes:
    """Per measured entity: event, length, whether in tokens, whether it crosses a token boundary."""

    event: I64
    length: F64
    in_tokens: npt.NDArray[np.bool_]
    crosses: npt.NDArray[np.bool_]
    index: I64  # the entity's position in the flat entity arrays given to ``span_shapes``


def span_shapes(tok_event: I64, tok_start: I64, tok_end: I64, tokenised: npt.NDArray[np.bool_],
                ent_event: I64, ent_start: I64, ent_end: I64) -> SpanShapes:
    """Measure entities (flat arrays, events non-decreasing) against aligned tokens (flat, in order).

    ``tokenised[e]``: event ``e`` has tokens (aligned or not). Entities of tokenised events that are not
    aligned, or that end beyond the last aligned token, are not measured (no unit to count them in).
    """
    n_events = tokenised.shape[0]
    last_end = np.full(n_events, -1, np.int64)
    if tok_event.size:
        last_end[tok_event] = tok_end  # tokens in order: the last write per event is its last token
    aligned = last_end >= 0
    in_tokens = aligned[ent_event] & (ent_end <= last_end[ent_event])
    chars = ~tokenised[ent_event]
    keep = np.flatnonzero(in_tokens | chars)
    ev, s, e, tok = ent_event[keep], ent_start[keep], ent_end[keep], in_tokens[keep]
    length = (e - s).astype(np.float64)
    crosses = np.zeros(keep.shape[0], bool)
    t = np.flatnonzero(tok)
    if t.size:
        ts = tok_event * _KEY + tok_start
        te = tok_event * _KEY + tok_end
        es = ev[t] * _KEY + s[t]
        ee = ev[t] * _KEY + e[t]
        # tokens overlapping [s, e): starting before e, minus those ending at or before s
        n_tok = np.searchsorted(ts, ee, side="left") - np.searchsorted(te, es, side="right")
        i = np.searchsorted(ts, es, side="right") - 1  # the token starting at or before s
        j = np.searchsorted(ts, ee, side="left") - 1  # the last token starting before e
        ic, jc = np.maximum(i, 0), np.maximum(j, 0)
        cross = ((i >= 0) & (ts[ic] < es) & (es < te[ic])) | ((j >= 0) & (ts[jc] < ee) & (ee < te[jc]))
        length[t] = n_tok.astype(np.float64)
        crosses[t] = cross
    return SpanShapes(ev, length, tok, crosses, keep.astype(np.int64))
