"""Quality of one (model, version) from delayed ground truth: join, windowed figures, estimates. Pure.

The shell hands it decoded prediction events (:class:`service.events.Event`) and decoded label events
(:class:`service.quality.events.GroundTruth`) with the current time, and reads :meth:`report`.

* Predictions wait in a :class:`~service.quality.join.JoinBuffer` for their labels (and labels for
  their predictions).
* A joined **production** prediction enters the :class:`~service.quality.window.QualityWindow`
  (exact span matching, per-label precision / recall / F1, micro and macro F1, accuracy for text
  classification, label delays). Its window time is the prediction's event time (else the label's,
  else ``now``); the label delay is label time - prediction time when both are known.
* A joined **reference** prediction (``split: "reference"``) feeds the calibration of the label-free
  estimate instead (:mod:`service.quality.estimate`); the calibration is refitted when new reference
  spans arrive (at most ``max_calibration_spans``, the most recent).
* Every production prediction, labelled or not, enters the :class:`~service.quality.estimate.ScoreWindow`
  of the label-free estimate.

``labelled_fraction`` is cumulative since the start (or the restored state), over every prediction of
this model and version whose fate is known: matched / (matched + expired unlabelled + evicted); the
pending ones are reported apart. Reference predictions count too.

Token classification: entities without both offsets cannot be matched and are counted
(``entities_without_offsets``), not joined. Repeated ``(start, end, label)`` spans in one document are
matched once (seqeval's set semantics, see ``spans``) and counted (``duplicate_predicted_spans``,
``duplicate_gold_spans``). Text classification: the prediction is
``prediction.label`` (a missing prediction is counted wrong) with ``prediction.score`` as confidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from service.events import Event
from service.quality.estimate import Calibrator, ScoreWindow, calibration_gap, estimated_precision
from service.quality.events import GroundTruth
from service.quality.join import CLASS, SPANS, JoinBuffer, Label, Matched, Prediction
from service.quality.spans import LabelVocab, match_batch
from service.quality.window import QualityWindow

__all__ = ["QualityConfig", "QualityMonitor"]

_NONE_SPANS = np.zeros((0, 3), dtype=np.int64)
OFFSET_MAX = 2**62  # the contracts allow any non-negative integer; larger offsets are clamped to fit int64


def _off(x: int | None) -> int:
    assert x is not None
    return x if x < OFFSET_MAX else OFFSET_MAX


class QualityConfig(BaseModel):
    """Settings of the quality monitor. All fields have defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_documents: int = Field(5000, ge=1, description="The quality window: last N labelled documents.")
    window_max_age_seconds: float | None = Field(
        None, gt=0, description="...and at most this old (event time); also bounds the estimate's window.")
    join_ttl_seconds: float = Field(7 * 86400.0, gt=0, description="How long a prediction waits for its label.")
    tombstone_ttl_seconds: float | None = Field(
        None, gt=0, description="How long a joined/expired id is remembered (default: the join TTL).")
    max_join_bytes: int = Field(64 * 2**20, ge=1024, description="Memory bound of the join buffer (estimated).")
    max_labels: int = Field(256, ge=2, le=10000, description="Label vocabulary cap (rest: __other__).")
    calibration_method: Literal["isotonic", "histogram"] = Field("isotonic", description="Calibration map.")
    calibration_bins: int = Field(10, ge=2, le=1000, description="Bins of histogram calibration.")
    min_calibration_per_label: int = Field(50, ge=1, description="Reference spans for a per-label map.")
    max_calibration_spans: int = Field(20000, ge=10, description="Reference spans kept for calibration.")
    estimate_documents: int = Field(5000, ge=1, description="Predictions in the label-free estimate window.")
    delay_buckets: tuple[float, ...] = Field(
        (0, 60, 600, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400),
        description="Edges (seconds) of the label-delay histogram; the last bucket is open-ended.")


def _prediction(event: Event, vocab: LabelVocab) -> tuple[Prediction, int]:
    """The join entry of a decoded event and the number of entities skipped for lack of offsets."""
    ts = float("nan") if event.timestamp is None else float(event.timestamp)
    if event.task == "text-classification":
        p = event.prediction
        if p is None:
            spans, scores = _NONE_SPANS, np.zeros(0, dtype=np.float32)
        else:
            spans = np.array([[0, 0, vocab.id(p.label)]], dtype=np.int64)
            scores = np.array([np.nan if p.score is None else p.score], dtype=np.float32)
        kind, skipped = CLASS, 0
    else:
        usable = [e for e in event.entities if e.start is not None and e.end is not None]
        spans = np.array([[_off(e.start), _off(e.end), vocab.id(e.label)] for e in usable],
                         dtype=np.int64).reshape(-1, 3)
        scores = np.array([np.nan if e.score is None else e.score for e in usable], dtype=np.float32)
        kind, skipped = SPANS, len(event.entities) - len(usable)
    return Prediction(event.event_id, event.model, event.model_version, ts, kind,
                      event.split == "reference", spans, scores), skipped


