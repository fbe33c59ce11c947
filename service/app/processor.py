"""The partition processor of ``nlpmon run``: Kafka records in, a ``MonitorSet`` updated, rejections out.

One ``MonitorPartitionProcessor`` per assigned partition (events are keyed by model, so a model's state
lives with one partition owner). Its snapshot is the MonitorSet's versioned snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from service.events import Event
from service.kafka.processor import Record, Rejected
from service.monitor.config import MonitorConfig
from service.monitor.model_monitor import Alarm
from service.monitor.monitor_set import MonitorSet
from service.monitor.reference import ReferenceProfile


@dataclass
class BatchStats:
    """What the processed batches since the last ``drain`` looked like, for the metrics layer."""

    seconds: float = 0.0
    event_times: list[float | None] = field(default_factory=list)
    rejected_reasons: list[str] = field(default_factory=list)

    def add(self, seconds: float, times: list[float | None], reasons: list[str]) -> None:
        self.seconds += seconds
        self.event_times.extend(times)
        self.rejected_reasons.extend(reasons)

    def drain(self) -> BatchStats:
        out = BatchStats(self.seconds, self.event_times, self.rejected_reasons)
        self.seconds, self.event_times, self.rejected_reasons = 0.0, [], []
        return out


@dataclass
class References:
    """Reference material shared by every partition: events from files, and saved profiles."""

    events: list[Event] = field(default_factory=list)
    profiles: dict[tuple[str, str], ReferenceProfile] = field(default_factory=dict)


class MonitorPartitionProcessor:
    """Implements ``service.kafka.processor.PartitionProcessor`` over a MonitorSet. Not thread-safe."""

    def __init__(self, topic: str, partition: int, config: MonitorConfig, references: References,
                 on_alarms: Callable[[list[Alarm]], None] | None = None) -> None:
        self.topic = topic
        self.partition = partition
        self.monitors = MonitorSet(config, references.profiles, references.events)
        self._on_alarms = on_alarms
        self.batch_stats = BatchStats()

    def process(self, records: Sequence[Record]) -> list[Rejected]:
        """Decode, validate and monitor the records (one vectorised update per model)."""
        t0 = time.perf_counter()
        result = self.monitors.process_lines([r.value for r in records])
        self.batch_stats.add(time.perf_counter() - t0, result.event_times, [r.reason for r in result.rejected])
        if result.alarms and self._on_alarms is not None:
            self._on_alarms(result.alarms)
        return [Rejected(records[r.position].offset, r.reason, r.detail) for r in result.rejected]

    def snapshot(self) -> bytes:
        return self.monitors.snapshot()

    def restore(self, data: bytes) -> None:
        self.monitors.restore(data)
