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
from collections.abc import Mapping
from dataclasses import dataclass
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
    Detail,
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
from .page_view import (
    BinnedEvidence,
    BoundaryExample,
    CategoricalEvidence,
    ClusterEvidence,
    ClusterWindow,
    ConfidenceByLabel,
    CountedEvent,
    EmbeddingEvidence,
    Entity,
    EventShareEvidence,
    Evidence,
    Example,
    Examples,
    LabelQuantiles,
    LabelShareEvidence,
    MovedDirection,
    MovedLabel,
    Neighbour,
    NoEvidence,
    OutlierShareEvidence,
    Prediction,
    Projection,
    RisingLabelRow,
    ShareExample,
    ShareWindow,
    TagExample,
    TagToken,
    TextPolicy,
    share_example,
)
from .projection import ReferenceView, page_lookups, projection
from .reference import ReferenceProfile
from .signals import SCORED_LABELS, SPAN_LABELS

__all__ = ["PageBlocks", "PageEvidence", "label_share_evidence"]


@dataclass(frozen=True, slots=True)
class PageBlocks:
    """The page blocks computed when a page is built (``PageEvidence.page_blocks``): the examples with their
    nearest reference points, the projection (None without an embedding signal), confidence by label, and
    each outlier's nearest reference points (by monitored-event index)."""

    examples: Examples
    projection: Projection | None
    confidence_by_label: ConfidenceByLabel
    outlier_neighbours: Mapping[int, tuple[Neighbour, ...]]


def _prediction_detail(event: Any, _i: int) -> Detail:
    p = event.prediction
    return (None if p is None else Prediction(p.label, p.score)), None


def _margin_detail(event: Any, i: int) -> Detail:
    return _prediction_detail(event, i)[0], top_two(event.prediction.probabilities)


def _quantile_rows(ref: Mapping[str, tuple[int, list[float]]],
                   cur: Mapping[str, tuple[int, list[float]]]) -> tuple[LabelQuantiles, ...]:
    """Per label: reference and recent quantiles (at ``QUANTILE_LEVELS``), largest change of the median first."""
    rows = []
    for label in sorted(set(ref) | set(cur)):
        r, c = ref.get(label), cur.get(label)
        rows.append(LabelQuantiles(label, r[0] if r else 0, None if r is None else tuple(r[1]), c[0] if c else 0,
                                   None if c is None else tuple(c[1]), (c[1][2] - r[1][2]) if r and c else None))
    rows.sort(key=lambda x: (-abs(x.median_change) if x.median_change is not None else 0.0, -x.current_count,
                             x.label))
    return tuple(rows)


def _share_window(window: int, r: Mapping[str, float | int]) -> ShareWindow:
    """A window of a share featurizer's ``share_report`` (``units``... for event-share signals only)."""
    return ShareWindow(window, int(r["items"]), int(r["marked"]), r["share"], r["expected_share"],
                       int(r["alarm_count"]), r["threshold_share"],
                       None if "units" not in r else int(r["units"]), None if "units" not in r else int(r["bad_units"]),
                       r.get("unit_share"))


