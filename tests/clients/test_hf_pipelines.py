"""The Hugging Face builders against real ``transformers.pipeline(...)`` objects (tiny random BERT models
built from a config, see conftest.py), so every output has the shape the library really returns."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from nlpmon.events import decode_event, pydantic_validate
from nlpmon.events.builders import (
    BuilderError,
    event_from_hf_token_classification,
    event_from_text_classification,
    events_from_hf_batch,
)
from tests.clients.conftest import CLASSES, TinyModels

TEXTS = [
    "My name is Omar and I live in Zurich, where the Free Software Foundation has no office.",
    "Prometheus scrapes the metrics of nlpmon every fifteen seconds on port 9308.",
    "Alice Smith from Berlin wrote the alert rules for the support model in March.",
    "The embedded Tansu broker keeps everything in memory.",
]


def spans(event: dict[str, Any]) -> list[tuple[str, int | None, int | None]]:
    return [(e["label"], e.get("start"), e.get("end")) for e in event["entities"]]


def valid(event: dict[str, Any]) -> dict[str, Any]:
    """The event passes both decoders (msgspec hot path and the pydantic schema)."""
    raw = json.dumps(event)
    decode_event(raw)
    pydantic_validate(raw)
    return event


# ----------------------------------------------------------------------------- token classification


def test_per_token_output_merges_into_the_spans_simple_gives(tiny: TinyModels) -> None:
    simple, none = tiny.ner(aggregation_strategy="simple"), tiny.ner(aggregation_strategy="none")
    merged_more = 0
    for text in TEXTS:
        a = valid(event_from_hf_token_classification(text, simple(text), model="ner"))
        raw = none(text)
        b = valid(event_from_hf_token_classification(text, raw, model="ner"))
        assert spans(b) == spans(a), text
        # simple's score is the float32 mean of the same token scores
        np.testing.assert_allclose([e["score"] for e in b["entities"]], [e["score"] for e in a["entities"]],
                                   rtol=0, atol=1e-6)
        assert [t["tag"] for t in b["tokens"]] == [o["entity"] for o in raw]  # per-token tags kept
        assert [t["score"] for t in b["tokens"]] == pytest.approx([float(o["score"]) for o in raw])
        assert [(t["start"], t["end"]) for t in b["tokens"]] == [(o["start"], o["end"]) for o in raw]  # the pipeline's
        merged_more += len(raw) - len(b["entities"])
    assert merged_more > 0, "the random model should split some entities over several sub-tokens"


def test_outside_tag_is_never_an_entity(tiny: TinyModels) -> None:
    for agg in ("none", "simple"):
        ner = tiny.ner(aggregation_strategy=agg, ignore_labels=[])
        key = "entity" if agg == "none" else "entity_group"
        assert any(o[key] == "O" for text in TEXTS for o in ner(text)), "ignore_labels=[] returns the O tokens"
        for text in TEXTS:
            raw = ner(text)
            event = valid(event_from_hf_token_classification(text, raw, model="ner"))
            assert all(e["label"] != "O" for e in event["entities"])
            if agg == "none":  # every token, O included, is in tokens
                assert len(event["tokens"]) == len(raw)
                assert spans(event) == spans(event_from_hf_token_classification(
                    text, tiny.ner(aggregation_strategy="simple")(text), model="ner"))


@pytest.mark.parametrize("agg", ["none", "simple"])
def test_slow_tokenizer_offsets_are_recovered_from_the_words(tiny: TinyModels, agg: str) -> None:
    fast, slow = tiny.ner(aggregation_strategy=agg), tiny.ner(slow=True, aggregation_strategy=agg)
    for text in TEXTS:
        raw = slow(text)
        assert raw and all(o["start"] is None and o["end"] is None for o in raw), "a slow tokenizer gives no offsets"
        recovered = valid(event_from_hf_token_classification(text, raw, model="ner"))
        assert all(e.get("start") is not None for e in recovered["entities"])
        # same vocabulary and normaliser, so the same tokens and predictions as with real offsets
        assert spans(recovered) == spans(event_from_hf_token_classification(text, fast(text), model="ner"))


def test_word_not_in_the_text_gives_an_entity_without_span() -> None:
    text = "Zurich is in Switzerland."
    out = [{"entity_group": "LOC", "score": 0.9, "word": "zürich", "start": None, "end": None},
           {"entity_group": "LOC", "score": 0.8, "word": "switzerland", "start": None, "end": None}]
    event = valid(event_from_hf_token_classification(text, out, model="ner"))
    assert event["entities"][0] == {"label": "LOC", "score": 0.9, "text": "zürich"}
    assert spans(event)[1] == ("LOC", 13, 24)


def test_batch_output(tiny: TinyModels) -> None:
    ner = tiny.ner(aggregation_strategy="simple")
    batch = ner(TEXTS[:2])
    assert isinstance(batch[0], list)
    with pytest.raises(BuilderError, match="events_from_hf_batch"):
        event_from_hf_token_classification(TEXTS[0], batch, model="ner")
    events = [valid(e) for e in events_from_hf_batch(TEXTS[:2], batch, model="ner", event_ids=["a", "b"])]
    assert [e["event_id"] for e in events] == ["a", "b"]
    for text, event in zip(TEXTS[:2], events, strict=True):
        assert event["task"] == "token-classification"
        assert spans(event) == spans(event_from_hf_token_classification(text, ner(text), model="ner"))
    with pytest.raises(BuilderError, match="2 outputs for 3 texts"):
        events_from_hf_batch(TEXTS[:3], batch, model="ner")


def test_entity_scores_outside_unit_interval_are_refused_not_clamped() -> None:
    out = [{"entity_group": "PER", "score": 1.7, "word": "Omar", "start": 11, "end": 15}]
    with pytest.raises(BuilderError, match=r"outside \[0, 1\].*logits"):
        event_from_hf_token_classification(TEXTS[0], out, model="ner")
    out[0]["score"] = np.float32(1.0) + np.float32(1e-7)  # float32 rounding of a softmax is clipped
    assert event_from_hf_token_classification(TEXTS[0], out, model="ner")["entities"][0]["score"] == 1.0


# ----------------------------------------------------------------------------- text classification


def test_text_classification_every_shape_the_pipeline_returns(tiny: TinyModels) -> None:
    text = TEXTS[0]
    top1 = tiny.clf()(text)
    assert isinstance(top1, list) and isinstance(top1[0], dict)
    nested = tiny.clf(top_k=None)(text)
    assert isinstance(nested, list) and isinstance(nested[0], list), "top_k=None on the pipeline nests"
    flat = tiny.clf()(text, top_k=None)
    for out in (nested, flat):
        e = valid(event_from_text_classification(text, out, model="clf"))
        assert set(e["prediction"]["probabilities"]) == set(CLASSES)
        assert sum(e["prediction"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
        assert e["prediction"]["label"] == top1[0]["label"]
    for out in (top1, top1[0]):
        e = valid(event_from_text_classification(text, out, model="clf"))
        assert e["prediction"] == {"label": top1[0]["label"], "score": top1[0]["score"]}


def test_text_classification_batches(tiny: TinyModels) -> None:
    all_classes = tiny.clf(top_k=None)(TEXTS)
    with pytest.raises(BuilderError, match="events_from_hf_batch"):
        event_from_text_classification(TEXTS[0], all_classes, model="clf")
    events = events_from_hf_batch(TEXTS, all_classes, model="clf")
    assert [valid(e)["task"] for e in events] == ["text-classification"] * len(TEXTS)
    top1 = tiny.clf()(TEXTS)  # one {label, score} per text: a flat list, like one text's classes
    assert len({o["label"] for o in top1}) < len(top1), "the seeded model predicts one class twice"
    with pytest.raises(BuilderError, match=r"appears twice.*events_from_hf_batch"):
        event_from_text_classification(TEXTS[0], top1, model="clf")
    assert [e["prediction"]["label"] for e in events_from_hf_batch(TEXTS, top1, model="clf")] == \
        [o["label"] for o in top1]


def test_logits_are_refused_with_the_fix(tiny: TinyModels) -> None:
    logits = tiny.clf(top_k=None, function_to_apply="none")(TEXTS)
    assert any(o["score"] < 0 or o["score"] > 1 for out in logits for o in out), "raw logits leave [0, 1]"
    with pytest.raises(BuilderError, match=r"outside \[0, 1\].*function_to_apply='softmax'"):
        events_from_hf_batch(TEXTS, logits, model="clf")


# ----------------------------------------------------------------------------- embeddings


def test_embeddings_from_torch_tensors(tiny: TinyModels) -> None:
    import torch

    enc = tiny.fast(TEXTS, return_tensors="pt", padding=True)
    hidden = tiny.encoder(**enc).last_hidden_state  # (N, T, H), requires grad (no torch.no_grad)
    assert hidden.requires_grad
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)  # (N, H), still requires grad
    ner = tiny.ner(aggregation_strategy="simple")
    e = valid(event_from_hf_token_classification(TEXTS[0], ner(TEXTS[0]), model="ner", embedding=pooled[0]))
    np.testing.assert_array_equal(decode_event(json.dumps(e)).embedding, pooled[0].detach().numpy())
    for half in (pooled[0].to(torch.bfloat16), pooled[0].to(torch.float16), pooled[0].double()):
        got = decode_event(json.dumps(event_from_hf_token_classification(TEXTS[0], [], model="ner",
                                                                         embedding=half))).embedding
        np.testing.assert_array_equal(got, half.detach().float().numpy())  # widening is exact
    events = events_from_hf_batch(TEXTS, ner(TEXTS), model="ner", embeddings=pooled)
    for i, event in enumerate(events):
        np.testing.assert_array_equal(decode_event(json.dumps(event)).embedding, pooled[i].detach().numpy())
    with pytest.raises(BuilderError, match=r"\(1, \d+, 32\).*pool them"):
        event_from_hf_token_classification(TEXTS[0], [], model="ner", embedding=hidden[:1])
    with pytest.raises(BuilderError, match=r"\(1, 32\).*vector\[0\]"):
        event_from_hf_token_classification(TEXTS[0], [], model="ner", embedding=pooled[:1])
    with pytest.raises(BuilderError, match=r"\(4, \d+, 32\).*pool them"):
        events_from_hf_batch(TEXTS, ner(TEXTS), model="ner", embeddings=hidden)
