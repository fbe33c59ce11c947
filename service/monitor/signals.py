"""Which signals exist, which kind of featurizer each uses, and how its items are read from events.

``extract_columns`` is the only per-event Python loop of the monitor: it flattens a batch of decoded
events into one ``ItemColumn`` per signal; everything after it is vectorised over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Literal

import numpy as np

from ..drift.featurizers import Kind
from ..drift.items import ItemColumn
from ..drift.spans import align_tokens, batch_offsets, span_shapes

WindowSet = Literal["embedding", "distribution", "count"]  # count: ``outlier_windows``


@dataclass(frozen=True, slots=True)
class SignalSpec:
    name: str
    kind: Kind
    windows: WindowSet
    min_reference_items: int
    meaning: str
    source: str = ""  # the signal whose column (and, for derived signals, fitted featurizer) it reads

    @property
    def column(self) -> str:
        return self.source or self.name


SIGNALS: tuple[SignalSpec, ...] = (
    SignalSpec("embedding", "embedding", "embedding", 100, "document embeddings (multivariate)"),
    SignalSpec("entity_embedding", "embedding", "embedding", 100, "entity embeddings, when entities carry them"),
    SignalSpec("entity_label", "categorical", "distribution", 50, "predicted entity label distribution"),
    SignalSpec("token_tag", "categorical", "distribution", 50, "per-token tag distribution"),
    SignalSpec("confidence", "binned", "distribution", 50, "entity confidence distribution"),
    SignalSpec("entity_density", "binned", "distribution", 50, "entities per document"),
    SignalSpec("text_length", "binned", "distribution", 50, "text length in characters"),
    SignalSpec("prediction_label", "categorical", "distribution", 50, "predicted class distribution"),
    SignalSpec("prediction_confidence", "binned", "distribution", 50, "predicted class confidence"),
    SignalSpec("embedding_outliers", "outliers", "embedding", 100,
               "share of events outside the reference (document embeddings)", "embedding"),
    SignalSpec("embedding_clusters", "clusters", "embedding", 100,
               "events outside the reference that point the same way: a new cluster (document embeddings)",
               "embedding"),
    SignalSpec("entity_label_share", "label_share", "distribution", 50,
               "per-label share of predicted entity labels rising above the reference", "entity_label"),
    SignalSpec("token_tag_share", "label_share", "distribution", 50,
               "per-tag share of token tags rising above the reference", "token_tag"),
    SignalSpec("tag_validity", "tag_validity", "count", 50,
               "share of events with a token tag invalid after the previous one (IOB1/IOB2/BIOES/BILUO)",
               "token_tag"),
    SignalSpec("span_length", "binned", "distribution", 50,
               "entity length in tokens (characters when the event has no tokens)"),
    SignalSpec("span_boundary", "event_share", "count", 50,
               "share of events with an entity whose start or end falls inside a token"),
)
SIGNAL_NAMES = tuple(s.name for s in SIGNALS)
SCORED_LABELS = "_scored_labels"  # labels of the scored entities, aligned with the confidence column
SPAN_LABELS = "_span_labels"  # labels of the measured entities, aligned with the span_length column


_TAG = attrgetter("tag")
_TEXT = attrgetter("text")
_START = attrgetter("start")
_END = attrgetter("end")
_LABEL = attrgetter("label")
_TIMESTAMP = attrgetter("timestamp")
_NO_TEXT = np.iinfo(np.int64).max  # the text bound of an event without text: none
_MAX_OFFSET = 2**53  # offsets from here on are not exact as float64: treated as absent


def _offsets(values: list[int | None]) -> np.ndarray:
    """Optional offsets (ints >= 0 of any size, or None) as int64, -1 for None and for those >= ``_MAX_OFFSET``
    (far beyond any text). C-level conversions: straight to int64, else through float64 (None becomes NaN)."""
    try:
        exact = np.fromiter(values, np.int64, count=len(values))
    except (TypeError, OverflowError):  # a None, or an integer beyond int64
        try:
            f = np.array(values, dtype=np.float64)
        except OverflowError:  # an integer beyond float64
            f = np.array([None if v is None or v >= _MAX_OFFSET else v for v in values], dtype=np.float64)
        return np.where(f < _MAX_OFFSET, f, -1.0).astype(np.int64)  # NaN < x is False
    return np.where(exact < _MAX_OFFSET, exact, -1)


def _pos(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)


SPAN_SIGNALS = ("span_length", "span_boundary")


def extract_columns(events: list[Any], spans: bool = True) -> tuple[dict[str, ItemColumn], np.ndarray]:
    """Flatten decoded events (see ``nlpmon.events``) into per-signal columns and event times.

    Besides one column per signal, ``SCORED_LABELS`` holds the label of each scored entity and
    ``SPAN_LABELS`` the label of each entity measured by ``span_length`` (see ``nlpmon.drift.spans``);
    ``span_boundary`` has one 0/1 item per entity measured in tokens. ``spans=False`` (both span signals
    disabled) skips the token alignment: their columns are then empty.

    Event times are epoch seconds, NaN when the event carries none.
    """
    n = len(events)
    times = np.array(list(map(_TIMESTAMP, events)), dtype=np.float64).reshape(n)  # None -> NaN
    doc_pos: list[int] = []
    doc_emb: list[np.ndarray] = []
    ent_counts = [0] * n
    labels: list[str] = []
    scores: list[float] = []
    scored_labels: list[str] = []
    score_pos: list[int] = []
    ent_emb: list[np.ndarray] = []
    ent_emb_pos: list[int] = []
    tok_counts = [0] * n
    tags: list[str] = []
    tc_pos: list[int] = []
    density: list[float] = []
    len_pos: list[int] = []
    lengths: list[float] = []
    pred_pos: list[int] = []
    pred_labels: list[str] = []
    pconf_pos: list[int] = []
    pconf: list[float] = []
    tokenised = np.zeros(n, bool)
    ent_s: list[int | None] = []
    ent_e: list[int | None] = []
    fast_pos: list[int] = []
    fast_text: list[str] = []
    fast_toks: list[list[str]] = []
    slow: list[tuple[int, str, list[Any]]] = []
    off_pos: list[int] = []
    off_s: list[int | None] = []
    off_e: list[int | None] = []
    off_n: list[int] = []
    off_len: list[int] = []
    for i, e in enumerate(events):
        if e.embedding is not None:
            doc_pos.append(i)
            doc_emb.append(e.embedding)
        ents = e.entities
        if e.task == "token-classification":
            tc_pos.append(i)
            density.append(float(len(ents)))
        toks = e.tokens
        if ents:
            ent_counts[i] = len(ents)
            if toks and spans:
                tokenised[i] = True
                text = e.text
                if toks[0].start is not None:  # offsets given: all tokens' checked in _given_offsets
                    off_pos.append(i)
                    off_s.extend(map(_START, toks))
                    off_e.extend(map(_END, toks))
                    off_n.append(len(toks))
                    off_len.append(_NO_TEXT if text is None else len(text))
                elif text:
                    tt = list(map(_TEXT, toks))
                    try:
                        fast = "".join(tt) == text.replace(" ", "")  # empty tokens: found by batch_offsets
                    except TypeError:  # a token without text
                        fast = False
                    if fast:
                        fast_pos.append(i)
                        fast_text.append(text)
                        fast_toks.append(tt)
                    else:
                        slow.append((i, text, tt))
            labels.extend(map(_LABEL, ents))
            if spans:
                ent_s.extend(map(_START, ents))
                ent_e.extend(map(_END, ents))
            for ent in ents:
                if ent.score is not None:
                    score_pos.append(i)
                    scores.append(ent.score)
                    scored_labels.append(ent.label)
                if ent.embedding is not None:
                    ent_emb_pos.append(i)
                    ent_emb.append(ent.embedding)
        if toks:
            tok_counts[i] = len(toks)
            tags.extend(map(_TAG, toks))
        if e.text is not None:
            len_pos.append(i)
            lengths.append(float(len(e.text)))
        p = e.prediction
        if p is not None:
            pred_pos.append(i)
            pred_labels.append(p.label)
            if p.score is not None:
                pconf_pos.append(i)
                pconf.append(p.score)

    def arr(x: list[int]) -> np.ndarray:
        return np.asarray(x, dtype=np.int64)

    def emb(rows: list[np.ndarray]) -> np.ndarray:
        if not rows:
            return np.zeros((0, 0), np.float32)
        sizes = np.fromiter(map(len, rows), np.int64, count=len(rows))
        if (sizes == sizes[0]).all():  # one C-level copy; vstack wraps each row in Python first
            return np.concatenate(rows).reshape(len(rows), int(sizes[0]))
        return np.vstack(rows)  # raises: rows of different sizes

    given = _given_offsets(off_pos, off_s, off_e, off_n, off_len)
    if given.redo.size:  # offsets that cannot be trusted: aligned from the token texts as without them
        for j in given.redo.tolist():
            text = events[j].text
            if text:
                slow.append((j, text, list(map(_TEXT, events[j].tokens))))
    tok_ev, tok_s, tok_e = _token_offsets(fast_pos, fast_text, fast_toks, slow)
    if given.event.size:
        tok_ev, tok_s, tok_e = _merge_tokens((given.event, given.start, given.end), (tok_ev, tok_s, tok_e))
    es, ee = _offsets(ent_s), _offsets(ent_e)
    measured = np.flatnonzero((es >= 0) & (ee >= 0))  # entities with both offsets
    ent_ev = _pos(ent_counts) if spans else np.zeros(0, np.int64)
    shapes = span_shapes(tok_ev, tok_s, tok_e, tokenised, ent_ev[measured], es[measured], ee[measured])
    index = measured[shapes.index]
    span_labels = labels[:] if len(index) == len(labels) else np.asarray(labels, dtype=object)[index].tolist()
    columns = {
        "embedding": ItemColumn(arr(doc_pos), emb(doc_emb)),
        "entity_embedding": ItemColumn(arr(ent_emb_pos), emb(ent_emb)),
        "entity_label": ItemColumn(_pos(ent_counts), labels),
        "token_tag": ItemColumn(_pos(tok_counts), tags),
        "confidence": ItemColumn(arr(score_pos), np.asarray(scores, dtype=np.float64)),
        "entity_density": ItemColumn(arr(tc_pos), np.asarray(density, dtype=np.float64)),
        "text_length": ItemColumn(arr(len_pos), np.asarray(lengths, dtype=np.float64)),
        "prediction_label": ItemColumn(arr(pred_pos), pred_labels),
        "prediction_confidence": ItemColumn(arr(pconf_pos), np.asarray(pconf, dtype=np.float64)),
        "span_length": ItemColumn(shapes.event, shapes.length),
        "span_boundary": ItemColumn(shapes.event[shapes.in_tokens], shapes.crosses[shapes.in_tokens].astype(float)),
        SCORED_LABELS: ItemColumn(arr(score_pos), scored_labels),
        SPAN_LABELS: ItemColumn(shapes.event, span_labels),
    }
    return columns, times



def _token_offsets(fast_pos: list[int], fast_text: list[str], fast_toks: list[list[str]],
                   slow: list[tuple[int, str, list[Any]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat (event, start, end) of the aligned tokens, by event then in order: the batch path where it holds
    (``batch_offsets``), ``align_tokens`` one event at a time elsewhere."""
    start, end, ok = batch_offsets(fast_text, fast_toks)
    n_tok = np.fromiter(map(len, fast_toks), np.int64, count=len(fast_toks))
    if not slow and ok.all():  # the common case: already in event order
        return np.repeat(np.asarray(fast_pos, np.int64), n_tok), start, end
    keep = np.repeat(ok, n_tok)
    ev = [np.repeat(np.asarray(fast_pos, np.int64), n_tok)[keep]]
    st, en = [start[keep]], [end[keep]]
    redo = [(fast_pos[j], fast_text[j], fast_toks[j]) for j in np.flatnonzero(~ok).tolist()]
    for i, text, tt in slow + redo:
        offsets = align_tokens(text, tt)
        if offsets is not None:
            o = np.asarray(offsets, np.int64).reshape(-1, 2)
            ev.append(np.full(o.shape[0], i, np.int64))
            st.append(o[:, 0])
            en.append(o[:, 1])
    e, s, t = np.concatenate(ev), np.concatenate(st), np.concatenate(en)
    order = np.argsort(e, kind="stable")
    return e[order], s[order], t[order]


