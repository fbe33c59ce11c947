"""nlpmon inside an existing Faust app (``pip install 'nlpmon[faust]'``, faust-streaming).

    import faust
    from .faust_agent import FaustMonitor

    app = faust.App("my-serving-app", broker="kafka://kafka:9092")
    monitor = FaustMonitor(app, topic="nlpmon.predictions", ground_truth_topic="nlpmon.ground-truth",
                           reference=["reference.jsonl.gz"], port=9308)
    # faust -A my_module worker: the agents below run with the app's own; /metrics and the pages on :9308

The helper adds one agent per topic (raw bytes, ``take_events`` batches) that feeds the same core as
``nlpmon run``: one ``MonitorPartitionProcessor`` (monitor + quality join) per partition, the same
``NlpmonMetrics`` and the same HTTP server (``/metrics``, ``/healthz``, ``/readyz``, ``/api/models``,
the pages). Rejected events go to ``dead_letter_topic`` with the same headers as ``nlpmon run``'s.
The core runs on one worker thread of its own (every processor call, in order), so a calibration that
takes seconds never stalls the app's event loop and its other agents; the agents await it.

What it does not do, by design (prefer ``nlpmon run`` when these matter): no state snapshots (a restart
or a rebalance starts a partition's windows again from the reference: Faust commits the offsets, nlpmon
does not tie its state to them), no circuit breaker, and Faust's consumer reads about 50 times fewer
messages per second than ``nlpmon run``'s batch consumer (docs/clients.md). With several workers,
give the ground-truth topic as many partitions as the prediction topic: Faust's assignor then hands a
worker the same partitions of both, so labels meet their predictions.

faust is imported by the constructor, never when nlpmon is imported.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from ..app.processor import MonitorPartitionProcessor, References
from ..kafka.dead_letter import (
    DETAIL_HEADER,
    REASON_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
)
from ..kafka.processor import Record, Rejected
from ..monitor.config import MonitorConfig
from ..monitor.views import ModelMetrics
from ..observability.exporter import NlpmonMetrics
from ..observability.http import ObservabilityServer
from ..quality.quality_monitor import QualityConfig
from ..replay import load_references

log = logging.getLogger("nlpmon.faust")
T = TypeVar("T")


class FaustMonitor:
    """Registers nlpmon's agents, a refresh timer and the HTTP server on a Faust ``app``. See the module
    docstring. ``reports()`` and ``readiness()`` are safe from any thread (the HTTP server's)."""

    def __init__(self, app: Any, *, topic: str = "nlpmon.predictions", ground_truth_topic: str | None = None,
                 dead_letter_topic: str | None = "nlpmon.dead-letter", reference: Sequence[str] = (),
                 monitor: MonitorConfig | None = None, quality: QualityConfig | None = None,
                 host: str = "127.0.0.1", port: int = 9308, batch_size: int = 1000, within_s: float = 0.5,
                 report_interval_s: float = 1.0, liveness_limit_s: float = 60.0,
                 registry: CollectorRegistry | None = None, max_models: int = 50, max_labels: int = 30,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        try:
            import faust  # noqa: F401  (the optional dependency; fail here, with the fix, not at import)
        except ImportError:
            raise ImportError("the Faust helper needs faust-streaming: pip install 'nlpmon[faust]'") from None
        self.app = app
        self.monitor_config = monitor or MonitorConfig()
        self.quality_config = quality or QualityConfig()
        self.topic_name, self.labels_topic_name = topic, ground_truth_topic
        self.clock, self.wall = clock, wall
        self.registry = registry or CollectorRegistry()
        self.metrics = NlpmonMetrics(self.registry, max_models=max_models, max_labels=max_labels, clock=wall)
        self.references = References()
        self.reference_error: str | None = None
        if reference:
            try:
                loaded = load_references(reference)
                self.references = References(loaded.events, loaded.profiles)
            except (OSError, ValueError) as exc:
                self.reference_error = f"{exc}"
                log.error("nlpmon: cannot load the reference %s: %s", list(reference), exc)
        self.processors: dict[int, MonitorPartitionProcessor] = {}
        self.events_seen = 0
        self.last_tick: float | None = None
        self._lock = threading.Lock()
        self._reports: dict[str, Any] = {}
        self._dirty = False
        self._started = False
        self._assigned_now: set[int] | None = None
        self._core = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlpmon-core")
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        self.topic = app.topic(topic, **raw)
        self.labels_topic = app.topic(ground_truth_topic, **raw) if ground_truth_topic else None
        self.dead_letters = app.topic(dead_letter_topic, **raw) if dead_letter_topic else None
        self.batch_size, self.within_s = batch_size, within_s
        app.agent(self.topic, name=f"nlpmon-{topic}")(self._predictions)
        if self.labels_topic is not None:
            app.agent(self.labels_topic, name=f"nlpmon-{ground_truth_topic}")(self._labels)
        app.timer(report_interval_s, name="nlpmon-refresh")(self._tick)
        self.http = ObservabilityServer(self.registry, host=host, port=port, reports=self.reports,
                                        readiness=self.readiness, last_poll=lambda: self.last_tick,
                                        liveness_limit_s=liveness_limit_s, clock=clock, wall=wall)
        app.task(self._start_http)
        app.on_before_shutdown.connect(self._on_shutdown)

    # -- the agents -------------------------------------------------------------------------------------
    def processor(self, partition: int) -> MonitorPartitionProcessor:
        proc = self.processors.get(partition)
        if proc is None:
            proc = MonitorPartitionProcessor(self.topic_name, partition, self.monitor_config, self.references,
                                             quality=self.quality_config if self.labels_topic is not None else None,
                                             labels_topic=self.labels_topic_name or "ground-truth")
            self.processors[partition] = proc
        return proc

    def _process(self, partition: int, records: Sequence[Record], labels: bool) -> list[Rejected]:
        proc = self.processor(partition)  # on the core thread, like every other use of the processors
        return proc.process_labels(records) if labels else proc.process(records)

    async def _on_core(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._core, fn, *args)

    async def _predictions(self, stream: Any) -> None:
        async for events in stream.take_events(self.batch_size, within=self.within_s):
            for partition, records in _by_partition(events).items():
                rejected = await self._on_core(self._process, partition, records, False)
                self.events_seen += len(records)
                await self._dead_letter(self.topic_name, partition, records, rejected)
            await self._on_core(self._after_batch)

    async def _labels(self, stream: Any) -> None:
        async for events in stream.take_events(self.batch_size, within=self.within_s):
            for partition, records in _by_partition(events).items():
                rejected = await self._on_core(self._process, partition, records, True)
                await self._dead_letter(self.labels_topic_name or "", partition, records, rejected)
            await self._on_core(self._after_batch)

    async def _dead_letter(self, topic: str, partition: int, records: Sequence[Record],
                           rejected: Sequence[Rejected]) -> None:
        if self.dead_letters is None or not rejected:
            return
        by_offset = {r.offset: r for r in records}
        for rej in rejected:
            rec = by_offset[rej.offset]
            headers = {REASON_HEADER: rej.reason.encode(), DETAIL_HEADER: rej.detail[:1000].encode(),
                       SOURCE_TOPIC_HEADER: topic.encode(), SOURCE_PARTITION_HEADER: str(partition).encode(),
                       SOURCE_OFFSET_HEADER: str(rej.offset).encode()}
            await self.dead_letters.send(key=rec.key, value=rec.value or b"", headers=headers)

    def _after_batch(self) -> None:
        seconds, times, reasons = 0.0, [], []
        unkeyed: dict[str, int] = {}
        for proc in self.processors.values():
            stats = proc.batch_stats.drain()
            seconds += stats.seconds
            times.extend(stats.event_times)
            reasons.extend(stats.rejected_reasons)
            for name, n in stats.unkeyed.items():
                unkeyed[name] = unkeyed.get(name, 0) + n
        self.metrics.observe_batch(seconds=seconds, event_timestamps=times, rejected_reasons=reasons,
                                   unkeyed=unkeyed, now=self.wall())
        self._dirty = True

    async def _tick(self) -> None:
        """Every ``report_interval_s``: liveness (the app's loop runs), then on the core thread revoked
        partitions dropped, reports and metrics refreshed."""
        self.last_tick = self.clock()
        self._assigned_now = self._assigned()  # read on the loop; readiness() (HTTP threads) reads this copy
        await self._on_core(self._refresh, self._assigned_now)

    def _refresh(self, assigned: set[int] | None) -> None:
        if assigned is not None:
            for partition in [p for p in self.processors if p not in assigned]:
                del self.processors[partition]  # revoked: the new owner starts it again (no snapshots)
        if not self._dirty:
            return
        self._dirty = False
        reports: dict[str, Any] = {}
        views: dict[str, ModelMetrics] = {}
        for proc in self.processors.values():
            reports.update(proc.report())
            views.update(proc.pipeline.metrics_views())
        self.metrics.observe_models(views.values())
        with self._lock:
            self._reports = reports

    def _assigned(self) -> set[int] | None:
        try:
            tps = self.app.consumer.assignment()
        except Exception:  # the consumer is not up yet
            return None
        return {tp.partition for tp in tps if tp.topic == self.topic_name}

    async def _start_http(self) -> None:
        if not self._started:
            self._started = True
            self.http.start()
            log.warning("nlpmon (Faust): monitoring %s; metrics and models at %s/", self.topic_name, self.http.url)

    def _on_shutdown(self, app: Any, **kwargs: Any) -> None:
        self.stop()

    # -- what HTTP reads --------------------------------------------------------------------------------
    def reports(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._reports)

    def readiness(self) -> dict[str, bool]:
        return {"partitions_assigned": bool(self._assigned_now), "references_loaded": self.reference_error is None}

    def stop(self) -> None:
        """Stop the HTTP server and the core thread (the Faust worker stops the agents)."""
        self.http.stop()
        self._core.shutdown(wait=False, cancel_futures=True)


def _by_partition(events: Sequence[Any]) -> dict[int, list[Record]]:
    grouped: dict[int, list[Record]] = {}
    for event in events:
        m = event.message
        ts = getattr(m, "timestamp", None)
        grouped.setdefault(int(m.partition), []).append(
            Record(int(m.offset), m.value, m.key, int(ts * 1000) if ts else None))
    return grouped
