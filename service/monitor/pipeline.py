"""The one composition of the core that ``nlpmon run`` and ``nlpmon replay`` both drive. Pure.

A ``Pipeline`` owns the drift monitors of one stream (``MonitorSet``) and, when the stream has delayed
ground truth, the quality join (``QualitySet``): prediction lines in (decoded, validated, monitored and
joined), label lines or decoded labels in (joined), calibrations polled, one report per (model, version)
out, and one snapshot of both. The shells only translate: the partition processor of ``nlpmon run``
(``nlpmon.app.processor``) hands it Kafka record values and record timestamps, ``nlpmon replay``
(``nlpmon.replay``) lines of a file and the events' own times.

Reference-file events (``--reference``) are reference predictions of the join too: they give the
label-free estimate its labelled baseline, so their labels join instead of expiring as
``label_expired_unmatched``. They enter a model's join with the first batch (of predictions or of labels)
that names the model on this stream, at that batch's arrival time (replay: their own times), just as
``MonitorSet`` hands a model its reference events when the model first appears: a stream that never sees
a model holds none of its reference predictions.

No Kafka, no clock, no registry: processing and arrival times are handed in by the shell.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgspec
import numpy as np

from ..events import Event
from ..events.errors import InvalidEvent
from ..quality.events import GroundTruth
from ..quality.quality_monitor import QualityConfig
from ..quality.quality_set import QualitySet
from ..state import SnapshotError, decode_state, encode_state
from .calibration_jobs import INLINE, CalibrationExecutor
from .config import MonitorConfig
from .model_monitor import Alarm
from .monitor_set import STATE_KIND as MONITOR_SET_KIND
from .monitor_set import BatchResult, MonitorSet
from .page_view import ModelPage
from .reference import ReferenceProfile
from .views import ModelMetrics

#: ``kind`` of a pipeline snapshot (the name of the partition processor's snapshot since the quality join)
STATE_KIND = "nlpmon.partition"
#: ``kind`` of the main body of a snapshot in parts (``Pipeline.snapshot_parts``)
PARTS_KIND = "nlpmon.partition.parts"

__all__ = ["PARTS_KIND", "STATE_KIND", "LabelResult", "Pipeline"]


@dataclass(frozen=True, slots=True)
class LabelResult:
    """What one batch of label lines did: the ``(position, error)`` of each line refused."""

    rejected: list[tuple[int, InvalidEvent]]


class Pipeline:
    """Drift monitors and, with a ``quality`` config, the quality join of one stream. Not thread-safe.

    ``quality=None``: the stream has no ground truth; predictions skip the join (``report`` still carries an
    empty quality block per model, as the service always did: ``joins`` says whether labels can come).
    ``executor`` runs the calibrations (inline by default; a worker process in ``nlpmon run``).
    """

    def __init__(self, config: MonitorConfig, profiles: dict[tuple[str, str], ReferenceProfile] | None = None,
                 reference_events: Sequence[Event] = (), quality: QualityConfig | None = None,
                 executor: CalibrationExecutor = INLINE) -> None:
        self.config = config
        self.monitors = MonitorSet(config, profiles, reference_events, executor=executor)
        self.quality = QualitySet(quality)
        self.joins = quality is not None
        # reference-file events not yet in the join, by model (handed over at the model's first batch)
        self._reference_predictions: dict[str, list[Event]] = {}
        if self.joins:
            for e in reference_events:
                self._reference_predictions.setdefault(e.model, []).append(
                    msgspec.structs.replace(e, split="reference"))

    # -- input ------------------------------------------------------------------------------------------
    def process_lines(self, lines: Sequence[bytes | str | None], now: float | None = None,
                      arrival: float | None = None) -> BatchResult:
        """Decode, validate and monitor a batch of raw prediction events, then join the accepted ones.

        ``now``: the processing time event clocks are checked against (``MonitorSet.process_lines``; None: no
        check). ``arrival``: the batch's arrival time for the join's TTL (None: each event's own time).
        Invalid events are in the result, never raised.
        """
        result = self.monitors.process_lines(lines, now=now)
        if result.events and self.joins:
            self._hand_over_reference(result.events, arrival)
            self.quality.add_predictions(result.events, now=arrival)
        return result

    def process_label_lines(self, lines: Sequence[bytes | str | None], arrival: float | None = None,
                            clock_range: tuple[float, float] | None = None) -> LabelResult:
        """Decode raw ground-truth events and join them (``QualitySet.add_label_lines``: ``clock_range``
        bounds plausible label times). Refused lines are in the result, never raised."""
        return LabelResult(self.quality.add_label_lines(lines, now=arrival, clock_range=clock_range,
                                                        before_join=self._reference_for_labels(arrival)))

    def add_labels(self, labels: Sequence[GroundTruth], arrival: float | None = None) -> None:
        """Join decoded ground-truth events (``arrival`` None: each at its own time, as a replay feeds them)."""
        if labels:
            self._hand_over_reference(labels, arrival)
            self.quality.add_labels(labels, arrival)

    def poll(self, expired: Callable[[], bool] | None = None) -> list[Alarm]:
        """Apply the calibrations that finished and process the events their models held (alarms at
        position -1). Cheap when none is pending. ``expired``: see ``MonitorSet.poll``."""
        return self.monitors.poll(expired=expired) if self.monitors.calibrating else []

    def finish(self) -> list[Alarm]:
        """Wait for every pending calibration and process every held event (the end of a replay)."""
        return self.monitors.poll(wait=True)

    @property
    def calibrating(self) -> int:
        """Monitors whose calibration is pending, or whose held events are not all processed yet."""
        return self.monitors.calibrating

    @property
    def held_bytes(self) -> int:
        """Memory of the events held for pending calibrations (``MonitorSet.held_bytes``)."""
        return self.monitors.held_bytes

    def _hand_over_reference(self, items: Sequence[Event] | Sequence[GroundTruth], arrival: float | None) -> None:
        """Join the reference-file predictions of the models ``items`` name that have not had them yet."""
        if not self._reference_predictions:
            return
        for model in dict.fromkeys(x.model for x in items):
            ref = self._reference_predictions.pop(model, None)
            if ref:
                self.quality.add_predictions(ref, now=arrival)

    def _reference_for_labels(self, arrival: float | None) -> Callable[[Sequence[GroundTruth]], None] | None:
        """The hook ``QualitySet.add_label_lines`` calls with the decoded labels before joining them."""
        if not self._reference_predictions:
            return None
        return lambda labels: self._hand_over_reference(labels, arrival)

    # -- output -----------------------------------------------------------------------------------------
    def page_views(self) -> dict[str, ModelPage]:
        """``MonitorSet.page_views()`` with each (model, version)'s quality report as ``quality`` (a version
        the join knows but the drift monitors have not seen yet is shown once they have). Built when asked."""
        views = self.monitors.page_views()
        for key, q in self.quality.views().items():
            view = views.get(key)
            if view is not None:
                views[key] = replace(view, quality=q)
        return views

    def report(self) -> dict[str, dict[str, Any]]:
        """``{"model/version": page view JSON}`` (``ModelPage.to_json``: docs/api.md)."""
        return {k: v.to_json() for k, v in self.page_views().items()}

    def metrics_views(self) -> dict[str, ModelMetrics]:
        """``{"model/version": ModelMetrics}`` with each version's quality report: what the metrics read
        on every refresh (no page evidence)."""
        views = self.monitors.metrics_views()
        for key, q in self.quality.views().items():
            view = views.get(key)
            if view is not None:
                views[key] = replace(view, quality=q)
        return views

    def orphan_labels(self) -> dict[str, int]:
        """Models with labels on this stream but no prediction here: ``{model: labels received}``.

        Their labels can never join (a partitioner or key mismatch between the two topics, or labels for a
        model that never sends predictions), and no (model, version) report carries them.
        """
        return {model: mon.join.counters["labels"] for model, mon in self.quality.monitors.items()
                if not mon.versions and mon.join.counters["labels"]}

    # -- state ------------------------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """``encode_state({"kind": STATE_KIND, "monitor_set": <MonitorSet snapshot bytes>, "quality":
        <QualitySet state>})``."""
        inner = np.frombuffer(self.monitors.snapshot(), dtype=np.uint8)
        return encode_state({"kind": STATE_KIND, "monitor_set": inner, "quality": self.quality.state()})

    def snapshot_parts(self) -> tuple[bytes, Mapping[str, bytes]]:
        """:meth:`snapshot` split for checkpoints that write only what changed: ``(main, parts)``, the parts
        being each model's state and each reference profile by content (``MonitorSet.snapshot_parts``), the
        main body the quality join's state and the ids of the parts: ``encode_state({"kind": PARTS_KIND,
        "monitor_set": <tree>, "quality": <QualitySet state>})``."""
        tree, parts = self.monitors.snapshot_parts()
        return encode_state({"kind": PARTS_KIND, "monitor_set": tree, "quality": self.quality.state()}), parts

    def restore(self, data: bytes) -> None:
        """Replace the state by a :meth:`snapshot` (or a bare ``MonitorSet`` snapshot of builds without the
        join). Models whose join state is restored do not get their reference-file predictions again.
        Raises SnapshotError (or another ValueError, KeyError, TypeError on malformed state: the caller
        wraps it)."""
        s = decode_state(data)
        if not isinstance(s, dict):
            raise SnapshotError("not an nlpmon partition snapshot")
        if s.get("kind") == MONITOR_SET_KIND:  # a snapshot of a build without the quality join
            self.monitors.restore(data)
            return
        if s.get("kind") != STATE_KIND:
            raise SnapshotError("not an nlpmon partition snapshot")
        self.monitors.restore(np.asarray(s["monitor_set"], dtype=np.uint8).tobytes())
        self._restore_quality(s["quality"])

    def restore_parts(self, main: bytes, parts: Mapping[str, bytes]) -> None:
        """Replace the state by a :meth:`snapshot_parts`. Raises as :meth:`restore`."""
        s = decode_state(main)
        if not isinstance(s, dict) or s.get("kind") != PARTS_KIND:
            raise SnapshotError("not an nlpmon partition snapshot in parts")
        self.monitors.restore_tree(s["monitor_set"], parts)
        self._restore_quality(s["quality"])

    def _restore_quality(self, state: Any) -> None:
        self.quality.restore(state)
        for model in self.quality.monitors:
            self._reference_predictions.pop(model, None)
