"""The windowed sums equal a recomputation from scratch over the documents that should be in the window."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nlpmon.quality.partial_match import N_COLUMNS, partial_counts
from nlpmon.quality.spans import LabelVocab
from nlpmon.quality.window import QualityWindow, scores_from_counts
from nlpmon.state import decode_state, encode_state
from tests.quality.test_spans import oracle

LABELS = ["A", "B", "C", "D"]
spans = st.tuples(st.integers(0, 5), st.integers(0, 2), st.sampled_from(LABELS)).map(
    lambda t: (t[0], t[0] + t[1], t[2]))
scores = st.none() | st.floats(0, 1)
doc = st.fixed_dictionaries({
    "time": st.one_of(st.floats(0, 100), st.just(math.nan)),
    "delay": st.one_of(st.floats(0, 50), st.just(math.nan)),
    "pred": st.lists(st.tuples(spans, scores), max_size=4),
    "gold": st.lists(spans, max_size=4),
})
op = st.one_of(
    st.tuples(st.just("add"), st.lists(doc, max_size=5)),
    st.tuples(st.just("expire"), st.floats(0, 150)),
    st.tuples(st.just("restart"), st.none()),
)


def add(window: QualityWindow, vocab: LabelVocab, docs: list[dict[str, Any]]) -> None:
    p = [[i, s, e, vocab.id(lab)] for i, d in enumerate(docs) for (s, e, lab), _ in d["pred"]]
    sc = [math.nan if c is None else c for d in docs for _, c in d["pred"]]
    g = [[i, s, e, vocab.id(lab)] for i, d in enumerate(docs) for s, e, lab in d["gold"]]
    window.add(np.array([d["time"] for d in docs]), np.array([d["delay"] for d in docs]),
               np.array(p, dtype=np.int64).reshape(-1, 4), np.array(sc, dtype=np.float64),
               np.array(g, dtype=np.int64).reshape(-1, 4), len(vocab))


def recompute(live: list[dict[str, Any]], vocab: LabelVocab) -> np.ndarray:
    sums = np.zeros((len(vocab), 3), dtype=np.int64)
    for d in live:
        for lab, counts in oracle([s for s, _ in d["pred"]], d["gold"]).items():
            sums[vocab.id(lab)] += counts
    return sums


def recompute_partial(live: list[dict[str, Any]], vocab: LabelVocab) -> tuple[np.ndarray, np.ndarray]:
    """Partial-match sums over the live documents, each counted on its own."""
    total, per_label = np.zeros(N_COLUMNS, np.int64), np.zeros((len(vocab), N_COLUMNS), np.int64)
    for d in live:
        p = np.array([[0, s, e, vocab.id(lab)] for (s, e, lab), _ in d["pred"]], np.int64).reshape(-1, 4)
        g = np.array([[0, s, e, vocab.id(lab)] for s, e, lab in d["gold"]], np.int64).reshape(-1, 4)
        c = partial_counts(p, g, 1, len(vocab))
        total += c.overall[0]
        per_label += c.per_label[0]
    return total, per_label


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 8), st.one_of(st.none(), st.floats(1, 60)), st.lists(op, max_size=12))
def test_window_equals_recomputation(max_docs: int, max_age: float | None, ops: list[Any]) -> None:
    vocab = LabelVocab(names=LABELS)
    window = QualityWindow(max_docs, max_age)
    live: list[dict[str, Any]] = []
    for kind, arg in ops:
        if kind == "add":
            add(window, vocab, arg)
            live = (live + arg)[-max_docs:]
        elif kind == "expire":
            window.expire(arg)
            if max_age is not None:
                live = [d for d in live if not d["time"] < arg - max_age]
        else:
            window = QualityWindow.from_state(decode_state(encode_state(window.state())))
        want = recompute(live, vocab)
        assert len(window) == len(live)
        assert window.label_sums(len(vocab)).tolist() == want.tolist()
        assert window.figures(LABELS) == {**scores_from_counts(want, LABELS), "documents": len(live)}
        want_total, want_labels = recompute_partial(live, vocab)
        assert window.partial_total.tolist() == want_total.tolist()
        assert window.partial_sums[:len(vocab)].tolist() == want_labels.tolist()
        assert window.partial_documents == len(live)
        assert sorted(window.delays().tolist()) == sorted(d["delay"] for d in live if not math.isnan(d["delay"]))
        # scored predicted spans: deduplicated per document, first occurrence's score
        want_scored = []
        for d in live:
            seen: set[tuple[int, int, str]] = set()
            gold = set(d["gold"])
            for s, c in d["pred"]:
                if s in seen:
                    continue
                seen.add(s)
                if c is not None:
                    want_scored.append((vocab.id(s[2]), c, s in gold))
        lab, sc, ok = window.scored_predictions()
        assert sorted(zip(lab.tolist(), sc.tolist(), ok.tolist(), strict=True)) == sorted(want_scored)


def test_figures_by_hand() -> None:
    counts = np.array([[3, 1, 2], [0, 2, 0], [0, 0, 0], [0, 0, 4]])
    out = scores_from_counts(counts, ["PER", "LOC", "ORG", "MISC"])
    assert out["labels"]["PER"] == {"precision": 0.75, "recall": 0.6, "f1": 6 / 9, "support": 5,
                                    "tp": 3, "fp": 1, "fn": 2}
    assert out["labels"]["LOC"]["recall"] is None and out["labels"]["LOC"]["f1"] == 0.0
    assert out["labels"]["MISC"]["precision"] is None and out["labels"]["MISC"]["support"] == 4
    assert "ORG" not in out["labels"]
    assert out["micro"] == {"precision": 0.5, "recall": 3 / 9, "f1": 6 / 15, "support": 9}
    assert out["macro_f1"] == (6 / 9 + 0 + 0) / 3


def test_classification_accuracy_and_delay_histogram() -> None:
    vocab = LabelVocab(names=["neg", "pos"])
    w = QualityWindow(10)
    true, pred = [1, 0, 1, 1], [1, 1, 0, 1]
    w.add(np.zeros(4), np.array([5.0, 70.0, math.nan, 700.0]),
          np.array([[i, 0, 0, p] for i, p in enumerate(pred)]), np.full(4, np.nan),
          np.array([[i, 0, 0, t] for i, t in enumerate(true)]), len(vocab))
    f = w.figures(vocab.names, classification=True)
    assert f["accuracy"] == 0.5
    assert f["labels"]["pos"]["f1"] == 2 * 2 / (2 * 2 + 1 + 1)
    assert w.delay_histogram(np.array([0, 60, 600, np.inf])).tolist() == [1, 1, 1]
