"""The exporter: ``NlpmonMetrics`` registers every metric of ``METRICS`` (``nlpmon.observability.metrics``,
the one declaration) on the registry it is given and keeps them current from the consumer loop.

Fed once per batch (``observe_batch``), per runner copy (``observe_runner``) and per report refresh
(``observe_reports``: the models' metrics views, ``nlpmon.monitor.views.ModelMetrics``); the
module docstring of ``nlpmon.observability.metrics`` describes what each metric means, the cardinality
caps and retirement. Not thread-safe for writers: call the ``observe_*`` methods from one thread (the
consumer loop). Scrapes (``render_exposition`` or ``generate_latest``) may run concurrently from any
thread; the labelled counters and gauges are ``nlpmon.observability.exposition.LabelledFamily`` collectors,
which render fast.
"""

from __future__ import annotations

import math
import time
from collections import Counter as Tally
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .. import __version__
from ..monitor.views import ModelMetrics
from ..quality.report import DelaySeconds, QualityReport
from .exposition import LabelledFamily
from .histograms import MirroredHistogram, VectorHistogram
from .metrics import (
    ALL_LABELS,
    CONFIDENCE_SOURCES,
    LABEL_SOURCES,
    METRICS,
    OTHER,
    RISING_LABELS,
    SPECS,
    STATUSES,
    MetricSpec,
)
from .quality_series import join_series, other_quality_gauges, quality_gauges


# -- what the observe_* methods read (structural, so this module never imports Kafka) --------------------
class AlarmLike(Protocol):
    """What ``observe_reports`` reads of a ``nlpmon.monitor.model_monitor.Alarm``."""

    @property
    def model(self) -> str: ...
    @property
    def model_version(self) -> str: ...
    @property
    def signal(self) -> str: ...


class RunnerMetricsLike(Protocol):
    """What ``observe_runner`` reads of a ``nlpmon.kafka.runner.RunnerMetrics``."""

    @property
    def dead_letters_sent(self) -> int: ...
    @property
    def batches(self) -> int: ...
    @property
    def commit_failures(self) -> int: ...
    @property
    def rebalances(self) -> int: ...
    @property
    def circuit_trips(self) -> int: ...
    @property
    def circuit_state(self) -> str: ...
    @property
    def last_poll_monotonic(self) -> float | None: ...
    @property
    def longest_poll_gap_s(self) -> float: ...
    @property
    def assigned(self) -> tuple[tuple[str, int], ...]: ...
    @property
    def lag(self) -> dict[tuple[str, int], int]: ...
    @property
    def group_member(self) -> bool: ...
    @property
    def batches_cut(self) -> int: ...
    @property
    def checkpoint_waiting_since(self) -> float | None: ...
    @property
    def checkpoint_stalls(self) -> int: ...
    @property
    def held_pauses(self) -> int: ...
    @property
    def held_paused(self) -> bool: ...
    @property
    def client_errors(self) -> int: ...
    @property
    def state_losses(self) -> int: ...
    @property
    def checkpoints(self) -> int: ...
    @property
    def checkpoints_skipped(self) -> int: ...
    @property
    def snapshots_written(self) -> int: ...
    @property
    def snapshots_produced(self) -> int: ...
    @property
    def snapshot_chunks_produced(self) -> int: ...
    @property
    def snapshot_parts_produced(self) -> int: ...
    @property
    def snapshot_bytes_produced(self) -> int: ...
    @property
    def snapshot_tombstone_failures(self) -> int: ...
    @property
    def lost_assignments(self) -> int: ...
    @property
    def offset_gaps(self) -> int: ...
    @property
    def statistics_undecodable(self) -> int: ...


@dataclass(frozen=True, slots=True)
class _DelaysSeen:
    """A quality report's ``label_delay_seconds`` as last seen: the baseline its growth is measured from."""

    edges: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum: float


