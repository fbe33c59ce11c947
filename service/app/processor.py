"""The partition processor of ``nlpmon run``: Kafka records in, the core (a ``Pipeline``: drift monitors
and quality join) updated, rejections out.

One ``MonitorPartitionProcessor`` per assigned partition of the prediction topic. With a ``quality``
config (the service has a ground-truth topic) it also receives the
records of the same partition of the ground-truth topic (``process_labels``): both topics are keyed by
model, so a model's predictions and labels meet in one processor and its join state lives in one
snapshot with the offsets of both. Arrival time of the join is the Kafka record timestamp (never later
than the processing time plus ``max_clock_skew_seconds``).

Processing time: the injected ``clock`` (wall time, epoch seconds), read once per batch and handed to the
pure core, which checks every event's clock against it (``MonitorSet.process_lines``): skewed prediction
times are clamped for the metrics and unknown to windows; skewed label times are unknown to the join.

The core is a ``nlpmon.monitor.pipeline.Pipeline``, the composition ``nlpmon replay`` drives too; its
snapshot is the partition's (``Pipeline.snapshot``; a bare MonitorSet snapshot of earlier builds is still
restored). Reference-file events join their labels as reference predictions (``Pipeline``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..events import Event
from ..kafka.processor import Record, Rejected
from ..monitor.calibration_jobs import INLINE, CalibrationExecutor
from ..monitor.config import MonitorConfig
from ..monitor.model_monitor import Alarm
from ..monitor.monitor_set import ClockSkew, MonitorSet
from ..monitor.page_view import ModelPage
from ..monitor.pipeline import Pipeline
from ..monitor.reference import ReferenceProfile
from ..quality.quality_monitor import QualityConfig
from ..quality.quality_set import QualitySet
from ..state import malformed_state
from .heap import trim_heap

UNKEYED_MODELS_KEPT = 5


@dataclass
class BatchStats:
    """What the processed batches since the last ``drain`` looked like, for the metrics layer."""

    seconds: float = 0.0
    event_times: list[float | None] = field(default_factory=list)
    rejected_reasons: list[str] = field(default_factory=list)
    unkeyed: dict[str, int] = field(default_factory=dict)  # topic -> valid records without a Kafka key
    unkeyed_models: list[str] = field(default_factory=list)  # models of the first few (for the log line)
    # events with a skewed clock, by (model, version, direction): future or past
    clock_skew: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def add(self, seconds: float, times: list[float | None], reasons: list[str],
            skews: Sequence[ClockSkew] = ()) -> None:
        self.seconds += seconds
        self.event_times.extend(times)
        self.rejected_reasons.extend(reasons)
        self.clock_skew.update((s.model, s.model_version, s.direction) for s in skews)

    def add_unkeyed(self, topic: str, count: int, models: Sequence[str] = ()) -> None:
        if count:
            self.unkeyed[topic] = self.unkeyed.get(topic, 0) + count
            self.unkeyed_models.extend(m for m in dict.fromkeys(models) if m not in self.unkeyed_models)
            del self.unkeyed_models[UNKEYED_MODELS_KEPT:]

    def drain(self) -> BatchStats:
        out = BatchStats(self.seconds, self.event_times, self.rejected_reasons, self.unkeyed, self.unkeyed_models,
                         self.clock_skew)
        self.seconds, self.event_times, self.rejected_reasons, self.clock_skew = 0.0, [], [], Counter()
        self.unkeyed, self.unkeyed_models = {}, []
        return out


@dataclass
class References:
    """Reference material shared by every partition: events from files, and saved profiles."""

    events: list[Event] = field(default_factory=list)
    profiles: dict[tuple[str, str], ReferenceProfile] = field(default_factory=dict)


class MonitorPartitionProcessor:
    """Implements ``nlpmon.kafka.processor.PartitionProcessor`` over a ``Pipeline`` (the core ``nlpmon
    replay`` drives too): this shell only turns records into lines, times and rejections. Not thread-safe.

    ``clock``: the processing time (epoch seconds), read once per batch (see the module docstring).
    ``calibrations``: where the monitors' calibrations run (``nlpmon.monitor.calibration_jobs``; inline by
    default, a worker thread in ``nlpmon run``).
    """

    def __init__(self, topic: str, partition: int, config: MonitorConfig, references: References,
                 on_alarms: Callable[[list[Alarm]], None] | None = None,
                 quality: QualityConfig | None = None, labels_topic: str = "ground-truth",
                 clock: Callable[[], float] = time.time, calibrations: CalibrationExecutor = INLINE) -> None:
        self.topic = topic
        self.labels_topic = labels_topic
        self.partition = partition
        self.config = config
        self._clock = clock
        self.pipeline = Pipeline(config, references.profiles, references.events, quality, calibrations)
        self._on_alarms = on_alarms
        self.batch_stats = BatchStats()

    @property
    def monitors(self) -> MonitorSet:
        return self.pipeline.monitors

    @property
    def quality(self) -> QualitySet:
        return self.pipeline.quality

    @property
    def joins(self) -> bool:
        """False: no ground-truth topic, predictions skip the join."""
        return self.pipeline.joins

    def process(self, records: Sequence[Record]) -> list[Rejected]:
        """Decode, validate and monitor the records (one vectorised update per model); join them. Valid
        records without a Kafka key (or with an empty one) are counted in ``batch_stats.unkeyed``."""
        t0 = time.perf_counter()
        now = self._clock()
        result = self.pipeline.process_lines([r.value for r in records], now=now,
                                             arrival=self._arrival(records, now))
        self.batch_stats.add(time.perf_counter() - t0, result.event_times, [r.reason for r in result.rejected],
                             result.clock_skew)
        if any(not r.key for r in records):
            models = [e.model for i, e in zip(result.positions, result.events, strict=True) if not records[i].key]
            self.batch_stats.add_unkeyed(self.topic, len(models), models)
        if result.alarms and self._on_alarms is not None:
            self._on_alarms(result.alarms)
        return [Rejected(records[r.position].offset, r.reason, r.detail) for r in result.rejected]

    def poll_calibrations(self, expired: Callable[[], bool] | None = None) -> bool:
        """Apply the calibrations that finished since the last batch and process the events their models
        held (between batches, so that a partition without new records does not keep them waiting), about
        ``DRAIN_EVENTS`` per model; ``expired``: asked after each model, the others wait for the next call once
        it says True. True when there were any."""
        waiting = self.pipeline.calibrating
        if not waiting:
            return False
        t0 = time.perf_counter()
        alarms = self.pipeline.poll(expired)
        if self.pipeline.calibrating < waiting:  # a model's held events are all processed: their memory is free
            trim_heap()
        self.batch_stats.add(time.perf_counter() - t0, [], [])
        if alarms and self._on_alarms is not None:
            self._on_alarms(alarms)
        return True

    def process_labels(self, records: Sequence[Record]) -> list[Rejected]:
        """Decode and join ground-truth records of the same partition of the ground-truth topic."""
        t0 = time.perf_counter()
        now = self._clock()
        cfg = self.config
        rejected = self.pipeline.process_label_lines(
            [r.value for r in records], arrival=self._arrival(records, now),
            clock_range=(now - cfg.max_event_age_seconds, now + cfg.max_clock_skew_seconds)).rejected
        reasons: list[str] = [exc.reason for _, exc in rejected]
        if any(not r.key for r in records):
            refused = {i for i, _ in rejected}
            self.batch_stats.add_unkeyed(self.labels_topic, sum(1 for i, r in enumerate(records)
                                                           if not r.key and i not in refused))
        no_times: list[float | None] = []  # label times are not prediction ages
        self.batch_stats.add(time.perf_counter() - t0, no_times, reasons)
        return [Rejected(records[i].offset, exc.reason, exc.detail) for i, exc in rejected]

    def report(self) -> dict[str, Any]:
        """``Pipeline.report()``: each (model, version)'s report with its quality report under ``"quality"``."""
        return self.pipeline.report()

    def page_views(self) -> dict[str, ModelPage]:
        """``Pipeline.page_views()``: each (model, version)'s typed page view, with its quality report."""
        return self.pipeline.page_views()

    def orphan_labels(self) -> dict[str, int]:
        """``Pipeline.orphan_labels``: models with labels on this partition but no prediction here."""
        return self.pipeline.orphan_labels()

    def snapshot(self) -> bytes:
        return self.pipeline.snapshot()

    def restore(self, data: bytes) -> None:
        """Replace the state by a :meth:`snapshot`. Raises SnapshotError (a ValueError: the runner's
        StateRestoreError) on any bytes that are not one, however corrupt or hostile."""
        with malformed_state(f"snapshot of {self.topic}[{self.partition}]"):
            self.pipeline.restore(data)

    def snapshot_parts(self) -> tuple[bytes, Mapping[str, bytes]]:
        """``Pipeline.snapshot_parts``: what the checkpoints write (a part that did not change, e.g. an idle
        model's state or a reference profile, is not written again)."""
        return self.pipeline.snapshot_parts()

    def restore_parts(self, main: bytes, parts: dict[str, bytes]) -> None:
        """Replace the state by a :meth:`snapshot_parts`. Raises SnapshotError as :meth:`restore`."""
        with malformed_state(f"snapshot of {self.topic}[{self.partition}]"):
            self.pipeline.restore_parts(main, parts)

    def _arrival(self, records: Sequence[Record], now: float) -> float | None:
        """The batch's arrival time for the join: its newest record timestamp (seconds), if any, never later
        than ``now`` plus the clock skew allowed (a producer sets record timestamps too)."""
        stamps = [r.timestamp_ms for r in records if r.timestamp_ms is not None and r.timestamp_ms > 0]
        if not stamps:
            return None
        return min(max(stamps) / 1000.0, now + self.config.max_clock_skew_seconds)
