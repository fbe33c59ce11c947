"""Partial-match span quality: the SemEval-2013 task 9.1 schemes, counted exactly as ``nervaluate`` counts them.

Four schemes, each sorting every predicted and gold span into ``correct``, ``incorrect``, ``partial``,
``missed`` or ``spurious`` (nervaluate 1.2.1, ``Evaluator`` with ``min_overlap_percentage``):

* ``strict``: correct = same boundaries and type; a prediction that overlaps an unmatched gold span
  otherwise is incorrect.
* ``exact``: correct = same boundaries, whatever the type; an overlap otherwise is incorrect.
* ``partial``: correct = same boundaries; an overlap otherwise is partial (half credit); types ignored.
* ``ent_type``: correct = an overlap with the same type (the closest boundaries win); an overlap with
  another type is incorrect.

A prediction that overlaps no unmatched gold span is spurious; a gold span no prediction took is
missed. "Overlap" is nervaluate's: the shared characters are at least ``min_overlap_percent`` of the
**gold** span's length (the default 1 % means any shared character for spans up to 100 characters).
Spans here are character offsets with an exclusive end; nervaluate's ends are inclusive, so a span
``[s, e)`` is nervaluate's ``(s, e - 1)`` and touching spans do not overlap in either. Zero-length gold
spans overlap nothing (nervaluate divides by their length of 0).

The matching is **greedy and order-dependent**, as nervaluate's is: predictions are taken in order, each
consumes at most one gold span, and a gold span consumed as "incorrect" or "partial" cannot be matched
correctly by a later prediction. The order used here is the same deduplicated ``(start, end, label id)``
order as the exact figures (:mod:`nlpmon.quality.spans`, seqeval's set semantics); the oracle tests hand
nervaluate the same lists.

Per label, nervaluate evaluates the spans of that label alone (so per-label counts do not add up to the
overall ones); so does :func:`partial_counts`.

Counting is vectorised per batch: most documents' overlap graphs are made of isolated pairs and single
spans, whose outcome depends on nothing else; documents with a span that overlaps two or more spans of
the other side are counted by the literal greedy loop (:func:`greedy_document`), which is what the
oracle tests compare with nervaluate.

Counts per document (and per document and label) are 10 integers (``COLUMNS``): predicted and gold
spans, then per scheme its correct and its incorrect (``partial`` for the partial scheme) count;
missed = gold - correct - incorrect - partial and spurious = predicted - correct - incorrect - partial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from .spans import _unique_rows

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

__all__ = [
    "CATEGORIES",
    "COLUMNS",
    "SCHEMES",
    "PartialCounts",
    "greedy_document",
    "partial_counts",
    "scheme_document_counts",
    "scheme_figures",
]

SCHEMES: Final = ("strict", "exact", "partial", "ent_type")
CATEGORIES: Final = ("correct", "incorrect", "partial", "missed", "spurious")
#: Columns of the count rows: predicted, gold, then (correct, incorrect-or-partial) per scheme.
COLUMNS: Final = ("predicted", "gold", "strict_correct", "strict_incorrect", "exact_correct", "exact_incorrect",
                  "partial_correct", "partial_partial", "ent_type_correct", "ent_type_incorrect")
N_COLUMNS: Final = len(COLUMNS)
_HALF_CREDIT = {"strict": False, "exact": False, "partial": True, "ent_type": False}


@dataclass(frozen=True, slots=True)
class PartialCounts:
    """Counts of a batch: ``overall`` (n_docs, 10) over all labels, ``per_label`` (n_docs, n_labels, 10) of
    each label's own evaluation (see ``COLUMNS``); ``fallback_documents``: how many documents needed the
    greedy loop."""

    overall: I64
    per_label: I64
    fallback_documents: int


# -- the literal greedy matching (nervaluate's strategies, one document) -------------------------------
def _sufficient(ps: int, pe: int, gs: int, ge: int, min_overlap: float) -> bool:
    overlap = min(pe, ge) - max(ps, gs)
    return overlap > 0 and (overlap / (ge - gs)) * 100.0 >= min_overlap


def greedy_document(pred: Sequence[tuple[int, int, int]], gold: Sequence[tuple[int, int, int]],
                    min_overlap: float = 1.0) -> list[int]:
    """The 8 scheme counts (``COLUMNS[2:]``) of one document, spans ``(start, end, label)`` in the order
    given, by nervaluate's own loops (``StrictEvaluation``, ``ExactEvaluation``, ``PartialEvaluation``,
    ``EntityTypeEvaluation``). Plain Python: the reference the vectorised path is tested against."""
    out: list[int] = []
    for scheme in SCHEMES:
        used: set[int] = set()
        correct = other = 0
        for ps, pe, pl in pred:
            match = first_overlap = -1
            best = -1
            best_distance = math.inf
            for j, (gs, ge, gl) in enumerate(gold):
                if j in used:
                    continue
                same_bounds = ps == gs and pe == ge
                if scheme in ("strict", "exact"):
                    if same_bounds and (scheme == "exact" or pl == gl):
                        match = j
                        break
                    if first_overlap < 0 and _sufficient(ps, pe, gs, ge, min_overlap):
                        first_overlap = j
                elif scheme == "partial":
                    if _sufficient(ps, pe, gs, ge, min_overlap):
                        if same_bounds:
                            match = j
                            break
                        if first_overlap < 0:
                            first_overlap = j
                elif _sufficient(ps, pe, gs, ge, min_overlap):  # ent_type: closest same-type overlap wins
                    if pl == gl:
                        distance = abs(ps - gs) + abs(pe - ge)
                        if distance < best_distance:
                            best, best_distance = j, distance
                    elif first_overlap < 0:
                        first_overlap = j
            if scheme == "ent_type":
                match = best
            if match >= 0:
                correct += 1
                used.add(match)
            elif first_overlap >= 0:
                other += 1
                used.add(first_overlap)
        out += [correct, other]
    return out


# -- the vectorised batch count ---------------------------------------------------------------------------
def partial_counts(pred: I64, gold: I64, n_docs: int, n_labels: int, min_overlap: float = 1.0) -> PartialCounts:
    """Partial-match counts of ``n_docs`` documents at once.

    Args:
        pred, gold: (m, 4) int64 rows ``[doc, start, end, label_id]`` (any order, duplicates allowed: both
            sides are deduplicated and sorted, as for the exact figures).
        n_docs, n_labels: documents ``0 .. n_docs - 1`` and label ids ``0 .. n_labels - 1``.
        min_overlap: nervaluate's ``min_overlap_percentage`` (1-100) of the gold span's length.
    """
    if not 1.0 <= min_overlap <= 100.0:
        raise ValueError("min_overlap must be between 1 and 100 (percent of the gold span)")
    p, _ = _unique_rows(np.asarray(pred, np.int64).reshape(-1, 4))
    g, _ = _unique_rows(np.asarray(gold, np.int64).reshape(-1, 4))
    L = max(int(n_labels), 1)
    overall = np.zeros((n_docs, N_COLUMNS), np.int64)
    per_label = np.zeros((n_docs * L, N_COLUMNS), np.int64)
    overall[:, 0] = np.bincount(p[:, 0], minlength=n_docs)
    overall[:, 1] = np.bincount(g[:, 0], minlength=n_docs)
    per_label[:, 0] = np.bincount(p[:, 0] * L + p[:, 3], minlength=n_docs * L)
    per_label[:, 1] = np.bincount(g[:, 0] * L + g[:, 3], minlength=n_docs * L)

    # every (pred, gold) pair of the same document
    g_count = overall[:, 1]
    g_first = np.cumsum(g_count) - g_count
    rep = g_count[p[:, 0]]
    total = int(rep.sum())
    pi = np.repeat(np.arange(p.shape[0]), rep)
    gj = np.repeat(g_first[p[:, 0]], rep) + (np.arange(total) - np.repeat(np.cumsum(rep) - rep, rep))
    ps, pe, pl = p[pi, 1], p[pi, 2], p[pi, 3]
    gs, ge, gl = g[gj, 1], g[gj, 2], g[gj, 3]
    doc = p[pi, 0]
    overlap = np.minimum(pe, ge) - np.maximum(ps, gs)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = (overlap.astype(np.float64) / (ge - gs).astype(np.float64)) * 100.0
    sufficient = (overlap > 0) & (pct >= min_overlap)
    bounds = (ps == gs) & (pe == ge)
    same = pl == gl
    edges = {"strict": sufficient | (bounds & same), "exact": sufficient | bounds,
             "partial": sufficient, "ent_type": sufficient}
    good = {"strict": bounds & same, "exact": bounds, "partial": bounds, "ent_type": same}

    def complex_docs(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        """Documents in which some span has two or more edges of ``mask``."""
        bad = np.zeros(n_docs, bool)
        dp = np.bincount(pi[mask], minlength=p.shape[0])
        dg = np.bincount(gj[mask], minlength=g.shape[0])
        bad[p[dp > 1, 0]] = True
        bad[g[dg > 1, 0]] = True
        return bad

    fall_all = np.zeros(n_docs, bool)
    fall_lab = np.zeros(n_docs, bool)
    for scheme in SCHEMES:
        fall_all |= complex_docs(edges[scheme])
        fall_lab |= complex_docs(edges[scheme] & same)
    for k, scheme in enumerate(SCHEMES):
        col = 2 + 2 * k
        for mask, fall, key, out in ((edges[scheme], fall_all, doc, overall),
                                     (edges[scheme] & same, fall_lab, doc * L + pl, per_label)):
            take = mask & ~fall[doc]  # isolated pairs: each span of a simple document has at most one edge
            hit = take & good[scheme if out is overall else ("ent_type" if scheme == "ent_type" else "exact")]
            out[:, col] += np.bincount(key[hit], minlength=out.shape[0])
            out[:, col + 1] += np.bincount(key[take & ~hit], minlength=out.shape[0])
    fallback = np.flatnonzero(fall_all | fall_lab)
    if fallback.size:
        p_first = np.cumsum(overall[:, 0]) - overall[:, 0]
        for d in fallback.tolist():
            pd = [tuple(r) for r in p[p_first[d]:p_first[d] + overall[d, 0], 1:].tolist()]
            gd = [tuple(r) for r in g[g_first[d]:g_first[d] + overall[d, 1], 1:].tolist()]
            if fall_all[d]:
                overall[d, 2:] = greedy_document(pd, gd, min_overlap)
            if fall_lab[d]:
                for label in {s[2] for s in pd} | {s[2] for s in gd}:
                    per_label[d * L + label, 2:] = greedy_document(
                        [s for s in pd if s[2] == label], [s for s in gd if s[2] == label], min_overlap)
    return PartialCounts(overall, per_label.reshape(n_docs, L, N_COLUMNS), int(fallback.size))


# -- figures -------------------------------------------------------------------------------------------------
def _block(counts: Sequence[int], scheme: str) -> dict[str, Any]:
    """The five categories, nervaluate's ``actual`` and ``possible`` and its precision, recall and F1 of one
    scheme from a 10-column count row. nervaluate writes 0 for 0/0; here an undefined figure is None."""
    k = SCHEMES.index(scheme)
    n_pred, n_gold = int(counts[0]), int(counts[1])
    correct, other = int(counts[2 + 2 * k]), int(counts[3 + 2 * k])
    incorrect, partial = (0, other) if _HALF_CREDIT[scheme] else (other, 0)
    missed, spurious = n_gold - correct - other, n_pred - correct - other
    actual = correct + incorrect + partial + spurious
    possible = correct + incorrect + partial + missed
    credit = correct + 0.5 * partial if _HALF_CREDIT[scheme] else correct  # nervaluate's own expressions
    precision = credit / actual if actual > 0 else None
    recall = credit / possible if possible > 0 else None
    p, r = precision or 0.0, recall or 0.0
    f1 = None if actual + possible == 0 else (2 * (p * r) / (p + r) if p + r > 0 else 0.0)
    return {"correct": correct, "incorrect": incorrect, "partial": partial, "missed": missed,
            "spurious": spurious, "actual": actual, "possible": possible,
            "precision": precision, "recall": recall, "f1": f1}


def scheme_figures(overall: I64, per_label: I64, names: Sequence[str]) -> dict[str, Any]:
    """``{scheme: {"overall": block, "labels": {name: block}}}`` from the (10,) overall sums and the (L, 10)
    per-label sums; labels without a predicted or gold span are left out (nervaluate's ``used_tags``)."""
    out: dict[str, Any] = {}
    rows = [(name, row) for name, row in zip(names, per_label.tolist(), strict=False) if row[0] + row[1] > 0]
    for scheme in SCHEMES:
        out[scheme] = {"overall": _block(overall.tolist(), scheme),
                       "labels": {name: _block(row, scheme) for name, row in rows}}
    return out


def scheme_document_counts(doc_counts: npt.NDArray[np.integer[Any]], scheme: str) -> tuple[F64, F64]:
    """Per document, the credit ``x`` (correct + half the partials) and ``actual + possible - x``: the
    per-document sums whose ratio ``p`` gives the scheme's F1 = 2p / (1 + p) = 2x / (actual + possible)
    (the form ``significance.micro_f1_with_se`` takes)."""
    k = SCHEMES.index(scheme)
    c = np.asarray(doc_counts, np.int64).reshape(-1, N_COLUMNS)
    correct, other = c[:, 2 + 2 * k].astype(np.float64), c[:, 3 + 2 * k].astype(np.float64)
    credit = correct + 0.5 * other if _HALF_CREDIT[scheme] else correct
    # actual + possible = predicted + gold (every span is in exactly one category on its side)
    return credit, (c[:, 0] + c[:, 1]).astype(np.float64) - credit
