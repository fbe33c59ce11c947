"""Exact span matching, counted as seqeval / CoNLL-2003 count it, and text-classification confusion.

A predicted span is a true positive iff the same ``(start, end, label)`` is in the gold set of the
same document; there is no partial credit (an overlapping span, or the right span with the wrong
label, is one false positive *and* one false negative).

Duplicates: like seqeval, which collects the entities of each side into a ``set``, both sides are
**sets**: repeated ``(start, end, label)`` triples within one document are collapsed before counting.
A duplicated correct prediction is one TP (not one TP plus one FP); a duplicated wrong prediction is
one FP; a duplicated gold span is one gold span. The collapsed copies are returned separately
(``duplicates``) so callers can count them rather than lose them silently.

Text classification is the one-span case: the prediction is the span ``(0, 0, predicted class)``
and the gold the span ``(0, 0, true class)``, so per-class TP/FP/FN, and hence per-class precision,
recall and F1, come from the same code; :func:`confusion_counts` gives the full matrix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
OTHER_LABEL: Final = "__other__"

__all__ = [
    "OTHER_LABEL",
    "BatchCounts",
    "LabelVocab",
    "confusion_counts",
    "match_batch",
    "match_document",
]


class LabelVocab:
    """Label name <-> small integer id, growing as labels appear; capped at ``max_labels``.

    Once full, unseen labels map to :data:`OTHER_LABEL` (one id), so memory stays bounded whatever
    producers send.
    """

    def __init__(self, max_labels: int = 256, names: Sequence[str] = ()) -> None:
        if max_labels < 2:
            raise ValueError("max_labels must be >= 2")
        self.max_labels = max_labels
        self.names: list[str] = []
        self._ids: dict[str, int] = {}
        for name in names:
            self.id(name)

    def __len__(self) -> int:
        return len(self.names)

    def id(self, name: str) -> int:
        known = self._ids.get(name)
        if known is not None:
            return known
        if len(self.names) >= self.max_labels - 1 and name != OTHER_LABEL:
            return self.id(OTHER_LABEL)
        self._ids[name] = len(self.names)
        self.names.append(name)
        return self._ids[name]

    def ids(self, names: Iterable[str]) -> I64:
        return np.fromiter((self.id(n) for n in names), dtype=np.int64)

    def state(self) -> dict[str, Any]:
        return {"max_labels": self.max_labels, "names": list(self.names)}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> LabelVocab:
        return cls(int(s["max_labels"]), [str(n) for n in s["names"]])


@dataclass(frozen=True, slots=True)
class BatchCounts:
    """Matching result of a batch of documents.

    ``counts`` is (n_docs, n_labels, 3) int64: TP, FP, FN per document and label id.
    ``pred_correct`` is aligned with the **deduplicated** predicted spans ``pred_unique`` (k, 4) of
    ``[doc, start, end, label]`` rows (sorted), 1 for a true positive; ``pred_first`` maps each of them
    to the index of its first occurrence in the input. ``duplicates`` is (n_docs, 2): collapsed
    duplicate predicted and gold spans per document.
    """

    counts: I64
    pred_unique: I64
    pred_first: I64
    pred_correct: npt.NDArray[np.bool_]
    duplicates: I64


def _unique_rows(rows: I64) -> tuple[I64, I64]:
    """Sorted unique rows of an (m, 4) int64 array and the index of each one's first occurrence."""
    if rows.shape[0] == 0:
        return rows.reshape(0, 4), np.zeros(0, dtype=np.int64)
    order = np.lexsort(rows.T[::-1])  # by doc, start, end, label; stable: first occurrence first
    ordered = rows[order]
    new = np.ones(ordered.shape[0], dtype=bool)
    new[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
    return ordered[new], order[new].astype(np.int64)


def match_batch(pred: I64, gold: I64, n_docs: int, n_labels: int) -> BatchCounts:
    """Match predicted against gold spans for ``n_docs`` documents at once (fully vectorised).

    Args:
        pred: (m, 4) int64 rows ``[doc, start, end, label_id]`` of predicted spans (any order).
        gold: (g, 4) int64 rows of gold spans, same layout.
        n_docs: number of documents (doc indices are ``0 .. n_docs - 1``).
        n_labels: number of label ids (label ids are ``0 .. n_labels - 1``).
    """
    pred = np.asarray(pred, dtype=np.int64).reshape(-1, 4)
    gold = np.asarray(gold, dtype=np.int64).reshape(-1, 4)
    p_rows, p_first = _unique_rows(pred)
    g_rows, _ = _unique_rows(gold)
    # a unique predicted row is correct iff it is also a unique gold row: one sorted merge
    both = np.concatenate([p_rows, g_rows])
    tag = np.concatenate([np.zeros(len(p_rows), dtype=np.int64), np.ones(len(g_rows), dtype=np.int64)])
    order = np.lexsort(np.column_stack([both, tag]).T[::-1])  # by row, then pred before gold
    s_rows, s_tag = both[order], tag[order]
    hit = np.zeros(len(both), dtype=bool)
    if len(both) > 1:
        same = np.all(s_rows[1:] == s_rows[:-1], axis=1)  # a pred row followed by the same gold row
        hit[:-1] = same
    correct_sorted = hit & (s_tag == 0)
    p_correct = np.zeros(len(p_rows), dtype=bool)
    pred_positions = order[s_tag == 0]  # positions in `both` (= index into p_rows) in sorted order
    p_correct[pred_positions] = correct_sorted[s_tag == 0]
    g_found = np.zeros(len(g_rows), dtype=bool)
    g_found[order[1:][hit[:-1]] - len(p_rows)] = True

    size = n_docs * n_labels
    tp = np.bincount(p_rows[p_correct, 0] * n_labels + p_rows[p_correct, 3], minlength=size)
    fp = np.bincount(p_rows[~p_correct, 0] * n_labels + p_rows[~p_correct, 3], minlength=size)
    fn = np.bincount(g_rows[~g_found, 0] * n_labels + g_rows[~g_found, 3], minlength=size)
    counts = np.stack([tp, fp, fn], axis=1).astype(np.int64).reshape(n_docs, n_labels, 3)
    dup = np.stack([
        np.bincount(pred[:, 0], minlength=n_docs) - np.bincount(p_rows[:, 0], minlength=n_docs),
        np.bincount(gold[:, 0], minlength=n_docs) - np.bincount(g_rows[:, 0], minlength=n_docs),
    ], axis=1).astype(np.int64)
    return BatchCounts(counts, p_rows, p_first, p_correct, dup)


def match_document(pred: Iterable[tuple[int, int, str]],
                   gold: Iterable[tuple[int, int, str]]) -> dict[str, tuple[int, int, int]]:
    """Per-label ``(TP, FP, FN)`` of one document; spans are ``(start, end, label)`` triples.

    Labels that occur on neither side are absent from the result.
    """
    pred, gold = list(pred), list(gold)
    vocab = LabelVocab(max_labels=len(pred) + len(gold) + 2)
    p = np.array([[0, s, e, vocab.id(lab)] for s, e, lab in pred], dtype=np.int64).reshape(-1, 4)
    g = np.array([[0, s, e, vocab.id(lab)] for s, e, lab in gold], dtype=np.int64).reshape(-1, 4)
    counts = match_batch(p, g, 1, max(len(vocab), 1)).counts[0]
    return {name: (int(c[0]), int(c[1]), int(c[2])) for name, c in zip(vocab.names, counts, strict=False)}


def confusion_counts(true: Sequence[str], pred: Sequence[str | None],
                     labels: Sequence[str] | None = None) -> tuple[list[str], I64]:
    """Text-classification confusion matrix: ``matrix[i, j]`` = documents of true class ``labels[i]``
    predicted as ``labels[j]``. A missing prediction (None) is its own column ``"<none>"`` (last).

    Returns the label list (rows; columns are the same plus ``"<none>"``) and the (C, C + 1) matrix.
    """
    if len(true) != len(pred):
        raise ValueError("true and pred must have the same length")
    names = list(labels) if labels is not None else sorted(set(true) | {p for p in pred if p is not None})
    index = {n: i for i, n in enumerate(names)}
    c = len(names)
    ti = np.fromiter((index[t] for t in true), dtype=np.int64, count=len(true))
    pi = np.fromiter((c if p is None else index[p] for p in pred), dtype=np.int64, count=len(pred))
    matrix = np.bincount(ti * (c + 1) + pi, minlength=c * (c + 1)).reshape(c, c + 1).astype(np.int64)
    return names, matrix