class PageEvidence:
    """The page evidence of one monitor. ``keep_text``: an event's text as the monitor may keep it;
    ``restrict_text``: a text kept earlier, under the monitor's policy (see ``ModelMonitor``).

    The evidence is held as the page view's own classes (``nlpmon.monitor.page_view``): the outliers are
    ``Example`` (without neighbours), the counted events ``CountedEvent``, the event-share examples
    ``TagExample`` / ``BoundaryExample``; each carries its snapshot form (``state`` / ``from_state``)."""

    def __init__(self, config: MonitorConfig, keep_text: TextPolicy, restrict_text: TextPolicy) -> None:
        self.config = config
        self._keep_text = keep_text
        self._restrict_text = restrict_text
        self.outliers: list[Example] = []
        self.marked: list[CountedEvent] = []  # last events embedding_outliers counted
        self.share_examples: dict[str, list[ShareExample]] = {}  # last events tag_validity/span_boundary counted
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
        self._span_reference: tuple[int, dict[str, tuple[int, list[float]]]] | None = None
        self._outlier_embeddings: dict[int, Any] = {}
        self._reference_view: tuple[int, ReferenceView | None, dict[str, tuple[int, list[float]]]] | None = None
        self._page_cache: tuple[int, PageBlocks] | None = None

    def invalidate(self) -> None:
        """Forget the cached page blocks (they are computed again at the next page view)."""
        self._page_cache = None

    # -- snapshot ---------------------------------------------------------------------------------------
    def share_examples_state(self) -> dict[str, list[Any]]:
        """The event-share examples in the snapshot (their JSON, as snapshots always held them)."""
        return {k: [x.state() for x in v] for k, v in self.share_examples.items()}

    def load_snapshot(self, outliers: list[Any], marked: list[Any], share_examples: dict[str, list[Any]]) -> None:
        """The outliers, counted events and event-share examples of a snapshot, their texts under the
        monitor's policy (``restrict_text``)."""
        r = self._restrict_text
        self.outliers = [Example.from_state(o, r) for o in outliers]
        self.marked = [CountedEvent.from_state(o, r) for o in marked]
        self.share_examples = {k: [share_example(x).restricted(r) for x in v] for k, v in share_examples.items()}

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
            ents = tuple(Entity(x.label, x.start, x.end, x.score) for x in e.entities)
            kept.append(Example(float(scores[t]), base + int(event_pos[t]), e.event_id, self._keep_text(e.text), ents))
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
        r = self._restrict_text
        for j, e_pos in zip(first.tolist(), ev.tolist(), strict=True):
            e = events[e_pos]
            kept = r(e.text)  # None when texts are not kept; offsets hold when redacted
            text = self._keep_text(e.text)
            lo = int(np.searchsorted(col.event, e_pos))
            hi = int(np.searchsorted(col.event, e_pos, side="right"))
            if name == "tag_validity":
                a, b = max(lo, j - context), min(hi, j + context + 1)
                out.append(TagExample(base + e_pos, e.event_id, text, tuple(
                    TagToken(r(e.tokens[u - lo].text), e.tokens[u - lo].tag, bool(bad[u])) for u in range(a, b)),
                    a - lo, hi - lo))
            else:
                out.append(BoundaryExample(
                    base + e_pos, e.event_id, text, int(np.count_nonzero(bad[lo:hi])),
                    tuple(Entity(x.label, x.start, x.end, text=None if kept is None or x.start is None
                                 or x.end is None else kept[x.start:x.end][:200], with_text=True)
                          for x in e.entities[:20]),
                    tuple(r(t.text) for t in e.tokens[:64])))
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

    # -- page blocks: computed when a page view is built, cached until new events arrive ---------------
    def _reference_side(self, p: ReferenceProfile) -> tuple[ReferenceView | None, dict[str, tuple[int, list[float]]]]:
        """The reference display sample in embedding coordinates and its per-label confidence quantiles
        (once per profile)."""
        if self._reference_view is not None and self._reference_view[0] == id(p):
            return self._reference_view[1], self._reference_view[2]
        sig = p.signals.get("embedding")
        view = (ReferenceView.build(sig.featurizer, p.sample, p.outlier_quantiles)
                if sig is not None and isinstance(sig.featurizer, EmbeddingFeaturizer) else None)
        ref_conf: dict[str, tuple[int, list[float]]] = {}
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

    def page_blocks(self, profile: ReferenceProfile, monitored_events: int) -> PageBlocks:
        """Examples with their nearest reference points, the projection, confidence by label and the
        outliers' neighbours: computed when a page view is built, cached until new events arrive
        (``monitored_events`` moved)."""
        if self._page_cache is not None and self._page_cache[0] == monitored_events:
            return self._page_cache[1]
        view, ref_conf = self._reference_side(profile)
        rows = _quantile_rows(ref_conf, self.recent_confidences.quantiles())
        low, margin = self.lowest_confidence.items, self.smallest_margin.items
        near_out: dict[int, tuple[Neighbour, ...]] = {}
        if view is not None:
            idx = [o.index for o in self.outliers]
            recent = self.recent_embeddings.arrays()
            near_cur, (near_low, near_margin, near_outliers) = page_lookups(
                view, recent.embeddings if len(recent.indices) else np.zeros((0, view.featurizer.dim), np.float32),
                [[x.embedding for x in low], [x.embedding for x in margin],
                 [self._outlier_embeddings.get(i) for i in idx]])
            near_out = dict(zip(idx, near_outliers, strict=True))
            points: Projection | None = projection(view, *recent, near_cur)
        else:
            near_low, near_margin = [() for _ in low], [() for _ in margin]
            points = None
        margin_note = None if self.margins_seen else (
            "no event carried prediction.probabilities for two or more classes: margins need per-class "
            "probabilities (text classification); entities carry a single score")
        page = PageBlocks(
            Examples(tuple(x.view(nr) for x, nr in zip(low, near_low, strict=True)),
                     tuple(x.view(nr) for x, nr in zip(margin, near_margin, strict=True)),
                     self.margins_seen, margin_note, self.lowest_confidence.n_buckets * self.lowest_confidence.bucket),
            points, ConfidenceByLabel(tuple(float(x) for x in QUANTILE_LEVELS), self.config.confidence_sample, rows),
            near_out)
        self._page_cache = (monitored_events, page)
        return page

    def signal_evidence(self, name: str, win: SignalWindow, profile: ReferenceProfile) -> Evidence:
        """What a signal's page shows beside its score: its featurizer's view of the current windows."""
        feat = win.model.featurizer
        if isinstance(feat, OutlierShareFeaturizer):
            return self._outlier_evidence(win, feat)
        if isinstance(feat, LabelShareFeaturizer):
            return label_share_evidence(win, feat)
        if isinstance(feat, EventShareFeaturizer):
            return self._share_evidence(name, win, feat)
        if isinstance(feat, ClusterFeaturizer):
            windows = [ClusterWindow(w, q, stat, int(r["items"]), int(r["marked"]), float(r["expected_marked"]),
                                     float(r["mean_pair_cosine"]))
                       for w in win.model.windows if (cur := win.windows.current_sums(w)) is not None
                       for j, (q, stat) in enumerate(zip(feat.levels, feat.stat_names, strict=True))
                       for r in (feat.window_report(cur[0], cur[1], j),)]
            return ClusterEvidence(tuple(feat.levels), tuple(feat.taus), tuple(windows))
        for w in sorted(win.model.windows, reverse=True):
            cur = win.windows.current_sums(w)
            if cur is not None and cur[1] > 0:
                sums, items = cur
                if isinstance(feat, CategoricalFeaturizer):
                    return CategoricalEvidence(w, tuple(
                        MovedLabel(str(m["label"]), float(m["reference"]), float(m["current"]), float(m["change"]))
                        for m in feat.moved(sums)))
                if isinstance(feat, BinnedFeaturizer):
                    return BinnedEvidence(w, tuple(feat.QUANTILE_LEVELS), tuple(float(q) for q in feat.ref_quantiles),
                                          tuple(feat.window_quantiles(sums)),
                                          self._span_length_by_label(profile) if name == "span_length" else None)
                if isinstance(feat, EmbeddingFeaturizer):
                    return EmbeddingEvidence(w, tuple(
                        MovedDirection(int(m["component"]), m.get("shift_sd"), m.get("residual_shift_sd"))
                        for m in feat.moved_directions(sums, items)))
        return NoEvidence()

    def _outlier_evidence(self, win: SignalWindow, feat: OutlierShareFeaturizer) -> OutlierShareEvidence:
        """Every full window's marked share against the expected and the alarming share, and the most
        recent texts the signal counted."""
        windows = tuple(_share_window(w, feat.share_report(cur[0], cur[1])) for w in win.model.windows
                        if (cur := win.windows.current_sums(w)) is not None)
        return OutlierShareEvidence(feat.level, feat.tau, feat.exceedances, feat.reference_items, feat.expected_share,
                                    windows, tuple(self.marked))

    def _share_evidence(self, name: str, win: SignalWindow, feat: EventShareFeaturizer) -> EventShareEvidence:
        """Every full window's marked-event share (and bad-unit share) against the share the reference
        predicts and the share that alarms; the most recent events counted."""
        windows = tuple(_share_window(w, feat.share_report(cur[0], cur[1])) for w in win.model.windows
                        if (cur := win.windows.current_sums(w)) is not None)
        examples = tuple(self.share_examples.get(name, []))
        if isinstance(feat, TagValidityFeaturizer):
            return EventShareEvidence(feat.marked, feat.reference_items, feat.expected_share, windows, examples,
                                      True, feat.scheme, win.model.calibration.get("scheme_source"))
        return EventShareEvidence(feat.marked, feat.reference_items, feat.expected_share, windows, examples)

    def _span_length_by_label(self, p: ReferenceProfile) -> tuple[LabelQuantiles, ...]:
        """Per entity label: reference and recent span-length quantiles (at ``QUANTILE_LEVELS``), largest
        change of the median first."""
        if self._span_reference is None or self._span_reference[0] != id(p):
            ref: dict[str, tuple[int, list[float]]] = {}
            if p.sample is not None and p.sample.size:
                cols = p.sample.columns()
                if SPAN_LABELS in cols and "span_length" in cols:
                    codes = LabelCodes(cap=10**9)
                    ref = quantiles_by_label(codes.encode(list(cols[SPAN_LABELS].values)),
                                             np.asarray(cols["span_length"].values, np.float64), codes.names)
            self._span_reference = (id(p), ref)
        return _quantile_rows(self._span_reference[1], self.recent_span_lengths.quantiles())


def label_share_evidence(win: SignalWindow, feat: LabelShareFeaturizer, top: int = 5) -> LabelShareEvidence:
    """Labels by how far their share rose above the reference's, on the score scale (1 = threshold):
    each label's largest excess / threshold over the full windows."""
    best: dict[int, RisingLabelRow] = {}
    for j, w in enumerate(win.model.windows):
        cur = win.windows.current_sums(w)
        if cur is None or not cur[1] > 0:
            continue
        for row in feat.rising(cur[0]):
            i = feat.labels.index(str(row["label"]))
            score = float(row["excess"]) / float(win.model.thresholds[j, 0])
            if i not in best or score > best[i].score:
                best[i] = RisingLabelRow(str(row["label"]), float(row["reference"]), float(row["current"]),
                                         float(row["count"]), float(row["excess"]), score, w)
    ranked = tuple(sorted(best.values(), key=lambda r: (-r.score, r.label))[:top])
    return LabelShareEvidence(ranked, ranked[0].label if ranked and ranked[0].score > 0 else None)
