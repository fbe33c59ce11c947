"""Partial drift: statistics that use how recent events resemble each other, measured offline (prints tables).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/cluster_statistic.py --keep DIR \
        [--levels 0.005,0.02,0.05,0.1] [--kinds pairs,pairsn] [--spaces zdir,z,dir] [--no-count]

Embeddings only, from the streams of benchmarks/detection.py (same references, mixtures, stationary
streams; built with benchmarks/mixture.py, reused from ``--keep``). For each candidate statistic the
thresholds come from the reference alone (calibration below), at the default target 1e-6 per event
shared by the windows 20..1000 (Bonferroni); every window is judged at every event. Printed: the delay on
each mixture (events from the change point to the first alarm, counting it), the events in alarm among
the 3,000 A events before the change (4 streams) and among 20,000 stationary held-out events, and the
time of this script per event (not the monitor's cost: it cumsums whole streams).

Candidates. An event is *marked* when its out-of-reference score (the ``embedding_outliers`` score,
``EmbeddingFeaturizer.transform_scored``) reaches the reference's out-of-sample ``1 - q`` quantile.
Each marked event contributes a vector ``v``; a window of ``n`` events holds ``c`` marked events with sum
``S`` and ``Q = sum ||v||^2``; ``U = ||S||^2 - Q`` is the sum of ``<v_i, v_j>`` over ordered pairs of
distinct marked events (a new sub-population points one way; reference outliers scatter):

* ``count``: ``c`` against the exact beta-binomial thresholds of ``embedding_outliers`` at level q;
* ``pairs``: ``U / sqrt(c (c - 1))`` (standardised by the number of pairs);
* ``pairsn<q>``: ``U / max(n q, 1)`` (per marked event expected: a larger count counts too); the one
  built as ``embedding_clusters`` with ``zdir``.

Spaces of ``v``: ``zdir`` the unit direction of the whitened 32-component PCA coordinates; ``z`` those
coordinates (norm-clipped as the ``embedding`` rows); ``dir`` the unit direction of the embedding from the
reference mean (all 384 dimensions, the residual included).

Calibration (not ``count``): as ``calibrate_signal``: 6 random halvings of the reference; the featurizer
and the marking threshold fitted on one half, windows resampled with replacement from the other half's
rows, threshold = the 1 - alpha/M quantile (tail fit beyond reach, nlpmon.drift.calibration). Unlike the
built signal, the pairs of an event with its own copies are kept here (higher thresholds on long windows).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baseline_outliers import embeddings
from mixture import build_mixture, make_stream, reference_seed

from nlpmon.drift.calibration import calibrate_threshold
from nlpmon.drift.embedding import EmbeddingFeaturizer, out_of_sample_scores
from nlpmon.drift.outliers import OutlierShareFeaturizer
from nlpmon.drift.signal import resample_window_sums, samples_for_window

DOMAINS = ("quotes", "pydocs")
WINDOWS = (20, 50, 100, 200, 500, 1000)
RATE = 1e-6
CHANGE = 3000
SPLITS = 6


def marking_threshold(feat: EmbeddingFeaturizer, x: np.ndarray, q: float, rng: np.random.Generator) -> float:
    s = np.sort(out_of_sample_scores(feat, x, rng))[::-1]
    k = max(1, int(np.ceil(q * (s.size + 1))))
    return float(s[k - 1])


def rows(feat: EmbeddingFeaturizer, tau: float, x: np.ndarray, space: str) -> np.ndarray:
    """Per-event rows [marked, marked * v, marked * ||v||^2]."""
    _, scores = feat.transform_scored(x)
    m = (scores >= tau).astype(np.float64)
    if space == "z":
        v = ((x - feat.mean) @ feat.components).astype(np.float64)
        v /= np.maximum(1.0, np.linalg.norm(v, axis=1, keepdims=True) / feat.z_clip)
    elif space == "zdir":
        v = ((x - feat.mean) @ feat.components).astype(np.float64)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    elif space == "dir":
        d = (x - feat.mean).astype(np.float64)
        v = d / np.linalg.norm(d, axis=1, keepdims=True)
    else:
        raise ValueError(space)
    v *= m[:, None]
    return np.concatenate([m[:, None], v, (m * np.einsum("ij,ij->i", v, v))[:, None]], axis=1)


def statistic(sums: np.ndarray, kind: str, n: int = 0) -> np.ndarray:
    c = sums[:, 0]
    if kind == "count":
        return c
    s = sums[:, 1:-1]
    q = sums[:, -1]
    u = np.einsum("ij,ij->i", s, s) - q
    if kind.startswith("pairsn"):  # per expected marked count: uses the count too
        return u / max(n * float(kind[6:]), 1.0)
    return np.where(c >= 2, u / np.sqrt(np.maximum(c * (c - 1), 1.0)), 0.0)


def count_thresholds_exact(x_ref: np.ndarray, q: float) -> np.ndarray:
    """The existing signal's exact beta-binomial thresholds (nlpmon.drift.outliers) at level q, as
    thresholds on the count (alarm when count > threshold)."""
    deployed = EmbeddingFeaturizer.fit(x_ref, 32, 128, np.random.default_rng(0))
    scores = out_of_sample_scores(deployed, x_ref, np.random.default_rng(3))
    f = OutlierShareFeaturizer.fit(scores, q, max(WINDOWS), RATE / len(WINDOWS))
    return np.array([f.count_threshold[w] - 0.5 for w in WINDOWS])


def calibrate(x_ref: np.ndarray, q: float, space: str, kind: str, seed: int) -> np.ndarray:
    if kind == "count":
        return count_thresholds_exact(x_ref, q)
    rng = np.random.default_rng(seed)
    deployed = EmbeddingFeaturizer.fit(x_ref, 32, 128, np.random.default_rng(0))
    n = x_ref.shape[0]
    pooled: list[list[np.ndarray]] = [[] for _ in WINDOWS]
    for _ in range(SPLITS):
        perm = rng.permutation(n)
        a, b = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
        fitted = EmbeddingFeaturizer.fit(x_ref[a], 32, 128, rng, like=deployed)
        tau = marking_threshold(fitted, x_ref[a], q, rng)
        r = rows(fitted, tau, x_ref[b], space)
        items = np.ones(r.shape[0])
        for j, w in enumerate(WINDOWS):
            sums, _ = resample_window_sums(r, items, w, samples_for_window(w), rng)
            pooled[j].append(statistic(sums, kind, w))
    per_test = RATE / len(WINDOWS)
    return np.array([calibrate_threshold(np.concatenate(p), per_test) for p in pooled])


def first_alarms(r: np.ndarray, thr: np.ndarray, kind: str) -> np.ndarray:
    """Event indices where some window's statistic exceeds its threshold (every window, every event)."""
    cs = np.vstack([np.zeros((1, r.shape[1])), np.cumsum(r, axis=0)])
    hit = np.zeros(r.shape[0], dtype=bool)
    for w, t in zip(WINDOWS, thr, strict=True):
        end = np.arange(w, r.shape[0] + 1)
        hit[end - 1] |= statistic(cs[end] - cs[end - w], kind, w) > t
    return np.flatnonzero(hit)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    ap.add_argument("--keep", type=Path, required=True, help="directory of the built streams (reused)")
    ap.add_argument("--levels", default="0.005,0.02,0.05,0.1")
    ap.add_argument("--spaces", default="dir,z")
    ap.add_argument("--kinds", default="pairs,pairsn")
    ap.add_argument("--no-count", action="store_true")
    args = ap.parse_args()
    args.keep.mkdir(parents=True, exist_ok=True)
    cands = [] if args.no_count else [("count", "z", float(q)) for q in args.levels.split(",")]
    cands += [(kd if kd == "pairs" else kd + q, sp, float(q)) for kd in args.kinds.split(",")
              for sp in args.spaces.split(",") for q in args.levels.split(",")]
    print("| A + B | candidate | q | thresholds (windows " + ", ".join(map(str, WINDOWS)) + ") | 5 % | 10 % | 30 % "
          "| ramp | alarms before change (4 streams) | alarms, 20,000 stationary | rows s/event |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for a in DOMAINS:
        b = DOMAINS[1 - DOMAINS.index(a)]
        ref_path = make_stream(args.data, args.keep / f"ref-{a}.jsonl", f"{a}:3000", reference_seed(a))
        x_ref = embeddings(ref_path)
        streams = []
        for p in (0.05, 0.1, 0.3, None):
            _, s = build_mixture(args.data, args.keep, a, b, p=p, ramp=2000 if p is None else None)
            streams.append(embeddings(s))
        st = embeddings(make_stream(args.data, args.keep / f"st-{a}.jsonl", f"{a}:20000", 13, ref_path))
        deployed = EmbeddingFeaturizer.fit(x_ref, 32, 128, np.random.default_rng(0))
        for kind, space, q in cands:
            thr = calibrate(x_ref, q, space, kind, seed=1)
            tau = marking_threshold(deployed, x_ref, q, np.random.default_rng(3))
            delays, before = [], 0
            t0 = time.perf_counter()
            for s in streams:
                hits = first_alarms(rows(deployed, tau, s, space), thr, kind)
                before += int(np.count_nonzero(hits < CHANGE))
                after = hits[hits >= CHANGE]
                delays.append(str(int(after[0]) - CHANGE + 1) if after.size else "-")
            t_rows = time.perf_counter() - t0
            st_hits = first_alarms(rows(deployed, tau, st, space), thr, kind)
            print(f"| {a} + {b} | {kind} {space if kind != 'count' else ''} | {q:g} | "
                  + ", ".join(f"{t:.3g}" for t in thr) + " | " + " | ".join(delays)
                  + f" | {before} | {st_hits.size} | {t_rows / sum(len(s) for s in streams) * 1e6:.1f} us |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
