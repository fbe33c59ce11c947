"""Replay throughput and the monitor's own cost, beside the pure decode rate of the same file.

Prints a markdown table. Single core: run with OPENBLAS_NUM_THREADS=1 (``make bench`` does).
Synthetic events (``service.demo``), so it runs anywhere; ``--data DIR`` adds rows for real NER data.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/replay_throughput.py [--events 20000]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from service.demo import SyntheticStream
from service.events import decode_event
from service.monitor.config import MonitorConfig
from service.monitor.monitor_set import MonitorSet
from service.monitor.signals import extract_columns

BATCH = 2000


def write_stream(path: Path, n: int, dim: int, b64: bool, split: str, seed: int) -> None:
    s = SyntheticStream(seed=seed, dim=dim, base64_embeddings=b64)
    with path.open("w") as fh:
        for e in s.events(n, split):
            fh.write(json.dumps(e) + "\n")


def read_lines(path: Path) -> list[bytes]:
    return [line.rstrip(b"\n") for line in path.open("rb")]


def best_of(fn, repeats: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(dim: int, b64: bool, n: int, tmp: Path) -> dict[str, float]:
    ref_path, ev_path = tmp / f"ref-{dim}-{b64}.jsonl", tmp / f"ev-{dim}-{b64}.jsonl"
    write_stream(ref_path, 3000, dim, b64, "reference", seed=1)
    write_stream(ev_path, n, dim, b64, "production", seed=1)
    ref, lines = read_lines(ref_path), read_lines(ev_path)
    config = MonitorConfig()

    t_decode = best_of(lambda: [decode_event(x) for x in lines])
    events = [decode_event(x) for x in lines]

    base = MonitorSet(config)
    t0 = time.perf_counter()
    base.process_lines(ref)
    base.process_lines(lines[:1])  # calibrates
    t_cal = time.perf_counter() - t0
    snapshot = base.snapshot()

    def monitor_only() -> None:
        ms = MonitorSet(config)
        ms.restore(snapshot)
        for i in range(0, n, BATCH):
            ms.process_events(events[i:i + BATCH], list(range(min(BATCH, n - i))))

    def end_to_end() -> None:
        ms = MonitorSet(config)
        ms.restore(snapshot)
        for i in range(0, n, BATCH):
            ms.process_lines(lines[i:i + BATCH])

    t_mon = best_of(monitor_only)
    t_extract = best_of(lambda: [extract_columns(events[i:i + BATCH]) for i in range(0, n, BATCH)])
    t_e2e = best_of(end_to_end)
    tracemalloc.start()
    ms = MonitorSet(config)
    ms.restore(snapshot)
    for i in range(0, n, BATCH):
        ms.process_lines(lines[i:i + BATCH])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    state = len(ms.snapshot())
    return {"dim": dim, "b64": b64, "decode_rate": n / t_decode, "e2e_rate": n / t_e2e,
            "ratio": t_decode / t_e2e, "monitor_us": 1e6 * t_mon / n, "extract_us": 1e6 * t_extract / n,
            "calibration_s": t_cal, "peak_mb": peak / 2**20, "state_mb": state / 2**20}


def blas() -> str:
    try:
        from threadpoolctl import threadpool_info

        return ", ".join(f"{i['internal_api']} {i.get('architecture', '?')} x{i['num_threads']}"
                         for i in threadpool_info())
    except ImportError:  # pragma: no cover
        return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000)
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, BLAS: {blas()}")
    print(f"{args.events} events per run, batches of {BATCH}, best of 3; reference 3,000 events\n")
    print("| embedding | decode only (ev/s) | replay (ev/s) | replay / decode | monitor µs/event "
          "(of which flattening) | calibration s | peak MB (replay) | snapshot MB |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for dim in (384, 768):
            for b64 in (False, True):
                r = measure(dim, b64, args.events, Path(d))
                print(f"| {dim}-dim {'base64' if b64 else 'JSON list'} | {r['decode_rate']:,.0f} | "
                      f"{r['e2e_rate']:,.0f} | {r['ratio']:.2f} | {r['monitor_us']:.1f} ({r['extract_us']:.1f}) | "
                      f"{r['calibration_s']:.1f} | {r['peak_mb']:.0f} | {r['state_mb']:.1f} |")
    print(f"\nmax RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
