"""Memory of the events a model holds while its calibration is pending: decoded ``Event``s against
``PackedEvents`` (batches of 50, as the fleet benchmark interleaves them), measured with tracemalloc in one run.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/held_memory.py [--events 3000] [--trim 10]

``--trim N``: then N models (384-dim, auto-baseline 500) each hold 1,000 events while their calibrations wait;
the calibrations finish, the held events are processed, and the process's RSS is read before and after
``malloc_trim(0)`` (``nlpmon.app.heap.trim_heap``, what ``nlpmon run`` calls once a model's held events are
all processed).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from concurrent.futures import Future

from nlpmon.app.heap import trim_heap
from nlpmon.demo import SyntheticStream
from nlpmon.events import decode_event
from nlpmon.monitor.calibration_jobs import CalibrationJob, PackedEvents
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.pipeline import Pipeline
from nlpmon.monitor.reference import ReferenceProfile


class LaterExecutor:
    """Calibrations that wait until ``run_all``."""

    def __init__(self) -> None:
        self.jobs: list[tuple[CalibrationJob, Future[ReferenceProfile]]] = []

    def submit(self, job: CalibrationJob) -> Future[ReferenceProfile]:
        fut: Future[ReferenceProfile] = Future()
        fut.set_running_or_notify_cancel()
        self.jobs.append((job, fut))
        return fut

    def run_all(self) -> None:
        for job, fut in self.jobs:
            fut.set_result(job.run())


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def trim_after_drain(models: int) -> None:
    executor = LaterExecutor()
    pipeline = Pipeline(MonitorConfig(auto_baseline_events=500, calibration_splits=2), executor=executor)
    streams = [SyntheticStream(seed=k, model=f"m{k}") for k in range(models)]
    for _ in range(30):
        for s in streams:
            pipeline.process_lines([json.dumps(e).encode() for e in s.events(50)])
    held = sum(m.deferred_events for m in pipeline.monitors.monitors.values())
    before = rss_mib()
    executor.run_all()
    while pipeline.monitors.calibrating:
        pipeline.monitors.poll()
    drained = rss_mib()
    t = time.perf_counter()
    ran = trim_heap()
    took = time.perf_counter() - t
    print(f"\n| {models} models, {held:,} events held | RSS (MiB) |")
    print("|---|---:|")
    print(f"| holding | {before:,.0f} |")
    print(f"| calibrated, held events processed | {drained:,.0f} |")
    print(f"| after malloc_trim(0) ({'ran' if ran else 'not available'}, {took * 1000:.0f} ms) | {rss_mib():,.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--trim", type=int, default=0, help="models of the malloc_trim measurement (0: none)")
    args = ap.parse_args()
    n = args.events
    lines = [json.dumps(e) for e in SyntheticStream(seed=1).events(n)]
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    events = [decode_event(x) for x in lines]
    decoded = tracemalloc.get_traced_memory()[0] - start
    packed = [PackedEvents.pack(events[i:i + args.batch]) for i in range(0, n, args.batch)]
    packed_bytes = tracemalloc.get_traced_memory()[0] - start - decoded
    assert sum(map(len, packed)) == n
    print(f"| held as | bytes per event ({n:,} synthetic 384-dim NER events) |")
    print("|---|---:|")
    print(f"| decoded `Event`s | {decoded / n:,.0f} |")
    print(f"| `PackedEvents` | {packed_bytes / n:,.0f} ({packed_bytes / decoded:.2f}x) |")
    tracemalloc.stop()
    del events, packed
    if args.trim:
        trim_after_drain(args.trim)


if __name__ == "__main__":
    main()