def _delay_growth(last: _DelaysSeen | None, delay: DelaySeconds) -> tuple[_DelaysSeen, list[int], float]:
    """The new baseline and the growth of the cumulative bucket counts and sum since ``last``; no growth
    (re-based) when a count went down or the edges changed (the core started counting again)."""
    now = _DelaysSeen(tuple(float(e) for e in delay.edges), tuple(int(c) for c in delay.cumulative_counts),
                      float(delay.sum or 0.0))
    if len(now.cumulative) != len(now.edges) + 1:
        raise ValueError(f"label_delay_seconds: {len(now.edges)} edges need {len(now.edges) + 1} cumulative "
                         f"counts, got {len(now.cumulative)}")
    if last is None:
        last = _DelaysSeen(now.edges, (0,) * len(now.cumulative), 0.0)
    if last.edges != now.edges or any(n < p for n, p in zip(now.cumulative, last.cumulative, strict=True)):
        return now, [0] * len(now.cumulative), 0.0
    return now, [n - p for n, p in zip(now.cumulative, last.cumulative, strict=True)], max(now.sum - last.sum, 0.0)


@dataclass
class _ModelState:
    """Bookkeeping of one (model, version): which series it writes to, its counter baselines, activity."""

    key: tuple[str, str]  # (model, version) of the reports
    series: tuple[str, str]  # (model, version) own series, or (OTHER, OTHER)
    last_active: float
    totals: dict[str, int] = field(default_factory=dict)  # counted events per split at the last report
    seen_events: dict[str, int] = field(default_factory=dict)  # the report's cumulative events, for activity
    labels: set[str] = field(default_factory=set)  # labels with their own series (own-series models)
    retired: bool = False
    join_totals: dict[str, int] = field(default_factory=dict)  # the quality report's join_here, last seen
    delays: _DelaysSeen | None = None  # the quality report's label_delay_seconds, last seen
    # the view its own gauges were last set from, the series they were set under and their keys: the same view
    # object again (an unchanged monitor) sets nothing
    gauges_from: tuple[object, tuple[str, str], frozenset[tuple[str, tuple[str, ...]]]] | None = None

    @property
    def own(self) -> bool:
        return self.series != (OTHER, OTHER)


Child = Any  # a prometheus_client labelled child (Counter, Gauge)
SeriesKey = tuple[str, tuple[str, ...]]  # (metric name, label values)


