"""What a checkpoint encodes on the loop while a fleet calibrates: ``Pipeline.snapshot_parts`` of one partition
(its models collecting their auto-baseline, then holding events for a calibration that does not finish, or
calibrated and monitoring), timed in-process, with the bytes of the parts that are new since the previous
checkpoint, and what ``StateStore.write`` does with them (chunking, producing to a client that does not
deliver: librdkafka copies each value into its queue).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/checkpoint_encoding.py [--models 12] [--baseline 2000]
    # a partition of benchmarks/fleet.py: 50 models, a checkpoint every ~10 s of its events, a third calibrated
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/checkpoint_encoding.py --models 50 --every 12000 \
        --calibrated 16 [--profile out.prof]

The events of each model come in batches of 50, interleaved as in benchmarks/fleet.py; a checkpoint is taken
every ``--every`` events of the partition. The first ``--calibrated`` models calibrate at once (inline) when
their baseline is full; the others' calibrations wait in a worker's queue for ever (they hold their events).
Each row: the events seen so far, the seconds ``snapshot_parts`` took, the seconds to read every new part's
bytes (``PartSet`` makes again those it does not keep), the seconds ``StateStore.write`` took with those bytes
(chunking, hashing, producing), and the bytes new parts add. Seconds are wall-clock, with the CPU seconds of
the loop's thread in brackets (``time.thread_time``: what the work costs whatever else the machine runs).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Producer  # noqa: E402

from nlpmon.demo import SyntheticStream  # noqa: E402
from nlpmon.kafka.snapshot_format import PartitionSnapshot  # noqa: E402
from nlpmon.kafka.state_store import StateStore  # noqa: E402
from nlpmon.monitor.calibration_jobs import INLINE, CalibrationJob  # noqa: E402
from nlpmon.monitor.config import MonitorConfig  # noqa: E402
from nlpmon.monitor.pipeline import Pipeline  # noqa: E402
from nlpmon.monitor.reference import ReferenceProfile  # noqa: E402


class BacklogExecutor:
    """A calibration worker that runs the jobs of ``inline`` models at once and has not reached the others yet
    (a backlog)."""

    def __init__(self, inline: set[str]) -> None:
        self.inline = inline

    def submit(self, job: CalibrationJob) -> Future[ReferenceProfile]:
        if job.model in self.inline:
            return INLINE.submit(job)
        fut: Future[ReferenceProfile] = Future()
        fut.set_running_or_notify_cancel()  # started elsewhere: the monitor does not run it itself
        return fut


class Known(Mapping[str, bytes]):
    """The parts of a snapshot, the new ones already read (what the store reads of it: only those)."""

    def __init__(self, parts: Mapping[str, bytes], new: dict[str, bytes]) -> None:
        self.parts, self.new = parts, new

    def __getitem__(self, pid: str) -> bytes:
        return self.new[pid] if pid in self.new else self.parts[pid]

    def __iter__(self) -> Iterator[str]:
        return iter(self.parts)

    def __len__(self) -> int:
        return len(self.parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=12)
    ap.add_argument("--events-per-model", type=int, default=3000)
    ap.add_argument("--baseline", type=int, default=2000)
    ap.add_argument("--every", type=int, default=5000, help="partition events between checkpoints")
    ap.add_argument("--calibrated", type=int, default=0, help="models whose calibration runs at once")
    ap.add_argument("--profile", help="write a cProfile of the checkpoints (not of the events) here")
    args = ap.parse_args()
    config = MonitorConfig(auto_baseline_events=args.baseline)
    pipeline = Pipeline(config, executor=BacklogExecutor({f"m{k:03d}" for k in range(args.calibrated)}))
    streams = [SyntheticStream(seed=1000 + k, model=f"m{k:03d}") for k in range(args.models)]
    batches = [[json.dumps(e).encode() for e in s.events(50)] for _ in range(0, args.events_per_model, 50)
               for s in streams]
    # a client that never reaches a broker: produce() only queues (copies) the values; purged at each checkpoint
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "queue.buffering.max.kbytes": 2_000_000,
                         "queue.buffering.max.messages": 1_000_000, "message.max.bytes": 1_000_000,
                         "log_level": 0})
    store = StateStore(bootstrap_servers="127.0.0.1:9", state_topic="state", group_id="g", producer=producer)
    profiler = cProfile.Profile() if args.profile else None
    written: set[str] = set()
    seen = since = 0
    totals = [0.0] * 7
    print(f"{args.models} models x {args.events_per_model:,} events, auto-baseline {args.baseline:,}, "
          f"{args.calibrated} calibrated at once, a checkpoint every {args.every:,} events\n")
    print("| events | snapshot_parts (s) | new parts' bytes read (s) | StateStore.write (s) | new bytes (MB) |")
    print("|---:|---:|---:|---:|---:|")
    for i, batch in enumerate(batches, 1):
        pipeline.process_lines(batch)
        seen += len(batch)
        since += len(batch)
        if since < args.every and i < len(batches):
            continue
        since = 0
        if profiler:
            profiler.enable()
        t, c = time.perf_counter(), time.thread_time()
        main_bytes, parts = pipeline.snapshot_parts()
        encode, encode_cpu = time.perf_counter() - t, time.thread_time() - c
        t, c = time.perf_counter(), time.thread_time()
        new = {pid: parts[pid] for pid in parts if pid not in written}
        read, read_cpu = time.perf_counter() - t, time.thread_time() - c
        t, c = time.perf_counter(), time.thread_time()
        store.write(PartitionSnapshot("t", 0, seen, main_bytes, parts=Known(parts, new)))
        write, write_cpu = time.perf_counter() - t, time.thread_time() - c
        if profiler:
            profiler.disable()
        producer.purge()
        producer.poll(0)
        written |= set(new)
        size = len(main_bytes) + sum(map(len, new.values()))
        row = (encode, encode_cpu, read, read_cpu, write, write_cpu, size)
        for k, v in enumerate(row):
            totals[k] += v
        print(f"| {seen:,} | {_cells(row, 3)} |")
    print(f"| total | {_cells(totals, 2)} |")
    if profiler:
        profiler.dump_stats(args.profile)


def _cells(row: list[float] | tuple[float, ...], digits: int) -> str:
    """``wall (cpu)`` of each of the three timings, then the MB."""
    times = [f"{row[k]:.{digits}f} ({row[k + 1]:.{digits}f})" for k in (0, 2, 4)]
    return " | ".join([*times, f"{row[6] / 1e6:.1f}"])


if __name__ == "__main__":
    main()
