"""Ladders of marking levels for embedding_clusters, measured on the real NER data (prints a markdown table).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/cluster_ladder.py --data ../shared/data --keep DIR \
        [--ladders "0.05;0.02,0.05;0.02,0.05,0.1"] [--windows "20,50,100,200,500,1000;10,20,50,100,200,500,1000"]

Embeddings only, with the monitor's own code: the deployed embedding featurizer fitted on the 3,000-event
reference, ``calibrate_cluster_signal`` at the default target 1e-6 (6 halvings, its own generator as in the
monitor) and ``SignalWindow`` judging every 10 events (every 5 when a window is not a multiple of 10).
Each level of a ladder is calibrated on its own at ``1e-6 / levels`` with the same seed, which gives the
thresholds of one joint calibration (the same splits and draws: the draws do not depend on the level) and
lets levels below ``MIN_MARKED_HELD_OUT`` be measured too. An event is in alarm when any (window, level) is
above its threshold. Printed per reference domain A and ladder: the delays on the mixtures of
benchmarks/detection.py (5 %, 10 %, 30 % and the ramp; events from the change point to the first alarm,
counting it; "-": none in 4,000), the events in alarm before the change (4 streams) and among 20,000
stationary held-out events, and the thresholds (windows x levels). The embeddings are decoded and
normalised in numpy here, not by the monitor's decoder: the figures of the built ladder agree with the
monitor's (benchmarks/detection.py) on both pairs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_outliers import embeddings
from mixture import build_mixture, make_stream, reference_seed

from nlpmon.drift.embedding import EmbeddingFeaturizer
from nlpmon.drift.items import ItemColumn
from nlpmon.drift.signal import SignalModel, SignalWindow, calibrate_cluster_signal, cluster_event_rows
from nlpmon.monitor.config import MonitorConfig

DOMAINS = ("quotes", "pydocs")
CHANGE = 3000
RATE = 1e-6


def alarms(models: list[SignalModel], emb: EmbeddingFeaturizer, x: np.ndarray) -> np.ndarray:
    """Indices of the events where any (window, level) of the ladder is above its threshold."""
    hit = np.zeros(len(x), dtype=bool)
    for m in models:
        rows, items = cluster_event_rows(m.featurizer, emb, ItemColumn(np.arange(len(x)), x), len(x))
        hit |= SignalWindow(m, 50, None).update_rows(rows, items, np.full(len(x), np.nan)).drift
    return np.flatnonzero(hit)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    ap.add_argument("--keep", type=Path, required=True, help="directory of the built streams (reused)")
    ap.add_argument("--ladders", default="0.05;0.02,0.05;0.01,0.02,0.05;0.02,0.05,0.1")
    ap.add_argument("--windows", default="20,50,100,200,500,1000")
    args = ap.parse_args()
    args.keep.mkdir(parents=True, exist_ok=True)
    ladders = [tuple(float(q) for q in lad.split(",")) for lad in args.ladders.split(";")]
    window_sets = [tuple(int(w) for w in ws.split(",")) for ws in args.windows.split(";")]
    config = MonitorConfig()
    print("| A + B | windows | levels | 5 % | 10 % | 30 % | ramp | in alarm before the change | in alarm, 20,000 "
          "stationary | thresholds (per level: windows) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for a in DOMAINS:
        b = DOMAINS[1 - DOMAINS.index(a)]
        ref = make_stream(args.data, args.keep / f"ref-{a}.jsonl", f"{a}:3000", reference_seed(a))
        x_ref = embeddings(ref)
        streams = [embeddings(build_mixture(args.data, args.keep, a, b, p=p, ramp=2000 if p is None else None)[1])
                   for p in (0.05, 0.1, 0.3, None)]
        stationary = embeddings(make_stream(args.data, args.keep / f"st-{a}.jsonl", f"{a}:20000", 13, ref))
        emb = EmbeddingFeaturizer.fit(x_ref, config.pca_components, config.random_features,
                                      np.random.default_rng(config.seed))
        col = ItemColumn(np.arange(len(x_ref)), x_ref)
        for windows in window_sets:
            for levels in ladders:
                models = [calibrate_cluster_signal("embedding_clusters", emb, col, len(x_ref), windows=windows,
                                                   false_alarm_rate=RATE / len(levels), levels=(q,),
                                                   splits=config.calibration_splits,
                                                   rng=np.random.default_rng(config.seed + 4)) for q in levels]
                delays, before = [], 0
                for s in streams:
                    hits = alarms(models, emb, s)
                    before += int(np.count_nonzero(hits < CHANGE))
                    after = hits[hits >= CHANGE]
                    delays.append(str(int(after[0]) - CHANGE + 1) if after.size else "-")
                st = alarms(models, emb, stationary).size
                thr = "; ".join(f"{q:g}: " + ", ".join(f"{t:.3g}" for t in m.thresholds[:, 0])
                                for q, m in zip(levels, models, strict=True))
                print(f"| {a} + {b} | {', '.join(map(str, windows))} | {', '.join(f'{q:g}' for q in levels)} | "
                      + " | ".join(delays) + f" | {before} | {st} | {thr} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
