"""A seeded generator of realistic-looking NER prediction events that can drift.

Two "domains" differ in what a monitor sees: entity label mix, confidence, text length, POS tags and
document embeddings (each domain is a mixture of topic clusters in a 384-dim space, L2-normalised like
sentence embeddings). ``drift_at`` switches from domain 0 to domain 1 at that event index.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

LABELS = ("PERSON", "ORG", "GPE", "DATE", "CARDINAL", "PRODUCT", "LOC", "NORP")
TAGS = ("NOUN", "VERB", "ADP", "DET", "PROPN", "ADJ", "PUNCT", "PRON", "AUX", "NUM", "ADV", "CCONJ")
WORDS = ("the", "model", "signal", "report", "city", "market", "river", "system", "people", "data",
         "year", "team", "music", "game", "policy", "paper", "value", "light", "story", "night")
NAMES = {"PERSON": ("Omar", "Ada Lovelace", "Grace", "Linus"), "ORG": ("Acme", "UNESCO", "Initech"),
         "GPE": ("Zurich", "Lagos", "Lima"), "DATE": ("Monday", "2024", "last year"),
         "CARDINAL": ("two", "17", "300"), "PRODUCT": ("Widget", "Pixel"), "LOC": ("the Alps", "Nile"),
         "NORP": ("Swiss", "Peruvian")}


@dataclass(frozen=True)
class Domain:
    label_probs: np.ndarray
    tag_probs: np.ndarray
    entity_rate: float
    confidence_ab: tuple[float, float]
    words: tuple[int, int]
    centers: np.ndarray  # (topics, dim)


def _domain(rng: np.random.Generator, dim: int, shift: bool) -> Domain:
    lp = rng.dirichlet(np.full(len(LABELS), 2.0))
    tp = rng.dirichlet(np.full(len(TAGS), 5.0))
    centers = rng.standard_normal((6, dim)).astype(np.float32)
    if shift:
        return Domain(lp, tp, 2.2, (5.0, 2.0), (20, 50), centers)
    return Domain(lp, tp, 1.2, (8.0, 1.2), (10, 35), centers)


class SyntheticStream:
    """Seeded event factory. ``events(n, start)`` yields dict events; embeddings sent as base64 float32."""

    def __init__(self, seed: int = 0, dim: int = 384, model: str = "demo-ner", version: str = "1",
                 drift_at: int | None = None, base64_embeddings: bool = True, t0: float = 1.7e9,
                 events_per_second: float = 100.0) -> None:
        rng = np.random.default_rng(seed)
        self.domains = (_domain(rng, dim, False), _domain(rng, dim, True))
        self.rng = np.random.default_rng(seed + 1)
        self.dim = dim
        self.model, self.version = model, version
        self.drift_at = drift_at
        self.base64 = base64_embeddings
        self.t0 = t0
        self.dt = 1.0 / events_per_second
        self.index = 0

    def _embedding(self, d: Domain) -> np.ndarray:
        c = d.centers[self.rng.integers(len(d.centers))]
        v = 0.8 * c + self.rng.standard_normal(self.dim).astype(np.float32)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def event(self, split: str = "production") -> dict[str, Any]:
        i = self.index
        self.index += 1
        d = self.domains[1 if self.drift_at is not None and i >= self.drift_at else 0]
        r = self.rng
        n_words = int(r.integers(*d.words))
        words = [WORDS[j] for j in r.integers(len(WORDS), size=n_words)]
        entities = []
        for _ in range(int(r.poisson(d.entity_rate))):
            label = LABELS[int(r.choice(len(LABELS), p=d.label_probs))]
            name = NAMES[label][int(r.integers(len(NAMES[label])))]
            pos = int(r.integers(0, len(words) + 1))
            words.insert(pos, name)
            entities.append((label, name, round(float(r.beta(*d.confidence_ab)), 4)))
        text = " ".join(words) + "."
        ents = []
        for label, name, score in entities:
            start = text.find(name)
            ents.append({"label": label, "score": score, "start": start, "end": start + len(name), "text": name})
        tags = [TAGS[int(j)] for j in r.choice(len(TAGS), size=min(len(text.split()), 64), p=d.tag_probs)]
        tokens = [{"text": w, "tag": t} for w, t in zip(text.split(), tags, strict=False)]
        emb = self._embedding(d)
        embedding: Any = ({"dtype": "float32", "base64": base64.b64encode(emb.astype("<f4").tobytes()).decode()}
                          if self.base64 else [round(float(x), 6) for x in emb])
        return {"event_id": f"{self.model}-{self.version}-{i}", "model": self.model,
                "model_version": self.version, "timestamp": round(self.t0 + i * self.dt, 3),
                "task": "token-classification", "split": split, "text": text,
                "embedding": embedding, "entities": ents, "tokens": tokens}

    def events(self, n: int, split: str = "production") -> Iterator[dict[str, Any]]:
        for _ in range(n):
            yield self.event(split)


def generate_events(n: int, *, seed: int = 0, drift_at: int | None = None, dim: int = 384,
                    model: str = "demo-ner", split: str = "production") -> list[dict[str, Any]]:
    """``n`` events of one seeded stream (convenience for tests and the demo)."""
    return list(SyntheticStream(seed, dim, model, drift_at=drift_at).events(n, split))
