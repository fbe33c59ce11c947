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

The checkpoints go through the runner's ``Checkpointer`` (in flight, as the schedule's: a fake consumer, the
broker's acknowledgement taken as immediate), over ``--partitions`` partitions of ``--models`` models each
(the events of the partitions interleaved; the columns above sum over the partitions), with the write budget of
``--poll-gap-target``. Its partitions' snapshots are spread over loop iterations (one call of ``after_poll``
each); the last two columns are the iterations a checkpoint took and its longest write (snapshot_parts, new
parts read, StateStore.write) in one iteration. ``--policy budget-spent`` predicts every write as free: another
snapshot starts until the budget is spent, the rule before predicted writes (issue 14).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/checkpoint_encoding.py --partitions 4 --models 25 \
        --every 6000 --calibrated 8 --events-per-model 2400 --poll-gap-target 0.3 [--policy budget-spent]
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

import logging  # noqa: E402
import threading  # noqa: E402
from typing import cast  # noqa: E402

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from nlpmon.demo import SyntheticStream  # noqa: E402
from nlpmon.kafka.checkpoints import Checkpointer, CheckpointSchedule  # noqa: E402
from nlpmon.kafka.dead_letter import DeadLetterWriter  # noqa: E402
from nlpmon.kafka.partition_progress import PartitionProgress  # noqa: E402
from nlpmon.kafka.processor import Record, Rejected  # noqa: E402
from nlpmon.kafka.runner_metrics import RunnerMetrics, TopicPartitionKey  # noqa: E402
from nlpmon.kafka.settings import KafkaSettings  # noqa: E402
from nlpmon.kafka.snapshot_format import PartitionSnapshot  # noqa: E402
from nlpmon.kafka.state_loss import StateLossDetector  # noqa: E402
from nlpmon.kafka.state_store import StateStore  # noqa: E402
from nlpmon.kafka.write_costs import SnapshotWriteCosts  # noqa: E402
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


class Timings:
    """Wall and CPU seconds of each step of the checkpoint being written, and of the loop iteration."""

    def __init__(self) -> None:
        self.checkpoint = [0.0] * 7  # the columns of a row: (wall, cpu) x 3, new bytes
        self.iteration = [0.0, 0.0]  # the writes of the current iteration: wall, cpu

    def add(self, column: int, wall: float, cpu: float) -> None:
        self.checkpoint[2 * column] += wall
        self.checkpoint[2 * column + 1] += cpu
        self.iteration[0] += wall
        self.iteration[1] += cpu


class TimedPartition:
    """One partition's pipeline as the checkpointer's processor: ``snapshot_parts`` timed, then the new parts'
    bytes read (timed; the store reads only those), as the store would."""

    def __init__(self, pipeline: Pipeline, timings: Timings) -> None:
        self.pipeline, self.timings = pipeline, timings
        self.written: set[str] = set()

    def process(self, records: list[Record]) -> list[Rejected]:
        raise NotImplementedError  # the benchmark feeds the pipeline itself

    def snapshot(self) -> bytes:
        raise NotImplementedError

    def restore(self, data: bytes) -> None:
        raise NotImplementedError

    def restore_parts(self, main: bytes, parts: dict[str, bytes]) -> None:
        raise NotImplementedError

    def snapshot_parts(self) -> tuple[bytes, Mapping[str, bytes]]:
        t, c = time.perf_counter(), time.thread_time()
        main_bytes, parts = self.pipeline.snapshot_parts()
        self.timings.add(0, time.perf_counter() - t, time.thread_time() - c)
        t, c = time.perf_counter(), time.thread_time()
        new = {pid: parts[pid] for pid in parts if pid not in self.written}
        self.timings.add(1, time.perf_counter() - t, time.thread_time() - c)
        self.written |= set(new)
        self.timings.checkpoint[6] += len(main_bytes) + sum(map(len, new.values()))
        return main_bytes, Known(parts, new)


class TimedStore(StateStore):
    """``write`` timed; every write counts as acknowledged at once (the client never reaches a broker: its
    queue is purged after each iteration)."""

    timings: Timings

    def write(self, snapshot: PartitionSnapshot) -> None:
        t, c = time.perf_counter(), time.thread_time()
        super().write(snapshot)
        self.timings.add(2, time.perf_counter() - t, time.thread_time() - c)

    def acked_within(self, timeout_s: float) -> bool:
        return True


class Member:
    """The consumer as the checkpointer sees it: a group member whose commits succeed."""

    def memberid(self) -> str:
        return "member-1"

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in offsets]


class AckedDeadLetters:
    def acked_within(self, timeout_s: float) -> bool:
        return True


