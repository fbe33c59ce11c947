"""CPU cost of calibrating one reference (``ReferenceProfile.calibrate``), broken down per part.

Prints a markdown table: CPU seconds per 3,000-event reference of 384-dim embeddings, the synthetic
events built as ``benchmarks/replay_throughput.py`` builds them (``nlpmon.demo``, seed 1). One core: run
with OPENBLAS_NUM_THREADS=1. Each part is timed by wrapping the function that does it (CPU time of this
process, ``time.process_time``); "rest" is the total minus the parts. Best of ``--repeats`` runs.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/calibration_cost.py [--events 3000] [--repeats 3] [--loop]

``--loop`` adds the consumer loop's view: a loop of ``MonitorSet.process_lines`` batches (200 events of an
already monitored model and 20 of a new model whose 3,000 reference events came just before) with the
calibration inline (the blocking behaviour) and on ``nlpmon run``'s worker thread; the longest batch is
how long the loop went without polling.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from nlpmon.demo import SyntheticStream
from nlpmon.events import decode_event
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.reference import ReferenceProfile, ReferenceSample
from nlpmon.monitor.signals import extract_columns

BETA_BINOMIAL = "outlier share: beta-binomial count thresholds"
#: (part, module, attribute): a function whose CPU time is the part's. Parts nest nowhere: each is
#: called from the calibration code, never from another listed part. Missing attributes are skipped (so
#: the same script measures the code before and after a change).
PARTS: tuple[tuple[str, str, str], ...] = (
    ("featurizer fits (deployed + one per split)", "nlpmon.drift.signal", "fit_featurizer"),
    ("held-out event rows", "nlpmon.drift.signal", "event_rows"),
    ("resampled windows and their statistics", "nlpmon.drift.signal", "resample_window_sums"),  # before
    ("resampled windows and their statistics", "nlpmon.drift.signal", "resampled_statistics"),  # after

    ("thresholds (quantile / GPD tail fit)", "nlpmon.drift.signal", "calibrate_threshold"),
    ("outlier share: out-of-sample scores", "nlpmon.drift.signal", "out_of_sample_scores"),
    (BETA_BINOMIAL, "nlpmon.drift.outliers", "count_thresholds"),
    ("page projection: out-of-sample quantiles", "nlpmon.monitor.projection", "out_of_sample_quantiles"),
)


def reference_sample(n: int, dim: int, config: MonitorConfig) -> ReferenceSample:
    """A reference sample of ``n`` synthetic events, as a monitor collects it."""
    stream = SyntheticStream(seed=1, dim=dim, base64_embeddings=True)
    events = [decode_event(json.dumps(e)) for e in stream.events(n, "reference")]
    cols, _ = extract_columns(events)
    sample = ReferenceSample(config.reference_reservoir, config.seed)
    sample.add(cols, len(events), [e.text for e in events])
    return sample


class Timers:
    """Wraps the functions of ``PARTS`` so that each call adds its CPU time to its part."""

    def __init__(self) -> None:
        self.acc: dict[str, float] = {}
        self._undo: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> Timers:
        for part, mod_name, attr in PARTS:
            mod = importlib.import_module(mod_name)
            fn = getattr(mod, attr, None)
            if fn is None:
                continue
            self._undo.append((mod, attr, fn))
            setattr(mod, attr, self._wrap(part, fn))
        return self

    def _wrap(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.acc[part] = self.acc.get(part, 0.0) + time.process_time() - t0

        return timed

    def __exit__(self, *exc: object) -> None:
        for mod, attr, fn in reversed(self._undo):
            setattr(mod, attr, fn)


def measure(sample: ReferenceSample, config: MonitorConfig, repeats: int) -> tuple[float, dict[str, float]]:
    """(total CPU seconds, CPU seconds per part) of the fastest of ``repeats`` calibrations."""
    best: tuple[float, dict[str, float]] | None = None
    for _ in range(repeats):
        with Timers() as timers:
            t0 = time.process_time()
            ReferenceProfile.calibrate(sample, config, "reference")
            total = time.process_time() - t0
        if best is None or total < best[0]:
            best = (total, dict(timers.acc))
    assert best is not None
    return best


NEW_PER_BATCH = 10  # the new model's share of a batch: 1,000 batches hold 10,000 events, within the default bound


def loop_stall(dim: int, worker: bool, rounds: int = 1000) -> dict[str, float]:
    """Wall seconds of the longest loop iteration, the iterations run while a new model's reference
    calibrates (inline, or on the worker thread; ``rounds`` bounds them) and whether the profile was applied
    within them (else it is waited for after them)."""
    from nlpmon.app.calibration_worker import ThreadCalibrationExecutor
    from nlpmon.monitor.calibration_jobs import INLINE
    from nlpmon.monitor.monitor_set import MonitorSet

    config = MonitorConfig()
    other = SyntheticStream(seed=2, dim=dim, base64_embeddings=True, model="other")
    new = SyntheticStream(seed=1, dim=dim, base64_embeddings=True, model="new")
    warm = [json.dumps(e).encode() for e in other.events(2000 + 200 * rounds)]
    ref = [json.dumps(e).encode() for e in new.events(3000, "reference")]
    prod = [json.dumps(e).encode() for e in new.events(NEW_PER_BATCH * rounds)]
    executor = ThreadCalibrationExecutor() if worker else INLINE
    try:
        ms = MonitorSet(config, executor=executor)
        ms.process_lines(warm[:2000])  # "other" calibrated and monitored before the clock starts
        ms.poll(wait=True)
        ms.process_lines(ref)
        longest, iterations, t_start = 0.0, 0, time.perf_counter()
        for i in range(rounds):
            t0 = time.perf_counter()
            ms.process_lines(warm[2000 + 200 * i:2200 + 200 * i] + prod[NEW_PER_BATCH * i:NEW_PER_BATCH * (i + 1)])
            longest = max(longest, time.perf_counter() - t0)
            iterations += 1
            if not ms.calibrating:
                break
        applied = not ms.calibrating
        ms.poll(wait=True)
        return {"longest": longest, "iterations": iterations, "wall": time.perf_counter() - t_start,
                "applied": applied}
    finally:
        if worker:
            executor.close()  # type: ignore[union-attr]


def blas() -> str:
    try:
        from threadpoolctl import threadpool_info

        return ", ".join(f"{i['internal_api']} {i.get('architecture', '?')} x{i['num_threads']}"
                         for i in threadpool_info())
    except ImportError:  # pragma: no cover
        return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=3000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop", action="store_true", help="also the consumer loop's longest batch, inline and worker")
    args = ap.parse_args()
    config = MonitorConfig()
    sample = reference_sample(args.events, args.dim, config)
    total, parts = measure(sample, config, args.repeats)
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, BLAS: {blas()}")
    print(f"reference of {args.events:,} events, {args.dim}-dim embeddings, default MonitorConfig "
          f"({config.calibration_splits} splits); CPU seconds, best of {args.repeats}\n")
    print("| part | CPU s | share |")
    print("|---|---|---|")
    for part in dict.fromkeys(p for p, _, _ in PARTS):
        if part in parts:
            print(f"| {part} | {parts[part]:.3f} | {parts[part] / total:.0%} |")
    rest = total - sum(parts.values())
    print(f"| rest (splits, selection, bookkeeping) | {rest:.3f} | {rest / total:.0%} |")
    print(f"| **ReferenceProfile.calibrate, total** | **{total:.3f}** | 100% |")
    bb = parts.get(BETA_BINOMIAL, 0.0)
    print(f"| total without the beta-binomial count thresholds | {total - bb:.3f} | {(total - bb) / total:.0%} |")
    if args.loop:
        print("\nThe consumer loop while a new model's reference calibrates (batches of 200 events of a monitored "
              f"model plus {NEW_PER_BATCH} of the new one; wall seconds):\n")
        print("| calibration | longest batch (loop without a poll) | batches while it calibrated | wall s |")
        print("|---|---|---|---|")
        for worker in (False, True):
            r = loop_stall(args.dim, worker)
            batches = f"{r['iterations']:.0f}" + ("" if r["applied"] else " (the bound; still calibrating)")
            print(f"| {'worker thread' if worker else 'inline (blocking)'} | {r['longest']:.3f} | {batches} | "
                  f"{r['wall']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
