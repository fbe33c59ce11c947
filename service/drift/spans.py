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
from itertools import chain

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


def batch_offsets(texts: list[str], tokens: list[list[str]]) -> tuple[I64, I64, npt.NDArray[np.bool_]]:
    """``align_tokens`` for many events at once, for the common case of texts whose characters other than
    spaces are exactly their tokens' (no token holds a space): flat token starts and ends, in order, and which
    events hold (the others: all their tokens' rows are meaningless; align them one by one). Every text
    must be non-empty.

    Token k then starts at the text's first non-space character after token k-1, which is where
    ``str.find`` finds it, provided it spans no space (checked: end - start == its length)."""
    n = len(texts)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)
    lens = np.fromiter(map(len, texts), np.int64, count=n)
    starts_text = np.concatenate([[0], np.cumsum(lens)[:-1]])
    cp = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), np.uint32)  # lone surrogates too
    nonspace = np.flatnonzero(cp != 32)  # global positions of the non-space characters
    first_ns = np.searchsorted(nonspace, starts_text)  # index into nonspace of each text's first
    n_tok = np.fromiter(map(len, tokens), np.int64, count=n)
    tok_len = np.fromiter(map(len, chain.from_iterable(tokens)), np.int64, count=int(n_tok.sum()))
    ev = np.repeat(np.arange(n), n_tok)
    cum = np.cumsum(tok_len) - tok_len  # characters of the batch's tokens before each
    first_tok = np.concatenate([[0], np.cumsum(n_tok)[:-1]])
    within = cum - np.repeat(np.append(cum, 0)[first_tok], n_tok)  # characters of the event's tokens before
    a = first_ns[ev] + within
    b = a + tok_len - 1
    ok_idx = (tok_len > 0) & (b < nonspace.size)
    a_c, b_c = np.where(ok_idx, a, 0), np.where(ok_idx, b, 0)
    start = nonspace[a_c] - starts_text[ev] if nonspace.size else np.zeros(ev.size, np.int64)
    end = (nonspace[b_c] + 1 - starts_text[ev]) if nonspace.size else np.zeros(ev.size, np.int64)
    good = ok_idx & (end - start == tok_len)
    ok = np.bincount(ev, weights=(~good).astype(np.float64), minlength=n) == 0
    return start.astype(np.int64, copy=False), end.astype(np.int64, copy=False), ok


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
