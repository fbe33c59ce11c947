"""``nlpmon replay``: backtest historical events through the same monitor code path as the service.

Event indices in the report are 0-based positions among the non-blank lines of EVENTS.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .events import Event, EventDecoder, InvalidEvent
from .io import iter_batches
from .monitor.config import MonitorConfig
from .monitor.page_view import ModelPage
from .monitor.pipeline import Pipeline
from .monitor.reference import ReferenceProfile
from .quality.events import GroundTruth, decode_ground_truth_lines
from .quality.quality_monitor import QualityConfig
from .state import SnapshotError
from .state.codec import MAGIC

MAX_REASONS = 10


@dataclass
class LoadedReference:
    events: list[Event] = field(default_factory=list)
    profiles: dict[tuple[str, str], ReferenceProfile] = field(default_factory=dict)
    invalid: int = 0
    reasons: list[str] = field(default_factory=list)


def load_references(paths: Sequence[str | Path]) -> LoadedReference:
    """Reference JSONL(.gz) files (every event counts as reference) or saved profiles (``nlpmon calibrate``).

    Invalid reference lines are counted and skipped. Raises FileNotFoundError / SnapshotError.
    """
    out = LoadedReference()
    for path in paths:
        p = Path(path)
        if p.is_file() and p.open("rb").read(len(MAGIC)) == MAGIC:
            prof_file = ReferenceProfile.load(p)
            model, version = prof_file.model_key
            out.profiles[(model, version)] = prof_file
            continue
        line = 0  # lines of this file before the batch
        for batch in iter_batches(p, 5000):
            decoder = EventDecoder()
            for i, raw in enumerate(batch):
                try:
                    out.events.append(decoder.decode(raw))
                except InvalidEvent as exc:
                    out.invalid += 1
                    if len(out.reasons) < MAX_REASONS:
                        out.reasons.append(f"{p.name} line {line + i + 1}: {exc.reason}: {exc.detail}")
            line += len(batch)
    return out


@dataclass
class LoadedLabels:
    """Ground-truth events of a file, in the order they are fed: by timestamp, those without one last."""

    labels: list[GroundTruth] = field(default_factory=list)
    lines: int = 0
    invalid: int = 0
    reasons: list[str] = field(default_factory=list)


def load_labels(path: str | Path) -> LoadedLabels:
    """Decode a JSONL(.gz) file of ground-truth events; invalid lines are counted and skipped."""
    out = LoadedLabels()
    for batch in iter_batches(path, 5000):
        good, bad = decode_ground_truth_lines(batch)
        for i, exc in bad:
            out.invalid += 1
            if len(out.reasons) < MAX_REASONS:
                out.reasons.append(f"line {out.lines + i + 1}: {exc.reason}: {exc.detail}")
        out.labels.extend(good)
        out.lines += len(batch)
    out.labels.sort(key=lambda g: math.inf if g.timestamp is None else g.timestamp)
    return out


def replay(events_path: str | Path, reference_paths: Sequence[str | Path], config: MonitorConfig, *,
           ground_truth_path: str | Path | None = None, quality_config: QualityConfig | None = None,
           batch_size: int = 2000, progress: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Run EVENTS through a fresh ``Pipeline`` (the core of ``nlpmon run``'s partition processor: drift
    monitors and, with ``ground_truth_path``, the quality join); return the report (its keys: the
    README's "Backtest on your own events").

    Labels are fed as they would have arrived: after each batch, those whose timestamp is not later than
    the newest event time so far; labels without a timestamp after the last event. Events of the reference
    files join their labels too (as reference predictions: they calibrate the label-free estimate).
    """
    ref = load_references(reference_paths)
    pipeline = Pipeline(config, ref.profiles, ref.events, quality_config if ground_truth_path is not None else None)
    truth = load_labels(ground_truth_path) if ground_truth_path is not None else LoadedLabels()
    fed = 0
    newest = -math.inf
    n = invalid = 0
    reasons: Counter[str] = Counter()
    first_reasons: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for batch in iter_batches(events_path, batch_size):
        res = pipeline.process_lines(batch)
        for r in res.rejected:
            invalid += 1
            reasons[r.reason] += 1
            if len(first_reasons) < MAX_REASONS:
                first_reasons.append({"event_index": n + r.position, "reason": r.reason, "detail": r.detail})
        for a in res.alarms:
            d = a.as_dict()
            d["event_index"] = n + d.pop("position")
            alerts.append(d)
        if pipeline.joins:
            newest = max([newest, *(e.timestamp for e in res.events if e.timestamp is not None)])
            due = fed
            while due < len(truth.labels) and (truth.labels[due].timestamp or math.inf) <= newest:
                due += 1
            pipeline.add_labels(truth.labels[fed:due])
            fed = due
        n += len(batch)
        if progress is not None:
            progress(n, len(alerts), time.perf_counter() - t0)
    pipeline.add_labels(truth.labels[fed:])
    models = pipeline.report()
    return {
        "events": n, "invalid": invalid, "invalid_reasons": dict(reasons), "first_invalid": first_reasons,
        "reference": {"events": len(ref.events), "invalid": ref.invalid, "first_invalid": ref.reasons,
                      "profiles": [f"{m}/{v}" for m, v in ref.profiles]},
        "seconds": round(time.perf_counter() - t0, 3),
        "alerts": alerts,
        "models": models,
        **({"ground_truth": {"lines": truth.lines, "labels": len(truth.labels), "invalid": truth.invalid,
                             "first_invalid": truth.reasons}} if pipeline.joins else {}),
    }


