"""Entity tags and injected faults for the tag-validity and span-shape signals, on real NER events.

The development data's tokens carry POS tags; ``tag_events`` replaces them with the model's own entities
written as per-token tags in a tagging scheme (entity spans mapped to the tokens they overlap, tokens found
in the text in order), so a stationary stream keeps the real model's entity sequences. Two faults:

* ``inject_invalid_tags``: a share of the documents get one ``I-`` tag right after an ``O`` (in place of an
  ``O`` that follows an ``O``), an invalid transition in IOB2, BIOES and BILUO;
* ``grow_spans``: every entity grows by one token (its end moves to the end of the next token), as when a
  tokenizer or pre-processing change swallows a neighbouring word; the tags follow.

Python stdlib + numpy; used by ``benchmarks/ner_shape.py`` and ``tests/realdata``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from nlpmon.drift.spans import align_tokens

SCHEME_LETTERS = {"iob2": ("B", "I", "I", "B"), "bioes": ("B", "I", "E", "S"), "biluo": ("B", "I", "L", "U")}


def entity_tags(n_tokens: int, offsets: list[tuple[int, int]], spans: list[tuple[int, int, str]],
                scheme: str) -> list[str]:
    """Tags of ``n_tokens`` tokens (character ``offsets``) for entity ``spans`` (start, end, label), in
    ``scheme`` (iob2, bioes, biluo); overlapping or empty spans are skipped, tokens beyond the offsets are O."""
    first, inside, last, single = SCHEME_LETTERS[scheme]
    tags = ["O"] * n_tokens
    for start, end, label in sorted(spans):
        idx = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
        if not idx or any(tags[i] != "O" for i in idx):
            continue
        if len(idx) == 1:
            tags[idx[0]] = f"{single}-{label}"
            continue
        tags[idx[0]] = f"{first}-{label}"
        for i in idx[1:-1]:
            tags[i] = f"{inside}-{label}"
        tags[idx[-1]] = f"{last}-{label}"
    return tags


def tag_event(e: dict[str, Any], scheme: str) -> dict[str, Any]:
    """The event with its tokens' tags rewritten from its entities (unchanged when its tokens do not align)."""
    toks = e.get("tokens") or []
    offsets = align_tokens(e.get("text") or "", [t.get("text") for t in toks]) if toks else None
    if offsets is None:
        return e
    spans = [(x["start"], x["end"], x["label"]) for x in e.get("entities") or []
             if x.get("start") is not None and x.get("end") is not None]
    tags = entity_tags(len(toks), offsets, spans, scheme)
    return {**e, "tokens": [{**t, "tag": g} for t, g in zip(toks, tags, strict=True)]}


def inject_invalid_tags(e: dict[str, Any], rng: np.random.Generator, share: float) -> dict[str, Any]:
    """With probability ``share``: one ``O`` tag that follows an ``O`` becomes ``I-<label>`` (a label of the
    event's entities, else ``MISC``). Unchanged when no such position exists."""
    if rng.random() >= share:
        return e
    toks = e.get("tokens") or []
    tags = [t["tag"] for t in toks]
    where = [i for i in range(1, len(tags)) if tags[i] == "O" and tags[i - 1] == "O"]
    if not where:
        return e
    i = where[int(rng.integers(len(where)))]
    labels = [x["label"] for x in e.get("entities") or []]
    label = labels[int(rng.integers(len(labels)))] if labels else "MISC"
    tokens = [dict(t) for t in toks]
    tokens[i]["tag"] = f"I-{label}"
    return {**e, "tokens": tokens}


def grow_spans(e: dict[str, Any], scheme: str) -> dict[str, Any]:
    """Every entity ends at the end of the token after its last one (when there is one and it is not part of
    another entity); its text follows. Then the tags are rewritten (``tag_event``)."""
    toks = e.get("tokens") or []
    text = e.get("text") or ""
    offsets = align_tokens(text, [t.get("text") for t in toks]) if toks else None
    if offsets is None:
        return e
    ents = [dict(x) for x in e.get("entities") or []]
    starts = sorted(x["start"] for x in ents if x.get("start") is not None)
    for x in ents:
        if x.get("start") is None or x.get("end") is None:
            continue
        nxt = [b for a, b in offsets if a >= x["end"]]
        if not nxt:
            continue
        new_end = nxt[0]
        if any(x["end"] <= s < new_end for s in starts):
            continue  # would run into the next entity
        x["end"] = new_end
        x["text"] = text[x["start"]:new_end]
    return tag_event({**e, "entities": ents}, scheme)


def rewrite(src: Path, out: Path, scheme: str, *, invalid_share: float = 0.0, grow: bool = False,
            after: int = 0, seed: int = 0) -> Path:
    """Write ``src`` (JSONL) to ``out`` with entity tags in ``scheme``; from event ``after`` on, the faults."""
    rng = np.random.default_rng(seed)
    with src.open() as fin, out.open("w") as fout:
        for i, line in enumerate(fin):
            e = tag_event(json.loads(line), scheme)
            if i >= after:
                if grow:
                    e = grow_spans(e, scheme)
                if invalid_share:
                    e = inject_invalid_tags(e, rng, invalid_share)
            fout.write(json.dumps(e) + "\n")
    return out
