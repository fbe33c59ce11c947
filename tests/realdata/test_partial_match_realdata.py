"""Partial-match figures on real spaCy predictions equal nervaluate's, with gold built by perturbing them.

The real data has predictions only. Gold is made from each document's own entities, one perturbation
per entity drawn with a seeded generator: kept, a boundary moved by one spaCy token (either end, either
way), the type swapped for another of the model's labels, dropped; and a gold entity added on a random
token. Token offsets come from aligning the stored tokens with the text. The documents then go through
the whole quality path (decoded events, the join, the sliding window) and the figures are compared with
nervaluate's on the same spans.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nlpmon.events import decode_event
from nlpmon.quality.events import decode_ground_truth
from nlpmon.quality.partial_match import SCHEMES, partial_counts, scheme_figures
from nlpmon.quality.quality_monitor import QualityConfig, QualityMonitor
from tests.quality import test_partial_match as nervaluate_test  # skips (fails in CI) without nervaluate

pytestmark = [pytest.mark.realdata]

DOCS = 1500  # per domain
Span = tuple[int, int, str]


def token_offsets(text: str, tokens: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Character offsets of the stored tokens (spaCy's, in order; capped at 64, so maybe not all)."""
    out, at = [], 0
    for tok in tokens:
        start = text.find(tok["text"], at)
        if start < 0:
            break
        out.append((start, start + len(tok["text"])))
        at = start + len(tok["text"])
    return out


def perturb(event: dict[str, Any], labels: list[str], rng: random.Random) -> list[Span]:
    """Gold spans: the predicted entities, each kept, shifted by a token, retyped or dropped; maybe one added."""
    toks = token_offsets(event["text"], event.get("tokens") or [])
    starts, ends = [s for s, _ in toks], [e for _, e in toks]
    gold: list[Span] = []
    for ent in event["entities"]:
        s, e, lab = ent["start"], ent["end"], ent["label"]
        kind = rng.choice(["keep", "keep", "shift", "shift", "type", "drop"])
        if kind == "shift" and s in starts and e in ends:
            i, j = starts.index(s), ends.index(e)
            move = rng.choice(["start-", "start+", "end-", "end+"])
            if move == "start-" and i > 0:
                s = starts[i - 1]
            elif move == "start+" and i < j:
                s = starts[i + 1]
            elif move == "end-" and j > i:
                e = ends[j - 1]
            elif move == "end+" and j + 1 < len(ends):
                e = ends[j + 1]
        elif kind == "type":
            lab = rng.choice([x for x in labels if x != lab])
        elif kind == "drop":
            continue
        gold.append((s, e, lab))
    if toks and rng.random() < 0.2:
        s, e = rng.choice(toks)
        gold.append((s, e, rng.choice(labels)))
    return gold


def load(data: Path, domain: str) -> list[dict[str, Any]]:
    with gzip.open(data / f"{domain}.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(DOCS), f, strict=False)]


@pytest.mark.parametrize("domain", ["quotes", "pydocs"])
def test_real_spans_equal_nervaluate(shared_data: Path, domain: str) -> None:
    events = load(shared_data, domain)
    labels = sorted({e["label"] for ev in events for e in ev["entities"]})
    rng = random.Random(17)
    golds = {ev["event_id"]: perturb(ev, labels, rng) for ev in events}
    preds = {ev["event_id"]: [(e["start"], e["end"], e["label"]) for e in ev["entities"]] for ev in events}
    assert sum(map(len, preds.values())) > 500  # real entities, not an empty file
    # moved boundaries made overlaps that are not exact: the partial scheme's whole point
    assert sum(len(set(golds[k]) - set(preds[k])) for k in golds) > 100

    m = QualityMonitor("ner-en", QualityConfig(window_documents=10**6))
    for i, ev in enumerate(events):
        m.add_predictions([decode_event(json.dumps(ev))], now=float(i))
        label = {"event_id": ev["event_id"], "model": "ner-en",
                 "entities": [{"label": lab, "start": s, "end": e} for s, e, lab in golds[ev["event_id"]]]}
        m.add_labels([decode_ground_truth(json.dumps(label))], now=float(i))
    (report,) = m.reports().values()
    docs = [(preds[ev["event_id"]], golds[ev["event_id"]]) for ev in events]
    theirs = nervaluate_test.oracle(docs, m.vocab)
    pm = report["partial_match"]
    assert pm["documents"] == len(events)
    for scheme in SCHEMES:
        nervaluate_test.assert_block_equal(pm["schemes"][scheme]["overall"], theirs["overall"][scheme], scheme)
        assert set(pm["schemes"][scheme]["labels"]) == set(theirs["entities"])
        for label, block in pm["schemes"][scheme]["labels"].items():
            nervaluate_test.assert_block_equal(block, theirs["entities"][label][scheme], f"{scheme} {label}")
    # the vectorised counts of one batch of all documents are the same
    p = [[i, s, e, m.vocab.id(lab)] for i, (pr, _) in enumerate(docs) for s, e, lab in pr]
    g = [[i, s, e, m.vocab.id(lab)] for i, (_, gd) in enumerate(docs) for s, e, lab in gd]
    counts = partial_counts(np.array(p, np.int64), np.array(g, np.int64).reshape(-1, 4), len(docs), len(m.vocab))
    batch = scheme_figures(counts.overall.sum(axis=0), counts.per_label.sum(axis=0), m.vocab.names)
    assert {s: batch[s]["overall"] for s in SCHEMES} == {s: pm["schemes"][s]["overall"] for s in SCHEMES}
