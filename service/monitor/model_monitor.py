"""The per-model drift detector: reference, windows, calibrated signals, alarms. Pure.

No Kafka, no HTTP, no wall clock, no global registry: the shell hands it batches of decoded events of
one (model, version) and reads its views: ``metrics_view`` (typed, cheap: every metrics refresh) and
``page_view`` (typed, ``nlpmon.monitor.page_view``: what the pages show, its ``to_json()`` the JSON of
``/api/models/<model>``: built when asked). What the pages show
beside the detection (examples, outliers, projection, history) is ``nlpmon.monitor.page_evidence``,
fed by this monitor. The same code serves ``nlpmon run`` and ``nlpmon replay``.

Reference, in order of precedence: a loaded profile (``--reference`` file); events with
``"split": "reference"`` (calibrated when the next production event arrives); otherwise the first
``auto_baseline_events`` production events (auto-baseline), which are not monitored themselves.

Calibration is a job handed to the injected executor (``nlpmon.monitor.calibration_jobs``). An inline
executor finishes it before ``submit`` returns and the monitor goes on as if it had calibrated itself. A
deferred one (a worker thread) leaves it pending: from that point every later event of this monitor, of
either split, is held in order (the "deferred" queue: what remained of the batch that started the
calibration, then later batches, each kept whole, with its clock clamp) and processed batch by batch, as
the blocking run processed them, once the profile is applied (``poll``). A held batch is packed
(``PackedEvents``: msgpack bytes, 0.4 of the decoded events' memory, which are its snapshot part as they are)
and decoded again when processed. So the state and report after
the wait equal those of the blocking run; alarms raised by held events carry position -1 (their batch
has gone). The pending calibration's sample and the held events are in the snapshot: a monitor restored
mid-wait hands the same job to its executor again, so no event is lost or counted twice. Beyond
``calibration_pending_events`` held events the monitor waits for the job (or runs it itself if the
executor has not started it). Once the profile is applied, each ``poll`` processes about ``DRAIN_EVENTS``
held events; newer batches wait behind them.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ..drift.clusters import ClusterFeaturizer
from ..drift.detectors import AdwinDetector
from ..drift.distribution import BinnedFeaturizer, CategoricalFeaturizer, LabelIndex, LabelShareFeaturizer
from ..drift.embedding import EmbeddingFeaturizer
from ..drift.featurizers import event_rows
from ..drift.items import ItemColumn, per_event_sums
from ..drift.outliers import OutlierShareFeaturizer
from ..drift.shares import EventShareFeaturizer, unit_rows
from ..drift.signal import SignalUpdate, SignalWindow
from ..sketches.multiscale import MultiScaleWindow
from ..state import PartSet, SnapshotError, decode_state, encode_state
from .calibration_jobs import (
    INLINE,
    CalibrationExecutor,
    CalibrationJob,
    PackedEvents,
    events_state,
)
from .config import MonitorConfig
from .duplicates import RecentIds
from .page_evidence import PageEvidence, label_share_evidence
from .page_view import (
    CalibrationPending,
    ChangePoint,
    ModelPage,
    MonitoredBlocks,
    ReferenceBlock,
    SignalPage,
    Texts,
    Throughput,
    WindowStatistic,
)
from .reference import (
    SEGMENT_EVENTS,
    ReferenceProfile,
    ReferenceSample,
    ReferenceTooSmall,
    check_reference_size,
)
from .signals import SCORED_LABELS, SIGNALS, SPAN_LABELS, SPAN_SIGNALS, extract_columns
from .views import LabelConfidence, LabelShare, ModelMetrics, RisingLabel, SignalMetrics

log = logging.getLogger(__name__)
#: Held events processed per ``poll`` once their calibration is applied (batches are kept whole): the loop
#: catches up in steps of about this many events instead of one long stop.
DRAIN_EVENTS = 2000
#: What a held event that could not be packed is counted as in ``held_bytes`` (a decoded synthetic 384-dim NER
#: event: 7.0 KB, benchmarks/held_memory.py).
DECODED_EVENT_BYTES = 7000
SPECS = {s.name: s for s in SIGNALS}
MAX_CHUNK = 2048  # events per vectorised update; larger batches are split (measured fastest around 2,000)


@dataclass(frozen=True, slots=True)
class Alarm:
    """A (model, version, signal) went from no-drift to drift while processing one event."""

    model: str
    model_version: str
    signal: str
    position: int  # index of the event in the batch handed to ``process``
    event_id: str
    score: float  # largest statistic / threshold ratio (> 1)
    threshold: float  # always 1.0 on this normalised scale
    statistic: str
    window: int
    value: float  # the raw statistic
    value_threshold: float  # its calibrated threshold
    label: str | None = None  # per-label signals: the label whose share rose

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PendingCalibration:
    """A calibration handed to the executor and not applied yet."""

    job: CalibrationJob
    future: Future[ReferenceProfile]


Held = PackedEvents | list[Any]  # a held batch: packed (``_hold``), or decoded when it cannot be packed
Deferred = tuple[str, Any]  # ("call", Held) | ("monitor", Held) | ("clamp", edge or None)


def _hold(events: list[Any]) -> Held:
    """A batch to hold: packed (``PackedEvents``), or the events themselves when msgpack cannot hold one of
    their metadata values (an integer beyond 64 bits; its snapshot fails then, as it always did)."""
    try:
        return PackedEvents.pack(events)
    except (TypeError, OverflowError):
        return list(events)


def _unhold(held: Held) -> list[Any]:
    return held.events() if isinstance(held, PackedEvents) else held


def _encoded(make: Callable[[], Any]) -> bytes:
    return encode_state(make())


class ModelMonitor:
    """Monitor of one (model, model_version). See the module docstring for the reference rules."""

    def __init__(self, model: str, model_version: str, config: MonitorConfig,
                 profile: ReferenceProfile | None = None, executor: CalibrationExecutor = INLINE) -> None:
        self.model = model
        self.model_version = model_version
        self.config = config
        self.executor = executor
        self.calibration: PendingCalibration | None = None
        self._deferred: deque[Deferred] = deque()
        self.profile: ReferenceProfile | None = None
        self.pending_reference = ReferenceSample(config.reference_reservoir, config.seed)
        self.auto_baseline = ReferenceSample(config.reference_reservoir, config.seed + 1)
        self.reference_error: str | None = None
        self._spans = not set(SPAN_SIGNALS) <= set(config.disabled_signals)  # align tokens only when needed
        self.events_total = {"production": 0, "reference": 0}
        # events this process handed to this monitor (not part of the state): Prometheus counters grow by
        # these, so a restored or handed-over monitor does not count its history again
        self.events_here = {"production": 0, "reference": 0}
        self.monitored_events = 0
        self.recent_ids = RecentIds(config.duplicate_window_events)
        self.duplicates = 0  # events dropped as duplicates of a recent event_id (in the state)
        self.duplicates_here = 0  # of which this process saw (not in the state), for the counter
        self.last_event_time: float | None = None
        self.windows: dict[str, SignalWindow] = {}
        self.flags: dict[str, bool] = {}
        self.scores: dict[str, dict[str, Any]] = {}
        self.alarm_counts: dict[str, int] = {}
        self.label_confidence = MultiScaleWindow(1, (1,), 1)  # replaced in _start
        self.confidence_adwin: AdwinDetector | None = None
        self.change_points: list[dict[str, Any]] = []
        self._last_drift: dict[str, int] = {}
        self.evidence = PageEvidence(config, self._keep_text, self._restrict_text)
        # pieces of the state that never change once made (the profile, each full segment of a sample, each
        # held batch), encoded once as snapshot parts: (id(object), *which piece of it) -> (object, part id);
        # no bytes kept
        self._part_cache: dict[tuple[int, ...], tuple[object, str]] = {}
        # bumped by every call that may change the state (``process``, ``add_reference``, a ``poll`` or
        # ``finish`` with something to do); with the counts the shell changes (duplicates), what says that
        # the last ``state_parts`` still holds: (that, its main part's id, every part's (id, maker))
        self._changes = 0
        self._last_parts: tuple[tuple[int, int, int], str, list[tuple[str, Callable[[], bytes]]]] | None = None
        self._last_view: tuple[tuple[int, ...], ModelMetrics] | None = None  # metrics_view's, and when it held
        if profile is not None:
            self._start(profile)

    # -- reference --------------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        if self.profile is not None:
            return "monitoring"
        if self.pending_reference.size or (self.calibration is not None
                                           and self.calibration.job.source == "reference"):
            return "reference_pending"
        return "collecting_baseline"

    @property
    def deferred_events(self) -> int:
        """Events held until the pending calibration is applied."""
        return sum(len(p) for kind, p in self._deferred if kind != "clamp")

    @property
    def held_bytes(self) -> int:
        """Memory held for the pending calibration: its sample (``ReferenceSample.nbytes``) and the events held
        until it is applied (the packed bytes of each held batch; ``DECODED_EVENT_BYTES`` an event for one kept
        decoded). What grows while calibrations queue up and what they free: the service pauses consumption
        past its budget (``Settings.max_held_mb``)."""
        sample = self.calibration.job.sample.nbytes if self.calibration is not None else 0
        return sample + sum(p.nbytes if isinstance(p, PackedEvents) else DECODED_EVENT_BYTES * len(p)
                            for kind, p in self._deferred if kind != "clamp")

    def _start(self, profile: ReferenceProfile) -> None:
        if profile.sample is not None:  # a profile from a file or a snapshot kept texts under another policy
            profile.sample.map_texts(self._restrict_text)
        self.profile = profile
        cfg = self.config
        self.windows = {name: SignalWindow(m, cfg.block_events, cfg.max_window_age_seconds)
                        for name, m in profile.signals.items()}
        self.flags = dict.fromkeys(self.windows, False)
        self._last_drift = {}
        self.scores = {}
        labels = self._confidence_labels()
        longest = max(cfg.distribution_windows)
        self.label_confidence = MultiScaleWindow(2 * len(labels), (longest,), cfg.block_events)
        self.confidence_adwin = None
        self.evidence.reset(tuple(self.windows))
        if "confidence" in profile.signals:
            # ADWIN's delta bounds its false detections per check; one check per block
            self.confidence_adwin = AdwinDetector(delta=min(0.01, cfg.false_alarm_rate * cfg.block_events))
        self.reference_error = None

    def _keep_text(self, text: str | None) -> str | None:
        """An event's text as this monitor may keep it (``config.texts``: None, or redacted and cut)."""
        return self.config.texts.apply(text, self.config.max_text_chars)

    def _restrict_text(self, text: str | None) -> str | None:
        """A text kept earlier (snapshot, saved profile) under this monitor's policy (not cut again)."""
        return self.config.texts.restrict(text)

    def _confidence_labels(self) -> tuple[str, ...]:
        assert self.profile is not None
        sig = self.profile.signals.get("entity_label")
        if sig is not None and isinstance(sig.featurizer, CategoricalFeaturizer):
            return sig.featurizer.labels
        return ("__other__",)

    def _calibrate(self, sample: ReferenceSample, source: str) -> bool:
        """Hand the calibration of ``sample`` to the executor. False (``reference_error`` set) when the sample
        is too small; True otherwise, the profile applied when the executor finished at once, else
        ``self.calibration`` pending. The sample is the job's from now on: the caller replaces it."""
        try:
            check_reference_size(sample.size, self.config)
        except ReferenceTooSmall as exc:
            self.reference_error = str(exc)
            log.warning("%s/%s: %s", self.model, self.model_version, exc)
            return False
        job = CalibrationJob(self.model, self.model_version, source, sample, self.config)
        self.calibration = PendingCalibration(job, self.executor.submit(job))
        if self.calibration.future.done():
            self._apply_calibration(wait=False)
        return True

    def _apply_calibration(self, wait: bool) -> bool:
        """Apply the pending calibration's profile if it is ready (``wait``: make it ready: run the job here if
        the executor has not started it, else wait for it). True when applied. A job's error is raised here,
        as the blocking call raised it."""
        pending = self.calibration
        assert pending is not None
        fut = pending.future
        if not fut.done() and not wait:
            return False
        # not started (or cancelled by a shutdown): run it here rather than queue behind other models' jobs
        run_here = fut.cancelled() or (not fut.done() and fut.cancel())
        profile = pending.job.run() if run_here else fut.result()
        self.calibration = None
        self._forget(pending.job.sample)
        log.info("%s/%s: reference calibrated from %s (%d events, %d signals) in %.1f s",
                 self.model, self.model_version, pending.job.source, profile.events, len(profile.signals),
                 profile.calibration_seconds)
        for name, why in profile.unavailable.items():
            log.info("%s/%s: signal %s unavailable: %s", self.model, self.model_version, name, why)
        self._start(profile)
        return True

    def _changed(self) -> None:
        """The state may change now: the last ``state_parts`` no longer holds."""
        self._changes += 1
        self._last_parts = None

    def _forget(self, obj: object) -> None:
        """``obj`` (a held batch processed, a calibration's sample applied) is gone from the state: its part
        ids are not needed any more, and keeping them would keep it in memory until the next snapshot."""
        self._part_cache = {k: v for k, v in self._part_cache.items() if v[0] is not obj}

    @property
    def waiting(self) -> bool:
        """A calibration is pending, or events held for one are not all processed yet."""
        return self.calibration is not None or bool(self._deferred)

    def poll(self, wait: bool = False) -> list[Alarm]:
        """Apply a finished calibration and process the events held meanwhile, batch by batch (which may
        start another calibration: reference events were held too), about ``DRAIN_EVENTS`` per call so that
        the loop catches up in steps. ``wait``: until no more than ``calibration_pending_events`` events
        are held. Alarms carry position -1."""
        alarms: list[Alarm] = []
        cal = self.calibration
        if self.waiting and (cal is None or cal.future.done() or wait):  # else only looks: nothing changes
            self._changed()
        while self.waiting:
            over = wait and self.deferred_events > self.config.calibration_pending_events
            if self.calibration is not None and not self._apply_calibration(wait=over):
                break
            alarms.extend(self._drain(None if over else DRAIN_EVENTS))
            if self.calibration is None and self._deferred and not over:
                break  # this call's share is done: the rest at the next poll
        return [replace(a, position=-1) for a in alarms]

    def finish(self) -> list[Alarm]:
        """Wait for every pending calibration (running it here if not started) and process every held event.
        Alarms carry position -1."""
        alarms: list[Alarm] = []
        if self.waiting:
            self._changed()
        while self.waiting:
            if self.calibration is not None:
                self._apply_calibration(wait=True)
            alarms.extend(self._drain(None))
        return [replace(a, position=-1) for a in alarms]

    def _drain(self, budget: int | None) -> list[Alarm]:
        """Process held batches in order until none is left, a calibration is pending again, or about
        ``budget`` events were processed (None: no limit)."""
        alarms: list[Alarm] = []
        done = 0
        while self._deferred and self.calibration is None and (budget is None or done < budget):
            kind, payload = self._deferred.popleft()
            if kind != "clamp":
                done += len(payload)
                self._forget(payload)
            if kind == "monitor":
                alarms.extend(self._monitor_chunks(_unhold(payload), 0, 0))
            elif kind == "call":
                rest, self._deferred = self._deferred, deque()
                alarms.extend(self._call(_unhold(payload)))  # what it holds again comes before the rest
                self._deferred.extend(rest)
            else:
                self._clamp(payload)
        return alarms

    def _clamp(self, edge: float | None) -> None:
        """The newest skewed event time of a batch, clamped into the accepted range (``MonitorSet``)."""
        if edge is not None and self.profile is not None:  # like the times of monitored events
            self.last_event_time = edge if self.last_event_time is None else max(self.last_event_time, edge)

    def add_reference(self, events: list[Any]) -> None:
        """Add reference events (a reference file or ``"split": "reference"`` events)."""
        if not events:
            return
        self._changed()
        cols, _ = extract_columns(events, self._spans)
        self.pending_reference.add(cols, len(events), [self._keep_text(e.text) for e in events])
        self.events_total["reference"] += len(events)
        self.events_here["reference"] += len(events)

    # -- streaming --------------------------------------------------------------------------------------
    def process(self, events: list[Any], clamp: float | None = None) -> list[Alarm]:
        """Fold a batch of valid events of this model (in stream order) into the monitor.

        Returns the alarms raised, with positions into ``events`` (-1: an event of an earlier batch, held
        while a calibration was pending). ``clamp``: the newest clamped time of the batch's skewed events
        (``MonitorSet``). CPU-bound; calibrates a reference when the first production event after new
        reference events arrives, or the auto-baseline fills: seconds with an inline executor; with a
        deferred one the events from there on are held (module docstring).
        """
        self._changed()
        alarms = self.poll()
        if self.waiting:  # behind held events: after them
            self._deferred.extend([("call", _hold(events)), ("clamp", clamp)])
            if self.deferred_events > self.config.calibration_pending_events:
                alarms.extend(self.poll(wait=True))
            return alarms
        alarms.extend(self._call(events))
        if self.calibration is not None:
            self._deferred.append(("clamp", clamp))
        else:
            self._clamp(clamp)
        return alarms

    def _call(self, events: list[Any]) -> list[Alarm]:
        """One batch, split into runs of one split each; stops, holding the rest, when a calibration becomes
        pending."""
        alarms: list[Alarm] = []
        start = 0
        n = len(events)
        while start < n:
            split = events[start].split
            end = start + 1
            while end < n and events[end].split == split:
                end += 1
            run = events[start:end]
            if split == "reference":
                self.add_reference(run)
            else:
                alarms.extend(self._production(run, start))
                if self.calibration is not None:
                    if end < n:
                        self._deferred.append(("call", _hold(events[end:])))
                    break
            start = end
        return alarms

    def _production(self, events: list[Any], offset: int) -> list[Alarm]:
        self.events_total["production"] += len(events)
        self.events_here["production"] += len(events)
        # new reference events since the last calibration
        if self.pending_reference.size and self._calibrate(self.pending_reference, "reference"):
            self.pending_reference = ReferenceSample(self.config.reference_reservoir, self.config.seed)
            if self.calibration is not None:  # pending: the run is monitored once it is applied
                self._deferred.append(("monitor", _hold(events)))
                return []
        skip = 0
        if self.profile is None:
            need = self.config.auto_baseline_events - self.auto_baseline.seen
            take = events[: max(need, 0)]
            if take:
                cols, _ = extract_columns(take, self._spans)
                self.auto_baseline.add(cols, len(take), [self._keep_text(e.text) for e in take])
            skip = len(take)
            if (self.auto_baseline.seen >= self.config.auto_baseline_events
                    and self._calibrate(self.auto_baseline, "auto-baseline")):
                # the profile keeps its own thinned sample; the full one would only bloat every snapshot
                self.auto_baseline = ReferenceSample(self.config.reference_reservoir, self.config.seed + 1)
                if self.calibration is not None:  # pending: the rest of the run is monitored once it is applied
                    if skip < len(events):
                        self._deferred.append(("monitor", _hold(events[skip:])))
                    return []
            if self.profile is None or skip == len(events):
                return []
        return self._monitor_chunks(events, skip, offset)

    def _monitor_chunks(self, events: list[Any], skip: int, offset: int) -> list[Alarm]:
        """Monitor ``events[skip:]`` in chunks counted from ``skip`` (alarm positions: ``offset`` + index)."""
        alarms: list[Alarm] = []
        for start in range(skip, len(events), MAX_CHUNK):  # keep the per-chunk arrays in cache
            alarms.extend(self._monitor(events[start:start + MAX_CHUNK], offset + start))
        return alarms

    def _monitor(self, events: list[Any], offset: int) -> list[Alarm]:
        n = len(events)
        cols, times = extract_columns(events, self._spans)
        finite = times[np.isfinite(times)]
        if finite.size:
            self.last_event_time = float(finite.max())
        self.monitored_events += n
        base = self.monitored_events - n
        updates: list[tuple[str, SignalWindow, Any, SignalUpdate]] = []
        # embedding signal -> (event, raw scores, item rows)
        scored: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        counted: dict[str, tuple[tuple[str, ...], np.ndarray, np.ndarray]] = {}  # label rows, shared
        for name, win in self.windows.items():
            spec = SPECS.get(name)
            col = cols[spec.column if spec is not None else name]
            feat = win.model.featurizer
            if isinstance(feat, EmbeddingFeaturizer):
                if len(col):
                    item_rows, raw = feat.transform_scored(col.values)
                else:
                    item_rows, raw = np.zeros((0, feat.n_features), np.float32), np.zeros(0)
                rows = per_event_sums(item_rows, col.event, n)
                items = np.bincount(col.event, minlength=n).astype(np.float64)
                upd = win.update_rows(rows, items, times)
                scored[name] = (col.event, raw, item_rows)
                if name == "embedding" and len(col):
                    scores = feat.outlier_scores(item_rows)
                    self.evidence.track_outliers(scores, col.event, events, base)
                    self.evidence.recent_embeddings.add(base, col.event, scores, events)
            elif isinstance(feat, OutlierShareFeaturizer):
                if spec is None or spec.column not in scored:
                    continue  # its embedding signal is not running (an inconsistent profile)
                ev, raw, _ = scored[spec.column]
                marks = feat.marks(raw)
                rows = np.bincount(ev, weights=marks, minlength=n).astype(np.float64)[:, None]
                items = np.bincount(ev, minlength=n).astype(np.float64)
                upd = win.update_rows(rows, items, times)
                self.evidence.share_history.add(base, rows[:, 0], items)
                self.evidence.track_marked(marks, ev, raw, events, base)
            elif isinstance(feat, EventShareFeaturizer):
                bad = feat.bad_units(col)
                rows, items = unit_rows(col.event, bad, n)
                upd = win.update_rows(rows, items, times)
                if self.config.outlier_examples and bad.any():
                    self.evidence.track_share_examples(name, bad, col, events, base)
            elif isinstance(feat, ClusterFeaturizer):
                if spec is None or spec.column not in scored:
                    continue  # its embedding signal is not running (an inconsistent profile)
                ev, raw, item_rows = scored[spec.column]
                positions, values = feat.marked_rows(item_rows, raw, ev)
                upd = win.update_sparse(n, positions, values, np.bincount(ev, minlength=n).astype(np.float64), times)
            elif isinstance(feat, CategoricalFeaturizer):
                key = spec.column if spec is not None else name
                have = counted.get(key)
                if have is not None and have[0] == feat.labels:
                    rows, items = have[1], have[2]
                else:
                    rows, items = event_rows(feat, col, n)
                    counted[key] = (feat.labels, rows, items)
                upd = win.update_rows(rows, items, times)
            else:
                upd = win.update(col, n, times)
            updates.append((name, win, feat, upd))
        alarms, flag_rows = self._judge(updates, events, offset, n)
        ratios = {name: upd.ratio for name, _, _, upd in updates}
        flags = dict(zip([u[0] for u in updates], flag_rows, strict=True))
        self._update_label_confidence(cols[SCORED_LABELS], cols["confidence"], n, times)
        if "span_length" in self.windows:
            self.evidence.recent_span_lengths.add(list(cols[SPAN_LABELS].values), cols["span_length"].values)
        self.evidence.history.add(base, times, ratios, flags)
        self.evidence.track_examples(cols, events, base)
        alarms.sort(key=lambda a: a.position)
        return alarms

    def _judge(self, updates: list[tuple[str, SignalWindow, Any, SignalUpdate]], events: list[Any], offset: int,
               n: int) -> tuple[list[Alarm], np.ndarray]:
        """Flags, alarms and scores of every signal updated over the batch's ``n`` events (the last
        ``n`` monitored). Hysteresis: a flag clears only after ``clear_after_events`` events with every
        statistic below its threshold, so one drift episode raises one alarm instead of a burst of them.
        All signals at once (their per-event rows stacked): the alarms (in signal order, then by position, as
        one signal after the other) and each signal's per-event flags (signals, n), in ``updates``' order."""
        if not updates:
            return [], np.zeros((0, n), bool)
        names = [u[0] for u in updates]
        idx = np.arange(self.monitored_events - n, self.monitored_events)
        before = np.asarray([self._last_drift.get(name, -(10**12)) for name in names], np.int64)
        drift = np.stack([u[3].drift for u in updates])  # (signals, n)
        last = np.maximum.accumulate(np.where(drift, idx[None, :], before[:, None]), axis=1)
        flag = idx[None, :] - last < self.config.clear_after_events
        was = np.asarray([self.flags[name] for name in names], bool)
        flips = flag & ~np.concatenate([was[:, None], flag[:, :-1]], axis=1)
        alarms: list[Alarm] = []
        for s, i in zip(*np.nonzero(flips), strict=True):
            name, win, feat, upd = updates[s]
            j = win.model.windows.index(int(upd.window[i]))
            k = int(upd.stat[i])
            label = None
            if upd.detail is not None and upd.detail[i] >= 0 and isinstance(feat, CategoricalFeaturizer):
                label = feat.labels[int(upd.detail[i])]
            alarms.append(Alarm(self.model, self.model_version, name, offset + int(i),
                                events[i].event_id, float(upd.ratio[i]), 1.0,
                                win.model.stat_names[k], int(upd.window[i]), float(upd.value[i]),
                                float(win.model.thresholds[j, k]), label))
        counts = flips.sum(axis=1).tolist()
        for name, newest, on, c, (_, win, _, upd) in zip(names, last[:, -1].tolist(), flag[:, -1].tolist(), counts,
                                                       updates, strict=True):
            self._last_drift[name] = newest
            self.alarm_counts[name] = self.alarm_counts.get(name, 0) + c
            self.flags[name] = on
            self.scores[name] = {"score": float(upd.ratio[-1]), "window": int(upd.window[-1]),
                                 "statistic": win.model.stat_names[int(upd.stat[-1])]}
        return alarms, flag

    def _update_label_confidence(self, labels: ItemColumn, scores: ItemColumn, n: int, times: np.ndarray) -> None:
        if self.profile is None:
            return
        vocab = self._confidence_labels()
        sig = self.profile.signals.get("entity_label")
        lookup = (sig.featurizer.lookup() if sig is not None and isinstance(sig.featurizer, CategoricalFeaturizer)
                  else LabelIndex({}, 0))
        idx = np.fromiter(map(lookup.__getitem__, labels.values), np.int64, count=len(labels))
        L = len(vocab)
        sums = np.bincount(scores.event * L + idx, weights=scores.values, minlength=n * L).reshape(n, L)
        counts = np.bincount(scores.event * L + idx, minlength=n * L).reshape(n, L)
        self.label_confidence.update(np.hstack([sums, counts]), np.ones(n), times)
        if self.confidence_adwin is not None and "confidence" in self.windows:
            feat = self.windows["confidence"].model.featurizer
            assert isinstance(feat, BinnedFeaturizer)
            pit = feat.pit(np.asarray(scores.values, np.float64))
            per_event = np.bincount(scores.event, weights=pit, minlength=n)
            cnt = np.bincount(scores.event, minlength=n)
            base = self.monitored_events - n
            for pos in self.confidence_adwin.update(per_event, cnt, self.config.block_events):
                self.change_points.append({"signal": "confidence", "event": base + int(pos),
                                           **self.confidence_adwin.last_change})
                self.change_points = self.change_points[-20:]

    def metrics_view(self) -> ModelMetrics:
        """What the metrics read (``nlpmon.monitor.views``): counts, status, every signal's score and flag and
        the evidence figures exported as metrics. Cheap (no page evidence); built on every metrics refresh,
        and made again only when the monitor changed since (else the same object: the exporter skips it)."""
        now = (self._changes, self.duplicates_here, *self.events_here.values())
        if self._last_view is not None and self._last_view[0] == now:
            return self._last_view[1]
        view = self._metrics_view()
        self._last_view = (now, view)
        return view

    def _metrics_view(self) -> ModelMetrics:
        if self.profile is None:
            ref_events = self.pending_reference.size or self.auto_baseline.seen
            return ModelMetrics(self.model, self.model_version, self.status, dict(self.events_total),
                                dict(self.events_here), self.duplicates_here, ref_events, self.last_event_time,
                                reference_error=self.reference_error)
        signals = {name: self._signal_metrics(name, win) for name, win in self.windows.items()}
        confidence = {label: LabelConfidence(c["mean"], int(c["count"]))
                      for label, c in self.label_confidence_report().items()}
        return ModelMetrics(self.model, self.model_version, self.status, dict(self.events_total),
                            dict(self.events_here), self.duplicates_here, self.profile.events, self.last_event_time,
                            signals, confidence, reference_error=self.reference_error)

    def _signal_metrics(self, name: str, win: SignalWindow) -> SignalMetrics:
        """One signal's metrics view: the same figures as its page evidence where the metrics export them."""
        s = self.scores.get(name)
        score, drift = (0.0 if s is None else float(s["score"])), self.flags.get(name, False)  # as the report
        feat = win.model.featurizer
        if isinstance(feat, LabelShareFeaturizer):
            ev = label_share_evidence(win, feat)
            return SignalMetrics(name, score, drift, rising_labels=tuple(
                RisingLabel(r.label, r.score) for r in ev.rising_labels))
        if isinstance(feat, (OutlierShareFeaturizer, EventShareFeaturizer, ClusterFeaturizer)):
            return SignalMetrics(name, score, drift)
        for w in sorted(win.model.windows, reverse=True):  # the longest window with data, as the evidence
            cur = win.windows.current_sums(w)
            if cur is not None and cur[1] > 0:
                if isinstance(feat, CategoricalFeaturizer):
                    return SignalMetrics(name, score, drift, window=w, moved_labels=tuple(
                        LabelShare(str(m["label"]), float(m["reference"]), float(m["current"]))
                        for m in feat.moved(cur[0])))
                if isinstance(feat, BinnedFeaturizer):
                    return SignalMetrics(name, score, drift, window=w,
                                         quantile_levels=tuple(float(x) for x in feat.QUANTILE_LEVELS),
                                         reference_quantiles=tuple(float(q) for q in feat.ref_quantiles),
                                         current_quantiles=tuple(float(q) for q in feat.window_quantiles(cur[0])))
                if isinstance(feat, EmbeddingFeaturizer):
                    return SignalMetrics(name, score, drift, window=w)
                break
        return SignalMetrics(name, score, drift)

    def page_view(self) -> ModelPage:
        """The typed page view (``nlpmon.monitor.page_view``): status, counts, reference, every signal's score,
        threshold, flag and evidence, the examples, projection and change points. Built when a page or the
        API asks; the page evidence behind it is cached until new events arrive."""
        cal = self.calibration
        pending = (None if cal is None else  # only while waiting: the view after the wait is the blocking run's
                   CalibrationPending(cal.job.source, cal.job.sample.size, self.deferred_events))
        texts = Texts(self.config.texts.keep, bool(self.config.texts.redact))

        def model_page(reference: ReferenceBlock, monitored: MonitoredBlocks | None = None) -> ModelPage:
            return ModelPage(self.model, self.model_version, self.status, dict(self.events_total),
                             dict(self.events_here), self.duplicates, self.duplicates_here, self.monitored_events,
                             self.last_event_time, self.reference_error, texts, reference, pending, monitored)

        if self.profile is None:
            return model_page(ReferenceBlock(self.pending_reference.size or self.auto_baseline.seen,
                                       self.config.auto_baseline_events))
        p = self.profile
        reference = ReferenceBlock(p.events, None, p.source, dict(p.unavailable), round(p.calibration_seconds, 3),
                                   self.config.false_alarm_rate)
        signals: dict[str, SignalPage] = {}
        for name, win in self.windows.items():
            s = self.scores.get(name, {"score": 0.0, "window": 0, "statistic": None})
            signals[name] = SignalPage(
                name, s["score"], s["window"], s["statistic"], self.flags.get(name, False),
                self.alarm_counts.get(name, 0),
                tuple(WindowStatistic(w["window"], w["statistic"], w["value"], w["threshold"])
                      for w in win.current()["windows"]),
                self.evidence.signal_evidence(name, win, p),
                tuple(win.model.calibration.get("windows_not_evaluated", [])))
        share = self.windows.get("embedding_outliers")
        history = self.evidence.history.view(
            self.evidence.share_history.view(share.model.featurizer)
            if share is not None and isinstance(share.model.featurizer, OutlierShareFeaturizer) else None)
        rate, span = self.evidence.history.events_per_second()
        page = self.evidence.page_blocks(p, self.monitored_events)
        outliers = tuple(replace(o, nearest_reference=page.outlier_neighbours.get(o.index, ()))
                         for o in self.evidence.outliers)
        monitored = MonitoredBlocks(
            signals, {k: (c["mean"], int(c["count"])) for k, c in self.label_confidence_report().items()},
            tuple(ChangePoint.from_json(c) for c in self.change_points), outliers, history,
            Throughput(rate, span), page.examples, page.projection, page.confidence_by_label)
        return model_page(reference, monitored)

    def report(self) -> dict[str, Any]:
        """``page_view().to_json()``: the JSON of ``/api/models/<model>`` (docs/api.md)."""
        return self.page_view().to_json()

    def label_confidence_report(self) -> dict[str, dict[str, float]]:
        """Per-label mean confidence and count over the longest distribution window (empty until it is full)."""
        if self.profile is None:
            return {}
        vocab = self._confidence_labels()
        cur = self.label_confidence.current_sums(max(self.config.distribution_windows))
        if cur is None:
            return {}
        L = len(vocab)
        sums, counts = cur[0][:L], cur[0][L:]
        return {vocab[i]: {"mean": float(sums[i] / counts[i]), "count": int(counts[i])}
                for i in range(L) if counts[i] > 0}

    # -- state ------------------------------------------------------------------------------------------
    def state(self, *, with_profile: bool = True, with_held: bool = True) -> dict[str, Any]:
        """The whole state; without the reference profile (``with_profile=False``) or without a pending
        calibration and the events held for it (``with_held=False``): :meth:`state_parts` adds those."""
        return {
            "model": self.model, "model_version": self.model_version,
            "profile": None if self.profile is None or not with_profile else self.profile.state(),
            "pending_reference": self.pending_reference.state(), "auto_baseline": self.auto_baseline.state(),
            "reference_error": self.reference_error, "events_total": self.events_total,
            "monitored_events": self.monitored_events, "last_event_time": self.last_event_time,
            "windows": {k: w.state() for k, w in self.windows.items()},
            "flags": self.flags, "last_drift": self._last_drift, "scores": self.scores,
            "alarm_counts": self.alarm_counts,
            "label_confidence": self.label_confidence.state(),
            "adwin": None if self.confidence_adwin is None else self.confidence_adwin.state(),
            "change_points": self.change_points,
            "outliers": [o.state() for o in self.evidence.outliers],
            "recent_ids": self.recent_ids.state(), "duplicate_events": self.duplicates,
            "marked": [o.state() for o in self.evidence.marked],
            "share_examples": self.evidence.share_examples_state(),
            "span_lengths": self.evidence.recent_span_lengths.state(),
            "calibration": None if not with_held or self.calibration is None else
            {"source": self.calibration.job.source, "sample": self.calibration.job.sample.state()},
            "deferred": [self._held_state(kind, p) for kind, p in self._deferred] if with_held else [],
        }

    def _held_state(self, kind: str, payload: Any) -> list[Any]:
        if kind == "clamp":
            return [kind, payload]
        if isinstance(payload, PackedEvents):
            return [kind, payload.state(self.config.texts)]
        return [kind, events_state(payload, self.config.texts)]

    def state_parts(self, parts: PartSet) -> str:
        """Add this monitor's state to ``parts`` as content-addressed parts (``nlpmon.state.content_id``) and
        return the id of the main one: the state without the pieces that never change once made, which are
        parts of their own: the reference profile, each full segment of a reference sample
        (``ReferenceSample.fixed_segments``: the auto-baseline or the reference events being collected, a
        pending calibration's sample), and each batch of events held meanwhile. Those are encoded once for
        their id and their bytes are not kept (``PartSet`` makes them again if a store asks). An idle model
        gives the same ids at every snapshot, a model collecting its baseline adds only its newest segments,
        and a model whose calibration is pending only its newest held batches (the sample's segments are
        those it had while collecting it). A monitor unchanged since its last ``state_parts`` (no event, no
        calibration applied) encodes nothing: the same ids, their bytes made again only if a store asks."""
        now = (self._changes, self.duplicates, self.recent_ids.admitted)
        last = self._last_parts
        if last is not None and last[0] == now:
            for pid, make in last[2]:
                parts.add_known(pid, make)
            return last[1]
        used: dict[tuple[int, ...], tuple[object, str]] = {}
        made: list[tuple[str, Callable[[], bytes]]] = []

        def part(obj: object, make: Callable[[], Any], *which: int) -> str:
            key = (id(obj), *which)
            cached = self._part_cache.get(key)
            if cached is None or cached[0] is not obj:
                cached = (obj, parts.add(encode_state(make())))
            else:
                parts.add_known(cached[1], lambda: encode_state(make()))
            used[key] = cached
            made.append((cached[1], functools.partial(_encoded, make)))
            return cached[1]

        main = parts.add(encode_state(self._parts_tree(part)))
        self._part_cache = used
        made.append((main, self._main_part_again))
        self._last_parts = (now, main, made)
        return main

    def _main_part_again(self) -> bytes:
        """The main part of the last ``state_parts``, the monitor unchanged since, made again (for a store
        that did not write it; ``PartSet`` checks it against its id)."""
        return encode_state(self._parts_tree(lambda obj, make, *which: self._part_cache[(id(obj), *which)][1]))

    def _parts_tree(self, part: Callable[..., str]) -> dict[str, Any]:
        """The main part's tree: the state without its parts, which ``part(obj, make, *which)`` names."""
        state = self.state(with_profile=False, with_held=False)

        def sample_parts(sample: ReferenceSample, frozen: bool = False) -> dict[str, Any]:
            # frozen (a calibration's sample): every segment, the last one short; else the full segments no
            # later ``add`` changes (none once it evicted) and the rest in the main part. A piece is known by
            # its segment and the events evicted so far (a frozen sample's segments after an eviction differ
            # from those cached before it).
            n, size = SEGMENT_EVENTS, sample.size
            fixed = -(-size // n) if frozen else sample.fixed_segments()
            evicted = sample.seen - size
            ids = [part(sample, functools.partial(sample.segment_state, i * n, min((i + 1) * n, size)), i, evicted)
                   for i in range(fixed)]
            return {"head": sample.head_state(), "segment_parts": ids,
                    "tail": sample.segment_state(min(fixed * n, size), size)}

        profile, pending = self.profile, self.calibration
        if profile is not None:
            state["profile_part"] = part(profile, profile.state, -1)
        state["pending_reference"] = sample_parts(self.pending_reference)
        state["auto_baseline"] = sample_parts(self.auto_baseline)
        if pending is not None:
            state["calibration"] = {"source": pending.job.source, "sample": sample_parts(pending.job.sample, True)}
        state["deferred_parts"] = [part(p, functools.partial(self._held_state, kind, p)) for kind, p in self._deferred]
        return state

    @classmethod
    def from_state(cls, s: dict[str, Any], config: MonitorConfig, executor: CalibrationExecutor = INLINE,
                   parts: Mapping[str, bytes] | None = None) -> ModelMonitor:
        """The monitor ``state`` saved (by :meth:`state`, or by :meth:`state_parts` with its ``parts``). A
        calibration pending then is handed to ``executor`` again (applied by the next ``poll`` or
        ``process``), with the events it held."""
        m = cls(s["model"], s["model_version"], config, executor=executor)
        if s.get("profile_part") is not None:
            if parts is None or s["profile_part"] not in parts:
                raise SnapshotError(f"{s['model']}/{s['model_version']}: the reference profile's part is missing")
            m._start(ReferenceProfile.from_state(decode_state(parts[s["profile_part"]])))
        elif s["profile"] is not None:
            m._start(ReferenceProfile.from_state(s["profile"]))
        def part(pid: str) -> Any:
            if parts is None or pid not in parts:
                raise SnapshotError(f"{s['model']}/{s['model_version']}: a part of its state is missing")
            return decode_state(parts[pid])

        def sample(t: dict[str, Any]) -> ReferenceSample:  # whole, or in segments (``state_parts``)
            if "segment_parts" not in t:
                return ReferenceSample.from_state(t)
            return ReferenceSample.from_segments(t["head"], [*map(part, t["segment_parts"]), t["tail"]])

        m.pending_reference = sample(s["pending_reference"]).map_texts(m._restrict_text)
        m.auto_baseline = sample(s["auto_baseline"]).map_texts(m._restrict_text)
        m.reference_error = s["reference_error"]
        m.events_total = dict(s["events_total"])
        m.monitored_events = int(s["monitored_events"])
        m.last_event_time = s["last_event_time"]
        for k, ws in s["windows"].items():
            m.windows[k].load_state(ws)
        m.flags = {k: bool(v) for k, v in s["flags"].items()}
        m.scores = dict(s["scores"])
        m._last_drift = {k: int(v) for k, v in s["last_drift"].items()}
        m.alarm_counts = {k: int(v) for k, v in s["alarm_counts"].items()}
        m.label_confidence.load_state(s["label_confidence"])
        if s["adwin"] is not None and m.confidence_adwin is not None:
            m.confidence_adwin.load_state(s["adwin"])
        m.change_points = list(s["change_points"])
        if s.get("recent_ids") is not None:  # snapshots of earlier builds have none
            m.recent_ids = RecentIds.from_state(s["recent_ids"], config.duplicate_window_events)
            m.duplicates = int(s["duplicate_events"])
        m.evidence.load_snapshot(s["outliers"], s.get("marked", []), s.get("share_examples") or {})
        if s.get("span_lengths") is not None:  # snapshots of earlier builds have none
            m.evidence.recent_span_lengths.load_state(s["span_lengths"])
        held = [part(pid) for pid in s["deferred_parts"]] if "deferred_parts" in s else s.get("deferred", [])
        m._deferred = deque((str(kind), (None if p is None else float(p)) if kind == "clamp"
                             else PackedEvents.from_state(p)) for kind, p in held)
        cal = s.get("calibration")
        if cal is not None and "sample_part" in cal:
            cal = {**cal, "sample": part(cal["sample_part"])}
        if cal is not None:
            job = CalibrationJob(m.model, m.model_version, str(cal["source"]), sample(cal["sample"]), config)
            m.calibration = PendingCalibration(job, executor.submit(job))
        return m
