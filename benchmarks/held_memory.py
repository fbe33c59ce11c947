"""Memory of the events a model holds while its calibration is pending: decoded ``Event``s against
``PackedEvents`` (batches of 50, as the fleet benchmark interleaves them), measured with tracemalloc in one run.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/held_memory.py [--events 3000]
"""

from __future__ import annotations

import argparse
import gc
import json
import tracemalloc

from nlpmon.demo import SyntheticStream
from nlpmon.events import decode_event
from nlpmon.monitor.calibration_jobs import PackedEvents


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=50)
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


if __name__ == "__main__":
    main()
