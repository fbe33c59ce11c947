"""Exact span matching (seqeval / CoNLL counting) against a hand-written set oracle and hand-counted cases."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nlpmon.quality.spans import LabelVocab, confusion_counts, match_batch, match_document

Span = tuple[int, int, str]


def oracle(pred: list[Span], gold: list[Span]) -> dict[str, tuple[int, int, int]]:
    """The definition, written as plainly as possible: both sides are sets of (start, end, label)."""
    p, g = set(pred), set(gold)
    out = {}
    for label in sorted({s[2] for s in p | g}):
        tp = sum(1 for s in p & g if s[2] == label)
        fp = sum(1 for s in p - g if s[2] == label)
        fn = sum(1 for s in g - p if s[2] == label)
        out[label] = (tp, fp, fn)
    return out


HAND_CASES: list[tuple[str, list[Span], list[Span], dict[str, tuple[int, int, int]]]] = [
    ("exact", [(0, 4, "PER")], [(0, 4, "PER")], {"PER": (1, 0, 0)}),
    ("partial overlap is FP + FN", [(0, 3, "PER")], [(0, 4, "PER")], {"PER": (0, 1, 1)}),
    ("wider span", [(0, 9, "ORG")], [(0, 4, "ORG")], {"ORG": (0, 1, 1)}),
    ("wrong label", [(5, 9, "LOC")], [(5, 9, "ORG")], {"LOC": (0, 1, 0), "ORG": (0, 0, 1)}),
    ("duplicate correct prediction counts once", [(0, 4, "PER"), (0, 4, "PER")], [(0, 4, "PER")],
     {"PER": (1, 0, 0)}),
    ("duplicate wrong prediction counts once", [(1, 2, "PER"), (1, 2, "PER")], [], {"PER": (0, 1, 0)}),
    ("duplicate gold counts once", [], [(1, 2, "MISC"), (1, 2, "MISC")], {"MISC": (0, 0, 1)}),
    ("empty predictions", [], [(0, 4, "PER"), (10, 14, "LOC")], {"PER": (0, 0, 1), "LOC": (0, 0, 1)}),
    ("empty gold", [(0, 4, "PER"), (10, 14, "LOC")], [], {"PER": (0, 1, 0), "LOC": (0, 1, 0)}),
    ("both empty", [], [], {}),
    ("zero-length spans match exactly", [(3, 3, "X")], [(3, 3, "X")], {"X": (1, 0, 0)}),
    ("mixed", [(0, 4, "PER"), (5, 9, "LOC"), (5, 9, "ORG"), (20, 25, "PER")],
     [(0, 4, "PER"), (5, 9, "ORG"), (20, 24, "PER"), (30, 33, "LOC")],
     {"PER": (1, 1, 1), "LOC": (0, 1, 1), "ORG": (1, 0, 0)}),
]


def test_hand_cases_match_hand_counts_and_oracle() -> None:
    for name, pred, gold, expected in HAND_CASES:
        assert oracle(pred, gold) == expected, name
        assert match_document(pred, gold) == expected, name


spans = st.tuples(st.integers(0, 6), st.integers(0, 3), st.sampled_from(["A", "B", "C"])).map(
    lambda t: (t[0], t[0] + t[1], t[2]))
docs = st.tuples(st.lists(spans, max_size=6), st.lists(spans, max_size=6))


@settings(max_examples=200, deadline=None)
@given(st.lists(docs, min_size=1, max_size=6))
def test_batch_equals_per_document_oracle(batch: list[tuple[list[Span], list[Span]]]) -> None:
    vocab = LabelVocab(names=["A", "B", "C"])
    p = np.array([[i, s, e, vocab.id(lab)] for i, (pr, _) in enumerate(batch) for s, e, lab in pr],
                 dtype=np.int64).reshape(-1, 4)
    g = np.array([[i, s, e, vocab.id(lab)] for i, (_, go) in enumerate(batch) for s, e, lab in go],
                 dtype=np.int64).reshape(-1, 4)
    out = match_batch(p, g, len(batch), 3)
    for i, (pred, gold) in enumerate(batch):
        want = oracle(pred, gold)
        got = {lab: tuple(int(x) for x in out.counts[i, vocab.id(lab)]) for lab in "ABC"}
        assert {k: v for k, v in got.items() if any(v)} == want
        assert out.duplicates[i].tolist() == [len(pred) - len(set(pred)), len(gold) - len(set(gold))]
    # per unique predicted span: correct iff in the gold set of its document
    for row, correct, first in zip(out.pred_unique.tolist(), out.pred_correct.tolist(), out.pred_first.tolist(),
                                   strict=True):
        doc, s, e, lab = row
        assert p[first].tolist() == row
        assert correct == ((s, e, vocab.names[lab]) in set(batch[doc][1]))


def test_confusion_counts() -> None:
    names, m = confusion_counts(["pos", "neg", "pos", "neu", "pos"], ["pos", "pos", None, "neu", "neg"])
    assert names == ["neg", "neu", "pos"]
    # rows: true neg, neu, pos; columns: neg, neu, pos, <none>
    assert m.tolist() == [[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 1]]


def test_classification_is_the_one_span_case() -> None:
    vocab = LabelVocab(names=["neg", "pos"])
    true, pred = ["pos", "neg", "pos", "pos"], ["pos", "pos", "neg", "pos"]
    p = np.array([[i, 0, 0, vocab.id(x)] for i, x in enumerate(pred)])
    g = np.array([[i, 0, 0, vocab.id(x)] for i, x in enumerate(true)])
    c = match_batch(p, g, 4, 2).counts.sum(axis=0)
    _, m = confusion_counts(true, pred, ["neg", "pos"])
    for k in range(2):
        assert c[k].tolist() == [m[k, k], m[:, k].sum() - m[k, k], m[k, :].sum() - m[k, k]]


def test_vocab_is_capped() -> None:
    v = LabelVocab(max_labels=3)
    assert [v.id(x) for x in ["a", "b", "c", "d", "a"]] == [0, 1, 2, 2, 0]
    assert v.names == ["a", "b", "__other__"]
    assert LabelVocab.from_state(v.state()).names == v.names
