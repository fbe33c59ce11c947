"""First alarms on the partial-drift mixtures over calibration seeds (prints a markdown table).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/partial_seeds.py [--data ../shared/data] --keep DIR
        [--seeds 6] [--rows 0,1,2]

The streams of ``benchmarks/detection.py`` (its partial-drift rows, ``benchmarks/mixture.py``), replayed with
``MonitorConfig(seed=s)`` for s = 0 .. seeds - 1 at the default target: per cell, the delay of the first
``embedding_clusters`` alarm / of the first alarm of any signal (from the change, counting the alarm event;
"-" none), and the alarms before the change when there are any. The seed draws the calibration's halvings,
resampled windows and random features: the spread over seeds is the calibration's Monte Carlo error as
detection sees it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mixture import build_mixture

from nlpmon.monitor.config import MonitorConfig
from nlpmon.replay import replay

ROWS = (("quotes", "pydocs", 0.05), ("quotes", "pydocs", 0.1), ("quotes", "pydocs", 0.3),
        ("pydocs", "quotes", 0.05), ("pydocs", "quotes", 0.1), ("pydocs", "quotes", 0.3))
CHANGE = 3000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    ap.add_argument("--keep", type=Path, required=True, help="build the streams in this directory (reused)")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--rows", default=",".join(str(i) for i in range(len(ROWS))), help="indices into the rows")
    args = ap.parse_args()
    args.keep.mkdir(parents=True, exist_ok=True)
    seeds = range(args.seeds)
    print("| stream | " + " | ".join(f"seed {s}: clusters / any" for s in seeds) + " |")
    print("|---|" + "---|" * len(seeds))
    for i in (int(x) for x in args.rows.split(",")):
        a, b, p = ROWS[i]
        ref, stream = build_mixture(args.data, args.keep, a, b, p=p)
        cells = []
        for s in seeds:
            alerts = replay(stream, [ref], MonitorConfig(seed=s))["alerts"]

            after = [(int(x["event_index"]) - CHANGE + 1, str(x["signal"])) for x in alerts
                     if x["event_index"] >= CHANGE]
            clusters = str(min((d for d, sig in after if sig == "embedding_clusters"), default="-"))
            anyone = str(min((d for d, _ in after), default="-"))
            before = len(alerts) - len(after)
            cells.append(f"{clusters} / {anyone}" + (f" ({before} before)" if before else ""))
        print(f"| {a} + {p:.0%} {b} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
