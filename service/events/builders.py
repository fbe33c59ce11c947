"""Build valid prediction events from common NLP library outputs, without importing those libraries.

    from service.events.builders import event_from_hf_token_classification, event_from_spacy_doc

    ner = transformers.pipeline("token-classification", aggregation_strategy="simple")
    event = event_from_hf_token_classification(text, ner(text), model="ner-en", model_version="3",
                                               embedding=sentence_embedding)   # a dict, ready for json.dumps

    doc = nlp(text)                                    # spaCy
    event = event_from_spacy_doc(doc, model="ner-en", model_version="3.8")

Embeddings are encoded as base64 float32 (the fast path of the decoder). ``event_id`` defaults to a
random UUID4; pass your own to join ground truth later.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np


def encode_embedding(vector: Sequence[float] | np.ndarray) -> dict[str, str]:
    """``{"dtype": "float32", "base64": ...}`` for a 1-D vector (little-endian float32)."""
    arr = np.asarray(vector, dtype="<f4").ravel()
    return {"dtype": "float32", "base64": base64.b64encode(arr.tobytes()).decode("ascii")}


def _base(model: str, model_version: str, event_id: str | None, timestamp: float | datetime | None,
          text: str | None, embedding: Sequence[float] | np.ndarray | None, split: str) -> dict[str, Any]:
    ts = timestamp if timestamp is not None else datetime.now(UTC)
    event: dict[str, Any] = {
        "event_id": event_id or str(uuid.uuid4()), "model": model, "model_version": model_version,
        "timestamp": ts.isoformat().replace("+00:00", "Z") if isinstance(ts, datetime) else float(ts),
        "task": "token-classification", "split": split,
    }
    if text is not None:
        event["text"] = text
    if embedding is not None:
        event["embedding"] = encode_embedding(embedding)
    return event


def event_from_hf_token_classification(
    text: str, outputs: Iterable[Mapping[str, Any]], *, model: str, model_version: str = "unversioned",
    event_id: str | None = None, timestamp: float | datetime | None = None,
    embedding: Sequence[float] | np.ndarray | None = None, split: str = "production",
    strip_bio_prefix: bool = True,
) -> dict[str, Any]:
    """An event from a Hugging Face ``token-classification`` pipeline output.

    Each output is a dict with ``entity_group`` (aggregated) or ``entity`` (per token, e.g. ``B-PER``),
    ``score``, ``start``, ``end`` and ``word``. With ``strip_bio_prefix`` the ``B-``/``I-`` prefix of
    per-token labels is dropped so that labels compare across aggregation settings. Raises KeyError
    when an output has neither label key.
    """
    event = _base(model, model_version, event_id, timestamp, text, embedding, split)
    entities = []
    for o in outputs:
        label = str(o["entity_group"] if "entity_group" in o else o["entity"])
        if strip_bio_prefix and len(label) > 2 and label[1] == "-" and label[0] in "BIES":
            label = label[2:]
        ent: dict[str, Any] = {"label": label, "score": min(max(float(o["score"]), 0.0), 1.0)}
        if o.get("start") is not None and o.get("end") is not None:
            ent["start"], ent["end"] = int(o["start"]), int(o["end"])
            ent["text"] = text[ent["start"]:ent["end"]]
        entities.append(ent)
    event["entities"] = entities
    return event


def event_from_spacy_doc(
    doc: Any, *, model: str, model_version: str = "unversioned", event_id: str | None = None,
    timestamp: float | datetime | None = None, split: str = "production", include_vector: bool = True,
    entity_scores: Mapping[tuple[int, int, str], float] | None = None, tag_attribute: str = "pos_",
) -> dict[str, Any]:
    """An event from a spaCy ``Doc``: ``doc.ents`` (character offsets), tokens with ``token.pos_`` (or
    ``tag_attribute``), and ``doc.vector`` as the embedding when the pipeline has vectors.

    spaCy's NER gives no confidence; pass ``entity_scores`` keyed by (start_char, end_char, label) if you
    compute them (e.g. with a beam parse), otherwise entities carry no score.
    """
    vector = None
    if include_vector and getattr(doc, "has_vector", False):
        vector = np.asarray(doc.vector, dtype=np.float32)
    event = _base(model, model_version, event_id, timestamp, doc.text, vector, split)
    entities = []
    for ent in doc.ents:
        e: dict[str, Any] = {"label": ent.label_, "start": ent.start_char, "end": ent.end_char, "text": ent.text}
        score = (entity_scores or {}).get((ent.start_char, ent.end_char, ent.label_))
        if score is not None:
            e["score"] = float(score)
        entities.append(e)
    event["entities"] = entities
    event["tokens"] = [{"text": t.text, "tag": getattr(t, tag_attribute)} for t in doc
                       if getattr(t, tag_attribute)]
    return event


def event_from_text_classification(
    text: str, outputs: Sequence[Mapping[str, Any]], *, model: str, model_version: str = "unversioned",
    event_id: str | None = None, timestamp: float | datetime | None = None,
    embedding: Sequence[float] | np.ndarray | None = None, split: str = "production",
) -> dict[str, Any]:
    """An event from a Hugging Face ``text-classification`` output (``[{"label", "score"}, ...]``; pass
    ``top_k=None`` to the pipeline to get every class, which fills ``probabilities``)."""
    event = _base(model, model_version, event_id, timestamp, text, embedding, split)
    event["task"] = "text-classification"
    best = max(outputs, key=lambda o: float(o["score"]))
    pred: dict[str, Any] = {"label": str(best["label"]), "score": float(best["score"])}
    if len(outputs) > 1:
        pred["probabilities"] = {str(o["label"]): float(o["score"]) for o in outputs}
    event["prediction"] = pred
    return event
