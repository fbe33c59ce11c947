"""The join buffer: predictions wait for their labels, labels that come first wait for predictions.

Pure: time is handed in (``now``, event or processing time: the caller chooses, consistently). The
buffer's clock is a watermark, the largest ``now`` seen, so entries are kept in arrival order and
expiry and eviction only ever look at the oldest ones.

Bounds:

* **time to live**: an entry that waited more than ``ttl`` seconds (``watermark - arrived > ttl``)
  leaves: an unlabelled prediction as ``prediction_expired_unlabelled``, a label whose prediction
  never came as ``label_expired_unmatched``;
* **memory**: the estimated bytes of all entries stay <= ``max_bytes``; beyond, the oldest entries go
  first (tombstones, then the oldest pending prediction or label), counted as
  ``prediction_evicted_memory`` / ``label_evicted_memory``.

Only what the join needs is kept, as tuples and small arrays: event id, model, version, event time,
predicted spans ``[start, end, label_id]`` (int64) with their confidences (float32; NaN when none).
:func:`entry_bytes` is the estimate (CPython object headers included, strings and arrays counted by
length); it is deterministic, so tests can check the bound exactly.

After a match or an expiry the event id stays as a small tombstone for ``tombstone_ttl`` seconds, so
that a second label is ``duplicate_label``, a label after the prediction expired is
``label_for_expired_prediction`` and a repeated prediction is ``duplicate_prediction``. While both
wait, a second prediction or label for the same id is also a duplicate (the first one is kept).
Labels of another model are ``label_wrong_model``; a label whose task (spans or class) differs from its
prediction's is ``task_mismatch`` (both are dropped). Every input ends in exactly one counter (or is
still pending): nothing is dropped silently.

Labels carry no authoritative version: the prediction's version is the one reported.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

__all__ = ["COUNTERS", "JoinBuffer", "Label", "Matched", "Prediction", "entry_bytes"]

SPANS: Final = 0
CLASS: Final = 1
_MATCHED: Final = 0
_EXPIRED: Final = 1

COUNTERS: Final = (
    "predictions", "labels", "matched",
    "prediction_expired_unlabelled", "label_expired_unmatched", "label_for_expired_prediction",
    "duplicate_label", "duplicate_prediction", "label_wrong_model", "task_mismatch",
    "prediction_evicted_memory", "label_evicted_memory",
)

# Estimated CPython cost of one entry beyond its strings and arrays: the dict slot and hash, the
# tuple (header + fields) and the boxed floats/ints it holds.
_ENTRY_OVERHEAD: Final = 56 + 8 * 10 + 3 * 24 + 104
_ARRAY_OVERHEAD: Final = 112
_STR_OVERHEAD: Final = 49
_TOMBSTONE_BYTES: Final = 56 + 2 * 8 + 24 + 28 + 104 + _STR_OVERHEAD


class Prediction(NamedTuple):
    """A prediction waiting for its label. ``kind`` 0: spans, 1: text class (one span ``(0, 0, class)``)."""

    event_id: str
    model: str
    model_version: str
    timestamp: float  # event time, NaN when unknown
    kind: int
    reference: bool  # split == "reference": feeds calibration, not the production window
    spans: I64  # (k, 3) [start, end, label_id]
    scores: F32  # (k,) confidences, NaN when unknown


class Label(NamedTuple):
    """A label waiting for its prediction."""

    event_id: str
    model: str
    timestamp: float
    kind: int
    spans: I64  # (g, 3) gold [start, end, label_id]


class Matched(NamedTuple):
    prediction: Prediction
    label: Label


def entry_bytes(entry: Prediction | Label) -> int:
    """Estimated bytes an entry occupies in the buffer (see the module docstring)."""
    size = _ENTRY_OVERHEAD + _STR_OVERHEAD + len(entry.event_id.encode()) + _ARRAY_OVERHEAD + entry.spans.nbytes
    if isinstance(entry, Prediction):
        size += _ARRAY_OVERHEAD + entry.scores.nbytes
    return size


def _tombstone_bytes(event_id: str) -> int:
    return _TOMBSTONE_BYTES + len(event_id.encode())


class JoinBuffer:
    """Join of predictions and labels of one model by ``event_id`` (see the module docstring)."""

    def __init__(self, model: str, ttl: float, max_bytes: int, tombstone_ttl: float | None = None) -> None:
        if not ttl > 0 or max_bytes < 1:
            raise ValueError("ttl and max_bytes must be > 0")
        self.model = model
        self.ttl = float(ttl)
        self.tombstone_ttl = float(ttl if tombstone_ttl is None else tombstone_ttl)
        self.max_bytes = int(max_bytes)
        self.watermark = -np.inf
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.bytes = 0
        self._seq = 0
        # event_id -> (entry, arrived, seq, bytes), insertion (= arrival) order
        self._preds: dict[str, tuple[Prediction, float, int, int]] = {}
        self._labels: dict[str, tuple[Label, float, int, int]] = {}
        self._tombs: dict[str, tuple[float, int]] = {}  # event_id -> (arrived, matched/expired)

    # -- inputs ----------------------------------------------------------------------------------------
    @property
    def pending_predictions(self) -> int:
        return len(self._preds)

    @property
    def pending_labels(self) -> int:
        return len(self._labels)

    def _tick(self, now: float) -> float:
        self.watermark = max(self.watermark, float(now))
        return float(self.watermark)

    def _tomb(self, event_id: str, arrived: float, why: int) -> None:
        old = self._tombs.pop(event_id, None)
        if old is not None:
            self.bytes -= _tombstone_bytes(event_id)
        self._tombs[event_id] = (arrived, why)
        self.bytes += _tombstone_bytes(event_id)

    def add_prediction(self, pred: Prediction, now: float) -> Matched | None:
        """Add one prediction; returns the match if its label was waiting."""
        arrived = self._tick(now)
        self.counters["predictions"] += 1
        eid = pred.event_id
        if eid in self._preds or eid in self._tombs:
            self.counters["duplicate_prediction"] += 1
            return None
        waiting = self._labels.pop(eid, None)
        if waiting is not None:
            label, _, _, size = waiting
            self.bytes -= size
            return self._match(pred, label, arrived)
        size = entry_bytes(pred)
        self._preds[eid] = (pred, arrived, self._seq, size)
        self._seq += 1
        self.bytes += size
        self._enforce_memory()
        return None

    def add_label(self, label: Label, now: float) -> Matched | None:
        """Add one label; returns the match if its prediction was waiting."""
        arrived = self._tick(now)
        self.counters["labels"] += 1
        eid = label.event_id
        if label.model != self.model:
            self.counters["label_wrong_model"] += 1
            return None
        tomb = self._tombs.get(eid)
        if tomb is not None:
            self.counters["duplicate_label" if tomb[1] == _MATCHED else "label_for_expired_prediction"] += 1
            return None
        if eid in self._labels:
            self.counters["duplicate_label"] += 1
            return None
        waiting = self._preds.pop(eid, None)
        if waiting is not None:
            pred, _, _, size = waiting
            self.bytes -= size
            return self._match(pred, label, arrived)
        size = entry_bytes(label)
        self._labels[eid] = (label, arrived, self._seq, size)
        self._seq += 1
        self.bytes += size
        self._enforce_memory()
        return None

    def _match(self, pred: Prediction, label: Label, arrived: float) -> Matched | None:
        self._tomb(pred.event_id, arrived, _MATCHED)
        self._enforce_memory()
        if pred.kind != label.kind:
            self.counters["task_mismatch"] += 1
            return None
        self.counters["matched"] += 1
        return Matched(pred, label)

    # -- bounds ----------------------------------------------------------------------------------------
    def expire(self, now: float) -> dict[str, int]:
        """Drop what waited longer than the TTL; returns how many predictions and labels expired."""
        watermark = self._tick(now)
        cutoff = watermark - self.ttl
        n_pred = n_label = 0
        while self._preds:
            eid, (_, arrived, _, size) = next(iter(self._preds.items()))
            if not arrived < cutoff:
                break
            del self._preds[eid]
            self.bytes -= size
            n_pred += 1
            self._tomb(eid, arrived, _EXPIRED)  # a late label is then recognised
        while self._labels:
            eid, (_, arrived, _, size) = next(iter(self._labels.items()))
            if not arrived < cutoff:
                break
            del self._labels[eid]
            self.bytes -= size
            n_label += 1
        tomb_cutoff = watermark - self.tombstone_ttl
        while self._tombs:
            eid, (arrived, _) = next(iter(self._tombs.items()))
            if not arrived < tomb_cutoff:
                break
            del self._tombs[eid]
            self.bytes -= _tombstone_bytes(eid)
        self.counters["prediction_expired_unlabelled"] += n_pred
        self.counters["label_expired_unmatched"] += n_label
        self._enforce_memory()
        return {"predictions": n_pred, "labels": n_label}

    def _enforce_memory(self) -> None:
        while self.bytes > self.max_bytes:
            if self._tombs:
                eid = next(iter(self._tombs))
                del self._tombs[eid]
                self.bytes -= _tombstone_bytes(eid)
                continue
            p = next(iter(self._preds.items()), None)
            q = next(iter(self._labels.items()), None)
            if p is None and q is None:
                break
            if q is None or (p is not None and p[1][2] < q[1][2]):
                assert p is not None
                del self._preds[p[0]]
                self.bytes -= p[1][3]
                self.counters["prediction_evicted_memory"] += 1
            else:
                del self._labels[q[0]]
                self.bytes -= q[1][3]
                self.counters["label_evicted_memory"] += 1

    # -- state -----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        preds = list(self._preds.values())
        labels = list(self._labels.values())

        def cat(arrays: list[Any], shape: tuple[int, ...], dtype: Any) -> Any:
            return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(shape, dtype=dtype)

        return {
            "model": self.model, "ttl": self.ttl, "tombstone_ttl": self.tombstone_ttl,
            "max_bytes": self.max_bytes, "watermark": float(self.watermark), "seq": self._seq,
            "counters": dict(self.counters),
            "pred_ids": [p.event_id for p, *_ in preds],
            "pred_versions": [p.model_version for p, *_ in preds],
            "pred_meta": np.array([[p.timestamp, p.kind, float(p.reference), a, s, len(p.spans)]
                                   for p, a, s, _ in preds], dtype=np.float64).reshape(-1, 6),
            "pred_spans": cat([p.spans for p, *_ in preds], (0, 3), np.int64),
            "pred_scores": cat([p.scores for p, *_ in preds], (0,), np.float32),
            "label_ids": [q.event_id for q, *_ in labels],
            "label_meta": np.array([[q.timestamp, q.kind, a, s, len(q.spans)] for q, a, s, _ in labels],
                                   dtype=np.float64).reshape(-1, 5),
            "label_spans": cat([q.spans for q, *_ in labels], (0, 3), np.int64),
            "tomb_ids": list(self._tombs),
            "tomb_meta": np.array(list(self._tombs.values()), dtype=np.float64).reshape(-1, 2),
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> JoinBuffer:
        j = cls(str(s["model"]), float(s["ttl"]), int(s["max_bytes"]), float(s["tombstone_ttl"]))
        j.watermark = float(s["watermark"])
        j._seq = int(s["seq"])
        j.counters.update({k: int(v) for k, v in s["counters"].items()})
        meta = np.asarray(s["pred_meta"], dtype=np.float64).reshape(-1, 6)
        spans = np.asarray(s["pred_spans"], dtype=np.int64).reshape(-1, 3)
        scores = np.asarray(s["pred_scores"], dtype=np.float32).reshape(-1)
        at = 0
        for eid, version, row in zip(s["pred_ids"], s["pred_versions"], meta, strict=True):
            k = int(row[5])
            pred = Prediction(str(eid), j.model, str(version), float(row[0]), int(row[1]), bool(row[2]),
                              spans[at:at + k].copy(), scores[at:at + k].copy())
            at += k
            size = entry_bytes(pred)
            j._preds[pred.event_id] = (pred, float(row[3]), int(row[4]), size)
            j.bytes += size
        meta = np.asarray(s["label_meta"], dtype=np.float64).reshape(-1, 5)
        spans = np.asarray(s["label_spans"], dtype=np.int64).reshape(-1, 3)
        at = 0
        for eid, row in zip(s["label_ids"], meta, strict=True):
            k = int(row[4])
            label = Label(str(eid), j.model, float(row[0]), int(row[1]), spans[at:at + k].copy())
            at += k
            size = entry_bytes(label)
            j._labels[label.event_id] = (label, float(row[2]), int(row[3]), size)
            j.bytes += size
        tmeta = np.asarray(s["tomb_meta"], dtype=np.float64).reshape(-1, 2)
        for eid, (arrived, why) in zip(s["tomb_ids"], tmeta, strict=True):
            j._tombs[str(eid)] = (float(arrived), int(why))
            j.bytes += _tombstone_bytes(str(eid))
        return j
