"""The 20-line baseline of the partial-drift issue, for comparison with nlpmon's outlier share.

Score each event by its cosine distance to the nearest of 2,000 reference embeddings; call it an outlier
when the score is above the 99th percentile of the other 1,000 reference events' scores; alarm when the
outlier count in a window of 50/100/200/400/800 events has a binomial tail under p0 = 0.01 below
``rate / 5``. Every window is evaluated at every event; an alarm episode ends after 50 quiet events
(as nlpmon's flags). It ignores that p0 is itself estimated from 1,000 events.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from scipy import stats

WINDOWS = (50, 100, 200, 400, 800)
P0 = 0.01
QUIET = 50


def embeddings(path: Path) -> np.ndarray:
    rows = []
    for line in path.read_bytes().splitlines():
        e = json.loads(line)["embedding"]
        if isinstance(e, dict):
            rows.append(np.frombuffer(base64.b64decode(e["base64"]), dtype=e.get("dtype", "float16")))
        else:
            rows.append(np.asarray(e))
    x = np.vstack(rows).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def nn_distance(x: np.ndarray, ref: np.ndarray, chunk: int = 2000) -> np.ndarray:
    return np.concatenate([1.0 - (x[i:i + chunk] @ ref.T).max(axis=1) for i in range(0, len(x), chunk)])


def alarms(reference: Path, stream: Path, rate: float) -> list[int]:
    """Event indices (0-based) where an alarm episode starts."""
    ref = embeddings(reference)
    nn_set, held = ref[:2000], ref[2000:3000]
    cut = np.quantile(nn_distance(held, nn_set), 0.99)
    out = (nn_distance(embeddings(stream), nn_set) > cut).astype(np.int64)
    cs = np.concatenate([[0], np.cumsum(out)])
    hit = np.zeros(out.size, dtype=bool)
    for w in WINDOWS:
        need = int(stats.binom.isf(rate / len(WINDOWS), w, P0)) + 1  # smallest count with tail below the level
        while stats.binom.sf(need - 1, w, P0) >= rate / len(WINDOWS):
            need += 1
        end = np.arange(w, out.size + 1)
        hit[end - 1] |= (cs[end] - cs[end - w]) >= need
    starts, last = [], -(10**9)
    for i in np.flatnonzero(hit).tolist():
        if i - last > QUIET:
            starts.append(i)
        last = i
    return starts
