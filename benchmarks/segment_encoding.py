"""CPU cost of ``encode_state`` of one 200-event segment of a reference sample (what a checkpoint encodes for
each new segment of a baseline being collected): 8 segments of a synthetic 384-dim NER auto-baseline, each
encoded 5 times, best of 7 rounds, in CPU seconds of this thread.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/segment_encoding.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nlpmon.demo import SyntheticStream  # noqa: E402
from nlpmon.monitor.config import MonitorConfig  # noqa: E402
from nlpmon.monitor.pipeline import Pipeline  # noqa: E402
from nlpmon.monitor.reference import SEGMENT_EVENTS  # noqa: E402
from nlpmon.state import encode_state  # noqa: E402


def main() -> None:
    pipeline = Pipeline(MonitorConfig(auto_baseline_events=2000))
    pipeline.process_lines([json.dumps(e).encode() for e in SyntheticStream(seed=1, model="m").events(1600)])
    sample = next(iter(pipeline.monitors.monitors.values())).auto_baseline
    n = SEGMENT_EVENTS
    trees = [sample.segment_state(i * n, (i + 1) * n) for i in range(8)]
    best = float("inf")
    for _ in range(7):
        t = time.thread_time()
        for tree in trees * 5:
            encode_state(tree)
        best = min(best, (time.thread_time() - t) / (len(trees) * 5))
    size = len(encode_state(trees[0]))
    print(f"encode_state of a {n}-event segment: {best * 1e3:.2f} ms CPU, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
