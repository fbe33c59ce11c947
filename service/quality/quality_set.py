"""The quality monitors of one stream (a Kafka partition, or a replay), keyed by model. Pure.

The one code path of ``nlpmon run`` and ``nlpmon replay`` for delayed ground truth: decoded prediction
events and raw label lines in, per-(model, version) quality reports out. A label line that breaks the
contract (:mod:`nlpmon.quality.events`) is returned as a rejection, never raised.

Arrival times (``now``) are what the join's TTL counts in: the shell passes the Kafka record timestamps
(or, in a replay, the events' own times). Without one, an event's own timestamp is used, else the
latest time the model's join has seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..events import Event
from ..events.errors import InvalidEvent
from .events import GroundTruth, decode_ground_truth_lines
from .quality_monitor import QualityConfig, QualityMonitor
from .report import QualityReport

STATE_KIND = "nlpmon.quality_set"
_E = TypeVar("_E", Event, GroundTruth)

__all__ = ["QualitySet"]


class QualitySet:
    """Per-model :class:`QualityMonitor` objects of one stream. Not thread-safe."""

    def __init__(self, config: QualityConfig | None = None) -> None:
        self.config = config or QualityConfig()
        self.monitors: dict[str, QualityMonitor] = {}

    def monitor(self, model: str) -> QualityMonitor:
        m = self.monitors.get(model)
        if m is None:
            m = self.monitors[model] = QualityMonitor(model, self.config)
        return m

    def add_predictions(self, events: Sequence[Event], now: float | None = None) -> None:
        """Decoded, valid prediction events (any models); ``now`` their arrival time (None: event times)."""
        for model, group in _by_model(events).items():
            mon = self.monitor(model)
            mon.add_predictions(group, now=now)
            _expire(mon, now)

    def add_label_lines(self, lines: Sequence[bytes | str | None], now: float | None = None,
                        clock_range: tuple[float, float] | None = None,
                        before_join: Callable[[Sequence[GroundTruth]], None] | None = None,
                        ) -> list[tuple[int, InvalidEvent]]:
        """Decode raw label events, join them; returns ``(position, error)`` of the invalid ones.

        ``clock_range``: ``(earliest, latest)`` plausible label times around the processing time; a label
        whose timestamp lies outside is joined as one without a timestamp (its delay is not measured).
        ``before_join``: called with the valid labels before they are joined.
        """
        present = [(i, raw) for i, raw in enumerate(lines) if raw is not None]
        good, bad = decode_ground_truth_lines([raw for _, raw in present])
        if clock_range is not None:
            lo, hi = clock_range
            for g in good:
                if g.timestamp is not None and not lo <= g.timestamp <= hi:
                    g.timestamp = None
        rejected = [(present[i][0], exc) for i, exc in bad]
        rejected += [(i, InvalidEvent("malformed_json", "message has no value"))
                     for i, raw in enumerate(lines) if raw is None]
        if before_join is not None and good:
            before_join(good)
        self.add_labels(good, now)
        return sorted(rejected, key=lambda r: r[0])

    def add_labels(self, labels: Sequence[GroundTruth], now: float | None = None) -> None:
        """Decoded label events (any models); ``now`` their arrival time (None: their own times)."""
        for model, group in _by_model(labels).items():
            mon = self.monitor(model)
            if now is not None:
                mon.add_labels(group, now)
            else:
                for g in group:  # one by one, each at its own time
                    t = g.timestamp if g.timestamp is not None else mon.join.watermark
                    mon.add_labels([g], t if math.isfinite(t) else 0.0)
            _expire(mon, now)

    def expire(self, now: float) -> None:
        for mon in self.monitors.values():
            mon.expire(now)

    def report(self) -> dict[str, dict[str, Any]]:
        """``{"model/version": QualityMonitor.report(version)}`` for every version with predictions."""
        return {key: view.to_json() for key, view in self.views().items()}

    def views(self) -> dict[str, QualityReport]:
        """``{"model/version": QualityMonitor.view(version)}`` (the typed reports) for every version with
        predictions."""
        return {f"{model}/{version}": view for model, mon in sorted(self.monitors.items())
                for version, view in mon.views().items()}

    # -- state ------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"kind": STATE_KIND, "monitors": [m.state() for m in self.monitors.values()]}

    def restore(self, s: dict[str, Any]) -> None:
        if s.get("kind") != STATE_KIND:
            raise ValueError("not an nlpmon quality-set state")
        self.monitors = {}
        for ms in s["monitors"]:
            mon = QualityMonitor.from_state(ms, self.config)
            self.monitors[mon.model] = mon


def _by_model(items: Sequence[_E]) -> dict[str, list[_E]]:
    """``items`` grouped by their ``model``, each group in input order."""
    groups: dict[str, list[_E]] = {}
    for x in items:
        groups.setdefault(x.model, []).append(x)
    return groups


def _expire(mon: QualityMonitor, now: float | None) -> None:
    t = mon.join.watermark if now is None else now
    if math.isfinite(t):
        mon.expire(t)
