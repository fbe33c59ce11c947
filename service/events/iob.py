"""Events from a token list and its IOB / BIO / BIOES / BILUO tag list (Spark NLP, CoNLL files, taggers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .build import BuilderError, Timestamp, base_event, checked_score, find
from .tags import spans_from_tags


def event_from_iob_tags(
    tokens: Sequence[str], tags: Sequence[str], *, model: str, text: str | None = None,
    scores: Sequence[float] | None = None, offsets: Sequence[tuple[int, int]] | None = None,
    model_version: str = "unversioned", event_id: str | None = None, timestamp: Timestamp = None,
    embedding: Any = None, split: str = "production",
) -> dict[str, Any]:
    """An event from a token list and its tag list (IOB1, BIO, BIOES/BILUO or IO; Spark NLP, CoNLL files,
    Hugging Face ``aggregation_strategy="none"``): entity spans (rules in ``nlpmon.events.tags``) plus
    every token with its tag.

    Character offsets come from ``offsets`` (``(start, end)`` per token, end exclusive: Spark NLP gives
    ``(token.begin, token.end + 1)``), else from finding each token in ``text`` in order, else ``text``
    is the tokens joined by single spaces. A token not found in ``text`` (a normalised quote, for
    example) leaves the entities that contain it without a span. ``scores`` (one per token, in [0, 1])
    become token scores and, averaged over a span, entity scores. Every token with known offsets carries
    them (``start``/``end``), so the monitor need not align it.
    """
    if isinstance(tokens, str) or isinstance(tags, str):
        raise BuilderError("tokens and tags must be lists of strings, one tag per token")
    if len(tokens) != len(tags):
        raise BuilderError(f"{len(tokens)} tokens but {len(tags)} tags: give one tag per token")
    if scores is not None and len(scores) != len(tags):
        raise BuilderError(f"{len(scores)} scores for {len(tags)} tags: give one score per token")
    if offsets is not None and len(offsets) != len(tokens):
        raise BuilderError(f"{len(offsets)} offsets for {len(tokens)} tokens: give one (start, end) per token")
    token_scores = None if scores is None else [checked_score(s, f"scores[{i}]") for i, s in enumerate(scores)]
    if text is None:
        text = " ".join(tokens)
        if offsets is None:
            pos, offsets = 0, []
            for tok in tokens:
                offsets.append((pos, pos + len(tok)))
                pos += len(tok) + 1
    where: list[tuple[int, int] | None]
    if offsets is not None:
        where = [(int(a), int(b)) for a, b in offsets]
        for i, (a, b) in enumerate(where):  # type: ignore[misc]
            if not 0 <= a <= b <= len(text):
                raise BuilderError(f"offsets[{i}] = ({a}, {b}) is not inside the text of {len(text)} characters")
    else:
        where, cursor = [], 0
        for tok in tokens:
            span = find(text, tok, cursor)
            where.append(span)
            if span is not None:
                cursor = span[1]
    try:
        tag_spans = spans_from_tags([str(t) for t in tags])
    except ValueError as exc:
        raise BuilderError(str(exc)) from None
    event = base_event(model, model_version, event_id, timestamp, text, embedding, split)
    entities = []
    for ts in tag_spans:
        ent: dict[str, Any] = {"label": ts.label}
        if token_scores is not None:
            ent["score"] = float(np.mean(token_scores[ts.first:ts.last + 1], dtype=np.float64))
        inside = where[ts.first:ts.last + 1]
        if all(s is not None for s in inside):
            start, end = inside[0][0], inside[-1][1]  # type: ignore[index]
            ent["start"], ent["end"], ent["text"] = start, end, text[start:end]
        else:
            ent["text"] = " ".join(tokens[ts.first:ts.last + 1])
        entities.append(ent)
    event["entities"] = entities
    event["tokens"] = [{"text": str(tok), "tag": str(tag)}
                       | ({} if token_scores is None else {"score": token_scores[i]})
                       | ({} if span is None else {"start": span[0], "end": span[1]})
                       for i, (tok, tag, span) in enumerate(zip(tokens, tags, where, strict=True))]
    return event