class NlpmonMetrics:
    """Registers every metric of ``METRICS`` on ``registry`` and keeps them current.

    ``clock`` is wall time (epoch seconds): event ages and retirement use it. ``monotonic`` must be the
    clock the consumer loop stamps ``last_poll_monotonic`` with. Raises ValueError on a non-positive cap
    and prometheus_client's ValueError when ``registry`` already holds an nlpmon metric.
    """

    def __init__(self, registry: CollectorRegistry, *, max_models: int = 50, max_labels: int = 30,
                 retire_after_s: float = 3600.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if max_models < 1 or max_labels < 1 or retire_after_s <= 0:
            raise ValueError("max_models and max_labels must be >= 1 and retire_after_s > 0")
        self.registry = registry
        self.max_models, self.max_labels, self.retire_after_s = max_models, max_labels, retire_after_s
        self._clock, self._monotonic = clock, monotonic
        self._metrics: dict[str, Any] = {}
        for spec in METRICS:
            self._metrics[spec.name] = self._declare(spec)
        self._event_age: VectorHistogram = self._metrics["nlpmon_event_age_seconds"]
        self._children: dict[SeriesKey, Child] = {}
        self._series_of: dict[tuple[str, str], set[SeriesKey]] = {}  # model series -> its children
        self._gauges: set[SeriesKey] = set()  # per-model gauge children set by the last report refresh
        self._models: dict[tuple[str, str], _ModelState] = {}
        self._own_count = 0
        self._reasons: set[str] = set()
        self._lag: set[tuple[str, str]] = set()
        self._runner_totals: dict[str, int] = {}
        self._last_poll: float | None = None
        self._started = monotonic()
        self._metrics["nlpmon_build_info"].labels(__version__).set(1)
        self._metrics["nlpmon_last_poll_age_seconds"].set_function(self._poll_age)
        for s in ("own", OTHER):
            self._metrics["nlpmon_tracked_models"].labels(s).set(0)

    def _declare(self, spec: MetricSpec) -> Any:
        kw: dict[str, Any] = {"labelnames": spec.labels, "registry": self.registry}
        if spec.type in ("counter", "gauge") and spec.labels:  # rendered from cached lines (exposition.py)
            family = LabelledFamily(spec.name, spec.help, spec.type, spec.labels)
            self.registry.register(family)
            return family
        if spec.type == "counter":
            return Counter(spec.name, spec.help, **kw)
        if spec.type == "gauge":
            return Gauge(spec.name, spec.help, **kw)
        if spec.name == "nlpmon_event_age_seconds":
            hist = VectorHistogram(spec.name, spec.help, spec.buckets)
            self.registry.register(hist)
            return hist
        if spec.name == "nlpmon_quality_label_delay_seconds":  # buckets come from the quality reports
            mirrored = MirroredHistogram(spec.name, spec.help, spec.labels)
            self.registry.register(mirrored)
            return mirrored
        return Histogram(spec.name, spec.help, buckets=spec.buckets, **kw)

    # -- children -----------------------------------------------------------------------------------------
    def _child(self, name: str, values: tuple[str, ...]) -> Child:
        key = (name, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._metrics[name].labels(*values)
            if SPECS[name].per_model:
                self._series_of.setdefault((values[0], values[1]), set()).add(key)
        return child

    def _remove(self, key: SeriesKey) -> None:
        if self._children.pop(key, None) is not None:
            self._metrics[key[0]].remove(*key[1])
            if SPECS[key[0]].per_model:
                self._series_of.get((key[1][0], key[1][1]), set()).discard(key)

    def _set(self, name: str, values: tuple[str, ...], value: float, seen: set[SeriesKey]) -> None:
        self._child(name, values).set(value)
        seen.add((name, values))

    def series_count(self) -> int:
        """Labelled children currently exported (for tests and capacity checks)."""
        return len(self._children)

    # -- per batch ----------------------------------------------------------------------------------------
    def observe_batch(self, *, seconds: float | None = None,
                      event_timestamps: Sequence[float | None] | npt.NDArray[np.float64] = (),
                      rejected_reasons: Iterable[str] = (), unkeyed: Mapping[str, int] | None = None,
                      now: float | None = None,
                      clock_skew: Mapping[tuple[str, str, str], int] | None = None) -> None:
        """Record one processed batch: its duration, the event times (epoch s; None/NaN skipped) of its
        valid events, the reason code of each rejected event, ``{topic: valid events without a Kafka
        key}``, and the events with a skewed clock (``(model, version, direction) -> count``). Never
        blocks; O(batch) in numpy."""
        if seconds is not None:
            self._metrics["nlpmon_batch_seconds"].observe(seconds)
        ts = np.asarray(event_timestamps, dtype=np.float64)
        if ts.size:
            now = self._clock() if now is None else now
            self._event_age.observe_many(np.maximum(now - ts, 0.0))
        for reason, n in Tally(rejected_reasons).items():
            if reason not in self._reasons:
                if len(self._reasons) >= self.max_labels:
                    reason = OTHER
                else:
                    self._reasons.add(reason)
            self._child("nlpmon_invalid_events_total", (reason,)).inc(n)
        for topic, n in (unkeyed or {}).items():
            if n:
                self._child("nlpmon_unkeyed_events_total", (topic,)).inc(n)
        if clock_skew:
            stamp = self._clock() if now is None else now
            for (model, version, direction), n in clock_skew.items():
                st = self._state((model, version), stamp)
                if not st.retired:
                    self._child("nlpmon_clock_skew_events_total", (*st.series, direction)).inc(n)

    def observe_runner(self, m: RunnerMetricsLike) -> None:
        """Copy the consumer loop's state (a ``RunnerMetrics``): lag, partitions, counters, circuit, poll."""
        for name, total in (("nlpmon_dead_letters_total", m.dead_letters_sent), ("nlpmon_batches_total", m.batches),
                            ("nlpmon_commit_failures_total", m.commit_failures),
                            ("nlpmon_rebalances_total", m.rebalances),
                            ("nlpmon_circuit_trips_total", m.circuit_trips),
                            ("nlpmon_batches_cut_total", m.batches_cut),
                            ("nlpmon_checkpoint_stalls_total", m.checkpoint_stalls),
                            ("nlpmon_held_pauses_total", m.held_pauses),
                            ("nlpmon_kafka_client_errors_total", m.client_errors),
                            ("nlpmon_state_losses_total", m.state_losses),
                            ("nlpmon_checkpoints_total", m.checkpoints),
                            ("nlpmon_checkpoints_skipped_total", m.checkpoints_skipped),
                            ("nlpmon_snapshots_written_total", m.snapshots_written),
                            ("nlpmon_snapshots_produced_total", m.snapshots_produced),
                            ("nlpmon_snapshot_chunks_produced_total", m.snapshot_chunks_produced),
                            ("nlpmon_snapshot_parts_produced_total", m.snapshot_parts_produced),
                            ("nlpmon_snapshot_bytes_produced_total", m.snapshot_bytes_produced),
                            ("nlpmon_snapshot_tombstone_failures_total", m.snapshot_tombstone_failures),
                            ("nlpmon_lost_assignments_total", m.lost_assignments),
                            ("nlpmon_offset_gaps_total", m.offset_gaps),
                            ("nlpmon_kafka_statistics_undecodable_total", m.statistics_undecodable)):
            self._metrics[name].inc(_delta(self._runner_totals, name, total))
        self._metrics["nlpmon_assigned_partitions"].set(len(m.assigned))
        self._metrics["nlpmon_group_member"].set(1 if m.group_member else 0)
        self._metrics["nlpmon_checkpoint_waiting"].set(0 if m.checkpoint_waiting_since is None else 1)
        self._metrics["nlpmon_circuit_open"].set(0 if m.circuit_state == "closed" else 1)
        self._metrics["nlpmon_held_paused"].set(1 if m.held_paused else 0)
        self._metrics["nlpmon_longest_poll_gap_seconds"].set(m.longest_poll_gap_s)
        self._last_poll = m.last_poll_monotonic
        lag = {(t, str(p)): v for (t, p), v in m.lag.items()}
        for key, v in lag.items():
            self._child("nlpmon_consumer_lag", key).set(v)
        for key in self._lag - lag.keys():
            self._remove(("nlpmon_consumer_lag", key))
        self._lag = set(lag)

    def observe_held(self, held_bytes: int) -> None:
        """The memory of the events held for pending calibrations (``Pipeline.held_bytes`` summed)."""
        self._metrics["nlpmon_held_event_bytes"].set(held_bytes)

    def _poll_age(self) -> float:
        return max(0.0, self._monotonic() - (self._started if self._last_poll is None else self._last_poll))

    # -- per report refresh -------------------------------------------------------------------------------
    def observe_reports(self, reports: Mapping[str, Mapping[str, Any]], alarms: Iterable[AlarmLike] = (),
                        *, now: float | None = None, recounted: Collection[tuple[str, str]] = ()) -> None:
        """``observe_models`` of page reports (``{"model/version": ModelMonitor.report()}`` JSON, as read
        back from ``/api/models`` or written by a test): each read as its ``ModelMetrics`` view."""
        self.observe_models([ModelMetrics.from_report(rep) for rep in reports.values()], alarms, now=now,
                            recounted=recounted)

    def observe_models(self, views: Iterable[ModelMetrics], alarms: Iterable[AlarmLike] = (),
                       *, now: float | None = None, recounted: Collection[tuple[str, str]] = ()) -> None:
        """Refresh every per-model metric from the complete current metrics views (one per (model,
        version), as from ``Pipeline.metrics_views()``, merged over partitions) and count ``alarms``
        (raised since the previous call). Also retires models silent for ``retire_after_s``.

        Event counters advance by the growth of each view's ``events_here`` (else ``events``); a count that
        went down (state restored from an older snapshot) re-bases without counting. ``recounted``: the
        (model, version)s whose monitor is new since the previous call (their partition was assigned to this
        process again, after a rebalance): their own counts (``events_here``, the join's, label delays)
        started again from 0, so they are counted in full. Cost: O(models x signals x labels) dictionary
        work, with cached children; call it once per batch or less often.
        """
        now = self._clock() if now is None else now
        present: dict[tuple[str, str], ModelMetrics] = {}
        other_join: dict[str, dict[tuple[str, str], int]] = {}  # overflow model -> growth per join series
        for rep in views:
            key = (rep.model, rep.model_version)
            present[key] = rep
            st = self._state(key, now)
            if key in recounted:
                st.totals, st.join_totals, st.delays = {}, {}, None
            events = dict(rep.events)
            if events != st.seen_events:
                st.seen_events = events
                st.last_active = now
                if st.retired:
                    self._readmit(key, st)
            # counters grow by this process's own work, so a restored or handed-over monitor's history
            # is not counted again (views without it: the cumulative counts, re-based when they drop)
            totals = events if rep.events_here is None else rep.events_here
            for split, total in totals.items():
                d = _delta(st.totals, split, total)
                if d and not st.retired:
                    self._child("nlpmon_events_total", (*st.series, split)).inc(d)
            if rep.duplicates_here is not None:
                d = _delta(st.totals, "__duplicates__", rep.duplicates_here)
                if not st.retired:  # exported at 0 too, so that a rate of it exists
                    self._child("nlpmon_duplicate_events_total", st.series).inc(d)
            if rep.quality is not None:
                self._count_quality(st, rep.quality, other_join)
        for series_key, growth in _sum_over_models(other_join).items():
            self._child(series_key[0], (OTHER, OTHER, series_key[1])).inc(growth)
        for a in alarms:
            st = self._state((a.model, a.model_version), now)
            st.last_active = now
            if st.retired:
                self._readmit((a.model, a.model_version), st)
            self._child("nlpmon_drift_alarms_total", (*st.series, a.signal)).inc()
        self._retire_silent(now, present)
        seen: set[SeriesKey] = set()
        overflow: list[ModelMetrics] = []
        for key, rep in present.items():
            st = self._models[key]
            if st.retired:
                continue
            if st.own:
                last = st.gauges_from
                if last is not None and last[0] is rep and last[1] == st.series:
                    seen |= last[2]  # unchanged since: its gauges hold these values already
                    continue
                mine: set[SeriesKey] = set()
                self._own_gauges(st, rep, mine)
                st.gauges_from = (rep, st.series, frozenset(mine))
                seen |= mine
            else:
                overflow.append(rep)
        if overflow:
            self._other_gauges(overflow, seen)
        for stale in self._gauges - seen:
            self._remove(stale)
        self._gauges = seen
        active = [st for st in self._models.values() if not st.retired]
        own = sum(st.own for st in active)
        self._metrics["nlpmon_tracked_models"].labels("own").set(own)
        self._metrics["nlpmon_tracked_models"].labels(OTHER).set(len(active) - own)

    def _count_quality(self, st: _ModelState, quality: QualityReport,
                       other_join: dict[str, dict[tuple[str, str], int]]) -> None:
        """Advance the join counters and the label-delay histogram by the growth of the report's
        ``join_here`` and ``label_delay_seconds`` (this process's own counts). When any of their counts went
        down (the core counts again from 0: it took the model over anew), all of them re-base together
        without counting, so the counters stay consistent with each other (matched never above labels).

        Every join series is created at once, at 0, so that a ratio such as matched / labels exists while
        nothing matches. Overflow models add their join growth to ``other_join`` (the caller counts each
        model once: all its versions report the same join).
        """
        totals = dict(quality.join_here)
        for counter, growth in _join_growth(st.join_totals, totals).items():
            if st.retired:
                continue
            series = join_series(counter)
            if st.own:
                self._child(series[0], (*st.series, series[1])).inc(growth)
            else:
                per_model = other_join.setdefault(st.key[0], {})
                per_model[series] = min(per_model.get(series, growth), growth)
        st.delays, growth_counts, growth_sum = _delay_growth(st.delays, quality.label_delay_seconds)
        if not st.retired:
            self._child("nlpmon_quality_label_delay_seconds", st.series).add(
                st.delays.edges, growth_counts, growth_sum)

    def _state(self, key: tuple[str, str], now: float) -> _ModelState:
        st = self._models.get(key)
        if st is None:
            st = self._models[key] = _ModelState(key, self._claim(key), now)
        elif not st.own and not st.retired and self._own_count < self.max_models:
            st.series = self._claim(key)  # a slot was freed: promote (its earlier counts stay in "other")
        return st

    def _claim(self, key: tuple[str, str]) -> tuple[str, str]:
        if self._own_count < self.max_models:
            self._own_count += 1
            return key
        return (OTHER, OTHER)

    def _readmit(self, key: tuple[str, str], st: _ModelState) -> None:
        st.retired = False
        st.series = self._claim(key)
        st.labels = set()
        st.gauges_from = None

    def _retire_silent(self, now: float, present: Mapping[tuple[str, str], Any]) -> None:
        for key, st in list(self._models.items()):
            if st.retired:
                if key not in present:
                    del self._models[key]  # forget it; if it comes back, it is a new model
                continue
            if now - st.last_active <= self.retire_after_s:
                continue
            st.retired = True
            if st.own:
                self._own_count -= 1
                for series_key in list(self._series_of.pop(st.series, set())):
                    self._remove(series_key)
            if key not in present:
                del self._models[key]

    def retired_models(self) -> list[tuple[str, str]]:
        """Models that are retired but still present in the reports (they come back when they see events)."""
        return sorted(k for k, st in self._models.items() if st.retired)

    def _label(self, st: _ModelState, label: str) -> str:
        if label in st.labels:
            return label
        if len(st.labels) < self.max_labels:
            st.labels.add(label)
            return label
        return OTHER

    def _own_gauges(self, st: _ModelState, rep: ModelMetrics, seen: set[SeriesKey]) -> None:
        m, v = st.series
        status = rep.status
        for s in dict.fromkeys((*STATUSES, status)):
            if s:
                self._set("nlpmon_model_status", (m, v, s), float(s == status), seen)
        self._set("nlpmon_reference_events", (m, v), float(rep.reference_events), seen)
        if rep.last_event_time is not None:
            self._set("nlpmon_last_event_timestamp_seconds", (m, v), rep.last_event_time, seen)
        signals = rep.signals
        window = 0
        for name, sig in signals.items():
            self._set("nlpmon_drift_score", (m, v, name), _num(sig.score), seen)
            self._set("nlpmon_drift_threshold", (m, v, name), sig.threshold, seen)
            self._set("nlpmon_drift_detected", (m, v, name), float(sig.drift), seen)
            window = max(window, sig.window)
        self._set("nlpmon_window_events", (m, v), float(window), seen)
        shares: dict[tuple[str, str, str], float] = {}
        for source in LABEL_SOURCES:
            sig_of = signals.get(source)
            for moved in sig_of.moved_labels if sig_of is not None else ():
                label = self._label(st, moved.label)
                for w, share in (("reference", moved.reference), ("current", moved.current)):
                    shares[(source, label, w)] = shares.get((source, label, w), 0.0) + _num(share)
        for (source, label, w), share in shares.items():
            self._set("nlpmon_label_share", (m, v, source, label, w), share, seen)
        for source in CONFIDENCE_SOURCES:
            sig_of = signals.get(source)
            if sig_of is None:
                continue
            for w, quantiles in (("reference", sig_of.reference_quantiles), ("current", sig_of.current_quantiles)):
                for level, q in zip(sig_of.quantile_levels, quantiles, strict=False):
                    self._set("nlpmon_confidence_quantile", (m, v, source, ALL_LABELS, _level(level), w),
                              _num(q), seen)
        weighted: dict[str, list[float]] = {}
        for label, lc in rep.label_confidence.items():
            acc = weighted.setdefault(self._label(st, label), [0.0, 0.0])
            acc[0] += lc.mean * lc.count
            acc[1] += lc.count
        for label, (total, n) in weighted.items():
            if n > 0:
                self._set("nlpmon_label_confidence_mean", (m, v, label), total / n, seen)
        # after the label shares: the rising labels are reference labels that already hold their slots
        for sig_name, sig in signals.items():
            for r in sig.rising_labels[:RISING_LABELS]:
                if r.score > 0:
                    self._set("nlpmon_drift_label_score", (m, v, sig_name, self._label(st, r.label)), r.score, seen)
        if rep.quality is not None:
            for name, values, value in quality_gauges(rep.quality, lambda label: self._label(st, label)):
                self._set(name, (m, v, *values), value, seen)

    def _other_gauges(self, reps: list[ModelMetrics], seen: set[SeriesKey]) -> None:
        """Aggregates of the overflow models: max score and flag, status counts, summed event gauges."""
        o = (OTHER, OTHER)
        status = Tally(r.status for r in reps)
        for s in dict.fromkeys((*STATUSES, *status)):
            if s:
                self._set("nlpmon_model_status", (*o, s), float(status.get(s, 0)), seen)
        score: dict[str, float] = {}
        drift: dict[str, float] = {}
        ref = window = 0.0
        last: float | None = None
        for r in reps:
            ref += float(r.reference_events)
            if r.last_event_time is not None:
                last = max(last or -math.inf, r.last_event_time)
            w = 0
            for name, sig in r.signals.items():
                score[name] = max(score.get(name, -math.inf), _num(sig.score))
                drift[name] = max(drift.get(name, 0.0), float(sig.drift))
                w = max(w, sig.window)
            window += w
        for name in score:
            self._set("nlpmon_drift_score", (*o, name), score[name], seen)
            self._set("nlpmon_drift_threshold", (*o, name), 1.0, seen)
            self._set("nlpmon_drift_detected", (*o, name), drift[name], seen)
        self._set("nlpmon_reference_events", o, ref, seen)
        self._set("nlpmon_window_events", o, window, seen)
        if last is not None:
            self._set("nlpmon_last_event_timestamp_seconds", o, last, seen)
        qualities = [(r.model, r.quality) for r in reps if r.quality is not None]
        if qualities:
            for name, values, value in other_quality_gauges(qualities):
                self._set(name, (*o, *values), value, seen)

    def per_model_series(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        """Every exported per-model child as (metric name, label values)."""
        for keys in self._series_of.values():
            yield from keys


def _sum_over_models(growth: Mapping[str, Mapping[tuple[str, str], int]]) -> dict[tuple[str, str], int]:
    """Join growth per series of the ``other`` aggregate: summed over models, each model counted once."""
    out: dict[tuple[str, str], int] = {}
    for per_model in growth.values():
        for series, g in per_model.items():
            out[series] = out.get(series, 0) + g
    return out


def _join_growth(last: dict[str, int], totals: Mapping[str, int]) -> dict[str, int]:
    """Growth of every count of ``totals`` since ``last`` (updated in place); all 0 when one went down."""
    dropped = any(total < last.get(key, 0) for key, total in totals.items())
    growth = {key: 0 if dropped else total - last.get(key, 0) for key, total in totals.items()}
    last.clear()
    last.update(totals)
    return growth


def _delta(last: dict[str, int], key: str, total: int) -> int:
    """Growth of a cumulative count since the previous call; 0 (and re-based) when it went down."""
    prev = last.get(key, 0)
    last[key] = total
    return total - prev if total > prev else 0


def _num(x: Any) -> float:
    """A report number as float; None becomes NaN."""
    return math.nan if x is None else float(x)


def _level(level: Any) -> str:
    return f"{float(level):g}"
