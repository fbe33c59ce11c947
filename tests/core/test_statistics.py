"""The statistics against exact numpy/scipy oracles."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import jensenshannon

from nlpmon.drift.calibration import calibrate_threshold, fit_tail
from nlpmon.drift.distribution import BinnedFeaturizer, CategoricalFeaturizer, js_distance
from nlpmon.drift.embedding import EmbeddingFeaturizer
from tests.support import F32_EPS, f32_matmul_atol, f32_sum_rtol


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=2, max_size=8), st.integers(0, 10**6))
def test_js_distance_equals_scipy(counts: list[int], seed: int) -> None:
    p = np.asarray(counts, float)
    if p.sum() == 0:
        p[0] = 1
    q = np.random.default_rng(seed).dirichlet(np.ones(len(counts)))
    got = js_distance((p / p.sum())[None, :], q)[0]
    assert abs(got - jensenshannon(p / p.sum(), q, base=2)) < 1e-9


def test_categorical_rows_and_statistic() -> None:
    f = CategoricalFeaturizer.fit({"PER": 6, "ORG": 3, "LOC": 1})
    assert f.labels == ("PER", "ORG", "LOC", "__other__")
    sums = np.array([[1.0, 1.0, 0.0, 2.0]])
    expected = jensenshannon([0.25, 0.25, 0.0, 0.5], [0.6, 0.3, 0.1, 0.0], base=2)
    assert abs(f.statistics(sums, np.array([4.0]))[0, 0] - expected) < 1e-12
    assert f.statistics(np.zeros((1, 4)), np.zeros(1))[0, 0] == 0.0


def test_binned_cdf_distance_equals_direct_computation() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=5000)
    f = BinnedFeaturizer.fit(ref)
    cur = rng.normal(0.5, 1.0, 300)
    sums = np.bincount(f.bin_index(cur), minlength=f.n_features)[None, :].astype(float)
    direct = np.mean(np.abs(np.searchsorted(np.sort(cur), f.edges, side="right") / cur.size
                            - np.searchsorted(np.sort(ref), f.edges, side="right") / ref.size))
    assert abs(f.statistics(sums, np.array([300.0]))[0, 0] - direct) < 1e-12
    assert np.all((f.pit(ref) > 0) & (f.pit(ref) < 1))
    assert abs(np.mean(f.pit(ref)) - 0.5) < 0.02


def test_embedding_pca_whitening_matches_numpy_svd() -> None:
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(2000, 20)) @ rng.normal(size=(20, 20))).astype(np.float32)
    f = EmbeddingFeaturizer.fit(x, 5, 64, np.random.default_rng(0))
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc.astype(np.float64), full_matrices=False)
    oracle_components = vt[:5].T / (s[:5] / np.sqrt(len(x) - 1))
    z_oracle = xc @ oracle_components
    z = (x - f.mean) @ f.components
    z_oracle *= np.sign(np.sum(z * z_oracle, axis=0))  # the sign of each component is a convention
    # float32: the components rounded once, the products summed over 20 coordinates (tests/support.py)
    assert np.all(np.abs(z - z_oracle) <= f32_matmul_atol(xc, oracle_components, extra_roundings=1))
    # residual energy |xc|^2 - |proj|^2 in float32: each sum within its bound, proj within its own
    proj = xc @ vt[:5].T
    sq = np.sum(xc.astype(np.float64) ** 2, axis=1)
    resid_oracle = sq - np.sum(proj**2, axis=1)
    d_proj = f32_matmul_atol(xc, vt[:5].T, extra_roundings=1)
    d_resid = f32_sum_rtol(20) * sq + f32_sum_rtol(5) * np.sum(proj**2, axis=1) + 2 * np.sum(np.abs(proj) * d_proj, 1)
    rows = f.transform(x)
    rz = np.minimum((resid_oracle - f.r_mean) / f.r_scale, f.r_clip)
    assert np.all(np.abs(rows[:, -1] - rz) <= d_resid / f.r_scale + F32_EPS * np.abs(rz))  # + the float32 store


def test_embedding_window_statistics_match_recomputation() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1000, 16)).astype(np.float32)
    f = EmbeddingFeaturizer.fit(x, 4, 32, np.random.default_rng(0))
    w = rng.normal(0.3, 1.0, size=(25, 16)).astype(np.float32)
    rows = f.transform(w).astype(np.float64)
    got = f.statistics(rows.sum(axis=0)[None, :], np.array([25.0]))[0]
    mean = rows.mean(axis=0)
    d = mean - f.ref_row_mean
    k = f.k
    assert abs(got[0] - 25 * np.sum(d[:k] ** 2)) < 1e-6
    assert abs(got[1] - 25 * np.sum(d[k:-1] ** 2)) < 1e-6
    assert abs(got[2] - 5 * d[-1]) < 1e-6


def test_rff_mmd_approximates_gaussian_kernel_mmd() -> None:
    """The RFF statistic estimates the Gaussian-kernel MMD^2 (the oracle is the exact kernel sum)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 8)).astype(np.float32)
    f = EmbeddingFeaturizer.fit(x, 4, 2048, np.random.default_rng(1))
    y = rng.normal(0.8, 1.0, size=(400, 8)).astype(np.float32)
    zx = f.transform(x)[:, :4].astype(np.float64)
    zy = f.transform(y)[:, :4].astype(np.float64)
    sigma = 1.0 / np.std(f.omega)

    def k(a: np.ndarray, b: np.ndarray) -> float:
        d2 = np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None, :] - 2 * a @ b.T
        return float(np.mean(np.exp(-d2 / (2 * sigma**2))))

    mmd2 = k(zx[:1000], zx[:1000]) + k(zy, zy) - 2 * k(zx[:1000], zy)
    phi = f.transform(y)[:, 4:-1].astype(np.float64).mean(axis=0) - f.ref_row_mean[4:-1]
    assert mmd2 > 0.05
    assert abs(np.sum(phi**2) - mmd2) / mmd2 < 0.2


def test_gpd_tail_fit_recovers_known_quantiles() -> None:
    """Bounded and light tails (what clipped statistics have) extrapolate well four orders beyond the
    samples; a heavy tail (xi > 0) is reliable two orders beyond (docs/drift.md says so)."""
    rng = np.random.default_rng(6)
    for xi, levels in ((-0.2, (1e-4, 1e-6)), (0.0, (1e-4, 1e-6)), (0.2, (1e-4,))):
        x = stats.genpareto.rvs(xi, size=40000, random_state=rng) if xi else rng.exponential(size=40000)
        fit = fit_tail(x)
        for p in levels:
            true = stats.genpareto.isf(p, xi) if xi else -np.log(p)
            assert abs(fit.quantile(p) - true) / true < 0.25, (xi, p, fit)


def test_calibrate_threshold_is_empirical_within_reach() -> None:
    x = np.random.default_rng(7).normal(size=100000)
    assert abs(calibrate_threshold(x, 0.01) - stats.norm.isf(0.01)) < 0.05
    assert calibrate_threshold(x, 1e-7) > calibrate_threshold(x, 1e-5) > calibrate_threshold(x, 1e-3)