class FreeWrites(SnapshotWriteCosts):
    """Every write predicted to cost nothing: another snapshot starts until the budget is spent."""

    def predict(self, key: TopicPartitionKey) -> float | None:
        return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=12, help="models per partition")
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--events-per-model", type=int, default=3000)
    ap.add_argument("--baseline", type=int, default=2000)
    ap.add_argument("--every", type=int, default=5000, help="events of each partition between checkpoints")
    ap.add_argument("--calibrated", type=int, default=0, help="models (of each partition) calibrated at once")
    ap.add_argument("--poll-gap-target", type=float, default=0.5, help="poll_gap_target_s (write budget: half)")
    ap.add_argument("--policy", choices=["predicted", "budget-spent"], default="predicted")
    ap.add_argument("--profile", help="write a cProfile of the checkpoints (not of the events) here")
    args = ap.parse_args()
    config = MonitorConfig(auto_baseline_events=args.baseline)
    timings = Timings()
    partitions: dict[TopicPartitionKey, PartitionProgress] = {}
    pipelines, batches = [], []
    for p in range(args.partitions):
        names = [f"m{k:03d}" if args.partitions == 1 else f"p{p}m{k:03d}" for k in range(args.models)]
        pipeline = Pipeline(config, executor=BacklogExecutor(set(names[:args.calibrated])))
        streams = [SyntheticStream(seed=1000 + 1000 * p + k, model=name) for k, name in enumerate(names)]
        batches.append([[json.dumps(e).encode() for e in s.events(50)] for _ in range(0, args.events_per_model, 50)
                        for s in streams])
        pipelines.append(pipeline)
        partitions[("t", p)] = PartitionProgress("t", p, TimedPartition(pipeline, timings), 0, -1, -1)
    # a client that never reaches a broker: produce() only queues (copies) the values; purged at each iteration
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "queue.buffering.max.kbytes": 2_000_000,
                         "queue.buffering.max.messages": 1_000_000, "message.max.bytes": 1_000_000,
                         "log_level": 0})
    store = TimedStore(bootstrap_servers="127.0.0.1:9", state_topic="state", group_id="g", producer=producer)
    store.timings = timings
    settings = KafkaSettings(topic="t", state_topic="state", dead_letter_topic="dlq",
                             poll_gap_target_s=args.poll_gap_target)
    checkpointer = Checkpointer(
        settings, consumer=cast(Consumer, Member()), store=store,
        dead_letters=cast(DeadLetterWriter, AckedDeadLetters()),
        schedule=CheckpointSchedule(interval_events=1, interval_s=1e9, last_at=0.0), partitions=partitions,
        counters=RunnerMetrics(), lock=threading.Lock(), losses=StateLossDetector("state"),
        on_stall_change=lambda: None, clock=time.perf_counter, logger=logging.getLogger("checkpoint_encoding"))
    if args.policy == "budget-spent":
        checkpointer._write_costs = FreeWrites()  # the rule before predicted writes (issue 14)
    profiler = cProfile.Profile() if args.profile else None
    seen = since = 0
    totals = [0.0] * 7
    print(f"{args.partitions} partitions x {args.models} models x {args.events_per_model:,} events, auto-baseline "
          f"{args.baseline:,}, {args.calibrated} calibrated at once, a checkpoint every {args.every:,} events of "
          f"each partition; write budget {checkpointer.write_budget_s:.3f} s per iteration, policy "
          f"{args.policy}\n")
    print("| events | snapshot_parts (s) | new parts' bytes read (s) | StateStore.write (s) | new bytes (MB) "
          "| iterations | longest write per iteration (s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    longest_overall, most_iterations = 0.0, 0
    for i in range(len(batches[0])):
        for p, pipeline in enumerate(pipelines):
            pipeline.process_lines(batches[p][i])
            partitions[("t", p)].next_offset += len(batches[p][i])
        seen += len(batches[0][i])
        since += len(batches[0][i])
        if since < args.every and i + 1 < len(batches[0]):
            continue
        since = 0
        timings.checkpoint = [0.0] * 7
        longest, iterations = (0.0, 0.0), 0
        checkpointer.schedule.count(1)
        while iterations < 10 * args.partitions:  # at least one snapshot per iteration: bounded
            timings.iteration = [0.0, 0.0]
            if profiler:
                profiler.enable()
            checkpointer.after_poll(list(partitions.values()), 30.0)
            if profiler:
                profiler.disable()
            iterations += 1
            longest = max(longest, (timings.iteration[0], timings.iteration[1]))
            producer.purge()
            producer.poll(0)
            if not checkpointer.pending:
                break
        else:
            raise SystemExit("a checkpoint did not complete within its bound of iterations")
        row = tuple(timings.checkpoint)
        for k, v in enumerate(row):
            totals[k] += v
        longest_overall, most_iterations = max(longest_overall, longest[0]), max(most_iterations, iterations)
        print(f"| {seen:,} | {_cells(row, 3)} | {iterations} | {longest[0]:.3f} ({longest[1]:.3f}) |")
    print(f"| total | {_cells(totals, 2)} | max {most_iterations} | max {longest_overall:.3f} |")
    if profiler:
        profiler.dump_stats(args.profile)


def _cells(row: list[float] | tuple[float, ...], digits: int) -> str:
    """``wall (cpu)`` of each of the three timings, then the MB."""
    times = [f"{row[k]:.{digits}f} ({row[k + 1]:.{digits}f})" for k in (0, 2, 4)]
    return " | ".join([*times, f"{row[6] / 1e6:.1f}"])


if __name__ == "__main__":
    main()