def summary(report: dict[str, Any]) -> str:
    """A short human summary of a replay report (its ``models``: page views, or their JSON)."""
    lines = [f"{report['events']} events, {report['invalid']} invalid, {len(report['alerts'])} alarms "
             f"in {report['seconds']:.1f} s"]
    for key, m in report["models"].items():
        view = m if isinstance(m, ModelPage) else ModelPage.from_json(m)
        ref = view.reference
        source = (ref.source if ref.calibrated else None) or "-"
        lines.append(f"  {key}: {view.status}, reference {source} ({ref.events} events), "
                     f"{view.monitored_events} monitored; drifting now: {', '.join(view.drifting) or 'none'}")
        if view.reference_error:
            lines.append(f"    reference problem: {view.reference_error}")
        q = view.quality
        if q is not None:
            lines.append(f"    quality: {q.window.documents} labelled documents, micro F1 {_num(q.window.micro.f1)} "
                         f"(reference {_num(q.reference.figures.micro.f1)}, {q.reference.source or 'none yet'}), "
                         f"labelled fraction {_num(q.labelled_fraction)}{'; F1 DROP' if q.f1_drop.drift else ''}")
    for a in report["alerts"][:10]:
        lines.append(f"  alarm at event {a['event_index']}: {a['model']}/{a['model_version']} {a['signal']} "
                     f"score {a['score']:.2f} ({a['statistic']} over {a['window']} events)")
    gt = report.get("ground_truth")
    if gt is not None:
        lines.append(f"  ground truth: {gt['labels']} labels, {gt['invalid']} invalid lines")
    if len(report["alerts"]) > 10:
        lines.append(f"  ... {len(report['alerts']) - 10} more alarms in the report")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def terminal_progress(stream: Any = None) -> Callable[[int, int, float], None] | None:
    """A progress printer when ``stream`` (default: standard error) is a terminal, else None."""
    stream = stream if stream is not None else sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        return None

    def show(n: int, alarms: int, seconds: float) -> None:
        rate = n / seconds if seconds > 0 else 0.0
        stream.write(f"\r{n:,} events, {alarms} alarms, {rate:,.0f} events/s ")
        stream.flush()

    return show


__all__ = ["LoadedLabels", "LoadedReference", "SnapshotError", "load_labels", "load_references", "replay", "summary",
           "terminal_progress"]
