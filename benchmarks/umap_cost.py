"""What the UMAP projection costs: fit time and memory per reference sample size, transform of the recent points.

Prints a markdown table. Each size runs in a fresh process with an empty numba cache (``NUMBA_CACHE_DIR``), so
the first fit includes umap-learn's import and numba's JIT compilation, as the first UMAP page of a service
would; the second fit of the same process is the warm cost. While each fit runs on a worker thread the main
thread ticks every millisecond: the longest gap between ticks is how long the fit held the GIL at a stretch,
i.e. how long a consumer loop beside it could be stalled. The PCA projection of the same points (what the
page shows by default) is the reference the costs are compared with, measured in the same process.

Embeddings: the real MiniLM embeddings of ../shared/data (``--data``), else random unit vectors.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/umap_cost.py [--sizes 300,1000,2000] [--recent 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

DIM = 384


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def embeddings(data: Path | None, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if data is not None and (data / "quotes.npz").is_file():
        x = np.load(data / "quotes.npz")["embeddings"].astype(np.float32)
        return x[rng.choice(x.shape[0], n, replace=False)]
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def longest_stall(work: threading.Thread) -> float:
    """Run ``work`` and tick on this thread every ms; the longest gap between ticks (seconds)."""
    worst, last = 0.0, time.perf_counter()
    work.start()
    deadline = last + 600
    while work.is_alive() and last < deadline:
        time.sleep(0.001)
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
    work.join()
    return worst


def child(size: int, recent: int, data: Path | None) -> dict[str, float]:
    from nlpmon.drift.embedding import EmbeddingFeaturizer

    ref, cur = embeddings(data, size, 1), embeddings(data, recent, 2)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    from nlpmon.monitor.umap_projection import fit_umap, umap_missing

    missing = umap_missing()
    if missing:
        raise SystemExit(missing)
    t_import = time.perf_counter() - t0
    rss_import = rss_mb()
    out: dict[str, float] = {"import_s": t_import, "import_mb": rss_import - rss0}
    box: dict[str, object] = {}
    for run in ("cold", "warm"):
        def fit() -> None:
            t = time.perf_counter()
            box["model"] = fit_umap(ref, seed=0)
            box["seconds"] = time.perf_counter() - t
        stall = longest_stall(threading.Thread(target=fit))
        out[f"{run}_fit_s"], out[f"{run}_stall_s"] = float(box["seconds"]), stall  # type: ignore[arg-type]
        out[f"{run}_fit_mb"] = rss_mb() - rss_import
    model = box["model"]
    t0 = time.perf_counter()
    model.transform(cur)  # type: ignore[attr-defined]
    out["first_transform_s"] = time.perf_counter() - t0
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        model.transform(cur)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t0)
    out["transform_s"] = min(times)
    out["rss_mb"] = rss_mb()
    feat = EmbeddingFeaturizer.fit(ref, 32, 128, np.random.default_rng(0))  # the monitor's defaults
    t0 = time.perf_counter()
    for _ in range(10):
        feat.project2d(cur)
    out["pca_transform_s"] = (time.perf_counter() - t0) / 10
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="300,1000,2000")
    ap.add_argument("--recent", type=int, default=200)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    data = args.data if (args.data / "quotes.npz").is_file() else None
    if args.child:
        print(json.dumps(child(args.child, args.recent, data)))
        return 0
    import umap

    source = "MiniLM embeddings (quotes)" if data else "random unit vectors"
    print(f"python {sys.version.split()[0]}, umap-learn {umap.__version__}, numba "
          f"{__import__('numba').__version__}; {DIM}-dim {source}, {args.recent} recent points; "
          "one fresh process per size, empty numba cache\n")
    print("| reference points | first fit (incl. import + JIT) s | RSS growth, import / first fit MB | "
          "longest GIL hold during the first fit s | warm fit s | longest GIL hold, warm fit s | "
          f"first transform of {args.recent} s | transform of {args.recent} ms | "
          f"PCA projection of {args.recent} ms | transform / PCA |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            proc = subprocess.run([sys.executable, __file__, "--child", str(size), "--recent", str(args.recent),
                                   "--data", str(args.data)], capture_output=True, text=True, env=env, timeout=1800,
                                  check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        pca = r["pca_transform_s"]
        pca_ms, ratio = f"{1e3 * pca:.2f}", f"{r['transform_s'] / pca:,.0f}x"
        print(f"| {size:,} | {r['cold_fit_s'] + r['import_s']:.1f} | {r['import_mb']:.0f} / {r['cold_fit_mb']:.0f} | "
              f"{r['cold_stall_s']:.2f} | {r['warm_fit_s']:.1f} | {r['warm_stall_s']:.2f} | "
              f"{r['first_transform_s']:.1f} | {1e3 * r['transform_s']:.0f} | "
              f"{pca_ms} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
