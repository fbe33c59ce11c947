"""Events from Hugging Face ``pipeline(...)`` outputs: token classification (any aggregation strategy),
text classification (any ``top_k``), and batches of either. See docs/clients.md for the shapes handled."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .build import (
    BuilderError,
    Timestamp,
    base_event,
    checked_score,
    find,
    is_batch,
    shape_hint,
    strip_marks,
    to_numpy,
)
from .tags import OUTSIDE, spans_from_tags


def event_from_hf_token_classification(
    text: str, outputs: Sequence[Mapping[str, Any]], *, model: str, model_version: str = "unversioned",
    event_id: str | None = None, timestamp: Timestamp = None, embedding: Any = None,
    split: str = "production", token_tags: bool = True,
) -> dict[str, Any]:
    """An event from one text's ``token-classification`` pipeline output (``ner(text)``).

    - Aggregated output (``entity_group``; ``simple``/``first``/``average``/``max``): one entity each;
      groups labelled ``O`` (``ignore_labels=[]``) are dropped.
    - Per-token output (``entity`` such as ``B-PER``; ``aggregation_strategy="none"``): consecutive
      tokens (by ``index``) are merged into spans by their B-/I-/E-/S- tags exactly as ``simple`` groups
      them (mean score, first start to last end), so entity counts compare across settings; ``O``
      tokens are no entity. With ``token_tags`` every returned token also goes to ``tokens`` with its
      tag, score and character offsets (``start``/``end``, when known; pass ``ignore_labels=[]`` to the
      pipeline to keep the ``O`` tokens too).
    - ``start``/``end`` of None (slow tokenizers) are recovered by finding ``word`` in ``text`` after the
      previous entity (case-insensitive, across the spaces a slow tokenizer puts between pieces); an
      entity whose word is not found has no span.

    Raises BuilderError for a batch (use ``events_from_hf_batch``), a text-classification output,
    scores outside [0, 1] or a bad embedding.
    """
    if isinstance(outputs, Mapping):
        raise BuilderError("outputs is one dict: pass the list the token-classification pipeline returned "
                           "for the text, e.g. ner(text)")
    if is_batch(outputs):
        raise BuilderError(f"outputs is a batch ({len(outputs)} lists, one per text): use "
                           "events_from_hf_batch(texts, ner(texts), ...)")
    outputs = list(outputs)
    event = base_event(model, model_version, event_id, timestamp, text, embedding, split)
    kinds = {"entity_group" in o for o in outputs}
    if any(not isinstance(o, Mapping) or ("entity_group" not in o and "entity" not in o) for o in outputs):
        raise BuilderError("outputs are not token-classification results (each needs 'entity_group' or "
                           "'entity'); for text classification use event_from_text_classification")
    if len(kinds) > 1:
        raise BuilderError("outputs mix aggregated ('entity_group') and per-token ('entity') results: pass "
                           "one pipeline call's output")
    if outputs and "entity_group" in outputs[0]:
        event["entities"] = _aggregated_entities(text, outputs)
        return event
    tokens, entities = _per_token_entities(text, outputs)
    event["entities"] = entities
    if token_tags:
        event["tokens"] = tokens
    return event


def _aggregated_entities(text: str, outputs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    cursor = 0
    for i, o in enumerate(outputs):
        label = str(o["entity_group"])
        score = checked_score(o.get("score"), f"outputs[{i}] ({label})")
        if label == OUTSIDE or not label:
            continue
        ent: dict[str, Any] = {"label": label, "score": score}
        span = _offsets(text, o, strip_marks(str(o.get("word") or "")), cursor)  # "##y name": group from a sub-token
        if span is not None:
            ent["start"], ent["end"] = span
            ent["text"] = text[span[0]:span[1]]
            cursor = span[1]
        elif o.get("word"):
            ent["text"] = str(o["word"])
        entities.append(ent)
    return entities


def _offsets(text: str, o: Mapping[str, Any], word: str, cursor: int) -> tuple[int, int] | None:
    start, end = o.get("start"), o.get("end")
    if start is not None and end is not None:
        return int(start), int(end)
    return find(text, word, cursor)


def _per_token_entities(text: str, outputs: Sequence[Mapping[str, Any]]
                        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    tags = [str(o["entity"]) for o in outputs]
    scores = [checked_score(o.get("score"), f"outputs[{i}] ({tags[i]})") for i, o in enumerate(outputs)]
    words = [str(o.get("word") or "") for o in outputs]
    spans: list[tuple[int, int] | None] = []
    cursor = 0
    for o, word in zip(outputs, words, strict=True):
        span = _offsets(text, o, strip_marks(word), cursor)
        spans.append(span)
        if span is not None:
            cursor = span[1]
    indices = [None if o.get("index") is None else int(o["index"]) for o in outputs]
    breaks = [i > 0 and (a := indices[i - 1]) is not None and (b := indices[i]) is not None and b != a + 1
              for i in range(len(outputs))]
    try:
        tag_spans = spans_from_tags(tags, breaks)
    except ValueError as exc:
        raise BuilderError(str(exc)) from None
    entities: list[dict[str, Any]] = []
    for ts in tag_spans:
        first, last = spans[ts.first], spans[ts.last]
        ent: dict[str, Any] = {"label": ts.label,
                               "score": float(np.mean(scores[ts.first:ts.last + 1], dtype=np.float64))}
        if first is not None and last is not None and first[0] <= last[1]:
            ent["start"], ent["end"] = first[0], last[1]
            ent["text"] = text[first[0]:last[1]]
        else:
            ent["text"] = _join_pieces(words[ts.first:ts.last + 1])
        entities.append(ent)
    tokens = [{"text": strip_marks(w) or w, "tag": t, "score": s} | _token_span(span)
              for w, t, s, span in zip(words, tags, scores, spans, strict=True)]
    return tokens, entities


def _token_span(span: tuple[int, int] | None) -> dict[str, int]:
    """A token's ``start``/``end`` fields: the pipeline's offsets (or those found in the text), when valid."""
    if span is None or not 0 <= span[0] <= span[1]:
        return {}
    return {"start": span[0], "end": span[1]}


def _join_pieces(words: Sequence[str]) -> str:
    out = ""
    for w in words:
        out += w[2:] if w.startswith("##") else (" " if out else "") + strip_marks(w)
    return out


def event_from_text_classification(
    text: str, outputs: Any, *, model: str, model_version: str = "unversioned",
    event_id: str | None = None, timestamp: Timestamp = None, embedding: Any = None,
    split: str = "production",
) -> dict[str, Any]:
    """An event from one text's ``text-classification`` output, in any of the shapes the pipeline returns:
    a dict (``clf(text)[0]``), a list of dicts (``clf(text)``; with ``top_k=None`` every class, which
    fills ``probabilities``), or a list holding one such list (``top_k=None`` on some versions).

    Raises BuilderError for a batch (several lists: use ``events_from_hf_batch``), a label given twice,
    scores outside [0, 1] (logits from ``function_to_apply="none"``) or a bad embedding.
    """
    classes = _class_scores(outputs)
    event = base_event(model, model_version, event_id, timestamp, text, embedding, split, "text-classification")
    best = max(classes, key=lambda kv: kv[1])
    pred: dict[str, Any] = {"label": best[0], "score": best[1]}
    if len(classes) > 1:
        pred["probabilities"] = dict(classes)
    event["prediction"] = pred
    return event


def _class_scores(outputs: Any) -> list[tuple[str, float]]:
    if isinstance(outputs, Mapping):
        outputs = [outputs]
    if isinstance(outputs, list | tuple) and len(outputs) == 1 and isinstance(outputs[0], list | tuple):
        outputs = outputs[0]
    if is_batch(outputs):
        raise BuilderError(f"outputs is a batch ({len(outputs)} lists, one per text): use "
                           "events_from_hf_batch(texts, clf(texts), ...)")
    if not isinstance(outputs, list | tuple) or not outputs:
        raise BuilderError("outputs must be the text-classification result: a {'label', 'score'} dict or a "
                           "non-empty list of them")
    classes: dict[str, float] = {}
    for i, o in enumerate(outputs):
        if not isinstance(o, Mapping) or "label" not in o or "score" not in o:
            raise BuilderError(f"outputs[{i}] is not a {{'label', 'score'}} dict: pass the text-classification "
                               "pipeline's output (for token classification use event_from_hf_token_classification)")
        label = str(o["label"])
        if not label:
            raise BuilderError(f"outputs[{i}] has an empty label")
        if label in classes:
            raise BuilderError(f"label {label!r} appears twice: this looks like a batch of top-1 results, one "
                               "per text; use events_from_hf_batch(texts, clf(texts), ...)")
        classes[label] = checked_score(o["score"], f"outputs[{i}] ({label})")
    return list(classes.items())


def events_from_hf_batch(
    texts: Sequence[str], outputs: Sequence[Any], *, model: str, model_version: str = "unversioned",
    task: str | None = None, event_ids: Sequence[str] | None = None, timestamp: Timestamp = None,
    embeddings: Any = None, split: str = "production", token_tags: bool = True,
) -> list[dict[str, Any]]:
    """One event per text from a pipeline called on a list of texts (``ner(texts)``, ``clf(texts)``).

    ``outputs[i]`` belongs to ``texts[i]`` (what the pipelines return for a list). ``task`` is
    ``"token-classification"`` or ``"text-classification"``; by default it is read from the outputs.
    ``embeddings`` is a (len(texts), H) array or tensor, or a sequence of vectors, one row per text.
    """
    if isinstance(texts, str):
        raise BuilderError("texts is one string: use event_from_hf_token_classification or "
                           "event_from_text_classification for a single text")
    if len(outputs) != len(texts):
        raise BuilderError(f"{len(outputs)} outputs for {len(texts)} texts: pass the pipeline's output for the "
                           "same list of texts, in order")
    rows = _embedding_rows(embeddings, len(texts))
    if event_ids is not None and len(event_ids) != len(texts):
        raise BuilderError(f"{len(event_ids)} event ids for {len(texts)} texts: give one per text")
    task = task or _guess_task(outputs)
    events = []
    for i, (text, out) in enumerate(zip(texts, outputs, strict=True)):
        common: dict[str, Any] = {"model": model, "model_version": model_version, "timestamp": timestamp,
                                  "event_id": event_ids[i] if event_ids is not None else None,
                                  "embedding": rows[i] if rows is not None else None, "split": split}
        if task == "text-classification":
            events.append(event_from_text_classification(text, out, **common))
        elif task == "token-classification":
            events.append(event_from_hf_token_classification(text, out, token_tags=token_tags, **common))
        else:
            raise BuilderError(f"unknown task {task!r}: 'token-classification' or 'text-classification'")
    return events


def _embedding_rows(embeddings: Any, n: int) -> Sequence[Any] | None:
    if embeddings is None:
        return None
    if isinstance(embeddings, list | tuple):
        rows: Sequence[Any] = embeddings
    else:
        arr = to_numpy(embeddings)
        if arr.ndim != 2:
            raise BuilderError(shape_hint("embeddings", tuple(arr.shape)).replace(
                "one vector per event is expected", "one row per text is expected"))
        rows = list(arr)
    if len(rows) != n:
        raise BuilderError(f"{len(rows)} embeddings for {n} texts: give one row per text")
    return rows


def _guess_task(outputs: Sequence[Any]) -> str:
    for out in outputs:
        items = [out] if isinstance(out, Mapping) else list(out)
        while items and isinstance(items[0], list | tuple):
            items = list(items[0])
        for o in items:
            if isinstance(o, Mapping):
                return "token-classification" if ("entity" in o or "entity_group" in o) else "text-classification"
    return "token-classification"  # every text had no entity
