"""Partial-match counts and figures against the ``nervaluate`` package itself (the oracle), on generated spans.

nervaluate (pinned in the ``dev`` extra) is order-dependent and keeps duplicates; nlpmon matches the
deduplicated spans in ``(start, end, label id)`` order, so the oracle is handed exactly those lists, with
nervaluate's inclusive ends (``end - 1``). Counts are integers and compared exactly; precision, recall
and F1 are the same float64 expressions evaluated in the same order, so they are compared exactly too
(None here where nervaluate writes 0 for 0/0, checked against nervaluate's own denominators).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nlpmon.quality.partial_match import CATEGORIES, SCHEMES, greedy_document, partial_counts, scheme_figures
from nlpmon.quality.spans import LabelVocab

try:
    import nervaluate
except ImportError:  # a failure in CI, where the dev extra is always installed
    if os.environ.get("CI"):
        raise
    pytest.skip("nervaluate (the oracle) is missing: pip install -e '.[dev]'", allow_module_level=True)

Span = tuple[int, int, str]
LABELS = ["A", "B", "C"]
NERVALUATE_SCHEME = {"strict": "strict", "exact": "exact", "partial": "partial", "ent_type": "ent_type"}


def canonical(spans: list[Span], vocab: LabelVocab) -> list[Span]:
    """The deduplicated spans in the order nlpmon matches them: (start, end, label id)."""
    return sorted(set(spans), key=lambda s: (s[0], s[1], vocab.id(s[2])))


def oracle(docs: list[tuple[list[Span], list[Span]]], vocab: LabelVocab, min_overlap: float = 1.0) -> dict[str, Any]:
    """nervaluate's results for the documents (each ``(pred, gold)``), in nlpmon's canonical order."""
    def ents(spans: list[Span]) -> list[dict[str, Any]]:
        return [{"label": lab, "start": s, "end": e - 1} for s, e, lab in canonical(spans, vocab)]
    true = [ents(g) for _, g in docs]
    pred = [ents(p) for p, _ in docs]
    return nervaluate.Evaluator(true, pred, tags=list(vocab.names), loader="dict",
                                min_overlap_percentage=min_overlap).evaluate()


def ours(docs: list[tuple[list[Span], list[Span]]], vocab: LabelVocab, min_overlap: float = 1.0) -> dict[str, Any]:
    p = [[i, s, e, vocab.id(lab)] for i, (pr, _) in enumerate(docs) for s, e, lab in pr]
    g = [[i, s, e, vocab.id(lab)] for i, (_, gd) in enumerate(docs) for s, e, lab in gd]
    counts = partial_counts(np.array(p, np.int64).reshape(-1, 4), np.array(g, np.int64).reshape(-1, 4),
                            len(docs), len(vocab), min_overlap)
    return scheme_figures(counts.overall.sum(axis=0), counts.per_label.sum(axis=0), vocab.names)


def assert_block_equal(mine: dict[str, Any], theirs: Any, where: str) -> None:
    for cat in (*CATEGORIES, "actual", "possible"):
        assert mine[cat] == getattr(theirs, cat), f"{where} {cat}: {mine[cat]} != {getattr(theirs, cat)}"
    for fig, den in (("precision", theirs.actual), ("recall", theirs.possible),
                     ("f1", theirs.actual + theirs.possible)):
        want = getattr(theirs, fig)
        if den == 0:
            assert mine[fig] is None and want == 0, f"{where} {fig}: undefined, nervaluate says {want}"
        else:
            assert mine[fig] == want, f"{where} {fig}: {mine[fig]} != {want}"


def assert_equal_to_nervaluate(docs: list[tuple[list[Span], list[Span]]], vocab: LabelVocab,
                               min_overlap: float = 1.0) -> None:
    mine, theirs = ours(docs, vocab, min_overlap), oracle(docs, vocab, min_overlap)
    for scheme in SCHEMES:
        assert_block_equal(mine[scheme]["overall"], theirs["overall"][NERVALUATE_SCHEME[scheme]], f"{scheme} overall")
        assert set(mine[scheme]["labels"]) == set(theirs["entities"]), scheme
        for label, block in mine[scheme]["labels"].items():
            assert_block_equal(block, theirs["entities"][label][NERVALUATE_SCHEME[scheme]], f"{scheme} {label}")


# gold spans have length >= 1 (nervaluate divides by a gold span's length); predictions may be empty
gold_span = st.tuples(st.integers(0, 12), st.integers(1, 5), st.sampled_from(LABELS)).map(
    lambda t: (t[0], t[0] + t[1], t[2]))
pred_span = st.tuples(st.integers(0, 12), st.integers(0, 5), st.sampled_from(LABELS)).map(
    lambda t: (t[0], t[0] + t[1], t[2]))


@st.composite
def document(draw: Any) -> tuple[list[Span], list[Span]]:
    """Gold spans, and predictions that are partly perturbed copies of them (shifted boundaries, swapped
    types, nested and adjacent spans) and partly random: many overlaps of every kind."""
    gold = draw(st.lists(gold_span, max_size=6))
    pred: list[Span] = []
    for s, e, lab in gold:
        kind = draw(st.sampled_from(["same", "shift", "swap", "nested", "adjacent", "drop", "wider"]))
        if kind == "same":
            pred.append((s, e, lab))
        elif kind == "shift":
            d = draw(st.integers(-2, 2))
            pred.append((max(s + d, 0), max(e + d, 0), lab))
        elif kind == "swap":
            pred.append((s, e, draw(st.sampled_from(LABELS))))
        elif kind == "nested":
            pred.append((s, e, lab))
            if e - s > 1:
                pred.append((s + 1, e, draw(st.sampled_from(LABELS))))
        elif kind == "adjacent":
            pred.append((e, e + draw(st.integers(1, 3)), lab))
        elif kind == "wider":
            pred.append((max(s - 1, 0), e + 1, draw(st.sampled_from(LABELS))))
    pred += draw(st.lists(pred_span, max_size=4))
    return draw(st.permutations(pred)), gold


@settings(max_examples=400, deadline=None)
@given(st.lists(document(), min_size=1, max_size=6))
def test_counts_and_figures_equal_nervaluate(docs: list[tuple[list[Span], list[Span]]]) -> None:
    assert_equal_to_nervaluate(docs, LabelVocab(names=LABELS))


@settings(max_examples=150, deadline=None)
@given(st.lists(document(), min_size=1, max_size=4), st.sampled_from([1.0, 20.0, 50.0, 75.0, 100.0]))
def test_min_overlap_equals_nervaluate(docs: list[tuple[list[Span], list[Span]]], min_overlap: float) -> None:
    assert_equal_to_nervaluate(docs, LabelVocab(names=LABELS), min_overlap)


@settings(max_examples=300, deadline=None)
@given(st.lists(document(), min_size=1, max_size=6))
def test_vectorised_path_equals_greedy_loop(docs: list[tuple[list[Span], list[Span]]]) -> None:
    """Every document counted by the isolated-pair shortcut equals the literal greedy loop."""
    vocab = LabelVocab(names=LABELS)
    p = [[i, s, e, vocab.id(lab)] for i, (pr, _) in enumerate(docs) for s, e, lab in pr]
    g = [[i, s, e, vocab.id(lab)] for i, (_, gd) in enumerate(docs) for s, e, lab in gd]
    counts = partial_counts(np.array(p, np.int64).reshape(-1, 4), np.array(g, np.int64).reshape(-1, 4),
                            len(docs), len(vocab))
    for i, (pr, gd) in enumerate(docs):
        cp = [(s, e, vocab.id(lab)) for s, e, lab in canonical(pr, vocab)]
        cg = [(s, e, vocab.id(lab)) for s, e, lab in canonical(gd, vocab)]
        assert counts.overall[i, 2:].tolist() == greedy_document(cp, cg)
        assert counts.overall[i, :2].tolist() == [len(cp), len(cg)]
        for lid in range(len(vocab)):
            want = greedy_document([s for s in cp if s[2] == lid], [s for s in cg if s[2] == lid])
            assert counts.per_label[i, lid, 2:].tolist() == want


def test_hand_counted_cases() -> None:
    """The SemEval-2013 9.1 examples of nervaluate's documentation, counted by hand."""
    vocab = LabelVocab(names=["PER", "LOC", "DRUG"])
    docs: list[tuple[list[Span], list[Span]]] = [
        ([(0, 4, "PER")], [(0, 4, "PER")]),            # correct everywhere
        ([(0, 4, "LOC")], [(0, 4, "PER")]),            # right span, wrong type
        ([(0, 3, "PER")], [(0, 4, "PER")]),            # boundary off by one, right type
        ([(0, 3, "LOC")], [(0, 4, "PER")]),            # boundary and type wrong
        ([(5, 9, "DRUG")], []),                        # spurious
        ([], [(5, 9, "DRUG")]),                        # missed
    ]
    f = ours(docs, vocab)
    got = {s: tuple(f[s]["overall"][c] for c in CATEGORIES) for s in SCHEMES}
    assert got == {"strict": (1, 3, 0, 1, 1), "exact": (2, 2, 0, 1, 1),
                   "partial": (2, 0, 2, 1, 1), "ent_type": (2, 2, 0, 1, 1)}
    assert f["partial"]["overall"]["precision"] == (2 + 0.5 * 2) / 5  # actual = 2 correct + 2 partial + 1 spurious
    assert_equal_to_nervaluate(docs, vocab)