def _label(event: GroundTruth, vocab: LabelVocab) -> Label:
    ts = float("nan") if event.timestamp is None else float(event.timestamp)
    if event.label is not None:
        return Label(event.event_id, event.model, ts, CLASS, np.array([[0, 0, vocab.id(event.label)]], np.int64))
    spans = np.array([[_off(s.start), _off(s.end), vocab.id(s.label)] for s in event.entities or ()],
                     dtype=np.int64).reshape(-1, 3)
    return Label(event.event_id, event.model, ts, SPANS, spans)


def _rows(matches: Sequence[Matched]) -> tuple[Any, Any, Any]:
    """Batch rows ``[doc, start, end, label]`` of predicted and gold spans, and predicted scores."""
    pred = [np.column_stack([np.full(len(m.prediction.spans), i), m.prediction.spans]) for i, m in enumerate(matches)]
    gold = [np.column_stack([np.full(len(m.label.spans), i), m.label.spans]) for i, m in enumerate(matches)]
    p = np.concatenate(pred).astype(np.int64).reshape(-1, 4) if pred else np.zeros((0, 4), np.int64)
    g = np.concatenate(gold).astype(np.int64).reshape(-1, 4) if gold else np.zeros((0, 4), np.int64)
    s = (np.concatenate([m.prediction.scores for m in matches]).astype(np.float64) if matches
         else np.zeros(0))
    return p, g, s


