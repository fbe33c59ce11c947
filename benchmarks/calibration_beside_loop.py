"""The consumer loop while references calibrate beside it: on a worker thread against a worker process.

On the main thread, a loop hands batches of synthetic events (``nlpmon.demo.SyntheticStream``, 384-dim
base64 embeddings, every event id new) to a ``Pipeline`` that monitors ``--models`` already calibrated
models, as ``nlpmon run``'s loop does (``process_lines`` then ``poll``). Meanwhile ``--calibrations`` jobs
(``CalibrationJob`` of a ``--reference``-event reference each) are submitted at once to the executor:
``ThreadCalibrationExecutor`` (one worker thread) or ``ProcessCalibrationExecutor`` (one spawned worker
process, started by the first submit: its start-up is in the figures). The loop runs until every job is
done (``--max-seconds`` bounds it). Each executor's phase begins with the same loop and no calibration
(``--baseline-batches`` batches): the ratio is the loop's events/s while calibrating over that baseline.

Reported per executor: loop events/s without and with the calibrations and their ratio, the longest single
batch (``process_lines`` + ``poll``: how long the loop went without polling Kafka), and calibrations finished
per minute (jobs over the seconds from the first submit to the last result). Prints a markdown table.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/calibration_beside_loop.py [--models 20]
        [--calibrations 4] [--reference 2000] [--batch 200]

Wall-clock figures on a shared machine: the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import numpy as np

from nlpmon.app.calibration_process import ProcessCalibrationExecutor
from nlpmon.app.calibration_worker import ThreadCalibrationExecutor
from nlpmon.demo import SyntheticStream
from nlpmon.events import decode_event
from nlpmon.monitor.calibration_jobs import CalibrationJob
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.pipeline import Pipeline
from nlpmon.monitor.reference import ReferenceProfile, ReferenceSample
from nlpmon.monitor.signals import extract_columns

ID_MARK = "@@ID@@"


def reference_sample(n: int, dim: int, config: MonitorConfig) -> ReferenceSample:
    """A reference sample of ``n`` synthetic events, as a monitor collects it."""
    events = [decode_event(json.dumps(e)) for e in SyntheticStream(seed=1, dim=dim).events(n, "reference")]
    cols, _ = extract_columns(events)
    sample = ReferenceSample(config.reference_reservoir, config.seed)
    sample.add(cols, len(events), [e.text for e in events])
    return sample


class Batches:
    """Batches of ``batch`` production lines spread over ``models`` models, from a pool of pre-encoded lines
    whose event ids are made new for every batch (a repeated id would be skipped as a duplicate)."""

    def __init__(self, models: list[str], batch: int, dim: int, pool: int = 2000) -> None:
        stream = SyntheticStream(seed=1, dim=dim)
        self.parts: list[tuple[bytes, bytes]] = []
        for i, e in enumerate(stream.events(pool)):
            e["model"] = models[i % len(models)]
            e["event_id"] = ID_MARK
            head, tail = json.dumps(e).encode().split(ID_MARK.encode())
            self.parts.append((head, tail))
        self.batch = batch
        self.next_id = 0

    def take(self) -> list[bytes]:
        out = []
        for _ in range(self.batch):
            head, tail = self.parts[self.next_id % len(self.parts)]
            out.append(head + b"e" + str(self.next_id).encode() + tail)
            self.next_id += 1
        return out


def loop(pipeline: Pipeline, batches: Batches, until: Callable[[int], bool]) -> tuple[int, float, float]:
    """Run the loop until ``until(batches_done)``. (events, wall seconds, longest batch: its ``process_lines``
    and ``poll``, the making of its lines left out)."""
    events, longest, done = 0, 0.0, 0
    start = time.perf_counter()
    while not until(done):
        lines = batches.take()
        t0 = time.perf_counter()
        pipeline.process_lines(lines)
        pipeline.poll()
        dt = time.perf_counter() - t0
        longest = max(longest, dt)
        events += len(lines)
        done += 1
    return events, time.perf_counter() - start, longest


def phase(name: str, executor: Any, pipeline: Pipeline, batches: Batches, jobs: list[CalibrationJob],
          baseline_batches: int, max_seconds: float) -> dict[str, Any]:
    base_events, base_s, base_longest = loop(pipeline, batches, lambda n: n >= baseline_batches)
    t0 = time.perf_counter()
    futures: list[Future[ReferenceProfile]] = [executor.submit(j) for j in jobs]
    finished: list[float] = []

    def until(_n: int) -> bool:
        while len(finished) < len(futures) and futures[len(finished)].done():
            finished.append(time.perf_counter() - t0)
        return len(finished) == len(futures) or time.perf_counter() - t0 > max_seconds

    events, wall, longest = loop(pipeline, batches, until)
    for f in futures:
        if f.done():
            f.result()  # a failed calibration fails the benchmark
    span = finished[-1] if finished else wall
    return {"executor": name, "base_eps": base_events / base_s, "base_longest": base_longest,
            "eps": events / wall, "longest": longest, "done": len(finished),
            "per_min": 60.0 * len(finished) / span, "wall": wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=20, help="monitored models (already calibrated)")
    ap.add_argument("--calibrations", type=int, default=4, help="jobs submitted at once per executor")
    ap.add_argument("--reference", type=int, default=2000, help="events per calibrated reference")
    ap.add_argument("--batch", type=int, default=200, help="events per loop batch")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--baseline-batches", type=int, default=300)
    ap.add_argument("--max-seconds", type=float, default=600.0, help="bound of each calibrating phase")
    args = ap.parse_args()
    config = MonitorConfig()
    sample = reference_sample(args.reference, args.dim, config)
    t0 = time.perf_counter()
    profile = ReferenceProfile.calibrate(sample, config, "reference", "m0", "1")
    inline_s = time.perf_counter() - t0
    models = [f"m{i}" for i in range(args.models)]
    jobs = [CalibrationJob(f"new{i}", "1", "reference", sample, config) for i in range(args.calibrations)]
    pickled, t0 = b"", time.perf_counter()
    for _ in range(5):
        pickled = pickle.dumps(jobs[0], protocol=5)
    pickle_s = (time.perf_counter() - t0) / 5
    rows = []
    for name, make in (("thread", ThreadCalibrationExecutor), ("process", ProcessCalibrationExecutor)):
        profiles = {(m, "1"): replace(profile, model=m) for m in models}
        executor = make()
        try:
            pipeline = Pipeline(config, profiles, executor=executor)
            batches = Batches(models, args.batch, args.dim)
            loop(pipeline, batches, lambda n: n >= 20)  # warm-up: first windows, caches
            rows.append(phase(name, executor, pipeline, batches, jobs, args.baseline_batches, args.max_seconds))
        finally:
            executor.close()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cores, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    print(f"{args.models} monitored models, batches of {args.batch} events ({args.dim}-dim), "
          f"{args.calibrations} calibrations of {args.reference}-event references submitted at once "
          f"(one inline calibration before: {inline_s:.1f} s; pickling one job for the worker process, on its "
          f"feeder thread: {pickle_s * 1e3:.1f} ms, {len(pickled) / 1e6:.1f} MB)\n")
    print("| executor | loop events/s, no calibration | loop events/s, calibrating | ratio | longest batch, "
          "no calibration | longest batch, calibrating | calibrations finished | calibrations / min |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['executor']} | {r['base_eps']:,.0f} | {r['eps']:,.0f} | {r['eps'] / r['base_eps']:.2f} | "
              f"{r['base_longest'] * 1e3:.0f} ms | {r['longest'] * 1e3:.0f} ms | "
              f"{r['done']} of {args.calibrations} in {r['wall']:.1f} s | {r['per_min']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
