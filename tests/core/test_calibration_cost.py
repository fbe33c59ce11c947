"""The fast resampling of ``calibrate_signal`` against the implementation it replaced (the oracle, kept here).

The contract is bit-identity: the same draws from the generator (the same generator state afterwards) and
the same float operations in the same order (short windows: float64 sums in draw order; long windows: the
same float32 multiplicity matrix times the same float32 rows, one BLAS call of the same shape), so the
thresholds of a whole reference are equal to the last bit, not merely within a tolerance.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from nlpmon.demo import SyntheticStream
from nlpmon.drift import signal
from nlpmon.drift.embedding import EmbeddingFeaturizer
from nlpmon.drift.featurizers import Featurizer
from nlpmon.drift.signal import HeldOut, resample_held_out, resample_window_sums, resampled_statistics
from nlpmon.events import decode_event
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.reference import ReferenceProfile, ReferenceSample
from nlpmon.monitor.signals import extract_columns


def old_resample_window_sums(rows: np.ndarray, items: np.ndarray, window: int, count: int,
                             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The implementation before issue 14 (verbatim): the oracle."""
    n = rows.shape[0]
    idx = rng.integers(0, n, (count, window), dtype=np.int64)
    if window <= signal.GATHER_MAX_WINDOW:
        r32 = rows.astype(np.float32)
        return r32[idx].sum(axis=1, dtype=np.float64), items[idx].sum(axis=1)
    idx += (np.arange(count, dtype=np.int64) * n)[:, None]
    weights = np.bincount(idx.ravel(), minlength=count * n).reshape(count, n).astype(np.float32)
    sums = weights @ rows.astype(np.float32)
    return sums.astype(np.float64), (weights @ items.astype(np.float32)).astype(np.float64)


def held_out_rows(n: int, f: int, seed: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Event rows as calibration sees them: sums of float32 items (embeddings, several items or none per
    event, so not all values are float32-exact), or integer counts (labels, bins)."""
    rng = np.random.default_rng(seed)
    items = rng.integers(0, 4, n).astype(np.float64)
    if kind == "counts":
        return rng.poisson(0.7, (n, f)).astype(np.float64), items
    item_rows = rng.normal(0.0, 1.0, (int(items.sum()), f)).astype(np.float32)
    rows = np.zeros((n, f))
    np.add.at(rows, np.repeat(np.arange(n), items.astype(np.int64)), item_rows.astype(np.float64))
    rows[3] = [-0.0] * f  # signed zeros and tiny values: where summation order shows first
    rows[4, 0] = 1e-30
    return rows, items


@pytest.mark.parametrize(("n", "f", "kind"), [(1500, 161, "embedding"), (700, 2, "counts"), (301, 3, "embedding"),
                                              (1500, 20, "counts"), (64, 7, "embedding")])
@pytest.mark.parametrize(("window", "count"), [(1, 500), (5, 4000), (50, 999), (64, 301), (65, 300), (1000, 130)])
def test_resampled_sums_are_bit_identical_to_the_old_implementation(n: int, f: int, kind: str, window: int,
                                                                    count: int) -> None:
    rows, items = held_out_rows(n, f, seed=window * 7 + f, kind=kind)
    old_rng, new_rng = np.random.default_rng(11), np.random.default_rng(11)
    want = old_resample_window_sums(rows, items, window, count, old_rng)
    got = resample_window_sums(rows, items, window, count, new_rng)
    for w, g in zip(want, got, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert np.array_equal(g.view(np.uint64), w.view(np.uint64))  # bits, signed zeros included
    assert new_rng.bit_generator.state == old_rng.bit_generator.state  # the same draws, and no more
    assert new_rng.random() == old_rng.random()


def test_one_prepared_half_serves_every_window_like_fresh_calls() -> None:
    """Scratch buffers reused across window sizes and counts change nothing; chunked statistics are the
    statistics of the whole array."""
    rows, items = held_out_rows(900, 33, seed=3, kind="embedding")
    held = HeldOut.of(rows, items)
    feat = EmbeddingFeaturizer.fit(np.random.default_rng(0).normal(size=(200, 40)).astype(np.float32), 8, 24,
                                   np.random.default_rng(1))
    a, b, c = np.random.default_rng(5), np.random.default_rng(5), np.random.default_rng(5)
    for w, count in ((5, 20000), (10, 777), (64, 5000), (100, 777), (450, 300), (5, 10)):
        got = resample_held_out(held, w, count, a)
        want = old_resample_window_sums(rows, items, w, count, b)
        assert all(np.array_equal(x, y) for x, y in zip(got, want, strict=True))
        stats = resampled_statistics(feat, held, w, count, c)
        assert np.array_equal(stats, feat.statistics(*want))


@pytest.fixture(scope="module")
def reference_sample() -> ReferenceSample:
    stream = SyntheticStream(seed=4, dim=48, base64_embeddings=True)
    events = [decode_event(json.dumps(e)) for e in stream.events(700, "reference")]
    cols, _ = extract_columns(events)
    sample = ReferenceSample(5000, 0)
    sample.add(cols, len(events), [e.text for e in events])
    return sample


def test_a_whole_reference_calibrates_to_the_same_thresholds_as_the_old_resampling(
        reference_sample: ReferenceSample, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: every signal's thresholds, bit for bit, with the old resampling swapped in."""
    config = MonitorConfig(calibration_splits=2, embedding_windows=(5, 20, 64, 65, 200),
                           distribution_windows=(50, 100, 300), outlier_windows=(20, 50))
    new = ReferenceProfile.calibrate(reference_sample, config, "reference")

    def old(featurizer: Featurizer, held: HeldOut, w: int, count: int, rng: np.random.Generator) -> np.ndarray:
        return featurizer.statistics(*old_resample_window_sums(held.rows, held.items, w, count, rng))

    monkeypatch.setattr(signal, "resampled_statistics", old)
    old = ReferenceProfile.calibrate(reference_sample, config, "reference")
    assert set(new.signals) == set(old.signals) and len(new.signals) >= 6
    for name, sig in new.signals.items():
        assert np.array_equal(sig.thresholds, old.signals[name].thresholds), name
        assert sig.windows == old.signals[name].windows