class QualityMonitor:
    """Delayed-ground-truth quality of one (model, model_version). See the module docstring."""

    def __init__(self, model: str, model_version: str, config: QualityConfig | None = None) -> None:
        self.model = model
        self.model_version = model_version
        self.config = config = config or QualityConfig()
        self.vocab = LabelVocab(config.max_labels)
        self.join = JoinBuffer(model, config.join_ttl_seconds, config.max_join_bytes, config.tombstone_ttl_seconds)
        self.window = QualityWindow(config.window_documents, config.window_max_age_seconds)
        self.scores = ScoreWindow(config.estimate_documents, config.window_max_age_seconds)
        self.calibrator = Calibrator(config.calibration_method, config.calibration_bins,
                                     config.min_calibration_per_label)
        self.calib_data = np.zeros((0, 3))  # [label_id, score, correct] of joined reference spans
        self.counters: dict[str, int] = {"ignored_other_model": 0, "entities_without_offsets": 0,
                                         "reference_matched": 0, "duplicate_predicted_spans": 0,
                                         "duplicate_gold_spans": 0}
        self.classification = False

    # -- inputs ----------------------------------------------------------------------------------------
    def add_predictions(self, events: Iterable[Event], now: float | None = None) -> None:
        """Add decoded prediction events of this (model, version); others are counted and ignored.

        ``now`` is the arrival time for the join's TTL (default: each event's timestamp, else the
        latest time seen).
        """
        matches: list[tuple[Matched, float]] = []
        times: list[float] = []
        doc: list[int] = []
        labels: list[Any] = []
        scores: list[Any] = []
        for event in events:
            if event.model != self.model or event.model_version != self.model_version:
                self.counters["ignored_other_model"] += 1
                continue
            pred, skipped = _prediction(event, self.vocab)
            self.counters["entities_without_offsets"] += skipped
            self.classification = self.classification or pred.kind == CLASS
            arrival = now if now is not None else (pred.timestamp if np.isfinite(pred.timestamp)
                                                   else self.join.watermark)
            if not pred.reference:
                # window time: event time, else the arrival time handed in, else unknown (never ages)
                times.append(pred.timestamp if np.isfinite(pred.timestamp)
                             else float("nan") if now is None else float(now))
                doc.extend([len(times) - 1] * len(pred.spans))
                labels.append(pred.spans[:, 2])
                scores.append(pred.scores)
            m = self.join.add_prediction(pred, arrival)
            if m is not None:
                matches.append((m, float(self.join.watermark)))
        if times:
            self.scores.add(np.asarray(times), np.asarray(doc, dtype=np.int64),
                            np.concatenate(labels), np.concatenate(scores).astype(np.float64))
        self._process(matches)

    def add_labels(self, label_events: Iterable[GroundTruth], now: float) -> None:
        """Add decoded label events; ``now`` is their arrival time for the join's TTL."""
        matches: list[tuple[Matched, float]] = []
        for event in label_events:
            m = self.join.add_label(_label(event, self.vocab), now)
            if m is not None:
                matches.append((m, float(now)))
        self._process(matches)

    def _process(self, matches: list[tuple[Matched, float]]) -> None:
        prod = [(m, t) for m, t in matches if not m.prediction.reference]
        ref = [m for m, _ in matches if m.prediction.reference]
        if prod:
            ms = [m for m, _ in prod]
            p, g, s = _rows(ms)
            pt = np.array([m.prediction.timestamp for m in ms])
            lt = np.array([m.label.timestamp for m in ms])
            at = np.array([t for _, t in prod])
            times = np.where(np.isfinite(pt), pt, np.where(np.isfinite(lt), lt, at))
            batch = self.window.add(times, lt - pt, p, s, g, len(self.vocab))
            self._count_duplicates(batch.duplicates)
        if ref:
            self.counters["reference_matched"] += len(ref)
            p, g, s = _rows(ref)
            batch = match_batch(p, g, len(ref), max(len(self.vocab), 1))
            self._count_duplicates(batch.duplicates)
            new = np.column_stack([batch.pred_unique[:, 3], s[batch.pred_first],
                                   batch.pred_correct.astype(np.float64)]).reshape(-1, 3)
            new = new[np.isfinite(new[:, 1])]
            if new.size:
                self.calib_data = np.concatenate([self.calib_data, new])[-self.config.max_calibration_spans:]
                self.calibrator.fit(self.calib_data[:, 0].astype(np.int64), self.calib_data[:, 1],
                                    self.calib_data[:, 2] > 0.5)

    def _count_duplicates(self, duplicates: Any) -> None:
        pred, gold = (int(x) for x in duplicates.sum(axis=0))
        self.counters["duplicate_predicted_spans"] += pred
        self.counters["duplicate_gold_spans"] += gold

    def expire(self, now: float) -> None:
        """Apply the join TTL and the windows' maximum age at ``now``."""
        self.join.expire(now)
        self.window.expire(now)
        self.scores.expire(now)

    # -- output ----------------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """Windowed quality figures, label-free estimates, calibration gap and join counters (JSON-ready)."""
        names = self.vocab.names
        n_labels = max(len(names), 1)
        out: dict[str, Any] = {"model": self.model, "model_version": self.model_version,
                               "task": "text-classification" if self.classification else "token-classification"}
        out.update(self.window.figures(names, classification=self.classification))
        lab, sc = self.scores.spans()
        est, n_est = estimated_precision(self.calibrator, lab, sc, n_labels)
        out["estimated_precision"] = {names[i]: float(est[i]) for i in range(len(names)) if n_est[i] > 0}
        out["calibrated"] = self.calibrator.calibrated
        out["calibration_spans"] = self.calibrator.fitted_on
        wl, ws, wc = self.window.scored_predictions()
        gap, overall, n_gap = calibration_gap(self.calibrator, wl, ws, wc, n_labels)
        out["calibration_gap"] = {names[i]: float(gap[i]) for i in range(len(names)) if n_gap[i] > 0}
        out["calibration_gap_overall"] = None if not np.isfinite(overall[2]) else {
            "realised": float(overall[0]), "estimated": float(overall[1]), "gap": float(overall[2])}
        c = self.join.counters
        resolved = c["matched"] + c["prediction_expired_unlabelled"] + c["prediction_evicted_memory"]
        out["labelled_fraction"] = None if resolved == 0 else c["matched"] / resolved
        edges = np.asarray([*self.config.delay_buckets, np.inf])
        delays = self.window.delays()
        out["label_delay_histogram"] = {"edges": list(self.config.delay_buckets),
                                        "counts": self.window.delay_histogram(edges).tolist(),
                                        "below_first_edge": int((delays < edges[0]).sum()),
                                        "unknown": len(self.window) - int(delays.size)}
        out["join"] = {**c, "pending_predictions": self.join.pending_predictions,
                       "pending_labels": self.join.pending_labels, "bytes": self.join.bytes}
        out["counters"] = dict(self.counters)
        return out

    # -- state -----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to resume exactly (for ``service.state.encode_state``)."""
        return {
            "model": self.model, "model_version": self.model_version,
            "config": self.config.model_dump(mode="json"), "vocab": self.vocab.state(),
            "join": self.join.state(), "window": self.window.state(), "scores": self.scores.state(),
            "calibrator": self.calibrator.state(), "calib_data": self.calib_data,
            "counters": dict(self.counters), "classification": self.classification,
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> QualityMonitor:
        m = cls(str(s["model"]), str(s["model_version"]), QualityConfig.model_validate(s["config"]))
        m.vocab = LabelVocab.from_state(s["vocab"])
        m.join = JoinBuffer.from_state(s["join"])
        m.window = QualityWindow.from_state(s["window"])
        m.scores = ScoreWindow.from_state(s["scores"])
        m.calibrator = Calibrator.from_state(s["calibrator"])
        m.calib_data = np.asarray(s["calib_data"], np.float64).reshape(-1, 3)
        m.counters.update({k: int(v) for k, v in s["counters"].items()})
        m.classification = bool(s["classification"])
        return m
