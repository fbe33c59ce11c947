"""Embedding featurizer: whitened PCA coordinates, random Fourier features and the PCA residual.

Fitted on reference embeddings. Each item (a document or an entity embedding) becomes one row

    [ z (k) | phi (D) | r (1) ]

where ``z`` are the top-k principal coordinates divided by their standard deviation, with the row's
norm clipped at a high reference percentile (one odd text cannot fire a short window); ``phi`` are
random Fourier features of ``z`` (their mean difference is a linear-time estimate of the Gaussian-kernel
MMD); and ``r`` is the squared norm of the part of the embedding outside the top-k components,
standardised on the reference and clipped, because a shift to new content shows mostly there.

Three window statistics compare a window's mean row with the reference mean row, each scaled by the
number of items so that its null distribution hardly depends on the window size:

    mean_shift  N * ||mean z - mu_z||^2       (Hotelling-like, whitened)
    mmd         N * ||mean phi - mu_phi||^2   (RFF MMD^2)
    residual    sqrt(N) * (mean r - mu_r)     (one-sided: more energy outside the reference subspace)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[Any]  # float32 in practice; loose for numpy's dtype algebra
F64 = npt.NDArray[np.float64]

CLIP_PERCENTILE = 99.0


@dataclass
class EmbeddingFeaturizer:
    """Fitted transform from embeddings (n, d) to feature rows (n, k + D + 1). See the module docstring."""

    mean: F32
    components: F32  # (d, k), already divided by the component standard deviations
    z_clip: float
    omega: F32  # (k, D)
    phase: F32  # (D,)
    r_mean: float
    r_scale: float
    r_clip: float
    ref_row_mean: F64  # mean feature row on the fit set
    sigma: float = 1.0  # RFF bandwidth (median heuristic)
    stat_names: tuple[str, ...] = ("mean_shift", "mmd", "residual")

    @property
    def k(self) -> int:
        return int(self.components.shape[1])

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    @property
    def n_features(self) -> int:
        return self.k + int(self.omega.shape[1]) + 1

    @classmethod
    def fit(cls, x: F32, n_components: int, n_features: int, rng: np.random.Generator,
            like: EmbeddingFeaturizer | None = None) -> EmbeddingFeaturizer:
        """Fit on reference embeddings ``x`` (n, d). Raises ValueError when n < 20.

        With ``like`` (the featurizer fitted on the whole reference), calibration fits reuse its random
        feature directions and phases and orient their principal axes like its own, so that the null
        distribution sampled in calibration is that of the deployed statistic, not of other random draws.
        """
        x = np.asarray(x, dtype=np.float32)
        n, d = x.shape
        if n < 20:
            raise ValueError(f"need at least 20 reference embeddings, got {n}")
        mean = x.mean(axis=0)
        xc = (x - mean).astype(np.float64)
        k = like.k if like is not None else int(min(n_components, d - 1, n // 10))
        if k >= min(n, d):
            raise ValueError(f"need more than {k} embeddings of dimension > {k} for {k} components, got {n}")
        # eigen-decomposition of the d x d covariance: O(n d^2), much cheaper than an SVD of (n, d)
        evals, evecs = np.linalg.eigh(xc.T @ xc / max(n - 1, 1))
        order = np.argsort(evals)[::-1][:k]
        sd = np.sqrt(np.maximum(evals[order], 1e-24))
        basis = evecs[:, order]
        # a deterministic orientation: each axis points where the reference's (or `like`'s) axis points
        anchor = like._unit_basis() if like is not None and like.k == k else None
        signs = np.sign(np.sum(basis * anchor, axis=0)) if anchor is not None else np.sign(basis[0] + 1e-30)
        # C order, as from_state gives them: a restored featurizer then takes the same BLAS kernels and
        # rounds exactly like the fitted one (an F-ordered operand rounds differently on small batches)
        basis = np.ascontiguousarray(basis * np.where(signs == 0, 1.0, signs), dtype=np.float32)
        components = np.ascontiguousarray(basis / sd, dtype=np.float32)
        z = (xc.astype(np.float32)) @ components
        # Norm clip and residual scale come from out-of-sample values (cross-fitted PCA): new texts lie
        # further from a fitted subspace than the texts that fitted it, and thresholds must hold for them.
        z_oos, r_oos = _out_of_sample(x, k, rng)
        z_clip = float(np.percentile(z_oos, CLIP_PERCENTILE))
        r_mean = float(np.mean(r_oos))
        r_scale = float(np.std(r_oos)) or 1.0
        r_clip = float(np.percentile((r_oos - r_mean) / r_scale, CLIP_PERCENTILE))
        # RFF bandwidth: median distance heuristic in whitened space (~ sqrt(2k) after clipping)
        zc = _clip_rows(z, z_clip)
        m = min(n, 500)
        a = zc[rng.choice(n, m, replace=False)]
        d2 = np.sum((a[:, None, :] - a[None, :, :]) ** 2, axis=-1)
        sigma = float(np.sqrt(np.median(d2[np.triu_indices(m, 1)]))) or 1.0
        if like is not None and like.omega.shape == (k, n_features):
            unit, phase = like.omega * np.float32(like.sigma), like.phase
        else:
            unit = rng.standard_normal((k, n_features)).astype(np.float32)
            phase = rng.uniform(0, 2 * np.pi, n_features).astype(np.float32)
        omega = (unit / sigma).astype(np.float32)
        feat = cls(mean, components, z_clip, omega, phase, r_mean, r_scale, r_clip,
                   np.zeros(k + n_features + 1), sigma)
        feat._basis = basis
        row_mean = feat.transform(x).mean(axis=0).astype(np.float64)
        row_mean[-1] = float(np.mean(np.minimum((r_oos - r_mean) / r_scale, r_clip)))
        feat.ref_row_mean = row_mean
        return feat

    _basis: F32 | None = None

    def _unit_basis(self) -> F32:
        if self._basis is None:
            norms = np.linalg.norm(self.components, axis=0)
            self._basis = (self.components / norms).astype(np.float32)
        return self._basis

    def transform(self, x: F32) -> F32:
        """Feature rows (n, k + D + 1), float32. Vectorised over the batch."""
        return self.transform_scored(x)[0]

    def transform_scored(self, x: F32) -> tuple[F32, F64]:
        """Feature rows (as ``transform``) and each item's unclipped out-of-reference score
        ``||z||^2 / k + (r - r_mean) / r_scale`` (the outlier-share signal marks these), in one pass."""
        xc = np.asarray(x, dtype=np.float32) - self.mean
        z = xc @ self.components
        z2 = np.einsum("ij,ij->i", z, z)
        z = _clip_rows(z, self.z_clip, z2)
        phi = np.cos(z @ self.omega + self.phase)
        phi *= np.float32(np.sqrt(2.0 / self.omega.shape[1]))
        proj = xc @ self._unit_basis()
        r = np.einsum("ij,ij->i", xc, xc) - np.einsum("ij,ij->i", proj, proj)
        r_std = (r - self.r_mean) / self.r_scale
        rz = np.minimum(r_std, self.r_clip).astype(np.float32)
        rows = np.concatenate([z, phi, rz[:, None]], axis=1)
        scores = (z2 / self.k + r_std).astype(np.float64)
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():  # values so large that float32 overflows: as far out as the clip allows, no NaN
            rows[bad, : self.k] = 0.0
            rows[bad, self.k:-1] = np.cos(self.phase) * np.float32(np.sqrt(2.0 / self.omega.shape[1]))
            rows[bad, -1] = self.r_clip
            scores[bad] = np.inf
        return rows, scores

    def outlier_scores(self, rows: F32) -> F64:
        """Per-item distance from the reference, for evidence: mean squared z plus standardised residual."""
        k = self.k
        return (np.mean(rows[:, :k].astype(np.float64) ** 2, axis=1) + rows[:, -1]).astype(np.float64)

    def statistics(self, sums: F64, items: F64) -> F64:
        """(m, 3) window statistics from window sums (m, F) and item counts (m,); 0 where items == 0."""
        k = self.k
        n = np.maximum(items, 1.0)[:, None]
        diff = sums / n
        diff -= self.ref_row_mean  # in place: one (m, F) array, the same values as ``sums / n - ref_row_mean``
        out = np.empty((sums.shape[0], 3))
        out[:, 0] = n[:, 0] * np.einsum("ij,ij->i", diff[:, :k], diff[:, :k])
        out[:, 1] = n[:, 0] * np.einsum("ij,ij->i", diff[:, k:-1], diff[:, k:-1])
        out[:, 2] = np.sqrt(n[:, 0]) * diff[:, -1]
        out[items <= 0] = 0.0
        return out

    def moved_directions(self, sums: F64, items: float, top: int = 5) -> list[dict[str, float]]:
        """The principal directions whose window mean moved most (in reference standard deviations)."""
        if items <= 0:
            return []
        k = self.k
        shift = sums[:k] / items - self.ref_row_mean[:k]
        order = np.argsort(-np.abs(shift))[:top]
        out = [{"component": int(i), "shift_sd": float(shift[i])} for i in order]
        out.append({"component": -1, "residual_shift_sd": float(sums[-1] / items - self.ref_row_mean[-1])})
        return out

    def project2d(self, x: F32) -> F32:
        """First two whitened principal coordinates (for plots)."""
        return (np.asarray(x, dtype=np.float32) - self.mean) @ self.components[:, :2]

    # -- state -----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"mean": self.mean, "components": self.components, "z_clip": self.z_clip,
                "omega": self.omega, "phase": self.phase, "r_mean": self.r_mean, "r_scale": self.r_scale,
                "r_clip": self.r_clip, "ref_row_mean": self.ref_row_mean, "sigma": self.sigma,
                "basis": self._unit_basis()}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> EmbeddingFeaturizer:
        f = cls(np.asarray(s["mean"], np.float32), np.ascontiguousarray(s["components"], np.float32),
                float(s["z_clip"]), np.asarray(s["omega"], np.float32), np.asarray(s["phase"], np.float32),
                float(s["r_mean"]), float(s["r_scale"]), float(s["r_clip"]),
                np.asarray(s["ref_row_mean"], np.float64), float(s["sigma"]))
        f._basis = np.ascontiguousarray(s["basis"], np.float32)
        return f


def _out_of_sample(x: F32, k: int, rng: np.random.Generator, folds: int = 3) -> tuple[F64, F64]:
    """Whitened-coordinate norms and residual energies of each row under a PCA fitted without it."""
    n = x.shape[0]
    fold = rng.permutation(n) % folds
    x64 = x.astype(np.float64)
    znorm = np.empty(n)
    resid = np.empty(n)
    for f in range(folds):
        test = fold == f
        train = x64[~test]
        mu = train.mean(axis=0)
        tc = train - mu
        evals, evecs = np.linalg.eigh(tc.T @ tc / max(train.shape[0] - 1, 1))
        order = np.argsort(evals)[::-1][:k]
        basis = evecs[:, order]
        sd = np.sqrt(np.maximum(evals[order], 1e-24))
        xc = x64[test] - mu
        proj = xc @ basis
        znorm[test] = np.linalg.norm(proj / sd, axis=1)
        resid[test] = np.einsum("ij,ij->i", xc, xc) - np.einsum("ij,ij->i", proj, proj)
    return znorm, resid


def out_of_sample_scores(featurizer: EmbeddingFeaturizer, x: F32, rng: np.random.Generator) -> F64:
    """Unclipped out-of-reference scores (as ``transform_scored``) of reference embeddings ``x``, each
    from a PCA fitted without it (3 folds), standardised with the featurizer's own residual scale."""
    znorm, resid = _out_of_sample(np.asarray(x, np.float32), featurizer.k, rng)
    return znorm**2 / featurizer.k + (resid - featurizer.r_mean) / featurizer.r_scale


def _clip_rows(z: F32, limit: float, squared_norms: F32 | None = None) -> F32:
    sq = np.einsum("ij,ij->i", z, z) if squared_norms is None else squared_norms
    norms = np.sqrt(sq)
    scale = np.minimum(1.0, limit / np.maximum(norms, 1e-12)).astype(z.dtype)
    return z * scale[:, None]
