"""What a checkpoint encodes on the loop while a fleet calibrates: ``Pipeline.snapshot_parts`` of one partition
(its models collecting their auto-baseline, then holding events for a calibration that does not finish),
timed in-process, with the bytes of the parts that are new since the previous checkpoint (what a store writes).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/checkpoint_encoding.py [--models 12] [--baseline 2000]

The events of each model come in batches of 50, interleaved as in benchmarks/fleet.py; a checkpoint is taken
every ``--every`` events of the partition. Each row: the events seen so far, the seconds ``snapshot_parts``
took, the seconds to read every new part's bytes (``PartSet`` makes again those it does not keep), and
the bytes new parts add.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import Future
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nlpmon.demo import SyntheticStream  # noqa: E402
from nlpmon.monitor.calibration_jobs import CalibrationJob  # noqa: E402
from nlpmon.monitor.config import MonitorConfig  # noqa: E402
from nlpmon.monitor.pipeline import Pipeline  # noqa: E402
from nlpmon.monitor.reference import ReferenceProfile  # noqa: E402


class NeverExecutor:
    """A calibration worker that has not reached this partition's jobs yet (a backlog)."""

    def submit(self, job: CalibrationJob) -> Future[ReferenceProfile]:
        fut: Future[ReferenceProfile] = Future()
        fut.set_running_or_notify_cancel()  # started elsewhere: the monitor does not run it itself
        return fut


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=12)
    ap.add_argument("--events-per-model", type=int, default=3000)
    ap.add_argument("--baseline", type=int, default=2000)
    ap.add_argument("--every", type=int, default=5000, help="partition events between checkpoints")
    args = ap.parse_args()
    config = MonitorConfig(auto_baseline_events=args.baseline)
    pipeline = Pipeline(config, executor=NeverExecutor())
    streams = [SyntheticStream(seed=1000 + k, model=f"m{k:03d}") for k in range(args.models)]
    batches = [[json.dumps(e).encode() for e in s.events(50)] for _ in range(0, args.events_per_model, 50)
               for s in streams]
    written: set[str] = set()
    seen = since = 0
    total_encode = total_new = 0.0
    print(f"{args.models} models x {args.events_per_model:,} events, auto-baseline {args.baseline:,}, "
          f"a checkpoint every {args.every:,} events\n")
    print("| events | snapshot_parts (s) | new parts' bytes read (s) | new bytes (MB) |")
    print("|---:|---:|---:|---:|")
    for i, batch in enumerate(batches, 1):
        pipeline.process_lines(batch)
        seen += len(batch)
        since += len(batch)
        if since < args.every and i < len(batches):
            continue
        since = 0
        t = time.perf_counter()
        main_bytes, parts = pipeline.snapshot_parts()
        encode = time.perf_counter() - t
        t = time.perf_counter()
        new = {pid: parts[pid] for pid in parts if pid not in written}
        read = time.perf_counter() - t
        written |= set(new)
        size = len(main_bytes) + sum(map(len, new.values()))
        total_encode += encode + read
        total_new += size
        print(f"| {seen:,} | {encode:.3f} | {read:.3f} | {size / 1e6:.1f} |")
    print(f"\ntotal: {total_encode:.2f} s encoding, {total_new / 1e6:.1f} MB new")


if __name__ == "__main__":
    main()
