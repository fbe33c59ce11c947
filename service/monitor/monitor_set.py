"""All monitors of one stream (one Kafka partition, or one replay): decode, validate, route, update.

``MonitorSet.process_lines`` is the one code path shared by ``nlpmon run`` and ``nlpmon replay``: raw
JSON lines in, alarms and rejections out. Events are grouped by (model, version) preserving stream
order, and each monitor gets one vectorised update per batch. An event whose ``event_id`` is among the
last ``duplicate_window_events`` ids of its (model, version) and split is a duplicate: not monitored, not joined,
counted in the monitor's ``duplicate_events`` (the window is part of the snapshot).

Clocks: given the processing time (``now``, from the shell: the service's wall clock), an event whose
timestamp lies outside ``[now - max_event_age_seconds, now + max_clock_skew_seconds]`` has a skewed
clock. It is reported in ``BatchResult.clock_skew``; with ``reject_clock_skew`` it is rejected
(``clock_skew``), otherwise it is monitored as an event without a timestamp (windows, their
``max_window_age_seconds``, the history, throughput and the quality join do not see its time) while the
metrics see its time clamped into that range (``event_times`` and the model's ``last_event_time``), so
that one event cannot pin the newest-event gauge in year 9999 nor add 56 years to the age histogram.
Without ``now`` (replay: no processing clock) event times are used as they are.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..events import Event, EventDecoder, InvalidEvent
from ..state import PartSet, SnapshotError, decode_state, encode_state
from .calibration_jobs import INLINE, CalibrationExecutor
from .config import MonitorConfig
from .model_monitor import Alarm, ModelMonitor
from .page_view import ModelPage
from .reference import ReferenceProfile
from .views import ModelMetrics

STATE_KIND = "nlpmon.monitor_set"
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rejection:
    position: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class ClockSkew:
    """An event whose timestamp lies outside the accepted range around the processing time."""

    model: str
    model_version: str
    direction: Literal["future", "past"]
    rejected: bool


@dataclass(frozen=True, slots=True)
class BatchResult:
    alarms: list[Alarm]  # positions are indices into the batch
    rejected: list[Rejection]
    accepted: int
    # the accepted events' timestamps (epoch seconds), for age metrics; skewed ones clamped into the range
    event_times: list[float | None]
    events: list[Event]  # the accepted events, decoded (for the quality join); skewed ones without timestamp
    clock_skew: list[ClockSkew] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # batch position of each accepted event


class MonitorSet:
    """Monitors keyed by (model, model_version). Pure; state is a versioned snapshot (``snapshot``).

    ``executor`` runs the monitors' calibrations (``nlpmon.monitor.calibration_jobs``): inline by default;
    with a deferred one, call ``poll`` now and then (``process_lines`` does) to apply finished ones.
    """

    def __init__(self, config: MonitorConfig, profiles: dict[tuple[str, str], ReferenceProfile] | None = None,
                 reference_events: Sequence[Event] = (), executor: CalibrationExecutor = INLINE) -> None:
        self.config = config
        self.executor = executor
        self.monitors: dict[tuple[str, str], ModelMonitor] = {}
        self.embedding_dims: dict[str, int] = {}
        self._doc_keys: dict[tuple[str, str], str] = {}  # (model, version) -> its document ``embedding_dims`` key
        self.profiles = dict(profiles or {})
        self._reference_events: dict[tuple[str, str], list[Event]] = {}
        self._poll_turn = 0  # where a ``poll`` that ran out of time resumes among the waiting monitors
        for e in reference_events:
            self._reference_events.setdefault((e.model, e.model_version), []).append(e)

    def monitor(self, model: str, version: str) -> ModelMonitor:
        key = (model, version)
        m = self.monitors.get(key)
        if m is None:
            m = ModelMonitor(model, version, self.config, self.profiles.get(key), self.executor)
            self.monitors[key] = m
            ref = self._reference_events.pop(key, None)
            if ref:
                usable = []
                for e in ref:
                    try:
                        self._check_dims(e)
                        usable.append(e)
                    except InvalidEvent as exc:
                        log.warning("%s/%s: reference event %s skipped: %s", model, version, e.event_id, exc)
                m.add_reference(usable)
        return m

    def _check_dims(self, e: Event) -> None:
        """Raises InvalidEvent when an embedding's size differs from the first one of its (model, version).

        Sizes are recorded only once the whole event passed.
        """
        # the usual event: a document embedding of the recorded size, none on its entities
        emb = e.embedding
        if emb is None:
            usual = True
        else:
            doc_key = self._doc_keys.get((e.model, e.model_version))
            if doc_key is None:
                doc_key = self._doc_keys[(e.model, e.model_version)] = f"{e.model}|{e.model_version}|document"
            usual = emb.shape[0] == self.embedding_dims.get(doc_key)
        if usual and all(x.embedding is None for x in e.entities):
            return
        new: dict[str, int] = {}
        for kind, emb, where in self._embeddings(e):
            dim_key = f"{e.model}|{e.model_version}|{kind}"
            want = self.embedding_dims.get(dim_key, new.setdefault(dim_key, int(emb.shape[0])))
            if emb.shape[0] != want:
                raise InvalidEvent("bad_embedding", f"{where}: size {emb.shape[0]} differs from "
                                   f"{e.model!r} version {e.model_version!r}'s {want}")
        self.embedding_dims.update(new)

    @staticmethod
    def _embeddings(e: Event) -> Iterator[tuple[str, Any, str]]:
        if e.embedding is not None:
            yield "document", e.embedding, "embedding"
        for i, x in enumerate(e.entities):
            if x.embedding is not None:
                yield "entity", x.embedding, f"entities[{i}].embedding"

    def process_events(self, events: Sequence[Event], positions: Sequence[int],
                       clamped: dict[tuple[str, str], float] | None = None) -> list[Alarm]:
        """Route valid events (with their batch positions) to their monitors; alarms carry batch positions
        (-1: an event of an earlier batch, held while its model's reference calibrated). ``clamped``: per
        (model, version), the newest clamped time of the batch's skewed events.

        A model of the batch first applies its finished calibration and some of its held events
        (``ModelMonitor.process``); the other models' wait for :meth:`poll` (the service calls it after every
        Kafka poll, within the loop's budget), so that a batch's cost does not depend on how many other models'
        calibrations finished meanwhile."""
        alarms: list[Alarm] = []
        groups: dict[tuple[str, str], list[int]] = {}
        for i, e in enumerate(events):
            groups.setdefault((e.model, e.model_version), []).append(i)
        clamped = clamped or {}
        for (model, version), idx in groups.items():
            mon = self.monitor(model, version)
            for a in mon.process([events[i] for i in idx], clamped.get((model, version))):
                alarms.append(a if a.position < 0 else _moved(a, positions[idx[a.position]]))
        alarms.sort(key=lambda a: a.position)
        return alarms

    def poll(self, wait: bool = False, expired: Callable[[], bool] | None = None) -> list[Alarm]:
        """Apply the calibrations that finished and process the events their models held (alarms at position
        -1). ``wait``: wait for every pending calibration first (the end of a replay, a test). ``expired``:
        asked after each model that had work; once True the other models wait for the next call, which starts
        after the last model served (so every model gets its turn)."""
        alarms: list[Alarm] = []
        monitors = list(self.monitors.values())
        turn = self._poll_turn % len(monitors) if monitors else 0
        for i in range(turn, turn + len(monitors)):
            mon = monitors[i % len(monitors)]
            if not mon.waiting:
                continue
            if wait:
                alarms.extend(mon.finish())
                continue
            alarms.extend(mon.poll())
            if expired is not None and expired():
                self._poll_turn = i + 1
                break
        return alarms

    @property
    def calibrating(self) -> int:
        """Monitors whose calibration is pending, or whose held events are not all processed yet."""
        return sum(1 for m in self.monitors.values() if m.waiting)

    @property
    def held_bytes(self) -> int:
        """Memory of the events every monitor holds for a pending calibration (``ModelMonitor.held_bytes``)."""
        return sum(m.held_bytes for m in self.monitors.values() if m.waiting)

    def process_lines(self, lines: Sequence[bytes | str | None], now: float | None = None) -> BatchResult:
        """Decode, validate and monitor a batch of raw events. Invalid ones are returned, never raised.

        ``now``: the processing time (epoch seconds) that event clocks are checked against (module
        docstring); None: no check.
        """
        events: list[Event] = []
        positions: list[int] = []
        rejected: list[Rejection] = []
        times: list[float | None] = []
        skews: list[ClockSkew] = []
        clamped: dict[tuple[str, str], float] = {}
        cfg = self.config
        lo, hi = ((now - cfg.max_event_age_seconds, now + cfg.max_clock_skew_seconds) if now is not None
                  else (-math.inf, math.inf))
        decoder = EventDecoder()
        for i, raw in enumerate(lines):
            try:
                if raw is None:
                    raise InvalidEvent("malformed_json", "message has no value")
                e = decoder.decode(raw)
                t = e.timestamp
                skewed = t is not None and not lo <= t <= hi
                if skewed and cfg.reject_clock_skew:
                    assert t is not None and now is not None
                    skews.append(ClockSkew(e.model, e.model_version, "future" if t > hi else "past", True))
                    rejected.append(Rejection(i, "clock_skew", _skew_detail(t, now, cfg)))
                    continue
                self._check_dims(e)
            except InvalidEvent as exc:
                rejected.append(Rejection(i, exc.reason, exc.detail))
                continue
            mon = self.monitor(e.model, e.model_version)
            if not mon.recent_ids.admit(f"{e.split}\0{e.event_id}"):  # a recent event again: counted once
                mon.duplicates += 1
                mon.duplicates_here += 1
                continue
            if skewed:
                assert t is not None
                edge = hi if t > hi else lo
                skews.append(ClockSkew(e.model, e.model_version, "future" if t > hi else "past", False))
                key = (e.model, e.model_version)
                clamped[key] = max(clamped.get(key, -math.inf), edge)
                e.timestamp = None
                t = edge
            events.append(e)
            positions.append(i)
            times.append(t)
        alarms = self.process_events(events, positions, clamped)
        return BatchResult(alarms, rejected, len(events), times, events, skews, positions)

    def page_views(self) -> dict[str, ModelPage]:
        """``{"model/version": ModelMonitor.page_view()}``: the typed page views, built when asked."""
        return {f"{m}/{v}": mon.page_view() for (m, v), mon in sorted(self.monitors.items())}

    def report(self) -> dict[str, Any]:
        """``{"model/version": ModelMonitor.report()}``: the page views' JSON."""
        return {k: v.to_json() for k, v in self.page_views().items()}

    def metrics_views(self) -> dict[str, ModelMetrics]:
        """``{"model/version": ModelMonitor.metrics_view()}``: what the metrics read (cheap)."""
        return {f"{m}/{v}": mon.metrics_view() for (m, v), mon in sorted(self.monitors.items())}

    # -- state ------------------------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        return encode_state({"kind": STATE_KIND, "embedding_dims": self.embedding_dims,
                             "monitors": [mon.state() for mon in self.monitors.values()]})

    def snapshot_parts(self) -> tuple[dict[str, Any], PartSet]:
        """The state as a small tree that names each monitor's part, and the parts
        (``ModelMonitor.state_parts``: two or more per model, by content)."""
        parts = PartSet()
        ids = [mon.state_parts(parts) for mon in self.monitors.values()]
        return {"kind": STATE_KIND, "embedding_dims": self.embedding_dims, "monitor_parts": ids}, parts

    def restore(self, data: bytes) -> None:
        self.restore_tree(decode_state(data))

    def restore_tree(self, s: Any, parts: Mapping[str, bytes] | None = None) -> None:
        """Replace the state by a decoded :meth:`snapshot`, or by the tree of :meth:`snapshot_parts` with
        its ``parts``. Raises ValueError (SnapshotError) on anything else."""
        if not isinstance(s, dict) or s.get("kind") != STATE_KIND:
            raise ValueError("not an nlpmon monitor-set snapshot")
        if "monitor_parts" in s:
            states = []
            for pid in s["monitor_parts"]:
                if parts is None or pid not in parts:
                    raise SnapshotError("a model's part of the snapshot is missing")
                states.append(decode_state(parts[pid]))
        else:
            states = s["monitors"]
        self.embedding_dims = {k: int(v) for k, v in s["embedding_dims"].items()}
        self.monitors = {}
        for ms in states:
            mon = ModelMonitor.from_state(ms, self.config, self.executor, parts)
            self.monitors[(mon.model, mon.model_version)] = mon
            self._reference_events.pop((mon.model, mon.model_version), None)


def _skew_detail(t: float, now: float, cfg: MonitorConfig) -> str:
    if t > now:
        return (f"timestamp: {t:.0f} is {t - now:,.0f} s after the processing time {now:.0f} (more than "
                f"max_clock_skew_seconds={cfg.max_clock_skew_seconds:g}): check the producer's clock")
    return (f"timestamp: {t:.0f} is {now - t:,.0f} s before the processing time {now:.0f} (more than "
            f"max_event_age_seconds={cfg.max_event_age_seconds:g}): check the producer's clock")


def _moved(a: Alarm, position: int) -> Alarm:
    d = a.as_dict()
    d["position"] = position
    return Alarm(**d)