@dataclass(frozen=True, slots=True)
class GivenOffsets:
    """Token offsets given by the events and trusted: flat (event, start, end) by event then in order; ``redo``:
    the events whose offsets are not trusted (to align from the token texts)."""

    event: np.ndarray
    start: np.ndarray
    end: np.ndarray
    redo: np.ndarray


def _given_offsets(pos: list[int], starts: list[int | None], ends: list[int | None], counts: list[int],
                   text_len: list[int]) -> GivenOffsets:
    """Check the offsets of the events whose first token carries a start (flat, per token), vectorised.

    An event's offsets are trusted when every token has both, in order (each starts at or after the previous
    one's end, and ``start <= end``, which the decoder guarantees), ending within its text (when it has one);
    otherwise the whole event is in ``redo``. Trusted offsets are used as they are, whatever the token texts.
    """
    z = np.zeros(0, np.int64)
    if not pos:
        return GivenOffsets(z, z, z, z)
    ev_pos = np.asarray(pos, np.int64)
    n = np.asarray(counts, np.int64)
    s = _offsets(starts)
    e = _offsets(ends)
    local = np.repeat(np.arange(ev_pos.size), n)
    first = np.zeros(s.size, bool)
    first[np.cumsum(n) - n] = True
    prev_end = np.concatenate([[0], e[:-1]])
    bad = ((s < 0) | (e < 0) | (s > e) | (e > np.asarray(text_len, np.int64)[local])
           | (~first & (s < prev_end)))
    if not bad.any():
        return GivenOffsets(np.repeat(ev_pos, n), s, e, z)
    bad_ev = np.bincount(local[bad], minlength=ev_pos.size) > 0
    keep = ~bad_ev[local]
    return GivenOffsets(np.repeat(ev_pos, n)[keep], s[keep], e[keep], ev_pos[bad_ev])


def _merge_tokens(a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray],
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two flat (event, start, end) token lists, each by event then in order, with no event in both: one."""
    if not b[0].size:
        return a
    ev = np.concatenate([a[0], b[0]])
    order = np.argsort(ev, kind="stable")
    return ev[order], np.concatenate([a[1], b[1]])[order], np.concatenate([a[2], b[2]])[order]
