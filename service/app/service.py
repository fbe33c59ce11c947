"""The ``nlpmon run`` process: broker (embedded when none is configured), consumer loop, HTTP, progress.

Threads: the consumer loop runs on the calling thread and owns every processor; after each batch it
refreshes the metrics from the models' metrics views (cheap: no page evidence; at most every
``report_interval_s``, and at most one tenth of the loop's time: with hundreds of models a refresh costs
hundreds of milliseconds, so the interval stretches to ten times the last refresh's cost). The page reports
(``/api/models``, the pages) are built by the loop only when an HTTP thread asks for them (``reports``), and
cached until the models change. The HTTP server threads never touch a processor.
The optional demo publisher runs on its own thread.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from typing import TextIO

from prometheus_client import CollectorRegistry

from ..kafka.broker import bootstrap_servers_for
from ..kafka.runner import ConsumerRunner
from ..kafka.runner_metrics import BatchReport
from ..kafka.topics import TopicSetup
from ..monitor.calibration_jobs import INLINE
from ..monitor.model_monitor import Alarm
from ..monitor.page_view import ModelPage
from ..monitor.views import ModelMetrics
from ..observability.exporter import NlpmonMetrics
from ..observability.exposition import prerender_exposition
from ..observability.http import ObservabilityServer
from ..observability.oneline import one_line
from ..replay import load_references
from .calibration_process import ProcessCalibrationExecutor
from .calibration_worker import ThreadCalibrationExecutor
from .demo import DemoPlan, publish_demo
from .gc_watch import freeze_startup, watch_collections
from .processor import MonitorPartitionProcessor, References
from .projection_worker import UmapProjections
from .settings import ServiceSettings

log = logging.getLogger("nlpmon")


#: Models named in one progress line (drifting ones first); the rest are counted.
PROGRESS_MODELS = 10
PROGRESS_NAME_CHARS = 64


def progress_line(events: int, rate: float, lag: int, reports: Mapping[str, ModelMetrics],
                  max_models: int | None = PROGRESS_MODELS) -> str:
    """One progress line: counts, then up to ``max_models`` models (drifting first, names escaped and cut
    to ``PROGRESS_NAME_CHARS``) and how many more there are, so that its length is bounded whatever the
    number of models or their names (None: every model, the unbounded form, for measurements)."""
    entries = []
    for key, rep in sorted(reports.items()):
        drifting = [s for s, v in rep.signals.items() if v.drift]
        state = f"DRIFT {','.join(drifting)}" if drifting else rep.status.replace("_", " ")
        entries.append((not drifting, f"{one_line(key, PROGRESS_NAME_CHARS)}: {state}"))
    shown = entries if max_models is None else sorted(sorted(entries, key=lambda e: e[0])[:max_models],
                                                      key=lambda e: e[1])
    parts = [text for _, text in shown]
    if len(entries) > len(shown):
        more_drifting = sum(not quiet for quiet, _ in entries) - sum(not quiet for quiet, _ in shown)
        parts.append(f"and {len(entries) - len(shown):,} more model versions ({more_drifting:,} drifting; see /)")
    return f"nlpmon: {events:,} events ({rate:,.0f}/s), lag {lag:,}; {'; '.join(parts) or 'no model yet'}"


#: A metrics refresh waits at least this many times its last cost (the loop spends at most a tenth on them).
REFRESH_SHARE = 10.0


class NlpmonService:
    """One group member of the nlpmon service. ``run`` blocks until ``stop`` is set or the loop fails."""

    def __init__(self, settings: ServiceSettings, *, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 progress_stream: TextIO | None = None, report_interval_s: float = 1.0) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.clock, self.wall = clock, wall
        self.metrics = NlpmonMetrics(self.registry, max_models=settings.max_models,
                                     max_labels=settings.max_labels, retire_after_s=settings.retire_after_s,
                                     clock=wall)
        self.progress_stream = progress_stream if progress_stream is not None else sys.stderr
        self.report_interval_s = report_interval_s
        self.references = References()
        # the first model whose reference from a file (events or a profile) failed to calibrate: /readyz
        self.reference_error: str | None = None
        self._file_reference_models: set[tuple[str, str]] = set()
        self.runner: ConsumerRunner | None = None
        self.bootstrap: str | None = None
        self._processors: dict[tuple[str, int], MonitorPartitionProcessor] = {}
        self._new_processors: set[tuple[str, int]] = set()  # created since the last refresh: counting from 0
        self._retired: list[MonitorPartitionProcessor] = []  # revoked since the last refresh, not counted yet
        # calibrations run beside the consumer loop (created in run, closed when it ends)
        self.calibrations: ProcessCalibrationExecutor | ThreadCalibrationExecutor | None = None
        self._lock = threading.Lock()
        self._views: dict[str, ModelMetrics] = {}  # of the last metrics refresh (consumer loop only)
        self._generation = 0  # metrics refreshes so far: page reports older than the last one are stale
        # page reports and the refresh they were built after (under _lock); an HTTP thread's pending request
        self._reports: dict[str, ModelPage] = {}
        self._reports_generation = -1
        self._page_request: Future[dict[str, ModelPage]] | None = None
        self.page_wait_s = 10.0  # how long an HTTP request waits for the loop to build the page reports
        self._pending_alarms: list[Alarm] = []
        self._last_report = -1e18
        self._last_progress = clock()
        self._events_seen = 0
        self._events_at_last_progress = 0
        self._dirty = False
        self._refresh_cost = 0.0  # seconds the last metrics refresh took (it spaces the next one)
        self._calibration_turn = 0  # the processor whose held events come first at the next poll
        self._held_paused = False  # consumption paused for the events held for calibrations (``_hold``)
        self._split_models: set[str] = set()
        self._orphan_warned: set[tuple[str, int]] = set()
        self._unkeyed_warned: set[tuple[str, int]] = set()
        pg = settings.pages
        self.projections = (UmapProjections(seed=settings.monitor.seed, n_neighbors=pg.umap_neighbors,
                                            max_reference=pg.umap_max_reference, cached_models=pg.umap_cached_models)
                            if pg.projection == "umap" else None)

    # -- wiring -----------------------------------------------------------------------------------------
    def _factory(self, topic: str, partition: int) -> MonitorPartitionProcessor:
        proc = MonitorPartitionProcessor(topic, partition, self.settings.monitor_config(), self.references,
                                         on_alarms=self._collect_alarms,
                                         quality=self.settings.quality if self.settings.ground_truth_topic else None,
                                         labels_topic=self.settings.ground_truth_topic or "ground-truth",
                                         clock=self.wall, calibrations=self.calibrations or INLINE)
        old = self._processors.get((topic, partition))
        if old is not None:  # revoked and assigned again before a refresh: its last work is still to count
            self._retired.append(old)
        self._processors[(topic, partition)] = proc
        self._new_processors.add((topic, partition))
        return proc

    def _collect_alarms(self, alarms: list[Alarm]) -> None:
        self._pending_alarms.extend(alarms)

    def _on_batch(self, batch: BatchReport) -> None:
        runner = self.runner
        assert runner is not None
        self._events_seen += sum(p.events for p in batch.partitions)
        seconds, times, reasons = 0.0, [], []
        unkeyed: dict[str, int] = {}
        skew: Counter[tuple[str, str, str]] = Counter()
        for (topic, partition), proc in self._processors.items():
            stats = proc.batch_stats.drain()
            seconds += stats.seconds
            times.extend(stats.event_times)
            reasons.extend(stats.rejected_reasons)
            for name, n in stats.unkeyed.items():
                unkeyed[name] = unkeyed.get(name, 0) + n
                self._warn_unkeyed(name, partition, n, stats.unkeyed_models if name == topic else [])
            skew.update(stats.clock_skew)
        self.metrics.observe_batch(seconds=seconds, event_timestamps=times, rejected_reasons=reasons,
                                   unkeyed=unkeyed, now=self.wall(), clock_skew=skew)
        self.metrics.observe_runner(runner.metrics())
        self._dirty = True

    def _warn_unkeyed(self, topic: str, partition: int, count: int, models: list[str]) -> None:
        """One warning per partition of each topic the first time it carries valid events without a key."""
        if (topic, partition) in self._unkeyed_warned:
            return
        self._unkeyed_warned.add((topic, partition))
        which = f" (models: {', '.join(models)})" if models else ""
        log.warning("%d events without a Kafka key on %s[%d]%s: key every message by its model name "
                    "(docs/events.md), or one model's events spread over partitions and are monitored as "
                    "separate streams; counted in nlpmon_unkeyed_events_total, warned once per partition",
                    count, topic, partition, which)

    def _on_poll(self) -> None:
        """After every poll: process events held for calibrations that finished, and refresh reports and
        metrics when due (also when the stream went idle). Both keep to the loop's budget
        (``ConsumerRunner.poll_due``): once it is reached, held events wait for the next iteration (models
        take turns), and a refresh waits until twice its interval unless a page request waits for it."""
        runner = self.runner
        assert runner is not None
        poll_due = runner.poll_due

        def expired() -> bool:
            return self.clock() >= poll_due

        processors = list(self._processors.values())
        turn = self._calibration_turn % len(processors) if processors else 0
        for i, proc in enumerate(processors[turn:] + processors[:turn]):
            if proc.poll_calibrations(expired):  # events held while a reference calibrated, processed now
                self._dirty = True
            if expired():
                self._calibration_turn = turn + i + 1
                break
        now = self.clock()
        with self._lock:
            asked = self._page_request is not None
        # a page request refreshes the metrics first, so that pages and metrics show the same state
        due = max(self.report_interval_s, REFRESH_SHARE * self._refresh_cost)
        since = now - self._last_report
        if now >= poll_due and not asked and since < 2 * due:
            pass  # out of the loop's budget: a refresh can wait for an iteration with time left
        elif self._dirty and (since >= due or self._pending_alarms or asked):
            self._refresh(runner)
            self._refresh_cost = self.clock() - now
            self._last_report = now
            self._dirty = False
        elif now - self._last_report >= 10 * self.report_interval_s:  # idle: runner state, retirements
            self._refresh(runner)
            self._last_report = now
        self._serve_page_request()
        if now - self._last_progress >= self.settings.progress_interval_s:
            self._progress(now)

    def _hold(self) -> bool:
        """True while what is held for pending calibrations (each queued sample and the events held until its
        profile is applied: ``Pipeline.held_bytes``) is over ``max_held_mb``, from when it reaches it until it is
        below half of it: the runner pauses consumption meanwhile (back-pressure)."""
        held = sum(proc.pipeline.held_bytes for proc in self._processors.values())
        self.metrics.observe_held(held)
        budget = self.settings.max_held_mb * 2**20
        if budget <= 0:
            return False
        paused = held > budget / 2 if self._held_paused else held >= budget
        if paused != self._held_paused:
            self._held_paused = paused
            if paused:
                log.warning("samples and events held for calibrating references reached %.0f MiB (max_held_mb): "
                            "consumption paused until calibrations free half of it (%d calibration(s) pending)",
                            held / 2**20,
                            sum(proc.pipeline.calibrating for proc in self._processors.values()))
            else:
                log.warning("samples and events held for calibrating references down to %.0f MiB: consumption resumed",
                            held / 2**20)
        return paused

    def _refresh(self, runner: ConsumerRunner) -> None:
        # the loop's own state too: without batches (held events applied after a calibration, an idle
        # stream) its checkpoints, lag and polls move on and must not look frozen
        loop = runner.metrics()
        self.metrics.observe_runner(loop)
        assigned = set(loop.assigned)
        for key in [k for k in self._processors if k not in assigned]:
            self._retired.append(self._processors.pop(key))  # revoked or lost: its state lives with the new owner
        if self._retired:  # count their work since the last refresh (checkpointed at the revoke) once more
            final: dict[str, ModelMetrics] = {}
            for proc in self._retired:
                final.update(proc.pipeline.metrics_views())
            self._retired = []
            self.metrics.observe_models(final.values())
        views: dict[str, ModelMetrics] = {}
        recounted: set[tuple[str, str]] = set()
        for (topic, partition), proc in self._processors.items():
            for model_key, view in proc.pipeline.metrics_views().items():
                if (topic, partition) in self._new_processors:
                    recounted.add((view.model, view.model_version))
                if model_key in views and model_key not in self._split_models:
                    self._split_models.add(model_key)
                    log.warning("%s arrives on several partitions (now also %s[%d]): key events by model, "
                                "or each partition monitors it separately and /models shows one", model_key,
                                topic, partition)
                views[model_key] = view
            for model, labels in proc.orphan_labels().items():
                if (model, partition) not in self._orphan_warned:
                    self._orphan_warned.add((model, partition))
                    log.warning("%d ground-truth events for model %s arrived on %s[%d], where none of its "
                                "predictions are: key labels by model and use the predictions' partitioner "
                                "(docs/events.md); they cannot join", labels, model,
                                self.settings.ground_truth_topic, partition)
        failed = [f"{key}: {view.reference_error}" for key, view in sorted(views.items())
                  if view.reference_error and (view.model, view.model_version) in self._file_reference_models]
        alarms, self._pending_alarms = self._pending_alarms, []
        self._new_processors.clear()
        self.metrics.observe_models(views.values(), alarms, recounted=recounted)
        for a in alarms:
            log.warning("drift alarm: %s/%s %s score %.2f (%s over %d events) at event %s",
                        a.model, a.model_version, a.signal, a.score, a.statistic, a.window, a.event_id)
        with self._lock:
            self.reference_error = failed[0] if failed else None
        self._views = views
        self._generation += 1
        # the families just written are rendered here, on the loop, rather than by the next scrape
        # (which would hold the GIL against the loop for as long): a scrape then joins rendered bytes
        prerender_exposition(self.registry)

    def _page_reports(self) -> dict[str, ModelPage]:
        """The page views of every model (``Pipeline.page_views``; the UMAP projection when configured), one
        per model key as the metrics see them (the last partition of a split model). Consumer loop only."""
        reports: dict[str, ModelPage] = {}
        for proc in self._processors.values():
            for model_key, view in proc.page_views().items():
                reports[model_key] = self._umap(proc, model_key, view) if self.projections is not None else view
        return reports

    def _serve_page_request(self) -> None:
        """Build the page reports an HTTP thread waits for (on the consumer loop, which owns the processors),
        from the state the metrics were last refreshed from (while that is not so, the request waits for the
        next poll, which refreshes first)."""
        if self._dirty:
            return
        with self._lock:
            request, self._page_request = self._page_request, None
            generation = self._generation
        if request is None:
            return
        try:
            reports = self._page_reports()
        except BaseException as exc:  # the waiting request gets the error; the loop goes on
            request.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            log.exception("building the page reports failed")
            return
        with self._lock:
            self._reports, self._reports_generation = reports, generation
        request.set_result(reports)

    def _umap(self, proc: MonitorPartitionProcessor, key: str, view: ModelPage) -> ModelPage:
        """The page view with its projection handed to the UMAP worker (never blocks; PCA with a note until
        the worker's UMAP is ready)."""
        assert self.projections is not None
        mon = proc.monitors.monitors.get((view.model, view.model_version))
        monitored = view.monitored
        if mon is None or monitored is None or monitored.projection is None:
            return view
        _, ids, _, recent, _ = mon.evidence.recent_embeddings.arrays()
        if list(ids) != list(monitored.projection.current.event_id):  # not the points it shows: leave it
            return view
        projection = self.projections.apply(key, mon.profile, monitored.projection, recent, mon.monitored_events)
        return replace(view, monitored=replace(monitored, projection=projection))

    def _progress(self, now: float) -> None:
        rate = (self._events_seen - self._events_at_last_progress) / max(now - self._last_progress, 1e-9)
        self._last_progress, self._events_at_last_progress = now, self._events_seen
        lag = sum(self.runner.metrics().lag.values()) if self.runner else 0
        self.progress_stream.write(progress_line(self._events_seen, rate, lag, self._views) + "\n")
        self.progress_stream.flush()

    # -- what HTTP reads --------------------------------------------------------------------------------
    def reports(self) -> dict[str, ModelPage]:
        """The model page views, as of the last metrics refresh (safe from any thread). Built by the
        consumer loop when asked (this call waits up to ``page_wait_s`` for its next poll) and cached until
        the next refresh; while no loop runs, or when it does not answer in time, the last ones built."""
        with self._lock:
            if self._reports_generation == self._generation or self.runner is None:
                return dict(self._reports)
            request = self._page_request
            if request is None:
                request = self._page_request = Future()
        try:
            return dict(request.result(timeout=self.page_wait_s))
        except (FutureTimeout, CancelledError):
            with self._lock:
                return dict(self._reports)

    def readiness(self) -> dict[str, bool]:
        """The /readyz checks. ``group_member``: a member id at the last poll, and that poll recent enough
        (within max_poll_interval_ms) for the member still to be in the group; ``partitions_assigned``: it
        holds partitions; ``checkpoints_acknowledged``: no checkpoint is waiting for the broker;
        ``references_loaded``: every model given a reference file (``--reference``) calibrated it (a file that
        cannot be read stops the start instead)."""
        runner = self.runner
        m = runner.metrics() if runner is not None else None
        member = False
        if m is not None and m.group_member and m.last_poll_monotonic is not None:
            max_poll_s = self.settings.kafka_settings(self.bootstrap).max_poll_interval_ms / 1000
            member = self.clock() - m.last_poll_monotonic < max_poll_s
        return {
            "broker_reachable": m is not None and m.broker_reachable is True,
            "group_member": member,
            "partitions_assigned": member and m is not None and len(m.assigned) > 0,
            "checkpoints_acknowledged": m is not None and m.checkpoint_waiting_since is None,
            "references_loaded": self.reference_error is None,
        }

    def readiness_notes(self) -> list[str]:
        """What /readyz shows besides its checks: the partitions whose state the broker lost (latest few),
        and the reference that failed to calibrate."""
        runner = self.runner
        notes = list(runner.metrics().state_loss_notes) if runner is not None else []
        error = self.reference_error
        return notes + ([f"reference of {error}"] if error else [])

    def last_poll(self) -> float | None:
        return self.runner.metrics().last_poll_monotonic if self.runner is not None else None

    # -- the process ------------------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, demo: DemoPlan | None = None,
            on_ready: Callable[[str, int], None] | None = None) -> int:
        """Run until ``stop`` is set. Returns 0 on a clean stop. Raises on fatal set-up errors."""
        s = self.settings
        if s.reference:
            loaded = load_references(s.reference)
            self.references = References(loaded.events, loaded.profiles)
            self._file_reference_models = {(e.model, e.model_version) for e in loaded.events} | set(loaded.profiles)
            log.info("loaded %d reference events and %d profiles from %d file(s) (%d invalid lines)",
                     len(loaded.events), len(loaded.profiles), len(s.reference), loaded.invalid)
        self.calibrations = (ProcessCalibrationExecutor(nice=s.calibration_nice) if s.calibration_worker == "process"
                             else ThreadCalibrationExecutor())
        with bootstrap_servers_for(s.kafka_settings(), logger=log) as bootstrap:
            self.bootstrap = bootstrap
            ks = s.kafka_settings(bootstrap)
            if s.bootstrap_servers is None:  # the embedded broker is memory-only: its topics never pre-exist
                ks = ks.model_copy(update={"create_missing_topics": True})
            setup = TopicSetup(ks)
            partitions = setup.ensure_input(s.partitions)
            log.info("input topic %s has %d partition(s)", s.topic, partitions)
            setup.prepare()  # the other topics with its partition count, before the demo (if any) writes labels
            self.runner = ConsumerRunner(ks, self._factory, on_batch=self._on_batch,
                                         on_poll=self._on_poll, hold=self._hold, clock=self.clock, logger=log)
            http = ObservabilityServer(self.registry, host=s.host, port=s.port, reports=self.reports,
                                       readiness=self.readiness, last_poll=self.last_poll,
                                       liveness_limit_s=s.liveness_limit_s, clock=self.clock,
                                       readiness_notes=self.readiness_notes,
                                       web=s.web_config(), open_healthz=s.open_healthz)
            http.start()
            log.warning("nlpmon: consuming %s on %s; metrics and models at %s/", s.topic, bootstrap, http.url)
            if on_ready is not None:
                on_ready(bootstrap, http.port)
            demo_thread = None
            if demo is not None:
                demo_thread = threading.Thread(target=self._demo, args=(bootstrap, stop, demo), daemon=True,
                                               name="nlpmon-demo")
                demo_thread.start()
            frozen = freeze_startup()  # modules and set-up: out of every later full collection's walk
            log.debug("froze %d start-up objects out of the garbage collector's walks", frozen)
            gc_watch = watch_collections(log)
            try:
                self.runner.run(stop)
            finally:
                gc_watch.close()
                stop.set()
                with self._lock:
                    request, self._page_request = self._page_request, None
                if request is not None:
                    request.cancel()  # the waiting HTTP thread answers with the last page reports
                http.stop()
                self.calibrations.close()
                if self.projections is not None:
                    self.projections.close()
                if demo_thread is not None:
                    demo_thread.join(timeout=10)
        return 0

    def _demo(self, bootstrap: str, stop: threading.Event, plan: DemoPlan) -> None:
        try:
            publish_demo(bootstrap, self.settings.topic, stop, plan,
                         labels_topic=self.settings.ground_truth_topic or None,
                         client_options=self.settings.kafka_settings(bootstrap).client_options())
        except Exception as exc:  # the demo must never take the service down
            log.warning("demo publisher stopped: %s", exc)
