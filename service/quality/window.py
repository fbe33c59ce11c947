"""A sliding window of labelled documents with per-label TP/FP/FN kept as mergeable sums.

The window holds the last ``max_documents`` labelled documents that are not older than ``max_age``
(seconds of event time before the ``now`` handed to :meth:`QualityWindow.expire`). Each document
contributes per-label TP/FP/FN rows (see :mod:`nlpmon.quality.spans`); the window keeps their sums,
adding a batch's rows when it arrives and subtracting the rows of documents as they leave, so a
report costs O(labels), not O(documents). The rows of the documents inside the window are kept
(compactly, as int64 arrays) because expiry must know what to subtract.

Text classification uses the same sums (one span per document, see ``spans``): accuracy is
the TP total over the number of documents.

Also kept per document: the label delay (label event time - prediction event time, NaN when
either is unknown), for a histogram, and per predicted span its confidence and correctness, for the
calibration gap of :mod:`nlpmon.quality.estimate`.

Also kept, per document and per (document, label): the partial-match counts of the SemEval-2013 schemes
(:mod:`nlpmon.quality.partial_match`, as nervaluate counts them), summed and expired the same way, so
the partial figures cover exactly the documents of the window. Documents restored from a snapshot of a
build without them have no partial counts (``partial_documents`` says how many have).

Documents without a time (NaN) never age out; they leave by count.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .partial_match import N_COLUMNS, partial_counts, scheme_document_counts, scheme_figures
from .spans import BatchCounts, match_batch

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

__all__ = ["QualityWindow", "ratio", "scores_from_counts"]


def ratio(num: float, den: float) -> float | None:
    """``num / den``, or None when the denominator is 0 (the figure is undefined)."""
    return None if den == 0 else float(num) / float(den)


def scores_from_counts(counts: I64, names: list[str]) -> dict[str, Any]:
    """Precision, recall, F1 and support per label, and micro/macro F1, from (L, 3) TP/FP/FN sums.

    F1 is ``2 TP / (2 TP + FP + FN)`` (the harmonic mean of precision and recall, and 0 when either
    is 0). Labels with no TP, FP or FN are left out; macro F1 is the mean over the labels reported
    (those predicted or in the gold standard), as seqeval averages. Undefined figures are None.
    """
    per_label: dict[str, dict[str, Any]] = {}
    f1s: list[float] = []
    for name, (tp, fp, fn) in zip(names, counts.tolist(), strict=False):
        if tp + fp + fn == 0:
            continue
        f1 = ratio(2 * tp, 2 * tp + fp + fn)
        assert f1 is not None
        f1s.append(f1)
        per_label[name] = {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "f1": f1,
                           "support": int(tp + fn), "tp": int(tp), "fp": int(fp), "fn": int(fn)}
    tp, fp, fn = (int(x) for x in counts.sum(axis=0)) if counts.size else (0, 0, 0)
    return {
        "labels": per_label,
        "micro": {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
                  "f1": ratio(2 * tp, 2 * tp + fp + fn), "support": tp + fn},
        "macro_f1": float(np.mean(f1s)) if f1s else None,
    }


class QualityWindow:
    """Last ``max_documents`` labelled documents, at most ``max_age`` seconds old. Pure, no clock."""

    def __init__(self, max_documents: int, max_age: float | None = None,
                 partial_min_overlap: float | None = 1.0) -> None:
        """``partial_min_overlap``: nervaluate's minimum overlap (percent of the gold span) of the partial
        counts; None counts no partial matches (text classification, or switched off)."""
        if max_documents < 1:
            raise ValueError("max_documents must be >= 1")
        if max_age is not None and not max_age > 0:
            raise ValueError("max_age must be > 0")
        self.max_documents = int(max_documents)
        self.max_age = max_age
        self.partial_min_overlap = partial_min_overlap
        self.next_seq = 0
        # per document, in arrival order
        self._doc_seq = np.zeros(0, dtype=np.int64)
        self._doc_time = np.zeros(0)
        self._doc_delay = np.zeros(0)
        # per (document, label) with a non-zero count: [seq, label, tp, fp, fn]
        self._rows = np.zeros((0, 5), dtype=np.int64)
        # per deduplicated predicted span: [seq, label, correct] and its confidence (NaN: none)
        self._pred = np.zeros((0, 3), dtype=np.int64)
        self._pred_score = np.zeros(0)
        self.sums = np.zeros((0, 3), dtype=np.int64)
        # partial-match counts (partial_match.COLUMNS): per document, per row of _rows, and their sums
        # (per-document counts are small: int32 halves what the window and its snapshot hold)
        self._doc_partial = np.zeros((0, N_COLUMNS), dtype=np.int32)
        self._doc_partial_known = np.zeros(0, dtype=bool)
        self._rows_partial = np.zeros((0, N_COLUMNS), dtype=np.int32)
        self.partial_sums = np.zeros((0, N_COLUMNS), dtype=np.int64)
        self.partial_total = np.zeros(N_COLUMNS, dtype=np.int64)

    def __len__(self) -> int:
        return int(self._doc_seq.size)

    # -- updates ---------------------------------------------------------------------------------------
    def _grow(self, n_labels: int) -> None:
        if n_labels > self.sums.shape[0]:
            self.sums = np.concatenate([self.sums, np.zeros((n_labels - self.sums.shape[0], 3), np.int64)])
        if n_labels > self.partial_sums.shape[0]:
            self.partial_sums = np.concatenate(
                [self.partial_sums, np.zeros((n_labels - self.partial_sums.shape[0], N_COLUMNS), np.int64)])

    def add(self, times: F64, delays: F64, pred: I64, pred_scores: F64, gold: I64, n_labels: int) -> BatchCounts:
        """Add ``n = len(times)`` labelled documents and return their matching counts.

        ``pred`` / ``gold`` are (m, 4) rows ``[doc, start, end, label_id]`` with ``doc`` in ``0..n-1``;
        ``pred_scores`` (m,) the confidence of each predicted span (NaN when unknown). Afterwards only
        the last ``max_documents`` documents are kept.
        """
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        delays = np.asarray(delays, dtype=np.float64).reshape(-1)
        n = times.size
        self._grow(n_labels)
        n_labels = max(n_labels, self.sums.shape[0], 1)
        batch = match_batch(pred, gold, n, n_labels)
        seq = self.next_seq + np.arange(n, dtype=np.int64)
        self.next_seq += n
        doc, lab = np.nonzero(batch.counts.any(axis=2))
        rows = np.column_stack([seq[doc], lab, batch.counts[doc, lab]]).astype(np.int64).reshape(-1, 5)
        self._grow(n_labels)
        self.sums += batch.counts.sum(axis=0)
        if self.partial_min_overlap is not None:
            partial = partial_counts(pred, gold, n, n_labels, self.partial_min_overlap)
            doc_partial, rows_partial = partial.overall, partial.per_label[doc, lab].reshape(-1, N_COLUMNS)
            self.partial_sums[:n_labels] += partial.per_label.sum(axis=0)
            self.partial_total += doc_partial.sum(axis=0)
        else:
            doc_partial = np.zeros((n, N_COLUMNS), np.int64)
            rows_partial = np.zeros((rows.shape[0], N_COLUMNS), np.int64)
        self._doc_partial = np.concatenate([self._doc_partial, doc_partial.astype(np.int32)])
        self._doc_partial_known = np.concatenate(
            [self._doc_partial_known, np.full(n, self.partial_min_overlap is not None)])
        self._rows_partial = np.concatenate([self._rows_partial, rows_partial.astype(np.int32)])
        scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)[batch.pred_first]
        pred_rows = np.column_stack([seq[batch.pred_unique[:, 0]], batch.pred_unique[:, 3],
                                     batch.pred_correct.astype(np.int64)]).reshape(-1, 3)
        self._doc_seq = np.concatenate([self._doc_seq, seq])
        self._doc_time = np.concatenate([self._doc_time, times])
        self._doc_delay = np.concatenate([self._doc_delay, delays])
        self._rows = np.concatenate([self._rows, rows])
        self._pred = np.concatenate([self._pred, pred_rows])
        self._pred_score = np.concatenate([self._pred_score, scores])
        excess = self._doc_seq.size - self.max_documents
        if excess > 0:
            drop = np.zeros(self._doc_seq.size, dtype=bool)
            drop[:excess] = True
            self._remove(drop)
        return batch

    def expire(self, now: float) -> int:
        """Remove documents older than ``max_age`` before ``now``; returns how many left."""
        if self.max_age is None or self._doc_seq.size == 0:
            return 0
        drop = self._doc_time < now - self.max_age  # NaN compares False: kept
        if drop.any():
            self._remove(drop)
        return int(drop.sum())

    def _remove(self, drop: npt.NDArray[np.bool_]) -> None:
        gone = self._doc_seq[drop]
        out = np.isin(self._rows[:, 0], gone)
        if out.any():
            leaving = self._rows[out]
            for k in range(3):  # float64 weights: exact for counts below 2**53
                self.sums[:, k] -= np.bincount(leaving[:, 1], weights=leaving[:, 2 + k],
                                               minlength=self.sums.shape[0]).astype(np.int64)
            np.subtract.at(self.partial_sums, leaving[:, 1], self._rows_partial[out])
        self._rows = self._rows[~out]
        self._rows_partial = self._rows_partial[~out]
        self.partial_total -= self._doc_partial[drop].sum(axis=0, dtype=np.int64)
        self._doc_partial, self._doc_partial_known = self._doc_partial[~drop], self._doc_partial_known[~drop]
        keep_pred = ~np.isin(self._pred[:, 0], gone)
        self._pred, self._pred_score = self._pred[keep_pred], self._pred_score[keep_pred]
        keep = ~drop
        self._doc_seq, self._doc_time, self._doc_delay = (
            self._doc_seq[keep], self._doc_time[keep], self._doc_delay[keep])

    # -- figures ---------------------------------------------------------------------------------------
    def label_sums(self, n_labels: int) -> I64:
        """(n_labels, 3) TP/FP/FN sums over the window (labels never seen are 0)."""
        self._grow(n_labels)
        return self.sums[:n_labels].copy()

    def figures(self, names: list[str], classification: bool = False) -> dict[str, Any]:
        """Per-label precision/recall/F1/support, micro and macro F1 (and accuracy for classification)."""
        out = scores_from_counts(self.sums, names)
        out["documents"] = len(self)
        if classification:
            out["accuracy"] = ratio(int(self.sums[:, 0].sum()), len(self))
        return out

    def document_counts(self) -> tuple[F64, F64]:
        """Per document in the window (arrival order): TP and TP + FP + FN summed over its labels."""
        pos = np.searchsorted(self._doc_seq, self._rows[:, 0])
        n = self._doc_seq.size
        tp = np.bincount(pos, weights=self._rows[:, 2], minlength=n).astype(np.float64)
        total = np.bincount(pos, weights=self._rows[:, 2:5].sum(axis=1), minlength=n).astype(np.float64)
        return tp, total

    @property
    def partial_documents(self) -> int:
        """Documents of the window that have partial-match counts."""
        return int(self._doc_partial_known.sum())

    def partial_figures(self, names: list[str]) -> dict[str, Any]:
        """The partial-match figures of every scheme over the window: ``{scheme: {"overall", "labels"}}``
        (see :func:`nlpmon.quality.partial_match.scheme_figures`)."""
        self._grow(len(names))
        return scheme_figures(self.partial_total, self.partial_sums[:len(names)], names)

    def partial_document_counts(self, scheme: str) -> tuple[F64, F64]:
        """Per document with partial counts: the scheme's credit and ``actual + possible - credit`` (the
        per-document sums of its F1-drop test)."""
        return scheme_document_counts(self._doc_partial[self._doc_partial_known], scheme)

    def delays(self) -> F64:
        """Label delays (seconds) of the documents in the window whose delay is known."""
        return self._doc_delay[np.isfinite(self._doc_delay)].copy()

    def delay_histogram(self, edges: F64) -> I64:
        """Counts of known label delays per bucket ``[edges[i], edges[i+1])`` (``len(edges) - 1`` buckets)."""
        counts, _ = np.histogram(self.delays(), bins=np.asarray(edges, dtype=np.float64))
        return counts.astype(np.int64)

    def scored_predictions(self) -> tuple[I64, F64, npt.NDArray[np.bool_]]:
        """Label id, confidence and correctness of the predicted spans in the window that have a confidence."""
        ok = np.isfinite(self._pred_score)
        return self._pred[ok, 1].copy(), self._pred_score[ok].copy(), self._pred[ok, 2].astype(bool)

    # -- state -----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "max_documents": self.max_documents, "max_age": self.max_age, "next_seq": self.next_seq,
            "doc_seq": self._doc_seq, "doc_time": self._doc_time, "doc_delay": self._doc_delay,
            "rows": self._rows, "pred": self._pred, "pred_score": self._pred_score, "sums": self.sums,
            "partial_min_overlap": self.partial_min_overlap, "doc_partial": self._doc_partial,
            "doc_partial_known": self._doc_partial_known, "rows_partial": self._rows_partial,
            "partial_sums": self.partial_sums, "partial_total": self.partial_total,
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> QualityWindow:
        overlap = s.get("partial_min_overlap", 1.0)
        w = cls(int(s["max_documents"]), None if s["max_age"] is None else float(s["max_age"]),
                None if overlap is None else float(overlap))
        w.next_seq = int(s["next_seq"])
        w._doc_seq = np.asarray(s["doc_seq"], dtype=np.int64).reshape(-1)
        w._doc_time = np.asarray(s["doc_time"], dtype=np.float64).reshape(-1)
        w._doc_delay = np.asarray(s["doc_delay"], dtype=np.float64).reshape(-1)
        w._rows = np.asarray(s["rows"], dtype=np.int64).reshape(-1, 5)
        w._pred = np.asarray(s["pred"], dtype=np.int64).reshape(-1, 3)
        w._pred_score = np.asarray(s["pred_score"], dtype=np.float64).reshape(-1)
        w.sums = np.asarray(s["sums"], dtype=np.int64).reshape(-1, 3)
        n_docs, n_rows = w._doc_seq.size, w._rows.shape[0]
        if "doc_partial" in s:
            w._doc_partial = np.asarray(s["doc_partial"], dtype=np.int32).reshape(-1, N_COLUMNS)
            w._doc_partial_known = np.asarray(s["doc_partial_known"], dtype=bool).reshape(-1)
            w._rows_partial = np.asarray(s["rows_partial"], dtype=np.int32).reshape(-1, N_COLUMNS)
            w.partial_sums = np.asarray(s["partial_sums"], dtype=np.int64).reshape(-1, N_COLUMNS)
            w.partial_total = np.asarray(s["partial_total"], dtype=np.int64).reshape(N_COLUMNS)
        else:  # a snapshot of a build without partial matching: its documents have no partial counts
            w._doc_partial = np.zeros((n_docs, N_COLUMNS), np.int32)
            w._doc_partial_known = np.zeros(n_docs, bool)
            w._rows_partial = np.zeros((n_rows, N_COLUMNS), np.int32)
            w.partial_sums = np.zeros((w.sums.shape[0], N_COLUMNS), np.int64)
        return w
