"""Event builders: every built event passes the decoder. spaCy and transformers are not installed here,
so their outputs are reproduced with plain objects of the same shape (documented attribute names)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from service.events import decode_event
from service.events.builders import (
    event_from_hf_token_classification,
    event_from_spacy_doc,
    event_from_text_classification,
)

TEXT = "My name is Omar and I live in Zurich."


def test_hugging_face_aggregated_and_per_token_outputs() -> None:
    agg = [{"entity_group": "PER", "score": 0.998, "word": "Omar", "start": 11, "end": 15},
           {"entity_group": "LOC", "score": 0.9991, "word": "Zurich", "start": 30, "end": 36}]
    emb = np.linspace(-1, 1, 384, dtype=np.float32)
    e = decode_event(json.dumps(event_from_hf_token_classification(TEXT, agg, model="ner", embedding=emb)))
    assert [(x.label, x.start, x.end, x.text) for x in e.entities] == [("PER", 11, 15, "Omar"),
                                                                      ("LOC", 30, 36, "Zurich")]
    np.testing.assert_array_equal(e.embedding, emb)
    per_token = [{"entity": "B-PER", "score": np.float32(0.99), "word": "Omar", "start": 11, "end": 15,
                  "index": 4}]
    e2 = decode_event(json.dumps(event_from_hf_token_classification(TEXT, per_token, model="ner")))
    assert e2.entities[0].label == "PER" and e2.entities[0].score == float(np.float32(0.99))  # the float32 as is


@dataclass
class Tok:
    text: str
    pos_: str


@dataclass
class Span:
    label_: str
    start_char: int
    end_char: int
    text: str


@dataclass
class Doc:
    text: str
    ents: list[Span]
    tokens: list[Tok]
    vector: np.ndarray = field(default_factory=lambda: np.ones(96, np.float32))
    has_vector: bool = True

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.tokens)


def test_spacy_doc() -> None:
    doc = Doc(TEXT, [Span("PERSON", 11, 15, "Omar"), Span("GPE", 30, 36, "Zurich")],
              [Tok(w, "PROPN" if w[0].isupper() else "NOUN") for w in TEXT.split()])
    ev = event_from_spacy_doc(doc, model="ner-sm", model_version="3.8", entity_scores={(11, 15, "PERSON"): 0.9})
    e = decode_event(json.dumps(ev))
    assert [x.label for x in e.entities] == ["PERSON", "GPE"] and e.entities[0].score == 0.9
    assert e.entities[1].score is None and len(e.tokens) == len(TEXT.split())
    assert e.embedding is not None and e.embedding.shape == (96,)


def test_text_classification() -> None:
    out = [{"label": "POSITIVE", "score": 0.9998}, {"label": "NEGATIVE", "score": 0.0002}]
    e = decode_event(json.dumps(event_from_text_classification("great", out, model="sst2")))
    assert e.task == "text-classification" and e.prediction is not None
    assert e.prediction.label == "POSITIVE" and e.prediction.probabilities == {"POSITIVE": 0.9998,
                                                                              "NEGATIVE": 0.0002}
