"""Event builders without the libraries: tag decoding, IOB/Spark NLP lists, vectors, scores; every built
event passes the decoder. The same builders run against the real spaCy and transformers in tests/clients."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nlpmon.events import decode_event, pydantic_validate
from nlpmon.events.builders import (
    BuilderError,
    as_vector,
    event_from_hf_token_classification,
    event_from_iob_tags,
    event_from_spacy_doc,
    event_from_text_classification,
    spans_from_tags,
    split_tag,
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
    per_token = [{"entity": "B-PER", "score": np.float32(0.99), "word": "Om", "start": 11, "end": 13, "index": 4},
                 {"entity": "I-PER", "score": np.float32(0.97), "word": "##ar", "start": 13, "end": 15, "index": 5},
                 {"entity": "B-LOC", "score": np.float32(0.9), "word": "Zurich", "start": 30, "end": 36, "index": 9}]
    ev = event_from_hf_token_classification(TEXT, per_token, model="ner")
    e2 = decode_event(json.dumps(ev))
    assert [(x.label, x.start, x.end, x.text) for x in e2.entities] == [("PER", 11, 15, "Omar"),
                                                                       ("LOC", 30, 36, "Zurich")]
    assert e2.entities[0].score == pytest.approx((0.99 + 0.97) / 2, abs=1e-6)
    assert [(t["text"], t["tag"]) for t in ev["tokens"]] == [("Om", "B-PER"), ("ar", "I-PER"), ("Zurich", "B-LOC")]
    assert [(t.start, t.end) for t in e2.tokens] == [(o["start"], o["end"]) for o in per_token]  # the pipeline's


def test_index_gap_ends_a_span() -> None:
    """With the default ignore_labels the O tokens are missing: a gap in ``index`` separates two I- runs."""
    out = [{"entity": "I-LOC", "score": 0.9, "word": "New", "start": 0, "end": 3, "index": 1},
           {"entity": "I-LOC", "score": 0.9, "word": "York", "start": 8, "end": 12, "index": 3}]
    ents = event_from_hf_token_classification("New and York", out, model="ner")["entities"]
    assert [(e["start"], e["end"]) for e in ents] == [(0, 3), (8, 12)]


def test_slow_tokenizer_words_are_found_across_the_spaces_it_adds() -> None:
    """A slow tokenizer gives no offsets and joins pieces with spaces (``"memory ."`` for ``memory.``); the
    span is still found, case-insensitively, in order, after the previous entity."""
    text = "The the cache keeps everything in Memory. Then memory again."
    out = [{"entity_group": "ORG", "score": 0.5, "word": "the", "start": None, "end": None},
           {"entity_group": "ORG", "score": 0.5, "word": "the", "start": None, "end": None},
           {"entity_group": "PER", "score": 0.4, "word": "memory .", "start": None, "end": None},
           {"entity_group": "PER", "score": 0.4, "word": "memory", "start": None, "end": None},
           {"entity_group": "LOC", "score": 0.3, "word": "again . ", "start": None, "end": None}]
    ents = valid_event(event_from_hf_token_classification(text, out, model="ner"))["entities"]
    assert [(text[e["start"]:e["end"]]) for e in ents] == ["The", "the", "Memory.", "memory", "again."]
    assert [e["start"] for e in ents] == [0, 4, 34, 47, 54]
    # per-token output of a slow tokenizer: tokens get the offsets found in the text, or none
    pieces = [{"entity": "B-X", "score": 0.5, "word": "cache", "start": None, "end": None, "index": 1},
              {"entity": "O", "score": 0.5, "word": "nowhere", "start": None, "end": None, "index": 2},
              {"entity": "B-Y", "score": 0.5, "word": "memory", "start": None, "end": None, "index": 3}]
    toks = valid_event(event_from_hf_token_classification(text, pieces, model="ner"))["tokens"]
    assert [(t.get("start"), t.get("end")) for t in toks] == [(8, 13), (None, None), (34, 40)]


def valid_event(event: dict) -> dict:
    decode_event(json.dumps(event))
    pydantic_validate(json.dumps(event))
    return event


def test_one_dict_or_mixed_outputs_are_refused() -> None:
    with pytest.raises(BuilderError, match="one dict"):
        event_from_hf_token_classification(TEXT, {"entity_group": "PER", "score": 0.9}, model="ner")  # type: ignore[arg-type]
    with pytest.raises(BuilderError, match="event_from_text_classification"):
        event_from_hf_token_classification(TEXT, [{"label": "POSITIVE", "score": 0.9}], model="ner")
    with pytest.raises(BuilderError, match="mix"):
        event_from_hf_token_classification(TEXT, [{"entity_group": "PER", "score": 0.9},
                                                  {"entity": "B-PER", "score": 0.9}], model="ner")


def test_text_classification() -> None:
    out = [{"label": "POSITIVE", "score": 0.9998}, {"label": "NEGATIVE", "score": 0.0002}]
    e = decode_event(json.dumps(event_from_text_classification("great", out, model="sst2")))
    assert e.task == "text-classification" and e.prediction is not None
    assert e.prediction.label == "POSITIVE" and e.prediction.probabilities == {"POSITIVE": 0.9998,
                                                                              "NEGATIVE": 0.0002}
    with pytest.raises(BuilderError, match=r"-0.0132 is outside \[0, 1\]"):
        event_from_text_classification("great", [{"label": "POSITIVE", "score": -0.0132}], model="sst2")


# ----------------------------------------------------------------------------- tags


def test_tag_roles() -> None:
    assert split_tag("O") == ("outside", "")
    assert split_tag("B-PER") == ("begin", "PER")
    assert split_tag("I-LOC") == ("inside", "LOC")
    assert split_tag("E-ORG") == split_tag("L-ORG") == ("end", "ORG")
    assert split_tag("S-MISC") == split_tag("U-MISC") == ("single", "MISC")
    assert split_tag("PER") == ("inside", "PER")  # IO scheme
    assert split_tag("B-I-X") == ("begin", "I-X")
    for bad in ("", "B-"):
        with pytest.raises(ValueError, match="tag"):
            split_tag(bad)


@pytest.mark.parametrize(("tags", "want"), [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),          # BIO
    (["I-PER", "I-PER", "B-PER", "O"], [("PER", 0, 1), ("PER", 2, 2)]),          # IOB1
    (["B-PER", "E-PER", "S-LOC", "S-LOC"], [("PER", 0, 1), ("LOC", 2, 2), ("LOC", 3, 3)]),  # BIOES
    (["B-PER", "I-PER", "L-PER", "U-ORG"], [("PER", 0, 2), ("ORG", 3, 3)]),      # BILUO
    (["PER", "PER", "O", "LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),                # IO
    (["O", "I-PER", "I-LOC", "E-LOC", "I-LOC"], [("PER", 1, 1), ("LOC", 2, 3), ("LOC", 4, 4)]),  # lenient
    (["E-PER"], [("PER", 0, 0)]),
    ([], []),
])
def test_spans_from_tags(tags: list[str], want: list[tuple[str, int, int]]) -> None:
    assert [(s.label, s.first, s.last) for s in spans_from_tags(tags)] == want


def _encode(spans: list[tuple[int, int, str]], n: int, scheme: str) -> list[str]:
    tags = ["O"] * n
    for first, last, label in spans:
        for i in range(first, last + 1):
            if scheme == "bio":
                tags[i] = ("B-" if i == first else "I-") + label
            elif scheme == "bioes":
                tags[i] = ("S-" if first == last else "B-" if i == first else "E-" if i == last else "I-") + label
            else:  # bilou
                tags[i] = ("U-" if first == last else "B-" if i == first else "L-" if i == last else "I-") + label
    return tags


@st.composite
def span_lists(draw: st.DrawFn) -> tuple[int, list[tuple[int, int, str]]]:
    n = draw(st.integers(0, 30))
    cuts = sorted(draw(st.sets(st.integers(0, n), max_size=12)))
    spans = []
    for a, b in itertools.pairwise(cuts):
        if draw(st.booleans()):
            spans.append((a, b - 1, draw(st.sampled_from(["PER", "LOC", "ORG"]))))
    return n, spans


@given(span_lists(), st.sampled_from(["bio", "bioes", "bilou"]))
def test_tags_round_trip_any_spans(case: tuple[int, list[tuple[int, int, str]]], scheme: str) -> None:
    """Encoding any non-overlapping spans in a scheme and decoding gives the spans back (adjacent spans of
    one label included: B- or S- separates them)."""
    n, spans = case
    got = spans_from_tags(_encode(spans, n, scheme))
    assert [(s.first, s.last, s.label) for s in got] == spans


# ----------------------------------------------------------------------------- IOB tag lists


def test_iob_tags_with_text() -> None:
    tokens = ["My", "name", "is", "Omar", "and", "I", "live", "in", "Zurich", "."]
    tags = ["O", "O", "O", "B-PER", "O", "O", "O", "O", "B-LOC", "O"]
    ev = event_from_iob_tags(tokens, tags, text=TEXT, model="spark-ner", scores=[1.0] * 3 + [0.8] + [1.0] * 6)
    e = decode_event(json.dumps(ev))
    assert [(x.label, x.start, x.end, x.text, x.score) for x in e.entities] == [
        ("PER", 11, 15, "Omar", 0.8), ("LOC", 30, 36, "Zurich", 1.0)]
    assert [(t.text, t.tag) for t in e.tokens] == list(zip(tokens, tags, strict=True))
    assert e.text == TEXT
    assert [TEXT[t.start:t.end] for t in e.tokens] == tokens  # offsets found while building the spans


def test_iob_tags_spark_nlp_offsets_and_no_text() -> None:
    """Spark NLP rows: ``token.result``, ``ner.result``, and ``(begin, end + 1)`` per token."""
    text = "Peter Parker lives in New York"
    tokens = ["Peter", "Parker", "lives", "in", "New", "York"]
    tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]
    begin_end = [(0, 4), (6, 11), (13, 17), (19, 20), (22, 24), (26, 29)]  # Spark NLP: end inclusive
    ev = event_from_iob_tags(tokens, tags, text=text, offsets=[(b, e + 1) for b, e in begin_end], model="m")
    assert [(x["label"], x["text"]) for x in ev["entities"]] == [("PER", "Peter Parker"), ("LOC", "New York")]
    assert [(t["start"], t["end"]) for t in ev["tokens"]] == [(b, e + 1) for b, e in begin_end]  # as given
    joined = event_from_iob_tags(tokens, tags, model="m")
    assert joined["text"] == text and joined["entities"] == ev["entities"]
    assert [text[t["start"]:t["end"]] for t in joined["tokens"]] == tokens
    pydantic_validate(json.dumps(joined))


def test_iob_tags_token_missing_from_text_and_bad_input() -> None:
    ev = event_from_iob_tags(["``", "Hi", "''", "Bob"], ["O", "O", "O", "B-PER"], text='"Hi" Bob', model="m")
    assert ev["entities"] == [{"label": "PER", "start": 5, "end": 8, "text": "Bob"}]
    assert [(t.get("start"), t.get("end")) for t in ev["tokens"]] == [(None, None), (1, 3), (None, None), (5, 8)]
    ev = event_from_iob_tags(["``", "Hi", "''"], ["B-X", "I-X", "O"], text='"Hi"', model="m")
    assert ev["entities"] == [{"label": "X", "text": "`` Hi"}]  # no span: a token is not in the text
    with pytest.raises(BuilderError, match="3 tokens but 2 tags"):
        event_from_iob_tags(["a", "b", "c"], ["O", "O"], model="m")
    with pytest.raises(BuilderError, match="no label"):
        event_from_iob_tags(["a"], ["B-"], model="m")
    with pytest.raises(BuilderError, match=r"offsets\[0\]"):
        event_from_iob_tags(["a"], ["O"], text="a", offsets=[(0, 5)], model="m")
    with pytest.raises(BuilderError, match=r"scores\[0\].*outside"):
        event_from_iob_tags(["a"], ["O"], scores=[3.2], model="m")


# ----------------------------------------------------------------------------- vectors


def test_vectors() -> None:
    np.testing.assert_array_equal(as_vector([1, 2.5]), np.array([1, 2.5], np.float32))
    assert as_vector(np.arange(4, dtype=np.float16)).dtype == np.float32
    for bad, match in ((np.zeros((1, 8)), r"\(1, 8\).*vector\[0\]"), (np.zeros((5, 8)), "pool token vectors"),
                       (np.zeros((1, 5, 8)), "pool them"), (np.float32(1), "scalar"), ([], "empty"),
                       ([1.0, float("nan")], "NaN"), ([1e39], "float32 range"), ([[1, 2], [3]], "flat list"),
                       (np.array(["a"]), "dtype")):
        with pytest.raises(BuilderError, match=match):
            as_vector(bad)


# ----------------------------------------------------------------------------- spaCy-shaped objects


@dataclass
class Tok:
    text: str
    pos_: str
    idx: int = 0

    def __len__(self) -> int:
        return len(self.text)


@dataclass
class Span:
    label_: str
    start_char: int
    end_char: int
    text: str
    vector: np.ndarray = field(default_factory=lambda: np.full(96, 0.5, np.float32))


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
              [Tok(m.group(), "PROPN" if m.group()[0].isupper() else "NOUN", m.start())
               for m in re.finditer(r"\S+", TEXT)])
    ev = event_from_spacy_doc(doc, model="ner-sm", model_version="3.8", entity_scores={(11, 15, "PERSON"): 0.9},
                              entity_vectors=True)
    e = decode_event(json.dumps(ev))
    assert [x.label for x in e.entities] == ["PERSON", "GPE"] and e.entities[0].score == 0.9
    assert e.entities[1].score is None and len(e.tokens) == len(TEXT.split())
    assert [TEXT[t.start:t.end] for t in e.tokens] == TEXT.split()  # token.idx, token.idx + len(token)
    assert e.embedding is not None and e.embedding.shape == (96,)
    assert e.entities[0].embedding is not None and float(e.entities[0].embedding[0]) == 0.5
    with pytest.raises(BuilderError, match="outside"):
        event_from_spacy_doc(doc, model="m", entity_scores={(11, 15, "PERSON"): 1.5})


def test_nlpmon_imports_none_of_the_client_libraries() -> None:
    code = ("import sys, nlpmon.cli, nlpmon.app.service, nlpmon.events.builders, nlpmon.integrations.faust_agent; "
            "print(','.join(m for m in ('spacy', 'transformers', 'torch', 'tokenizers', 'faust', 'thinc') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"imported at import time: {out.stdout.strip()}"
