"""What a batch of events of many models costs, per event, against a batch of one model (issue 14, item 4).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/many_models_batch.py [--models 1 10 50] [--batches 8]
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/many_models_batch.py --profile monitoring:50

In process, no Kafka: a ``Pipeline`` is fed the raw JSON lines ``benchmarks/fleet.py`` publishes
(``nlpmon.demo.SyntheticStream``, one seed per model: 384-dim base64 embeddings, token tags, entities) in
batches of ``--batch`` lines spread evenly over M models, interleaved ``--run`` events of a model at a time
(as a Kafka partition of the fleet hands them out). Each model is in one state:

* **collecting**: collecting its auto-baseline (``auto_baseline_events`` beyond the run: events are
  appended to its ``ReferenceSample``);
* **holding**: its auto-baseline calibration handed to an executor that never finishes it, so its events
  are held packed (``PackedEvents``);
* **monitoring**: calibrated (a profile calibrated once on another stream of the same generator, given to
  every model; finished synchronously), every window already full (``--warm`` events per model first),
  so every signal runs: window sketches, drift statistics, river detectors, alarms.

Lines are made before the clock starts; the time is ``Pipeline.process_lines`` over ``--batches`` batches
(after one untimed batch). The table gives microseconds per event and the ratio to the M = 1 row of the
same state, measured in the same run. ``--profile STATE:M`` prints the cProfile of that row instead. To measure
another commit's code with this script: ``git archive COMMIT service | tar -x -C /tmp/old``, a directory holding a
link ``nlpmon -> /tmp/old/service``, and that directory first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nlpmon.demo import SyntheticStream  # noqa: E402
from nlpmon.events import EventDecoder  # noqa: E402
from nlpmon.monitor.calibration_jobs import CalibrationJob  # noqa: E402
from nlpmon.monitor.config import MonitorConfig  # noqa: E402
from nlpmon.monitor.pipeline import Pipeline  # noqa: E402
from nlpmon.monitor.reference import ReferenceProfile, ReferenceSample  # noqa: E402
from nlpmon.monitor.signals import extract_columns  # noqa: E402

STATES = ("collecting", "holding", "monitoring")
T0 = 1.7e9


class NeverExecutor:
    """Takes every calibration job and never runs it: the models hold their events."""

    def submit(self, job: CalibrationJob) -> Future[ReferenceProfile]:
        fut: Future[ReferenceProfile] = Future()
        fut.set_running_or_notify_cancel()  # running: nobody may cancel it and run it here
        return fut


def model_lines(models: int, per_model: int, first: int, run: int) -> Iterator[bytes]:
    """Events ``first .. first + per_model - 1`` of each model's stream, models interleaved ``run`` at a time."""
    streams = [SyntheticStream(seed=1000 + k, model=f"m{k:03d}", t0=T0) for k in range(models)]
    made: list[list[bytes]] = []
    for k, s in enumerate(streams):
        rows = []
        for i, e in enumerate(s.events(first + per_model)):
            if i >= first:
                e["event_id"] = f"m{k:03d}-{i}"
                rows.append(json.dumps(e).encode())
        made.append(rows)
    for start in range(0, per_model, run):
        for rows in made:
            yield from rows[start:start + run]


def shared_profile(config: MonitorConfig) -> ReferenceProfile:
    """One profile, calibrated on 2,000 events of a stream no model sends (seed 999)."""
    stream = SyntheticStream(seed=999, model="ref", t0=T0)
    dec = EventDecoder()
    events = [dec.decode(json.dumps(e).encode()) for e in stream.events(2000)]
    sample = ReferenceSample(config.reference_reservoir, config.seed)
    cols, _ = extract_columns(events, True)
    sample.add(cols, len(events), [e.text for e in events])
    return ReferenceProfile.calibrate(sample, config, "reference", "ref", "1")


def build(state: str, models: int, warm: int, profile_state: dict[str, object]) -> Pipeline:
    """A pipeline whose ``models`` models are in ``state``, warmed up."""
    if state == "collecting":
        cfg = MonitorConfig(auto_baseline_events=10**9)
        return Pipeline(cfg)
    if state == "holding":
        cfg = MonitorConfig(auto_baseline_events=200, calibration_pending_events=10**9)
        p = Pipeline(cfg, executor=NeverExecutor())
        lines = list(model_lines(models, 200, 0, 50))
        for i in range(0, len(lines), 1250):
            p.process_lines(lines[i:i + 1250])
        assert p.calibrating == models
        return p
    cfg = MonitorConfig()
    profiles = {(f"m{k:03d}", "1"): ReferenceProfile.from_state(profile_state) for k in range(models)}
    p = Pipeline(cfg, profiles)
    lines = list(model_lines(models, warm, 0, 50))
    for i in range(0, len(lines), 1250):
        p.process_lines(lines[i:i + 1250])
    return p


def measure(state: str, models: int, batch: int, batches: int, run: int, warm: int,
            profile_state: dict[str, object], profile: bool = False) -> float:
    """Microseconds per event of ``Pipeline.process_lines`` over ``batches`` batches."""
    p = build(state, models, warm, profile_state)
    first = 200 if state == "holding" else warm if state == "monitoring" else 0
    per_model = -(-batch * (batches + 1) // models)
    lines = list(model_lines(models, per_model, first, max(1, min(run, batch // models))))
    chunks = [lines[i * batch:(i + 1) * batch] for i in range(batches + 1)]
    p.process_lines(chunks[0])  # untimed
    prof = cProfile.Profile() if profile else None
    if prof is not None:
        prof.enable()
    t = time.perf_counter()
    for c in chunks[1:]:
        p.process_lines(c)
    seconds = time.perf_counter() - t
    if prof is not None:
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    if state == "monitoring":
        assert all(m.status == "monitoring" for m in p.monitors.monitors.values())
    return 1e6 * seconds / (batch * batches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--states", nargs="+", default=list(STATES), choices=STATES)
    ap.add_argument("--batch", type=int, default=1250, help="lines per batch (fleet: ~1,250 per partition)")
    ap.add_argument("--batches", type=int, default=8, help="timed batches per row")
    ap.add_argument("--run", type=int, default=5, help="events of one model in a row within a batch")
    ap.add_argument("--warm", type=int, default=1000, help="monitoring: events per model before timing")
    ap.add_argument("--profile", help="STATE:M: print the cProfile of that row")
    args = ap.parse_args()
    cfg = MonitorConfig()
    profile_state = shared_profile(cfg).state()
    if args.profile:
        state, m = args.profile.split(":")
        measure(state, int(m), args.batch, args.batches, args.run, args.warm, profile_state, profile=True)
        return
    print(f"batches of {args.batch:,} lines over M models ({args.run} events of a model in a row), "
          f"{args.batches} timed batches a row; load average {os.getloadavg()[0]:.2f}")
    print()
    print("| state | M | events of a model per batch | us/event | vs M = 1 |")
    print("|---|---:|---:|---:|---:|")
    for state in args.states:
        one = None
        for m in args.models:
            us = measure(state, m, args.batch, args.batches, args.run, args.warm, profile_state)
            one = us if m == 1 else one
            ratio = f"{us / one:.2f}" if one else "-"
            print(f"| {state} | {m} | {args.batch // m:,} | {us:.0f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
