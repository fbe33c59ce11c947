"""A UMAP projection of the reference display sample and the recent embeddings, as an option beside PCA.

The PCA projection (:mod:`nlpmon.monitor.projection`) costs nothing new: it reuses the embedding signal's
fit. UMAP (``umap-learn``, the optional ``nlpmon[umap]`` extra) shows clusters and a new sub-population
more clearly, but must be fitted: seconds for a few hundred points at 384 dimensions, plus numba's JIT
compilation the first time in a process (docs/benchmarks.md, "The UMAP projection"). So it is never
fitted on the consumer loop: :class:`nlpmon.app.projection_worker.UmapProjections` fits it on a worker
thread, once per profile, and transforms the recent points there; the page shows PCA with a note until
the fit is ready.

This module is the pure part: fit, transform, and the projection (``umap_block``: the page view's PCA
``Projection`` with UMAP coordinates), no thread and no clock.

Determinism: ``random_state`` is the monitor seed, so a fit is reproducible; umap-learn then runs
single-threaded (it says so with a warning, silenced here), which is also what a worker that must not
take the loop's core wants.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from .page_view import Projection

F32 = npt.NDArray[np.float32]

__all__ = ["UMAP_AXES", "UmapModel", "fit_umap", "reference_embeddings", "umap_block", "umap_missing"]

UMAP_AXES = ("UMAP dimension 1", "UMAP dimension 2")
INSTALL_HINT = "UMAP needs the umap extra: pip install 'nlpmon[umap]'"


def umap_missing() -> str | None:
    """None when umap-learn can be imported, else a one-line reason with the fix."""
    try:
        import umap  # noqa: F401
    except Exception as exc:  # ImportError, or numba/llvmlite failing to load on this platform
        return f"{INSTALL_HINT} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'not found'})"
    return None


@dataclass
class UmapModel:
    """A fitted UMAP of one reference sample: its 2-D reference coordinates and the fitted estimator."""

    reference_xy: F32  # (m, 2)
    estimator: Any  # umap.UMAP, fitted

    def transform(self, x: F32) -> F32:
        """(n, 2) coordinates of new embeddings in the fitted map (umap's own ``transform``)."""
        x = np.asarray(x, np.float32)
        if x.shape[0] == 0:
            return np.zeros((0, 2), np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(self.estimator.transform(x), np.float32).reshape(-1, 2)


def fit_umap(reference: F32, seed: int, n_neighbors: int = 15) -> UmapModel:
    """Fit a 2-D UMAP on the reference embeddings (m, d); ``n_neighbors`` is capped at m - 1.

    Blocks for the whole fit (seconds; call it off the consumer loop). Raises ImportError (with the fix)
    without umap-learn and ValueError with fewer than 4 points.
    """
    x = np.asarray(reference, np.float32)
    if x.ndim != 2 or x.shape[0] < 4:
        raise ValueError(f"UMAP needs at least 4 reference embeddings, got {x.shape[0] if x.ndim == 2 else 0}")
    try:
        import umap
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden to 1 by setting random_state", numba notes
        est = umap.UMAP(n_components=2, n_neighbors=max(2, min(n_neighbors, x.shape[0] - 1)),
                        random_state=seed, transform_seed=seed, n_jobs=1)
        xy = est.fit_transform(x)
    return UmapModel(np.asarray(xy, np.float32).reshape(-1, 2), est)


def umap_block(pca_block: Projection, reference_xy: F32, current_xy: F32, as_of_event: int | None = None,
               fit_seconds: float | None = None) -> Projection:
    """The projection with UMAP coordinates: everything else (texts, scores, percentiles, nearest
    reference points, which are the PCA subspace's) is the PCA projection's, of the same points.
    Raises ValueError when the coordinates are not as many as the projection's points."""
    ref, cur = pca_block.reference, pca_block.current
    if len(ref.x) != reference_xy.shape[0] or len(cur.x) != current_xy.shape[0]:
        raise ValueError("UMAP coordinates do not match the projection's points")
    return replace(pca_block, method="umap", axes=UMAP_AXES,
                   reference=replace(ref, x=tuple(reference_xy[:, 0].tolist()), y=tuple(reference_xy[:, 1].tolist())),
                   current=replace(cur, x=tuple(current_xy[:, 0].tolist()), y=tuple(current_xy[:, 1].tolist())),
                   as_of_event=as_of_event, fit_seconds=fit_seconds)


def reference_embeddings(profile: Any) -> F32:
    """The embeddings of a profile's display sample, in the order of the projection block's reference
    points (``ReferenceView.build`` reads the same column); (0, 0) without any."""
    sample = getattr(profile, "sample", None)
    if sample is None or not sample.size:
        return np.zeros((0, 0), np.float32)
    col = sample.columns().get("embedding")
    if col is None or not len(col):
        return np.zeros((0, 0), np.float32)
    return np.array(col.values, np.float32)
