"""River ADWIN behind the detector protocol: golden detection on a seeded stream, exact restore."""

from __future__ import annotations

import numpy as np

from nlpmon.drift.detectors import AdwinDetector


def stream(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.beta(8, 2, 20000), rng.beta(4, 3, 10000)])  # mean 0.8 -> 0.57 at 20,000
    return x, np.ones_like(x)


def test_adwin_detects_the_change_and_is_silent_before() -> None:
    x, w = stream(0)
    det = AdwinDetector(delta=1e-5)
    hits = det.update(x, w, block=50)
    assert hits, "no change detected"
    assert 20000 <= hits[0] < 20000 + 50 * 100  # within 100 blocks of the change
    assert hits[0] == 23549  # golden index for this seed and river==0.26.1
    assert det.last_change["mean_after"] < det.last_change["mean_before"]


def test_seeded_detector_is_deterministic_and_restores_exactly() -> None:
    x, w = stream(1)
    a = AdwinDetector(delta=1e-5)
    hits_a = a.update(x, w, 50)
    b = AdwinDetector(delta=1e-5)
    first = b.update(x[:12345], w[:12345], 50)
    c = AdwinDetector(delta=1.0)
    c.load_state(b.state())
    rest = [p + 12345 for p in c.update(x[12345:], w[12345:], 50)]
    assert first + rest == hits_a
