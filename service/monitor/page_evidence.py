"""Page evidence of one (model, version): what the model pages and ``/api/models/<model>`` show beside the
detection, and nothing the alarms or the metrics depend on. Pure.

``PageEvidence`` is fed by the detector (``nlpmon.monitor.model_monitor.ModelMonitor``) with each monitored
batch: the highest-scored outliers, the events the share signals counted, the lowest-confidence and
smallest-margin examples, recent embeddings and confidences, the score history. The outliers, the counted
events, the share examples and the recent span lengths are in the monitor's snapshot; the rest lives in
memory and starts again with each new reference profile (``reset``). The page views (nearest reference
points, projection, confidence by label) are computed only when a page report is built, and cached until
new events arrive.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..drift.clusters import ClusterFeaturizer
from ..drift.distribution import BinnedFeaturizer, CategoricalFeaturizer, LabelShareFeaturizer
from ..drift.embedding import EmbeddingFeaturizer
from ..drift.items import ItemColumn
from ..drift.outliers import OutlierShareFeaturizer
from ..drift.shares import EventShareFeaturizer, TagValidityFeaturizer
from ..drift.signal import SignalWindow
from .config import MonitorConfig
from .examples import (
    QUANTILE_LEVELS,
    LabelCodes,
    LowestScores,
    RecentConfidences,
    RecentEmbeddings,
    per_event_min,
    quantiles_by_label,
    top_two,
    top_two_margins,
)
from .history import ScoreHistory, ShareHistory
from .projection import ReferenceView, page_lookups, projection_report
from .reference import ReferenceProfile
from .signals import SCORED_LABELS, SPAN_LABELS

TextPolicy = Callable[[str | None], str | None]

__all__ = ["CountedEvent", "Outlier", "PageEvidence", "label_share_evidence"]


@dataclass(frozen=True, slots=True)
class CountedEvent:
    """An event the embedding outlier share counted: its outlier score, monitored-event index, id and text."""

    score: float
    index: int
    event_id: str
    text: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"score": self.score, "index": self.index, "event_id": self.event_id, "text": self.text}

    def state(self) -> list[Any]:
        return [self.score, self.index, self.event_id, self.text]

    @classmethod
    def from_state(cls, s: list[Any], restrict: TextPolicy) -> CountedEvent:
        return cls(float(s[0]), int(s[1]), s[2], restrict(s[3]))


@dataclass(frozen=True, slots=True)
class Outlier:
    """One of the highest-scored events of the longest embedding window, with its entities."""

    score: float
    index: int  # monitored-event index
    event_id: str
    text: str | None
    entities: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"score": self.score, "index": self.index, "event_id": self.event_id, "text": self.text,
                "entities": self.entities}

    def state(self) -> list[Any]:
        return [self.score, self.index, self.event_id, self.text, self.entities]

    @classmethod
    def from_state(cls, s: list[Any], restrict: TextPolicy) -> Outlier:
        return cls(float(s[0]), int(s[1]), s[2], restrict(s[3]), s[4])


def _prediction_detail(event: Any, _i: int) -> dict[str, Any]:
    p = event.prediction
    return {} if p is None else {"prediction": {"label": p.label, "score": p.score}}


def _margin_detail(event: Any, i: int) -> dict[str, Any]:
    return {**_prediction_detail(event, i), "top_two": top_two(event.prediction.probabilities)}


class PageEvidence:
    """The page evidence of one monitor. ``keep_text``: an event's text as the monitor may keep it;
    ``restrict_text``: a text kept earlier, under the monitor's policy (see ``ModelMonitor``)."""

    def __init__(self, config: MonitorConfig, keep_text: TextPolicy, restrict_text: TextPolicy) -> None:
        self.config = config
        self._keep_text = keep_text
        self._restrict_text = restrict_text
        self.outliers: list[Outlier] = []
        self.marked: list[CountedEvent] = []  # last events embedding_outliers counted
        self.share_examples: dict[str, list[dict[str, Any]]] = {}  # last events tag_validity/span_boundary counted
        self.reset(())

    def reset(self, signals: tuple[str, ...]) -> None:
        """Start the in-memory evidence again (a new reference profile with these ``signals``): history,
        examples, recent embeddings and confidences, the page caches. Outliers and counted events stay."""
        cfg = self.config
        self.history = ScoreHistory(signals, cfg.history_points, cfg.history_events_per_point)
        self.share_history = ShareHistory(cfg.history_points, cfg.history_events_per_point)
        recent = max(cfg.distribution_windows)
        self.lowest_confidence = LowestScores(cfg.outlier_examples, recent, cfg.block_events, self._keep_text)
        self.smallest_margin = LowestScores(cfg.outlier_examples, recent, cfg.block_events, self._keep_text)
        self.margins_seen = False
        self.recent_embeddings = RecentEmbeddings(cfg.projection_points, self._keep_text)
        self.recent_confidences = RecentConfidences(cfg.confidence_sample)
        self.recent_span_lengths = RecentConfidences(cfg.confidence_sample)
        self._span_reference: tuple[int, dict[str, Any]] | None = None
        self._outlier_embeddings: dict[int, Any] = {}
        self._reference_view: tuple[int, ReferenceView | None, dict[str, Any]] | None = None
        self._page_cache: tuple[int, dict[str, Any]] | None = None

    def invalidate(self) -> None:
        """Forget the cached page views (they are computed again at the next page report)."""
        self._page_cache = None

    # -- fed with each monitored batch ------------------------------------------------------------------
    def track_outliers(self, scores: np.ndarray, event_pos: np.ndarray, events: list[Any], base: int) -> None:
        """The ``outlier_examples`` highest-scored events of the longest embedding window (``base``: the
        monitored events before this batch)."""
        k = self.config.outlier_examples
        if k == 0:
            return
        horizon = base + len(events) - max(self.config.embedding_windows)
        top = np.argsort(-scores)[:k]
        kept = [o for o in self.outliers if o.index >= horizon]
        for t in top:
            e = events[int(event_pos[t])]
            ents = [{"label": x.label, "start": x.start, "end": x.end, "score": x.score} for x in e.entities]
            kept.append(Outlier(float(scores[t]), base + int(event_pos[t]), e.event_id, self._keep_text(e.text), ents))
            if e.embedding is not None:
                self._outlier_embeddings[base + int(event_pos[t])] = e.embedding
        self.outliers = heapq.nlargest(k, kept, key=lambda o: o.score)
        keep = {o.index for o in self.outliers}
        self._outlier_embeddings = {i: v for i, v in self._outlier_embeddings.items() if i in keep}

    def track_marked(self, marks: np.ndarray, event_pos: np.ndarray, scores: np.ndarray, events: list[Any],
                      base: int) -> None:
        """The most recent events the outlier share counted (at most ``outlier_examples``)."""
        k = self.config.outlier_examples
        hit = np.flatnonzero(marks > 0)[-k:] if k else np.zeros(0, np.int64)
        for t in hit.tolist():
            e = events[int(event_pos[t])]
            text = self._keep_text(e.text)
            self.marked.append(CountedEvent(float(scores[t]), base + int(event_pos[t]), e.event_id, text))
        self.marked = self.marked[-k:] if k else []

    def track_share_examples(self, name: str, bad: np.ndarray, col: ItemColumn, events: list[Any], base: int,
                              context: int = 8) -> None:
        """The most recent events an event-share signal counted (at most ``outlier_examples``): for
        ``tag_validity`` the tokens around the first invalid tag (each with its tag and whether invalid),
        for ``span_boundary`` the event's entities, tokens and how many of its entities cross a boundary."""
        k = self.config.outlier_examples
        first = np.flatnonzero(bad)
        ev = col.event[first]
        keep = np.concatenate([[True], ev[1:] != ev[:-1]])  # the first bad unit of each event
        first, ev = first[keep][-k:], ev[keep][-k:]
        out = self.share_examples.setdefault(name, [])
        for j, e_pos in zip(first.tolist(), ev.tolist(), strict=True):
            e = events[e_pos]
            kept = self._restrict_text(e.text)  # None when texts are not kept; offsets hold when redacted
            item: dict[str, Any] = {"index": base + e_pos, "event_id": e.event_id,
                                    "text": self._keep_text(e.text)}
            lo = int(np.searchsorted(col.event, e_pos))
            hi = int(np.searchsorted(col.event, e_pos, side="right"))
            if name == "tag_validity":
                a, b = max(lo, j - context), min(hi, j + context + 1)
                item["tokens"] = [{"text": self._restrict_text(e.tokens[u - lo].text), "tag": e.tokens[u - lo].tag,
                                   "invalid": bool(bad[u])} for u in range(a, b)]
                item["first_token"] = a - lo
                item["tokens_in_event"] = hi - lo
            else:
                item["crossing_entities"] = int(np.count_nonzero(bad[lo:hi]))
                item["entities"] = [{"label": x.label, "start": x.start, "end": x.end,
                                     "text": None if kept is None or x.start is None or x.end is None
                                     else kept[x.start:x.end][:200]} for x in e.entities[:20]]
                item["tokens"] = [self._restrict_text(t.text) for t in e.tokens[:64]]
            out.append(item)
        self.share_examples[name] = out[-k:]

    def track_examples(self, cols: dict[str, ItemColumn], events: list[Any], base: int) -> None:
        """Lowest-confidence and smallest-margin examples, recent confidences: vectorised per batch."""
        n = len(events)
        ent, doc = cols["confidence"], cols["prediction_confidence"]
        pred = cols["prediction_label"]
        doc_labels: list[str] = []
        if len(doc):  # the predicted class of each scored document prediction
            at = np.searchsorted(pred.event, doc.event)
            doc_labels = [pred.values[int(i)] for i in at]
        self.recent_confidences.add(list(cols[SCORED_LABELS].values) + doc_labels,
                                    np.concatenate([ent.values, doc.values]))
        if self.config.outlier_examples == 0:
            return
        if len(ent) or len(doc):
            per_event, _ = per_event_min(np.concatenate([ent.values, doc.values]),
                                         np.concatenate([ent.event, doc.event]), n)
            self.lowest_confidence.offer(per_event, base, events, _prediction_detail)
        if len(pred):
            pos, margins = top_two_margins(events, pred.event)
            if pos.size:
                self.margins_seen = True
                per_event = np.full(n, np.inf)
                per_event[pos] = margins
                self.smallest_margin.offer(per_event, base, events, _margin_detail)

    # -- page views: computed when a page report is built, cached until new events arrive -------------
    def _reference_side(self, p: ReferenceProfile) -> tuple[ReferenceView | None, dict[str, Any]]:
        """The reference display sample in embedding coordinates and its per-label confidence quantiles
        (once per profile)."""
        if self._reference_view is not None and self._reference_view[0] == id(p):
            return self._reference_view[1], self._reference_view[2]
        sig = p.signals.get("embedding")
        view = (ReferenceView.build(sig.featurizer, p.sample, p.outlier_quantiles)
                if sig is not None and isinstance(sig.featurizer, EmbeddingFeaturizer) else None)
        ref_conf: dict[str, Any] = {}
        if p.sample is not None and p.sample.size:
            cols = p.sample.columns()
            labels: list[str] = list(cols[SCORED_LABELS].values) if SCORED_LABELS in cols else []
            scores = [np.asarray(cols["confidence"].values, np.float64)] if labels else []
            pred, doc = cols.get("prediction_label"), cols.get("prediction_confidence")
            if pred is not None and doc is not None and len(doc):
                at = np.searchsorted(pred.event, doc.event)
                labels += [pred.values[int(i)] for i in at]
                scores.append(np.asarray(doc.values, np.float64))
            if labels:
                codes = LabelCodes(cap=10**9)
                ref_conf = quantiles_by_label(codes.encode(labels), np.concatenate(scores), codes.names)
        self._reference_view = (id(p), view, ref_conf)
        return view, ref_conf

    def page_views(self, profile: ReferenceProfile, monitored_events: int) -> dict[str, Any]:
        """Examples with their nearest reference points, the projection, confidence by label and the
        outliers' neighbours: computed when a page report is built, cached until new events arrive
        (``monitored_events`` moved)."""
        if self._page_cache is not None and self._page_cache[0] == monitored_events:
            return self._page_cache[1]
        view, ref_conf = self._reference_side(profile)
        cur_conf = self.recent_confidences.quantiles()
        rows: list[dict[str, Any]] = []
        for label in sorted(set(ref_conf) | set(cur_conf)):
            r, c = ref_conf.get(label), cur_conf.get(label)
            rows.append({"label": label, "reference_count": r[0] if r else 0, "reference": r[1] if r else None,
                         "current_count": c[0] if c else 0, "current": c[1] if c else None,
                         "median_change": (c[1][2] - r[1][2]) if r and c else None})
        rows.sort(key=lambda x: (-abs(x["median_change"]) if x["median_change"] is not None else 0.0,
                                 -x["current_count"], x["label"]))
        low, margin = self.lowest_confidence.items, self.smallest_margin.items
        if view is not None:
            idx = [o.index for o in self.outliers]
            recent = self.recent_embeddings.arrays()
            near_cur, (near_low, near_margin, near_outliers) = page_lookups(
                view, recent.embeddings if len(recent.indices) else np.zeros((0, view.featurizer.dim), np.float32),
                [[x.embedding for x in low], [x.embedding for x in margin],
                 [self._outlier_embeddings.get(i) for i in idx]])
            near_out = dict(zip(idx, near_outliers, strict=True))
            projection: dict[str, Any] | None = {**projection_report(view, *recent, near_cur),
                                                 "reference_events": len(view), "current_events": len(recent.indices)}
        else:
            near_low, near_margin, near_out = [[] for _ in low], [[] for _ in margin], {}
            projection = None
        margin_note = None if self.margins_seen else (
            "no event carried prediction.probabilities for two or more classes: margins need per-class "
            "probabilities (text classification); entities carry a single score")
        page = {
            "examples": {
                "lowest_confidence": [{**x.as_dict(), "nearest_reference": nr} for x, nr in zip(low, near_low,
                                                                                               strict=True)],
                "smallest_margin": [{**x.as_dict(), "nearest_reference": nr} for x, nr in zip(margin, near_margin,
                                                                                            strict=True)],
                "margin_available": self.margins_seen, "margin_note": margin_note,
                "recent_events": self.lowest_confidence.n_buckets * self.lowest_confidence.bucket,
            },
            "projection": projection,
            "confidence_by_label": {"levels": list(QUANTILE_LEVELS), "current_sample": self.config.confidence_sample,
                                    "labels": rows},
            "outlier_neighbours": near_out,
        }
        self._page_cache = (monitored_events, page)
        return page

    def signal_evidence(self, name: str, win: SignalWindow, profile: ReferenceProfile) -> dict[str, Any]:
        """What a signal's page shows beside its score: its featurizer's view of the current windows."""
        feat = win.model.featurizer
        if isinstance(feat, OutlierShareFeaturizer):
            return self._outlier_evidence(win, feat)
        if isinstance(feat, LabelShareFeaturizer):
            return label_share_evidence(win, feat)
        if isinstance(feat, EventShareFeaturizer):
            return self._share_evidence(name, win, feat)
        if isinstance(feat, ClusterFeaturizer):
            return {"marking_levels": list(feat.levels), "marking_thresholds": list(feat.taus),
                    "windows": [{"window": w, "level": q, "statistic": name, **feat.window_report(cur[0], cur[1], j)}
                                for w in win.model.windows if (cur := win.windows.current_sums(w)) is not None
                                for j, (q, name) in enumerate(zip(feat.levels, feat.stat_names, strict=True))]}
        for w in sorted(win.model.windows, reverse=True):
            cur = win.windows.current_sums(w)
            if cur is not None and cur[1] > 0:
                sums, items = cur
                if isinstance(feat, CategoricalFeaturizer):
                    return {"window": w, "moved_labels": feat.moved(sums)}
                if isinstance(feat, BinnedFeaturizer):
                    out = {"window": w, "levels": list(feat.QUANTILE_LEVELS),
                           "reference_quantiles": [float(q) for q in feat.ref_quantiles],
                           "current_quantiles": feat.window_quantiles(sums)}
                    if name == "span_length":
                        out["by_label"] = self._span_length_by_label(profile)
                    return out
                if isinstance(feat, EmbeddingFeaturizer):
                    return {"window": w, "moved_directions": feat.moved_directions(sums, items)}
        return {}

    def _outlier_evidence(self, win: SignalWindow, feat: OutlierShareFeaturizer) -> dict[str, Any]:
        """Every full window's marked share against the expected and the alarming share, the share over
        time (``history``) and the most recent texts the signal counted."""
        windows = []
        for w in win.model.windows:
            cur = win.windows.current_sums(w)
            if cur is not None:
                windows.append({"window": w, **feat.share_report(cur[0], cur[1])})
        return {"marking_level": feat.level, "marking_threshold": feat.tau,
                "reference_exceedances": feat.exceedances, "scored_reference_items": feat.reference_items,
                "expected_share": feat.expected_share, "windows": windows,
                "counted": [o.as_dict() for o in self.marked]}

    def _share_evidence(self, name: str, win: SignalWindow, feat: EventShareFeaturizer) -> dict[str, Any]:
        """Every full window's marked-event share (and bad-unit share) against the share the reference
        predicts and the share that alarms; the most recent events counted."""
        windows = []
        for w in win.model.windows:
            cur = win.windows.current_sums(w)
            if cur is not None:
                windows.append({"window": w, **feat.share_report(cur[0], cur[1])})
        out: dict[str, Any] = {"reference_marked": feat.marked, "reference_events": feat.reference_items,
                               "expected_share": feat.expected_share, "windows": windows,
                               "examples": list(self.share_examples.get(name, []))}
        if isinstance(feat, TagValidityFeaturizer):
            out["scheme"] = feat.scheme
            out["scheme_source"] = win.model.calibration.get("scheme_source")
        return out

    def _span_length_by_label(self, p: ReferenceProfile) -> list[dict[str, Any]]:
        """Per entity label: reference and recent span-length quantiles (at ``QUANTILE_LEVELS``), largest
        change of the median first."""
        if self._span_reference is None or self._span_reference[0] != id(p):
            ref: dict[str, Any] = {}
            if p.sample is not None and p.sample.size:
                cols = p.sample.columns()
                if SPAN_LABELS in cols and "span_length" in cols:
                    codes = LabelCodes(cap=10**9)
                    ref = quantiles_by_label(codes.encode(list(cols[SPAN_LABELS].values)),
                                             np.asarray(cols["span_length"].values, np.float64), codes.names)
            self._span_reference = (id(p), ref)
        ref = self._span_reference[1]
        cur = self.recent_span_lengths.quantiles()
        rows: list[dict[str, Any]] = []
        for label in sorted(set(ref) | set(cur)):
            r, c = ref.get(label), cur.get(label)
            rows.append({"label": label, "reference_count": r[0] if r else 0, "reference": r[1] if r else None,
                         "current_count": c[0] if c else 0, "current": c[1] if c else None,
                         "median_change": (c[1][2] - r[1][2]) if r and c else None})
        rows.sort(key=lambda x: (-abs(x["median_change"]) if x["median_change"] is not None else 0.0,
                                 -x["current_count"], x["label"]))
        return rows


def label_share_evidence(win: SignalWindow, feat: LabelShareFeaturizer, top: int = 5) -> dict[str, Any]:
    """Labels by how far their share rose above the reference's, on the score scale (1 = threshold):
    each label's largest excess / threshold over the full windows."""
    best: dict[int, dict[str, Any]] = {}
    for j, w in enumerate(win.model.windows):
        cur = win.windows.current_sums(w)
        if cur is None or not cur[1] > 0:
            continue
        for row in feat.rising(cur[0]):
            i = feat.labels.index(str(row["label"]))
            score = float(row["excess"]) / float(win.model.thresholds[j, 0])
            if i not in best or score > best[i]["score"]:
                best[i] = {**row, "score": score, "window": w}
    ranked = sorted(best.values(), key=lambda r: (-r["score"], r["label"]))[:top]
    return {"rising_labels": ranked, "label": ranked[0]["label"] if ranked and ranked[0]["score"] > 0 else None}
