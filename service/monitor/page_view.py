"""The typed, frozen page view of one (model, version): what ``/models/<model>``, ``/api/models/<model>`` and
``replay --report`` show. Pure.

Built by the core only when a page or the API asks (``ModelMonitor.page_view``, ``Pipeline.page_views``; the
page evidence behind it is cached until new events arrive). ``ModelPage.to_json()`` is the JSON of
docs/api.md, key for key; ``ModelPage.from_json`` reads such JSON back (a member's report, a saved
report), so the pages render one typed object whatever its source.

One class per evidence kind (``SignalPage.evidence``): categorical shares, binned quantiles (with span
lengths per label), embedding directions, the outlier share, the event shares (tag validity, span
boundaries), embedding clusters and per-label shares; ``NoEvidence`` while no window holds data. The page
evidence (``nlpmon.monitor.page_evidence``) builds these classes directly, and the kinds it keeps in the
monitor's snapshot (the outliers as ``Example``, ``CountedEvent``, ``TagExample``, ``BoundaryExample``)
carry their snapshot form too (``state`` / ``from_state``). The quality block is
``nlpmon.quality.report.QualityReport`` (docs/quality.md). ``ModelSummary`` is a model's row of
``/api/models`` and the overview, ``ModelsPage`` one page of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from ..quality.report import QualityReport

__all__ = [
    "BinnedEvidence", "BoundaryExample", "CalibrationPending", "CategoricalEvidence", "ClusterEvidence",
    "ClusterWindow", "ConfidenceByLabel", "EmbeddingEvidence", "Entity", "EventShareEvidence", "Evidence", "Example",
    "History", "JsonObject", "JsonValue", "LabelQuantiles", "LabelShareEvidence", "ModelPage", "ModelSummary",
    "ModelsPage", "MovedDirection", "MovedLabel", "Neighbour", "NoEvidence", "OutlierShareEvidence",
    "OutlierShareHistory", "Prediction", "Projection", "ReferenceBlock", "RisingLabelRow", "ShareWindow",
    "SignalHistory", "SignalPage", "SignalSummary", "TagExample", "TagToken", "Texts", "Throughput", "TopClass",
    "WindowStatistic",
]

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
JsonObject: TypeAlias = dict[str, JsonValue]
Raw = Mapping[str, Any]  # parsed JSON at the ``from_json`` / ``from_state`` boundary only
#: A text kept earlier, under the monitor's text policy (``ModelMonitor._restrict_text``): used by ``from_state``.
TextPolicy = Callable[[str | None], str | None]


def _tuple(xs: Sequence[Any] | None) -> tuple[Any, ...]:
    return tuple(xs or ())


def _opt_tuple(xs: Sequence[Any] | None) -> tuple[Any, ...] | None:
    return None if xs is None else tuple(xs)


def _list(xs: tuple[Any, ...] | None) -> list[Any] | None:
    return None if xs is None else list(xs)


# -- small rows ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Entity:
    """An entity of an example event. ``text``: only in span-boundary examples (``with_text``)."""

    label: str
    start: int | None
    end: int | None
    score: float | None = None
    text: str | None = None
    with_text: bool = False  # the JSON has "text" instead of "score"

    def to_json(self) -> JsonObject:
        if self.with_text:
            return {"label": self.label, "start": self.start, "end": self.end, "text": self.text}
        return {"label": self.label, "start": self.start, "end": self.end, "score": self.score}

    @classmethod
    def from_json(cls, d: Raw) -> Entity:
        if "score" not in d and "text" in d:
            return cls(d["label"], d["start"], d["end"], text=d["text"], with_text=True)
        return cls(d["label"], d.get("start"), d.get("end"), d.get("score"))

    def restricted(self, restrict: TextPolicy) -> Entity:
        """This entity with its text under ``restrict`` (a restored snapshot under the monitor's policy)."""
        return self if not self.with_text else Entity(self.label, self.start, self.end, self.score,
                                                      restrict(self.text), True)


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A reference point near an example: its index in the display sample, distance and text."""

    reference: int
    distance: float
    text: str | None

    def to_json(self) -> JsonObject:
        return {"reference": self.reference, "distance": self.distance, "text": self.text}

    @classmethod
    def from_json(cls, d: Raw) -> Neighbour:
        return cls(d["reference"], d["distance"], d.get("text"))


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str | None
    score: float | None

    def to_json(self) -> JsonObject:
        return {"label": self.label, "score": self.score}


@dataclass(frozen=True, slots=True)
class TopClass:
    label: str
    probability: float

    def to_json(self) -> JsonObject:
        return {"label": self.label, "probability": self.probability}


@dataclass(frozen=True, slots=True)
class Example:
    """An example event (an outlier, a lowest-confidence or smallest-margin prediction) with its nearest
    reference points. ``prediction`` and ``top_two`` are absent from the JSON when None."""

    score: float
    index: int
    event_id: str
    text: str | None
    entities: tuple[Entity, ...]
    nearest_reference: tuple[Neighbour, ...] = ()
    prediction: Prediction | None = None
    top_two: tuple[TopClass, ...] | None = None

    def to_json(self) -> JsonObject:
        out: JsonObject = {"score": self.score, "index": self.index, "event_id": self.event_id, "text": self.text,
                           "entities": [e.to_json() for e in self.entities]}
        if self.prediction is not None:
            out["prediction"] = self.prediction.to_json()
        if self.top_two is not None:
            out["top_two"] = [t.to_json() for t in self.top_two]
        out["nearest_reference"] = [n.to_json() for n in self.nearest_reference]
        return out

    @classmethod
    def from_json(cls, d: Raw) -> Example:
        p = d.get("prediction")
        t = d.get("top_two")
        return cls(d["score"], d["index"], d["event_id"], d.get("text"),
                   tuple(Entity.from_json(e) for e in d.get("entities") or ()),
                   tuple(Neighbour.from_json(n) for n in d.get("nearest_reference") or ()),
                   None if p is None else Prediction(p.get("label"), p.get("score")),
                   None if t is None else tuple(TopClass(x["label"], x["probability"]) for x in t))

    def state(self) -> list[Any]:
        """The snapshot form of an outlier (``ModelMonitor.state``): score, index, id, text, entities."""
        return [self.score, self.index, self.event_id, self.text, [e.to_json() for e in self.entities]]

    @classmethod
    def from_state(cls, s: Sequence[Any], restrict: TextPolicy) -> Example:
        """An outlier of ``state``, its text under ``restrict`` (no neighbours: they are looked up per page)."""
        return cls(float(s[0]), int(s[1]), s[2], restrict(s[3]), tuple(Entity.from_json(e) for e in s[4]))


@dataclass(frozen=True, slots=True)
class LabelQuantiles:
    """A label's quantiles (at the ``QUANTILE_LEVELS``) in the reference sample and the recent events."""

    label: str
    reference_count: int
    reference: tuple[float, ...] | None
    current_count: int
    current: tuple[float, ...] | None
    median_change: float | None

    def to_json(self) -> JsonObject:
        return {"label": self.label, "reference_count": self.reference_count, "reference": _list(self.reference),
                "current_count": self.current_count, "current": _list(self.current),
                "median_change": self.median_change}

    @classmethod
    def from_json(cls, d: Raw) -> LabelQuantiles:
        return cls(d["label"], d.get("reference_count", 0), _opt_tuple(d.get("reference")),
                   d.get("current_count", 0), _opt_tuple(d.get("current")), d.get("median_change"))


# -- evidence, one class per kind -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NoEvidence:
    """No window holds data yet (``{}``)."""

    def to_json(self) -> JsonObject:
        return {}


@dataclass(frozen=True, slots=True)
class MovedLabel:
    label: str
    reference: float
    current: float
    change: float

    def to_json(self) -> JsonObject:
        return {"label": self.label, "reference": self.reference, "current": self.current, "change": self.change}


@dataclass(frozen=True, slots=True)
class CategoricalEvidence:
    """Every label's reference and current share over the longest window with data, largest change first."""

    window: int
    moved_labels: tuple[MovedLabel, ...]

    def to_json(self) -> JsonObject:
        return {"window": self.window, "moved_labels": [m.to_json() for m in self.moved_labels]}


@dataclass(frozen=True, slots=True)
class BinnedEvidence:
    """Reference and current quantiles over the longest window with data; ``by_label`` for span lengths."""

    window: int
    levels: tuple[float, ...]
    reference_quantiles: tuple[float, ...]
    current_quantiles: tuple[float | None, ...]
    by_label: tuple[LabelQuantiles, ...] | None = None

    def to_json(self) -> JsonObject:
        out: JsonObject = {"window": self.window, "levels": list(self.levels),
                           "reference_quantiles": list(self.reference_quantiles),
                           "current_quantiles": list(self.current_quantiles)}
        if self.by_label is not None:
            out["by_label"] = [r.to_json() for r in self.by_label]
        return out


@dataclass(frozen=True, slots=True)
class MovedDirection:
    """A principal direction whose window mean moved (``component`` -1: the residual, ``shift_sd`` None)."""

    component: int
    shift_sd: float | None = None
    residual_shift_sd: float | None = None

    def to_json(self) -> JsonObject:
        if self.component == -1:
            return {"component": -1, "residual_shift_sd": self.residual_shift_sd}
        return {"component": self.component, "shift_sd": self.shift_sd}


@dataclass(frozen=True, slots=True)
class EmbeddingEvidence:
    window: int
    moved_directions: tuple[MovedDirection, ...]

    def to_json(self) -> JsonObject:
        return {"window": self.window, "moved_directions": [m.to_json() for m in self.moved_directions]}


@dataclass(frozen=True, slots=True)
class ShareWindow:
    """A full window's marked share against the share the reference predicts and the share that alarms;
    ``units``/``bad_units``/``unit_share`` for event-share signals only."""

    window: int
    items: int
    marked: int
    share: float
    expected_share: float
    alarm_count: int
    threshold_share: float
    units: int | None = None
    bad_units: int | None = None
    unit_share: float | None = None

    def to_json(self) -> JsonObject:
        out: JsonObject = {"window": self.window, "items": self.items, "marked": self.marked, "share": self.share,
                           "expected_share": self.expected_share, "alarm_count": self.alarm_count,
                           "threshold_share": self.threshold_share}
        if self.units is not None:
            out.update(units=self.units, bad_units=self.bad_units, unit_share=self.unit_share)
        return out

    @classmethod
    def from_json(cls, d: Raw) -> ShareWindow:
        return cls(d["window"], d["items"], d["marked"], d["share"], d["expected_share"], d["alarm_count"],
                   d["threshold_share"], d.get("units"), d.get("bad_units"), d.get("unit_share"))


@dataclass(frozen=True, slots=True)
class CountedEvent:
    """An event the embedding outlier share counted: its outlier score, monitored-event index, id and text."""

    score: float
    index: int
    event_id: str
    text: str | None

    def to_json(self) -> JsonObject:
        return {"score": self.score, "index": self.index, "event_id": self.event_id, "text": self.text}

    @classmethod
    def from_json(cls, d: Raw) -> CountedEvent:
        return cls(d["score"], d["index"], d["event_id"], d.get("text"))

    def state(self) -> list[Any]:
        """The snapshot form (``ModelMonitor.state``)."""
        return [self.score, self.index, self.event_id, self.text]

    @classmethod
    def from_state(cls, s: Sequence[Any], restrict: TextPolicy) -> CountedEvent:
        return cls(float(s[0]), int(s[1]), s[2], restrict(s[3]))


@dataclass(frozen=True, slots=True)
class OutlierShareEvidence:
    """``embedding_outliers``: the marking level, every full window's share, the events it counted."""

    marking_level: float
    marking_threshold: float
    reference_exceedances: int
    scored_reference_items: int
    expected_share: float
    windows: tuple[ShareWindow, ...]
    counted: tuple[CountedEvent, ...]

    def to_json(self) -> JsonObject:
        return {"marking_level": self.marking_level, "marking_threshold": self.marking_threshold,
                "reference_exceedances": self.reference_exceedances,
                "scored_reference_items": self.scored_reference_items, "expected_share": self.expected_share,
                "windows": [w.to_json() for w in self.windows], "counted": [c.to_json() for c in self.counted]}


@dataclass(frozen=True, slots=True)
class TagToken:
    text: str | None
    tag: str | None
    invalid: bool

    def to_json(self) -> JsonObject:
        return {"text": self.text, "tag": self.tag, "invalid": self.invalid}


@dataclass(frozen=True, slots=True)
class TagExample:
    """A ``tag_validity`` example: the tokens around its first invalid tag."""

    index: int
    event_id: str
    text: str | None
    tokens: tuple[TagToken, ...]
    first_token: int
    tokens_in_event: int

    def to_json(self) -> JsonObject:
        return {"index": self.index, "event_id": self.event_id, "text": self.text,
                "tokens": [t.to_json() for t in self.tokens], "first_token": self.first_token,
                "tokens_in_event": self.tokens_in_event}

    def state(self) -> JsonObject:
        """The snapshot form (``ModelMonitor.state``): the JSON."""
        return self.to_json()

    def restricted(self, restrict: TextPolicy) -> TagExample:
        """This example with its texts under ``restrict`` (a restored snapshot under the monitor's policy)."""
        return TagExample(self.index, self.event_id, restrict(self.text),
                          tuple(TagToken(restrict(t.text), t.tag, t.invalid) for t in self.tokens),
                          self.first_token, self.tokens_in_event)


@dataclass(frozen=True, slots=True)
class BoundaryExample:
    """A ``span_boundary`` example: its entities (with text), tokens and how many entities cross one."""

    index: int
    event_id: str
    text: str | None
    crossing_entities: int
    entities: tuple[Entity, ...]
    tokens: tuple[str | None, ...]

    def to_json(self) -> JsonObject:
        return {"index": self.index, "event_id": self.event_id, "text": self.text,
                "crossing_entities": self.crossing_entities, "entities": [e.to_json() for e in self.entities],
                "tokens": list(self.tokens)}

    def state(self) -> JsonObject:
        """The snapshot form (``ModelMonitor.state``): the JSON."""
        return self.to_json()

    def restricted(self, restrict: TextPolicy) -> BoundaryExample:
        """This example with its texts under ``restrict`` (a restored snapshot under the monitor's policy)."""
        return BoundaryExample(self.index, self.event_id, restrict(self.text), self.crossing_entities,
                               tuple(e.restricted(restrict) for e in self.entities),
                               tuple(restrict(t) for t in self.tokens))


ShareExample: TypeAlias = TagExample | BoundaryExample


def share_example(d: Raw) -> ShareExample:
    """The example class of an event-share example's JSON (also its snapshot form)."""
    if "crossing_entities" in d:
        return BoundaryExample(d["index"], d["event_id"], d.get("text"), d["crossing_entities"],
                               tuple(Entity(x["label"], x.get("start"), x.get("end"), text=x.get("text"),
                                            with_text=True) for x in d.get("entities") or ()),
                               tuple(d.get("tokens") or ()))
    return TagExample(d["index"], d["event_id"], d.get("text"),
                      tuple(TagToken(t.get("text"), t.get("tag"), bool(t.get("invalid")))
                            for t in d.get("tokens") or ()), d.get("first_token", 0), d.get("tokens_in_event", 0))


@dataclass(frozen=True, slots=True)
class EventShareEvidence:
    """``tag_validity``, ``span_boundary``: marked-event shares per window and the latest events counted;
    ``scheme`` (and its source) for tag validity only."""

    reference_marked: int
    reference_events: int
    expected_share: float
    windows: tuple[ShareWindow, ...]
    examples: tuple[ShareExample, ...]
    has_scheme: bool = False
    scheme: str | None = None
    scheme_source: str | None = None

    def to_json(self) -> JsonObject:
        out: JsonObject = {"reference_marked": self.reference_marked, "reference_events": self.reference_events,
                           "expected_share": self.expected_share, "windows": [w.to_json() for w in self.windows],
                           "examples": [x.to_json() for x in self.examples]}
        if self.has_scheme:
            out["scheme"] = self.scheme
            out["scheme_source"] = self.scheme_source
        return out


@dataclass(frozen=True, slots=True)
class ClusterWindow:
    """One (window, marking level) of ``embedding_clusters``; ``statistic`` names the level's statistic."""

    window: int
    level: float
    statistic: str
    items: int
    marked: int
    expected_marked: float
    mean_pair_cosine: float

    def to_json(self) -> JsonObject:
        return {"window": self.window, "level": self.level, "statistic": self.statistic, "items": self.items,
                "marked": self.marked, "expected_marked": self.expected_marked,
                "mean_pair_cosine": self.mean_pair_cosine}


@dataclass(frozen=True, slots=True)
class ClusterEvidence:
    """``embedding_clusters``: per marking level and window, the marked events and how alike they are."""

    marking_levels: tuple[float, ...]
    marking_thresholds: tuple[float, ...]
    windows: tuple[ClusterWindow, ...]

    def to_json(self) -> JsonObject:
        return {"marking_levels": list(self.marking_levels), "marking_thresholds": list(self.marking_thresholds),
                "windows": [w.to_json() for w in self.windows]}


@dataclass(frozen=True, slots=True)
class RisingLabelRow:
    """A label whose share rose: shares, count, excess, score (1 = threshold) and the window it peaked in."""

    label: str
    reference: float
    current: float
    count: float
    excess: float
    score: float
    window: int

    def to_json(self) -> JsonObject:
        return {"label": self.label, "reference": self.reference, "current": self.current, "count": self.count,
                "excess": self.excess, "score": self.score, "window": self.window}


@dataclass(frozen=True, slots=True)
class LabelShareEvidence:
    """Per-label share signals: the labels that rose most, and the top one when it rose at all."""

    rising_labels: tuple[RisingLabelRow, ...]
    label: str | None

    def to_json(self) -> JsonObject:
        return {"rising_labels": [r.to_json() for r in self.rising_labels], "label": self.label}


Evidence: TypeAlias = (NoEvidence | CategoricalEvidence | BinnedEvidence | EmbeddingEvidence | OutlierShareEvidence
                       | EventShareEvidence | ClusterEvidence | LabelShareEvidence)


def evidence_from_json(d: Raw) -> Evidence:
    """The evidence class of a signal's ``evidence`` JSON (by its keys: each kind has its own)."""
    if not d:
        return NoEvidence()
    if "moved_labels" in d:
        return CategoricalEvidence(d["window"], tuple(MovedLabel(m["label"], m["reference"], m["current"],
                                                                 m["change"]) for m in d["moved_labels"]))
    if "levels" in d:
        by = d.get("by_label")
        return BinnedEvidence(d["window"], tuple(d["levels"]), tuple(d["reference_quantiles"]),
                              tuple(d["current_quantiles"]),
                              None if by is None else tuple(LabelQuantiles.from_json(r) for r in by))
    if "moved_directions" in d:
        return EmbeddingEvidence(d["window"], tuple(
            MovedDirection(m["component"], m.get("shift_sd"), m.get("residual_shift_sd"))
            for m in d["moved_directions"]))
    if "rising_labels" in d:
        return LabelShareEvidence(tuple(RisingLabelRow(r["label"], r["reference"], r["current"], r["count"],
                                                       r["excess"], r["score"], r["window"])
                                        for r in d["rising_labels"]), d.get("label"))
    if "counted" in d:
        return OutlierShareEvidence(d["marking_level"], d["marking_threshold"], d["reference_exceedances"],
                                    d["scored_reference_items"], d["expected_share"],
                                    tuple(ShareWindow.from_json(w) for w in d["windows"]),
                                    tuple(CountedEvent.from_json(c) for c in d["counted"]))
    if "reference_marked" in d:
        return EventShareEvidence(d["reference_marked"], d["reference_events"], d["expected_share"],
                                  tuple(ShareWindow.from_json(w) for w in d["windows"]),
                                  tuple(share_example(x) for x in d["examples"]), "scheme" in d,
                                  d.get("scheme"), d.get("scheme_source"))
    if "marking_levels" in d:
        return ClusterEvidence(tuple(d["marking_levels"]), tuple(d["marking_thresholds"]), tuple(
            ClusterWindow(w["window"], w["level"], w["statistic"], w["items"], w["marked"], w["expected_marked"],
                          w["mean_pair_cosine"])
            for w in d["windows"]))
    raise ValueError(f"unknown signal evidence with keys {sorted(d)}")


# -- one signal ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WindowStatistic:
    """The latest value of one (window, statistic) of a signal, with its calibrated threshold."""

    window: int
    statistic: str
    value: float | None
    threshold: float

    def to_json(self) -> JsonObject:
        return {"window": self.window, "statistic": self.statistic, "value": self.value, "threshold": self.threshold}


@dataclass(frozen=True, slots=True)
class SignalPage:
    """One signal: latest score (1 = threshold) with its window and statistic, drift flag, alarms raised,
    every (window, statistic)'s latest value, its evidence and the windows not evaluated."""

    name: str
    score: float
    window: int
    statistic: str | None
    drift: bool
    alarms: int
    windows: tuple[WindowStatistic, ...]
    evidence: Evidence
    windows_not_evaluated: tuple[int, ...] = ()
    threshold: float = 1.0

    def to_json(self) -> JsonObject:
        return {"score": self.score, "window": self.window, "statistic": self.statistic,
                "threshold": self.threshold, "drift": self.drift, "alarms": self.alarms,
                "windows": [w.to_json() for w in self.windows], "evidence": self.evidence.to_json(),
                "windows_not_evaluated": list(self.windows_not_evaluated)}

    @classmethod
    def from_json(cls, name: str, d: Raw) -> SignalPage:
        return cls(name, d.get("score", 0.0), d.get("window", 0), d.get("statistic"), bool(d.get("drift")),
                   d.get("alarms", 0), tuple(WindowStatistic(w["window"], w["statistic"], w.get("value"),
                                                             w["threshold"]) for w in d.get("windows") or ()),
                   evidence_from_json(d.get("evidence") or {}), tuple(d.get("windows_not_evaluated") or ()),
                   d.get("threshold", 1.0))


# -- the blocks of a model page -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Texts:
    kept: bool
    redacted: bool

    def to_json(self) -> JsonObject:
        return {"kept": self.kept, "redacted": self.redacted}


@dataclass(frozen=True, slots=True)
class CalibrationPending:
    """A calibration handed to the executor and not applied yet, and the events held meanwhile."""

    source: str
    reference_events: int
    held_events: int

    def to_json(self) -> JsonObject:
        return {"source": self.source, "reference_events": self.reference_events, "held_events": self.held_events}


@dataclass(frozen=True, slots=True)
class ReferenceBlock:
    """The reference: before calibration only ``events`` and ``needed``; after it, its source, size, the
    signals it could not calibrate, the calibration time and the false-alarm rate."""

    events: int
    needed: int | None = None
    source: str | None = None
    unavailable: Mapping[str, str] = field(default_factory=dict)
    calibration_seconds: float | None = None
    false_alarm_rate: float | None = None

    @property
    def calibrated(self) -> bool:
        return self.needed is None

    def to_json(self) -> JsonObject:
        if not self.calibrated:
            return {"events": self.events, "needed": self.needed}
        return {"source": self.source, "events": self.events, "unavailable": dict(self.unavailable),
                "calibration_seconds": self.calibration_seconds, "false_alarm_rate": self.false_alarm_rate}

    @classmethod
    def from_json(cls, d: Raw) -> ReferenceBlock:
        if "needed" in d:
            return cls(d.get("events", 0), d["needed"])
        return cls(d.get("events", 0), None, d.get("source"), dict(d.get("unavailable") or {}),
                   d.get("calibration_seconds"), d.get("false_alarm_rate"))


@dataclass(frozen=True, slots=True)
class SignalHistory:
    score: tuple[float | None, ...]
    drift: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class OutlierShareHistory:
    """The outlier share over the trailing ``window_events`` at each point, its threshold and expectation."""

    window_events: int
    event: tuple[int, ...]
    share: tuple[float, ...]
    threshold_share: tuple[float, ...]
    expected_share: float

    def to_json(self) -> JsonObject:
        return {"window_events": self.window_events, "event": list(self.event), "share": list(self.share),
                "threshold_share": list(self.threshold_share), "expected_share": self.expected_share}


@dataclass(frozen=True, slots=True)
class History:
    """Each signal's largest score per ``events_per_point`` events (columnar), and the outlier share."""

    events_per_point: int
    points: int
    max_points: int
    event: tuple[int, ...]
    time: tuple[float | None, ...]
    signals: Mapping[str, SignalHistory]
    outlier_share: OutlierShareHistory | None = None

    def to_json(self) -> JsonObject:
        out: JsonObject = {"events_per_point": self.events_per_point, "points": self.points,
                           "max_points": self.max_points, "event": list(self.event), "time": list(self.time),
                           "signals": {k: {"score": list(s.score), "drift": list(s.drift)}
                                       for k, s in self.signals.items()}}
        if self.outlier_share is not None:
            out["outlier_share"] = self.outlier_share.to_json()
        return out

    @classmethod
    def from_json(cls, d: Raw) -> History:
        o = d.get("outlier_share")
        return cls(d.get("events_per_point", 0), d.get("points", 0), d.get("max_points", 0),
                   _tuple(d.get("event")), _tuple(d.get("time")),
                   {k: SignalHistory(_tuple(s.get("score")), _tuple(s.get("drift")))
                    for k, s in (d.get("signals") or {}).items()},
                   None if o is None else OutlierShareHistory(o["window_events"], _tuple(o["event"]),
                                                              _tuple(o["share"]), _tuple(o["threshold_share"]),
                                                              o["expected_share"]))


@dataclass(frozen=True, slots=True)
class Throughput:
    events_per_second: float | None
    over_seconds: float | None
    clock: str = "event time"

    def to_json(self) -> JsonObject:
        return {"events_per_second": self.events_per_second, "over_seconds": self.over_seconds, "clock": self.clock}


@dataclass(frozen=True, slots=True)
class Examples:
    """The lowest-confidence and smallest-margin recent predictions, whether margins exist (and why not)."""

    lowest_confidence: tuple[Example, ...]
    smallest_margin: tuple[Example, ...]
    margin_available: bool
    margin_note: str | None
    recent_events: int

    def to_json(self) -> JsonObject:
        return {"lowest_confidence": [x.to_json() for x in self.lowest_confidence],
                "smallest_margin": [x.to_json() for x in self.smallest_margin],
                "margin_available": self.margin_available, "margin_note": self.margin_note,
                "recent_events": self.recent_events}

    @classmethod
    def from_json(cls, d: Raw) -> Examples:
        return cls(tuple(Example.from_json(x) for x in d.get("lowest_confidence") or ()),
                   tuple(Example.from_json(x) for x in d.get("smallest_margin") or ()),
                   bool(d.get("margin_available")), d.get("margin_note"), d.get("recent_events", 0))


@dataclass(frozen=True, slots=True)
class ConfidenceByLabel:
    levels: tuple[float, ...]
    current_sample: int
    labels: tuple[LabelQuantiles, ...]

    def to_json(self) -> JsonObject:
        return {"levels": list(self.levels), "current_sample": self.current_sample,
                "labels": [r.to_json() for r in self.labels]}

    @classmethod
    def from_json(cls, d: Raw) -> ConfidenceByLabel:
        return cls(_tuple(d.get("levels")), d.get("current_sample", 0),
                   tuple(LabelQuantiles.from_json(r) for r in d.get("labels") or ()))


@dataclass(frozen=True, slots=True)
class ReferencePoints:
    x: tuple[float, ...]
    y: tuple[float, ...]
    text: tuple[str | None, ...]

    def to_json(self) -> JsonObject:
        return {"x": list(self.x), "y": list(self.y), "text": list(self.text)}


@dataclass(frozen=True, slots=True)
class CurrentPoints:
    """The recent events of the projection (columnar): position, index, id, text, out-of-reference score,
    its percentile among the reference's scores, and the nearest reference points with distances."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    index: tuple[int, ...]
    event_id: tuple[str, ...]
    text: tuple[str | None, ...]
    score: tuple[float, ...]
    percentile: tuple[float | None, ...]
    nearest: tuple[tuple[int, ...], ...]
    distance: tuple[tuple[float, ...], ...]

    def to_json(self) -> JsonObject:
        return {"x": list(self.x), "y": list(self.y), "index": list(self.index), "event_id": list(self.event_id),
                "text": list(self.text), "score": list(self.score), "percentile": list(self.percentile),
                "nearest": [list(n) for n in self.nearest], "distance": [list(d) for d in self.distance]}


@dataclass(frozen=True, slots=True)
class Projection:
    """The 2-d projection of the reference display sample and the recent events: PCA (the core's), or UMAP
    when the service's worker replaced it (``nlpmon.app.projection_worker``: ``as_of_event``, the monitored
    events the recent points are as of, and ``fit_seconds``). A PCA projection standing in for a requested
    UMAP says so (``requested`` "umap") and why (``note``)."""

    method: str
    axes: tuple[str, ...]
    percentile_bands: tuple[float, ...]
    percentile_scale: str | None
    reference: ReferencePoints
    current: CurrentPoints
    reference_events: int
    current_events: int
    requested: str | None = None
    note: str | None = None
    as_of_event: int | None = None
    fit_seconds: float | None = None

    def to_json(self) -> JsonObject:
        out: JsonObject = {
            "method": self.method, "axes": list(self.axes), "percentile_bands": list(self.percentile_bands),
            "percentile_scale": self.percentile_scale, "reference": self.reference.to_json(),
            "current": self.current.to_json(), "reference_events": self.reference_events,
            "current_events": self.current_events}
        if self.requested is not None:
            out.update(requested=self.requested, note=self.note)
        if self.method == "umap":
            out.update(as_of_event=self.as_of_event, fit_seconds=self.fit_seconds)
        return out

    @classmethod
    def from_json(cls, d: Raw) -> Projection:
        r, c = d.get("reference") or {}, d.get("current") or {}
        return cls(d.get("method", "pca"), _tuple(d.get("axes")), _tuple(d.get("percentile_bands")),
                   d.get("percentile_scale"),
                   ReferencePoints(_tuple(r.get("x")), _tuple(r.get("y")), _tuple(r.get("text"))),
                   CurrentPoints(_tuple(c.get("x")), _tuple(c.get("y")), _tuple(c.get("index")),
                                 _tuple(c.get("event_id")), _tuple(c.get("text")), _tuple(c.get("score")),
                                 _tuple(c.get("percentile")), tuple(tuple(n) for n in c.get("nearest") or ()),
                                 tuple(tuple(x) for x in c.get("distance") or ())),
                   d.get("reference_events", len(r.get("x") or ())), d.get("current_events", len(c.get("x") or ())),
                   d.get("requested"), d.get("note"), d.get("as_of_event"), d.get("fit_seconds"))


@dataclass(frozen=True, slots=True)
class ChangePoint:
    """An ADWIN change of the mean confidence (PIT) at a monitored event: means before and after."""

    signal: str
    event: int
    mean_before: float | None = None
    mean_after: float | None = None

    def to_json(self) -> JsonObject:
        out: JsonObject = {"signal": self.signal, "event": self.event}
        if self.mean_before is not None:
            out["mean_before"] = self.mean_before
        if self.mean_after is not None:
            out["mean_after"] = self.mean_after
        return out

    @classmethod
    def from_json(cls, d: Raw) -> ChangePoint:
        return cls(d["signal"], d["event"], d.get("mean_before"), d.get("mean_after"))


@dataclass(frozen=True, slots=True)
class MonitoredBlocks:
    """What a model page shows once its reference is calibrated."""

    signals: Mapping[str, SignalPage]
    label_confidence: Mapping[str, tuple[float, int]]  # label -> (mean, count)
    change_points: tuple[ChangePoint, ...]
    outliers: tuple[Example, ...]
    history: History
    throughput: Throughput
    examples: Examples
    projection: Projection | None
    confidence_by_label: ConfidenceByLabel


# -- the page ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ModelPage:
    """The page view of one (model, version) (docs/api.md). ``monitored`` is None until the reference is
    calibrated; ``quality`` None when the stream has no ground truth (the key is then absent)."""

    model: str
    model_version: str
    status: str
    events: Mapping[str, int]
    events_processed_here: Mapping[str, int] | None
    duplicate_events: int
    duplicate_events_here: int | None
    monitored_events: int
    last_event_time: float | None
    reference_error: str | None
    texts: Texts
    reference: ReferenceBlock
    calibration_pending: CalibrationPending | None = None
    monitored: MonitoredBlocks | None = None
    quality: QualityReport | None = None  # QualityMonitor.view (docs/quality.md)

    @property
    def key(self) -> str:
        return f"{self.model}/{self.model_version}"

    @property
    def signals(self) -> Mapping[str, SignalPage]:
        """Every signal (none before calibration)."""
        return {} if self.monitored is None else self.monitored.signals

    @property
    def drifting(self) -> list[str]:
        """The signals whose drift flag is set, in report order."""
        return [n for n, s in self.signals.items() if s.drift]

    def to_json(self) -> JsonObject:
        """Exactly the JSON of ``/api/models/<model>`` and ``replay --report`` (docs/api.md)."""
        out: JsonObject = {
            "model": self.model, "model_version": self.model_version, "status": self.status,
            "events": dict(self.events),
            "events_processed_here": None if self.events_processed_here is None else dict(self.events_processed_here),
            "duplicate_events": self.duplicate_events, "duplicate_events_here": self.duplicate_events_here,
            "monitored_events": self.monitored_events, "last_event_time": self.last_event_time,
            "reference_error": self.reference_error, "texts": self.texts.to_json(),
        }
        if self.calibration_pending is not None:
            out["calibration_pending"] = self.calibration_pending.to_json()
        out["reference"] = self.reference.to_json()
        m = self.monitored
        if m is not None:
            out["signals"] = {name: s.to_json() for name, s in m.signals.items()}
            out["label_confidence"] = {k: {"mean": mean, "count": n} for k, (mean, n) in m.label_confidence.items()}
            out["change_points"] = [c.to_json() for c in m.change_points]
            out["outliers"] = [o.to_json() for o in m.outliers]
            out["history"] = m.history.to_json()
            out["throughput"] = m.throughput.to_json()
            out["examples"] = m.examples.to_json()
            out["projection"] = None if m.projection is None else m.projection.to_json()
            out["confidence_by_label"] = m.confidence_by_label.to_json()
        if self.quality is not None:
            out["quality"] = self.quality.to_json()
        return out

    @classmethod
    def from_json(cls, d: Raw) -> ModelPage:
        """The view of a page report's JSON (``to_json`` of another process, or a block replaced since)."""
        cal = d.get("calibration_pending")
        texts = d.get("texts") or {}
        monitored = None
        if "signals" in d:
            t = d.get("throughput") or {}
            proj = d.get("projection")
            monitored = MonitoredBlocks(
                {str(k): SignalPage.from_json(str(k), s) for k, s in (d.get("signals") or {}).items()},
                {str(k): (v.get("mean"), v.get("count", 0)) for k, v in (d.get("label_confidence") or {}).items()},
                tuple(ChangePoint.from_json(c) for c in d.get("change_points") or ()),
                tuple(Example.from_json(o) for o in d.get("outliers") or ()),
                History.from_json(d.get("history") or {}),
                Throughput(t.get("events_per_second"), t.get("over_seconds"), t.get("clock", "event time")),
                Examples.from_json(d.get("examples") or {}),
                None if proj is None else Projection.from_json(proj),
                ConfidenceByLabel.from_json(d.get("confidence_by_label") or {}))
        here = d.get("events_processed_here")
        return cls(
            d["model"], d["model_version"], d.get("status", ""), dict(d.get("events") or {}),
            None if here is None else dict(here), d.get("duplicate_events", 0), d.get("duplicate_events_here"),
            d.get("monitored_events", 0), d.get("last_event_time"), d.get("reference_error"),
            Texts(texts.get("kept", True), texts.get("redacted", False)),
            ReferenceBlock.from_json(d.get("reference") or {}),
            None if cal is None else CalibrationPending(cal["source"], cal["reference_events"], cal["held_events"]),
            monitored, None if d.get("quality") is None else QualityReport.from_json(d["quality"]))


# -- the overview and /api/models -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SignalSummary:
    """One signal in a model's summary row: latest score, its threshold, drift flag and alarms raised."""

    score: float | None
    threshold: float | None
    drift: bool | None
    alarms: int | None

    def to_json(self) -> JsonObject:
        return {"score": self.score, "threshold": self.threshold, "drift": self.drift, "alarms": self.alarms}

    @classmethod
    def from_json(cls, d: Raw) -> SignalSummary:
        return cls(d.get("score"), d.get("threshold"), d.get("drift"), d.get("alarms"))


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """The ``/api/models`` row (and the overview's) of one (model, version): status, counts, throughput,
    labelled fraction and each signal's score, threshold and flag. Built from its page view (``of``), or
    read from another process's row (``from_json``: a member's ``/api/models``)."""

    key: str
    model: str
    model_version: str
    status: str
    events: Mapping[str, int]
    last_event_time: float | None
    throughput: Throughput | None
    labelled_fraction: float | None
    signals: Mapping[str, SignalSummary]

    @property
    def drift(self) -> bool:
        """Whether any signal's drift flag is set."""
        return any(bool(s.drift) for s in self.signals.values())

    @property
    def drifting_signals(self) -> list[str]:
        """The signals whose drift flag is set, by name."""
        return sorted(n for n, s in self.signals.items() if s.drift)

    @classmethod
    def of(cls, key: str, page: ModelPage) -> ModelSummary:
        """The row of a page view."""
        return cls(key, page.model, page.model_version, page.status, page.events, page.last_event_time,
                   None if page.monitored is None else page.monitored.throughput,
                   None if page.quality is None else page.quality.labelled_fraction,
                   {n: SignalSummary(s.score, s.threshold, s.drift, s.alarms) for n, s in page.signals.items()})

    def to_json(self) -> JsonObject:
        """The ``/api/models`` row (docs/api.md)."""
        return {"key": self.key, "model": self.model, "model_version": self.model_version, "status": self.status,
                "events": dict(self.events), "last_event_time": self.last_event_time,
                "throughput": None if self.throughput is None else self.throughput.to_json(),
                "labelled_fraction": self.labelled_fraction, "drift": self.drift,
                "drifting_signals": list(self.drifting_signals),
                "signals": {n: s.to_json() for n, s in self.signals.items()}}

    @classmethod
    def from_json(cls, d: Raw) -> ModelSummary:
        """A row of ``to_json`` (another process's ``/api/models``)."""
        t = d.get("throughput")
        return cls(str(d["key"]), str(d["model"]), str(d["model_version"]), d.get("status") or "",
                   dict(d.get("events") or {}), d.get("last_event_time"),
                   None if t is None else Throughput(t.get("events_per_second"), t.get("over_seconds"),
                                                     t.get("clock", "event time")),
                   d.get("labelled_fraction"),
                   {str(n): SignalSummary.from_json(x) for n, x in (d.get("signals") or {}).items()})


@dataclass(frozen=True, slots=True)
class ModelsPage:
    """One page of model summaries (drifting first, then by key) with ``total``, ``offset``, ``limit`` (None:
    every model), ``omitted`` and ``drifting`` (over all models): ``/api/models`` and the overview."""

    models: tuple[ModelSummary, ...]
    total: int
    offset: int
    limit: int | None
    omitted: int
    drifting: int

    @classmethod
    def of(cls, summaries: Sequence[ModelSummary]) -> ModelsPage:
        """Every summary on one page, in the order given."""
        return cls(tuple(summaries), len(summaries), 0, None, 0, sum(1 for m in summaries if m.drift))

    def to_json(self) -> JsonObject:
        return {"models": [m.to_json() for m in self.models], "total": self.total, "offset": self.offset,
                "limit": self.limit, "omitted": self.omitted, "drifting": self.drifting}
