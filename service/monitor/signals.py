"""Which signals exist, which kind of featurizer each uses, and how its items are read from events.

``extract_columns`` is the only per-event Python loop of the monitor: it flattens a batch of decoded
events into one ``ItemColumn`` per signal; everything after it is vectorised over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Literal

import numpy as np

from service.drift.featurizers import Kind
from service.drift.items import ItemColumn

WindowSet = Literal["embedding", "distribution"]


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
)
SIGNAL_NAMES = tuple(s.name for s in SIGNALS)
SCORED_LABELS = "_scored_labels"  # labels of the scored entities, aligned with the confidence column


_TAG = attrgetter("tag")


def _pos(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)


def extract_columns(events: list[Any]) -> tuple[dict[str, ItemColumn], np.ndarray]:
    """Flatten decoded events (see ``service.events``) into per-signal columns and event times.

    Besides one column per signal, ``SCORED_LABELS`` holds the label of each scored entity.

    Event times are epoch seconds, NaN when the event carries none.
    """
    n = len(events)
    times = np.full(n, np.nan)
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
    for i, e in enumerate(events):
        if e.timestamp is not None:
            times[i] = e.timestamp
        if e.embedding is not None:
            doc_pos.append(i)
            doc_emb.append(e.embedding)
        ents = e.entities
        if e.task == "token-classification":
            tc_pos.append(i)
            density.append(float(len(ents)))
        if ents:
            ent_counts[i] = len(ents)
            for ent in ents:
                labels.append(ent.label)
                if ent.score is not None:
                    score_pos.append(i)
                    scores.append(ent.score)
                    scored_labels.append(ent.label)
                if ent.embedding is not None:
                    ent_emb_pos.append(i)
                    ent_emb.append(ent.embedding)
        toks = e.tokens
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
        return np.vstack(rows) if rows else np.zeros((0, 0), np.float32)

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
        SCORED_LABELS: ItemColumn(arr(score_pos), scored_labels),
    }
    return columns, times
