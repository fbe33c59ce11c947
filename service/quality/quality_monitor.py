"""Quality of one model from delayed ground truth: join, windowed figures per version, estimates. Pure.

The shell hands it decoded prediction events (:class:`nlpmon.events.Event`) and decoded label events
(:class:`nlpmon.quality.events.GroundTruth`) of one model with their arrival times, and reads
:meth:`QualityMonitor.report` per version.

* One :class:`~nlpmon.quality.join.JoinBuffer` per **model**: a label joins its prediction whatever
  version made it (labels need not say; the prediction's version is the one reported), so a label
  that arrives first waits for a prediction of any version.
* A joined **production** prediction enters its version's
  :class:`~nlpmon.quality.window.QualityWindow` (exact span matching, per-label precision / recall /
  F1, micro and macro F1, accuracy for text classification, label delays). Its window time is the
  prediction's event time (else the label's, else the arrival time); the label delay is label time -
  prediction time when both are known.
* A joined **reference** prediction (``split: "reference"``) feeds its version's reference figures
  (the baseline of the F1-drop test) and the calibration of the label-free estimate
  (:mod:`nlpmon.quality.estimate`), refitted when new reference spans arrive (at most
  ``max_calibration_spans``, the most recent). Without labelled reference events the first
  ``baseline_documents`` labelled production documents become the baseline (``source: baseline``).
* Every production prediction, labelled or not, enters the version's
  :class:`~nlpmon.quality.estimate.ScoreWindow` of the label-free estimate.
* :mod:`nlpmon.quality.significance` decides when micro F1 dropped and when realised and estimated
  precision parted, at the false-alarm rate ``false_alarm_rate``.
* Token classification also gets the partial-match figures of the SemEval-2013 schemes (strict, exact,
  partial, ent_type; :mod:`nlpmon.quality.partial_match`, counted as nervaluate counts them) over the same
  windows, with the same F1-drop test on each scheme's overall F1 (``partial_match`` in the report).

``labelled_fraction`` is cumulative since the start (or the restored state): matched / (matched +
expired unlabelled + evicted + still waiting), the share of the model's predictions labelled so far (the
waiting ones may still be; ``join.pending_predictions`` says how many). Reference predictions count too.
``join_here`` and ``label_delay_seconds`` count only what this object saw since it was built or restored
(like ``events_processed_here``), so Prometheus counters fed from them never count a restored history
twice.

Token classification: entities without both offsets cannot be matched and are counted
(``entities_without_offsets``), not joined. Repeated ``(start, end, label)`` spans in one document are
matched once (seqeval's set semantics, see ``spans``) and counted (``duplicate_predicted_spans``,
``duplicate_gold_spans``). Text classification: the prediction is
``prediction.label`` (a missing prediction is counted wrong) with ``prediction.score`` as confidence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from ..events import Event
from .estimate import Calibrator, ScoreWindow, calibration_gap, estimated_precision
from .events import GroundTruth
from .join import CLASS, SPANS, JoinBuffer, Label, Matched, Prediction
from .partial_match import SCHEMES
from .report import (
    CalibrationGapOverall,
    DelayHistogram,
    DelaySeconds,
    F1Drop,
    JoinFigures,
    LabelFigures,
    MicroFigures,
    PartialMatch,
    QualityReference,
    QualityReport,
    SchemeBlock,
    SchemeFigures,
    WindowFigures,
)
from .significance import calibration_gap_score, f1_drop_score, micro_f1_with_se, z_threshold
from .spans import LabelVocab
from .window import QualityWindow

__all__ = ["QualityConfig", "QualityMonitor"]

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
    baseline_documents: int = Field(
        1000, ge=1, description="Labelled documents of the F1 baseline (reference split, else first production).")
    false_alarm_rate: float = Field(
        1e-6, gt=0, lt=0.5, description="Per-evaluation false-alarm rate of the F1-drop and calibration-gap tests.")
    min_test_documents: int = Field(
        200, ge=2, description="Labelled documents (or scored spans) both sides need before a test runs.")
    min_f1_drop: float = Field(0.02, ge=0, le=1, description="Smallest micro-F1 drop that flags (absolute).")
    min_calibration_gap: float = Field(
        0.05, ge=0, le=1, description="Smallest realised - estimated precision gap that flags (absolute).")
    partial_match: bool = Field(
        True, description="Count the partial-match schemes (strict, exact, partial, ent_type) of token "
        "classification in the quality windows, with an F1-drop test on each.")
    partial_min_overlap_percent: float = Field(
        1.0, ge=1, le=100, description="Partial-match overlap: the shared characters must be at least this "
        "percent of the gold span (nervaluate's min_overlap_percentage).")


class _Batch(NamedTuple):
    predictions: list[Prediction]
    spans: npt.NDArray[np.int64]  # (rows, 3) every prediction's spans; prediction i has rows bounds[i]:bounds[i+1]
    scores: npt.NDArray[np.float32]
    bounds: npt.NDArray[np.int64]
    skipped: int  # entities without offsets


def _predictions(events: Sequence[Event], vocab: LabelVocab) -> _Batch:
    """Join entries of a batch of decoded events. One array build per batch: each entry holds slices of it."""
    rows: list[tuple[int, int, int]] = []
    scores: list[float] = []
    bounds = [0]
    kinds: list[int] = []
    skipped = 0
    nan = math.nan
    for e in events:
        if e.task == "text-classification":
            p = e.prediction
            if p is not None:
                rows.append((0, 0, vocab.id(p.label)))
                scores.append(nan if p.score is None else p.score)
            kinds.append(CLASS)
        else:
            for x in e.entities:
                if x.start is None or x.end is None:
                    skipped += 1
                    continue
                rows.append((_off(x.start), _off(x.end), vocab.id(x.label)))
                scores.append(nan if x.score is None else x.score)
            kinds.append(SPANS)
        bounds.append(len(rows))
    spans = np.array(rows, dtype=np.int64).reshape(-1, 3)
    confidences = np.array(scores, dtype=np.float32)
    preds = [Prediction(e.event_id, e.model, e.model_version, nan if e.timestamp is None else float(e.timestamp),
                        kind, e.split == "reference", spans[a:b], confidences[a:b])
             for e, kind, a, b in zip(events, kinds, bounds[:-1], bounds[1:], strict=True)]
    return _Batch(preds, spans, confidences, np.asarray(bounds, dtype=np.int64), skipped)


def _label(event: GroundTruth, vocab: LabelVocab) -> Label:
    ts = float("nan") if event.timestamp is None else float(event.timestamp)
    if event.label is not None:
        return Label(event.event_id, event.model, ts, CLASS, np.array([[0, 0, vocab.id(event.label)]], np.int64))
    spans = np.array([[_off(s.start), _off(s.end), vocab.id(s.label)] for s in event.entities or ()],
                     dtype=np.int64).reshape(-1, 3)
    return Label(event.event_id, event.model, ts, SPANS, spans)


def _rows(matches: Sequence[Matched]) -> tuple[Any, Any, Any]:
    """Batch rows ``[doc, start, end, label]`` of predicted and gold spans, and predicted scores."""
    if not matches:
        return np.zeros((0, 4), np.int64), np.zeros((0, 4), np.int64), np.zeros(0)
    docs = np.arange(len(matches))

    def stack(spans: list[Any]) -> Any:
        lengths = np.fromiter(map(len, spans), np.int64, len(spans))
        rows = np.concatenate(spans).astype(np.int64, copy=False).reshape(-1, 3)
        return np.column_stack([np.repeat(docs, lengths), rows])

    p = stack([m.prediction.spans for m in matches])
    g = stack([m.label.spans for m in matches])
    s = np.concatenate([m.prediction.scores for m in matches]).astype(np.float64)
    return p, g, s


def _overlap(config: QualityConfig) -> float | None:
    return config.partial_min_overlap_percent if config.partial_match else None


class _Version:
    """The windows, baseline and calibration of one model version."""

    def __init__(self, config: QualityConfig) -> None:
        overlap = _overlap(config)
        self.window = QualityWindow(config.window_documents, config.window_max_age_seconds, overlap)
        self.reference = QualityWindow(config.baseline_documents, partial_min_overlap=overlap)
        self.reference_source: str | None = None  # "reference" | "baseline" | None
        self.scores = ScoreWindow(config.estimate_documents, config.window_max_age_seconds)
        self.calibrator = Calibrator(config.calibration_method, config.calibration_bins,
                                     config.min_calibration_per_label)
        self.calib_data = np.zeros((0, 3))  # [label_id, score, correct] of joined reference spans
        self.classification = False
        self.delay_counts = np.zeros(len(config.delay_buckets) + 1, dtype=np.int64)  # here, not restored
        self.delay_sum = 0.0

    def state(self) -> dict[str, Any]:
        return {"window": self.window.state(), "reference": self.reference.state(),
                "reference_source": self.reference_source, "scores": self.scores.state(),
                "calibrator": self.calibrator.state(), "calib_data": self.calib_data,
                "classification": self.classification}

    @classmethod
    def from_state(cls, s: dict[str, Any], config: QualityConfig) -> _Version:
        v = cls(config)
        v.window = QualityWindow.from_state(s["window"])
        v.reference = QualityWindow.from_state(s["reference"])
        v.reference_source = None if s["reference_source"] is None else str(s["reference_source"])
        v.scores = ScoreWindow.from_state(s["scores"])
        v.calibrator = Calibrator.from_state(s["calibrator"])
        v.calib_data = np.asarray(s["calib_data"], np.float64).reshape(-1, 3)
        v.classification = bool(s["classification"])
        return v


class QualityMonitor:
    """Delayed-ground-truth quality of one model, per version. See the module docstring."""

    def __init__(self, model: str, config: QualityConfig | None = None) -> None:
        self.model = model
        self.config = config = config or QualityConfig()
        self.vocab = LabelVocab(config.max_labels)
        self.join = JoinBuffer(model, config.join_ttl_seconds, config.max_join_bytes, config.tombstone_ttl_seconds)
        self.versions: dict[str, _Version] = {}
        self.counters: dict[str, int] = {"ignored_other_model": 0, "entities_without_offsets": 0,
                                         "reference_matched": 0, "duplicate_predicted_spans": 0,
                                         "duplicate_gold_spans": 0}
        self._join_base = dict(self.join.counters)  # join counters when this object took the model over

    def version(self, model_version: str) -> _Version:
        v = self.versions.get(model_version)
        if v is None:
            v = self.versions[model_version] = _Version(self.config)
        return v

    # -- inputs ----------------------------------------------------------------------------------------
    def add_predictions(self, events: Sequence[Event], now: float | None = None) -> None:
        """Add decoded prediction events of this model; others are counted and ignored.

        ``now`` is the arrival time for the join's TTL (default: each event's timestamp, else the
        latest time seen).
        """
        mine = [e for e in events if e.model == self.model]
        self.counters["ignored_other_model"] += len(events) - len(mine)
        batch = _predictions(mine, self.vocab)
        preds, bounds = batch.predictions, batch.bounds
        self.counters["entities_without_offsets"] += batch.skipped
        matches: list[tuple[Matched, float]] = []
        production: dict[str, list[int]] = {}
        join = self.join
        for i, pred in enumerate(preds):
            ver = self.versions.get(pred.model_version) or self.version(pred.model_version)
            if pred.kind == CLASS:
                ver.classification = True
            finite = math.isfinite(pred.timestamp)
            arrival = now if now is not None else (pred.timestamp if finite else join.watermark)
            if not pred.reference:
                production.setdefault(pred.model_version, []).append(i)
            m = join.add_prediction(pred, arrival)
            if m is not None:
                matches.append((m, float(join.watermark)))
        if preds:
            spans, scores = batch.spans, batch.scores
            for version, idx in production.items():
                sel = np.asarray(idx, dtype=np.int64)
                # window time: event time, else the arrival time handed in, else unknown (never ages)
                t = np.array([preds[i].timestamp for i in idx])
                t = np.where(np.isfinite(t), t, np.nan if now is None else float(now))
                lengths = bounds[sel + 1] - bounds[sel]
                rows = np.repeat(bounds[sel] - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
                doc = np.repeat(np.arange(sel.size), lengths)
                self.versions[version].scores.add(t, doc, spans[rows, 2], scores[rows].astype(np.float64))
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
        by_version: dict[str, list[tuple[Matched, float]]] = {}
        for m, t in matches:
            by_version.setdefault(m.prediction.model_version, []).append((m, t))
        for version, found in by_version.items():
            ver = self.versions[version]
            prod = [(m, t) for m, t in found if not m.prediction.reference]
            ref = [m for m, _ in found if m.prediction.reference]
            if ref:
                self.counters["reference_matched"] += len(ref)
                self._add_reference(ver, ref)
            if prod:
                self._add_production(ver, prod)

    def _partial_setting(self, ver: _Version) -> None:
        """No partial matching for text classification (its one span per document has no boundaries)."""
        overlap = None if ver.classification else _overlap(self.config)
        ver.window.partial_min_overlap = ver.reference.partial_min_overlap = overlap

    def _add_production(self, ver: _Version, prod: list[tuple[Matched, float]]) -> None:
        self._partial_setting(ver)
        ms = [m for m, _ in prod]
        p, g, s = _rows(ms)
        pt = np.array([m.prediction.timestamp for m in ms])
        lt = np.array([m.label.timestamp for m in ms])
        at = np.array([t for _, t in prod])
        times = np.where(np.isfinite(pt), pt, np.where(np.isfinite(lt), lt, at))
        delays = lt - pt
        batch = ver.window.add(times, delays, p, s, g, len(self.vocab))
        self._count_duplicates(batch.duplicates)
        known = delays[np.isfinite(delays)]
        if known.size:
            edges = np.asarray(self.config.delay_buckets, np.float64)
            ver.delay_counts += np.bincount(np.searchsorted(edges, known, side="left"),
                                            minlength=edges.size + 1)
            ver.delay_sum += float(known.sum())
        if ver.reference_source is None:  # no labelled reference: the first labelled documents are the baseline
            take = min(len(ms), self.config.baseline_documents - len(ver.reference))
            if take > 0:
                first = p[:, 0] < take
                ver.reference.add(times[:take], delays[:take], p[first], s[first], g[g[:, 0] < take],
                                  len(self.vocab))
            if len(ver.reference) >= self.config.baseline_documents:
                ver.reference_source = "baseline"

    def _add_reference(self, ver: _Version, ref: list[Matched]) -> None:
        p, g, s = _rows(ref)
        if ver.reference_source != "reference":  # labelled reference events replace a production baseline
            ver.reference = QualityWindow(self.config.baseline_documents, partial_min_overlap=_overlap(self.config))
            ver.reference_source = "reference"
        self._partial_setting(ver)
        times = np.array([m.prediction.timestamp for m in ref])
        batch = ver.reference.add(times, np.full(len(ref), np.nan), p, s, g, len(self.vocab))
        self._count_duplicates(batch.duplicates)
        new = np.column_stack([batch.pred_unique[:, 3], s[batch.pred_first],
                               batch.pred_correct.astype(np.float64)]).reshape(-1, 3)
        new = new[np.isfinite(new[:, 1])]
        if new.size:
            ver.calib_data = np.concatenate([ver.calib_data, new])[-self.config.max_calibration_spans:]
            ver.calibrator.fit(ver.calib_data[:, 0].astype(np.int64), ver.calib_data[:, 1],
                               ver.calib_data[:, 2] > 0.5)

    def _count_duplicates(self, duplicates: Any) -> None:
        pred, gold = (int(x) for x in duplicates.sum(axis=0))
        self.counters["duplicate_predicted_spans"] += pred
        self.counters["duplicate_gold_spans"] += gold

    def expire(self, now: float) -> None:
        """Apply the join TTL and the windows' maximum age at ``now``."""
        self.join.expire(now)
        for ver in self.versions.values():
            ver.window.expire(now)
            ver.scores.expire(now)

    # -- output ----------------------------------------------------------------------------------------
    def view(self, model_version: str) -> QualityReport:
        """Windowed figures, baseline, F1-drop and calibration tests, estimates and join counters of one
        version (the typed report, :mod:`nlpmon.quality.report`; docs/quality.md). Join counters and
        ``labelled_fraction`` are the model's."""
        ver = self.versions.get(model_version) or _Version(self.config)
        cfg = self.config
        names = self.vocab.names
        n_labels = max(len(names), 1)
        task = "text-classification" if ver.classification else "token-classification"
        threshold = z_threshold(cfg.false_alarm_rate)
        ref_f1 = micro_f1_with_se(*ver.reference.document_counts())
        now_f1 = micro_f1_with_se(*ver.window.document_counts())
        enough = (ver.reference_source is not None and len(ver.window) >= cfg.min_test_documents
                  and len(ver.reference) >= cfg.min_test_documents)
        lab, sc = ver.scores.spans()
        est, n_est = estimated_precision(ver.calibrator, lab, sc, n_labels)
        wl, ws, wc = ver.window.scored_predictions()
        gap, overall, n_gap = calibration_gap(ver.calibrator, wl, ws, wc, n_labels)
        gap_overall = None
        if np.isfinite(overall[2]):
            gscore = (calibration_gap_score(ver.calibrator.apply(wl, ws), wc, ver.calibrator.fitted_on)
                      if ver.calibrator.calibrated and wl.size >= cfg.min_test_documents else float("nan"))
            gap_overall = CalibrationGapOverall(
                float(overall[0]), float(overall[1]), float(overall[2]), _finite(gscore), threshold,
                bool(gscore > threshold and abs(overall[2]) >= cfg.min_calibration_gap))
        c = self.join.counters
        seen = (c["matched"] + c["prediction_expired_unlabelled"] + c["prediction_evicted_memory"]
                + self.join.pending_predictions)
        edges = np.asarray([*cfg.delay_buckets, np.inf])
        delays = ver.window.delays()
        return QualityReport(
            self.model, model_version, task, _figures(ver.window, names, ver.classification),
            QualityReference(ver.reference_source, _figures(ver.reference, names, ver.classification)),
            _f1_drop(ref_f1, now_f1, enough, threshold, cfg.min_f1_drop),
            None if ver.classification else self._partial_report(ver, names, threshold),
            {names[i]: float(est[i]) for i in range(len(names)) if n_est[i] > 0}, ver.calibrator.calibrated,
            ver.calibrator.fitted_on, {names[i]: float(gap[i]) for i in range(len(names)) if n_gap[i] > 0},
            gap_overall, None if seen == 0 else c["matched"] / seen,
            DelayHistogram(tuple(cfg.delay_buckets), tuple(ver.window.delay_histogram(edges).tolist()),
                           int((delays < edges[0]).sum()), len(ver.window) - int(delays.size)),
            DelaySeconds(tuple(cfg.delay_buckets), tuple(np.cumsum(ver.delay_counts).tolist()), ver.delay_sum,
                         int(ver.delay_counts.sum())),
            JoinFigures(dict(c), self.join.pending_predictions, self.join.pending_labels, self.join.bytes),
            {k: c[k] - self._join_base.get(k, 0) for k in c}, dict(self.counters))

    def report(self, model_version: str) -> dict[str, Any]:
        """``view(model_version).to_json()``: the JSON of docs/quality.md."""
        return self.view(model_version).to_json()

    def _partial_report(self, ver: _Version, names: list[str], threshold: float) -> PartialMatch | None:
        """Partial-match figures of every scheme over the window, the baseline's overall figures, and the
        F1-drop test of each scheme's overall F1 (the exact-match test's rule, on that scheme's counts)."""
        cfg = self.config
        if not cfg.partial_match:
            return None
        now, ref = ver.window.partial_figures(names), ver.reference.partial_figures(names)
        enough = (ver.reference_source is not None and ver.window.partial_documents >= cfg.min_test_documents
                  and ver.reference.partial_documents >= cfg.min_test_documents)
        schemes: dict[str, SchemeFigures] = {}
        for scheme in SCHEMES:
            ref_f1 = micro_f1_with_se(*ver.reference.partial_document_counts(scheme))
            now_f1 = micro_f1_with_se(*ver.window.partial_document_counts(scheme))
            schemes[scheme] = SchemeFigures(_scheme_block(now[scheme]["overall"]),
                                            {k: _scheme_block(v) for k, v in now[scheme]["labels"].items()},
                                            _f1_drop(ref_f1, now_f1, enough, threshold, cfg.min_f1_drop))
        return PartialMatch(ver.window.partial_documents, cfg.partial_min_overlap_percent, schemes,
                            ver.reference.partial_documents, {s: _scheme_block(ref[s]["overall"]) for s in SCHEMES})

    def reports(self) -> dict[str, dict[str, Any]]:
        """``{version: report(version)}`` for every version seen."""
        return {v: self.report(v) for v in sorted(self.versions)}

    def views(self) -> dict[str, QualityReport]:
        """``{version: view(version)}`` for every version seen."""
        return {v: self.view(v) for v in sorted(self.versions)}

    # -- state -----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to resume exactly (for ``nlpmon.state.encode_state``)."""
        return {
            "model": self.model, "config": self.config.model_dump(mode="json"), "vocab": self.vocab.state(),
            "join": self.join.state(), "counters": dict(self.counters),
            "versions": {name: v.state() for name, v in self.versions.items()},
        }

    @classmethod
    def from_state(cls, s: dict[str, Any], config: QualityConfig | None = None) -> QualityMonitor:
        """Resume from :meth:`state`; ``config`` (default: the saved one) may change the bounds."""
        m = cls(str(s["model"]), config or QualityConfig.model_validate(s["config"]))
        m.vocab = LabelVocab.from_state(s["vocab"])
        m.join = JoinBuffer.from_state(s["join"])
        m.counters.update({k: int(v) for k, v in s["counters"].items()})
        m.versions = {str(k): _Version.from_state(v, m.config) for k, v in s["versions"].items()}
        m._join_base = dict(m.join.counters)
        return m


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _figures(window: QualityWindow, names: list[str], classification: bool) -> WindowFigures:
    """The exact-match figures of ``window`` (``QualityWindow.figures``) as the report's type."""
    f = window.figures(names, classification=classification)
    m = f["micro"]
    return WindowFigures(
        {k: LabelFigures(v["precision"], v["recall"], v["f1"], v["support"], v["tp"], v["fp"], v["fn"])
         for k, v in f["labels"].items()},
        MicroFigures(m["precision"], m["recall"], m["f1"], m["support"]), f["documents"], f["macro_f1"],
        classification, f.get("accuracy"))


def _scheme_block(b: Mapping[str, Any]) -> SchemeBlock:
    """A scheme's evaluation (``nlpmon.quality.partial_match``'s block) as the report's type."""
    return SchemeBlock(b["correct"], b["incorrect"], b["partial"], b["missed"], b["spurious"], b["actual"],
                       b["possible"], b["precision"], b["recall"], b["f1"])


def _f1_drop(ref_f1: tuple[float, float], now_f1: tuple[float, float], enough: bool, threshold: float,
             min_drop: float) -> F1Drop:
    """The F1-drop test of ``micro_f1_with_se`` results (score None until both sides have ``enough``)."""
    score = f1_drop_score(ref_f1, now_f1) if enough else float("nan")
    return F1Drop(_finite(score), threshold, bool(score > threshold and ref_f1[0] - now_f1[0] >= min_drop),
                  _finite(ref_f1[0]), _finite(now_f1[0]))