def test_greedy_order_dependence_is_nervaluates() -> None:
    """A prediction taken first consumes a gold span as incorrect; the exact copy after it is spurious."""
    vocab = LabelVocab(names=["PER", "LOC"])
    docs: list[tuple[list[Span], list[Span]]] = [([(0, 4, "PER"), (2, 6, "LOC")], [(2, 6, "LOC")])]
    f = ours(docs, vocab)
    assert (f["strict"]["overall"]["correct"], f["strict"]["overall"]["incorrect"],
            f["strict"]["overall"]["spurious"]) == (0, 1, 1)
    assert_equal_to_nervaluate(docs, vocab)


def test_zero_length_spans() -> None:
    """Empty gold spans overlap nothing but match an identical empty prediction in strict and exact."""
    vocab = LabelVocab(names=["X"])
    c = partial_counts(np.array([[0, 3, 3, 0], [0, 1, 5, 0]]), np.array([[0, 3, 3, 0]]), 1, 1)
    f = scheme_figures(c.overall.sum(axis=0), c.per_label.sum(axis=0), vocab.names)
    assert f["strict"]["overall"]["correct"] == 1 and f["exact"]["overall"]["correct"] == 1
    assert f["partial"]["overall"]["missed"] == 1 and f["ent_type"]["overall"]["spurious"] == 2


def test_bad_min_overlap_is_refused() -> None:
    with pytest.raises(ValueError, match="between 1 and 100"):
        partial_counts(np.zeros((0, 4), np.int64), np.zeros((0, 4), np.int64), 1, 1, 0.5)
