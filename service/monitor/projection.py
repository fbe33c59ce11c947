"""The 2-D projection of reference and current embeddings, and the similar-sample lookup. Computed on demand.

Both use the PCA the embedding signal already fitted (``EmbeddingFeaturizer``), nothing new is fitted:

- **projection**: the first two whitened principal coordinates (``project2d``) of the reference display
  sample (``ReferenceProfile.sample``, ``display_sample`` events) and of the recent events. Each current
  point carries its out-of-reference score (the one the outlier list uses: mean squared whitened
  coordinate plus standardised residual) and that score's percentile among **out-of-sample** reference
  scores: at calibration each reference event is scored by a PCA fitted without it (3 folds, as the
  featurizer's own clip levels are), and 201 quantiles are kept in the profile
  (``ReferenceProfile.outlier_quantiles``). In-sample scores would be far lower (the PCA fitted those
  very points): on a stationary stream about a quarter of the recent points would look "outside".
  Profiles saved before this existed fall back to the display sample's in-sample scores, and say so.
- **nearest reference examples**: Euclidean distance in the top-k principal subspace (un-whitened, so
  distances are those of the embeddings restricted to the directions the reference varies in), by one
  matrix product of the queries against the display sample.

The reference side is computed once per profile (``ReferenceView``); a query costs O(q * m * k) for q
queries and m reference points. Called when the report is built (the service does at most once a
second), never per event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..drift.embedding import EmbeddingFeaturizer, _out_of_sample
from .page_view import CurrentPoints, Neighbour, Projection, ReferencePoints

if TYPE_CHECKING:
    from .reference import ReferenceSample

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
PERCENTILE_BANDS = (0.9, 0.99)  # current points are coloured by which band of the reference they fall in
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 201)


def out_of_sample_quantiles(featurizer: EmbeddingFeaturizer, x: F32, seed: int) -> F64:
    """Quantiles (at ``QUANTILE_LEVELS``) of the out-of-reference scores of reference embeddings ``x``,
    each scored by a PCA fitted on the other folds, with the featurizer's clipping. A fresh generator
    from ``seed``: the calibration's own random stream is not touched."""
    x = np.asarray(x, np.float32)
    znorm, resid = _out_of_sample(x, featurizer.k, np.random.default_rng(seed))
    z2 = np.minimum(znorm, featurizer.z_clip) ** 2 / featurizer.k
    r = np.minimum((resid - featurizer.r_mean) / featurizer.r_scale, featurizer.r_clip)
    return np.quantile(z2 + r, QUANTILE_LEVELS)


def subspace(featurizer: EmbeddingFeaturizer, x: F32) -> F32:
    """Coordinates (n, k) of embeddings in the featurizer's top-k principal subspace (unit axes, centred)."""
    x = np.asarray(x, np.float32).reshape(-1, featurizer.dim)
    return (x - featurizer.mean) @ featurizer._unit_basis()  # the axes the drift statistics use


@dataclass
class ReferenceView:
    """The display sample of one profile in the featurizer's coordinates."""

    featurizer: EmbeddingFeaturizer
    xy: F32  # (m, 2) whitened principal coordinates
    sub: F64  # (m, k) principal-subspace coordinates, for distances
    sub_sq: F64  # (m,) their squared norms
    texts: list[str | None]
    scores_sorted: F64  # out-of-reference scores of the sample, sorted (the fallback scale)
    oos_quantiles: F64 | None = None  # out-of-sample score quantiles at QUANTILE_LEVELS (the scale used)

    @property
    def scale(self) -> str:
        return "out-of-sample" if self.oos_quantiles is not None else "in-sample (older profile)"

    @classmethod
    def build(cls, featurizer: EmbeddingFeaturizer, sample: ReferenceSample | None,
              oos_quantiles: F64 | None = None) -> ReferenceView:
        emb = np.zeros((0, featurizer.dim), np.float32)
        texts: list[str | None] = []
        if sample is not None and sample.size:
            col = sample.columns().get("embedding")
            if col is not None and len(col):
                emb = np.asarray(col.values, np.float32)
                all_texts = sample.texts()
                texts = [all_texts[int(i)] for i in col.event]
        sub = subspace(featurizer, emb).astype(np.float64)
        scores = featurizer.outlier_scores(featurizer.transform(emb)) if len(emb) else np.zeros(0)
        return cls(featurizer, featurizer.project2d(emb), sub, np.einsum("ij,ij->i", sub, sub),
                   texts, np.sort(scores), None if oos_quantiles is None else np.asarray(oos_quantiles, np.float64))

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    def percentile(self, scores: F64) -> F64:
        """Each score's percentile (0..1) among the reference's out-of-sample scores (else the display
        sample's in-sample ones); NaN without either."""
        if self.oos_quantiles is not None:
            q = self.oos_quantiles  # mid-rank: a score at the clip, which several quantiles share, gets
            below = np.searchsorted(q, scores, side="left")  # the middle of their levels
            upto = np.searchsorted(q, scores, side="right")
            return np.clip((below + upto) / (2.0 * q.size), 0.0, 1.0)
        if not self.scores_sorted.size:
            return np.full(np.shape(scores), np.nan)
        return np.searchsorted(self.scores_sorted, scores, side="left") / self.scores_sorted.size

    def nearest(self, embeddings: F32, k: int = 3) -> tuple[I64, F64]:
        """Indices (q, k') into the sample of each query's ``k`` nearest reference points, nearest first,
        and their distances; k' = min(k, sample size)."""
        q = int(embeddings.shape[0])
        k = min(k, len(self))
        if q == 0 or k == 0:
            return np.zeros((q, 0), np.int64), np.zeros((q, 0))
        a = subspace(self.featurizer, embeddings).astype(np.float64)
        d2 = np.einsum("ij,ij->i", a, a)[:, None] + self.sub_sq[None, :] - 2.0 * (a @ self.sub.T)
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        rows = np.arange(q)[:, None]
        order = np.argsort(d2[rows, part], axis=1, kind="stable")
        idx = part[rows, order]
        return idx.astype(np.int64), np.sqrt(np.maximum(d2[rows, idx], 0.0))

    def neighbours(self, embeddings: list[Any], k: int = 3,
                   found: tuple[I64, F64] | None = None) -> list[tuple[Neighbour, ...]]:
        """For each embedding (or None), its nearest reference examples (none for None or a wrong size).
        ``found``: the result of ``nearest`` on the usable embeddings, when already computed."""
        have = [i for i, e in enumerate(embeddings) if e is not None and np.shape(e) == (self.featurizer.dim,)]
        out: list[tuple[Neighbour, ...]] = [() for _ in embeddings]
        if not have or not len(self):
            return out
        idx, dist = found if found is not None else self.nearest(
            np.vstack([embeddings[i] for i in have]).astype(np.float32), k)
        for row, i in enumerate(have):
            out[i] = tuple(Neighbour(int(j), float(d), self.texts[int(j)] if self.texts else None)
                           for j, d in zip(idx[row].tolist(), dist[row].tolist(), strict=True))
        return out


def usable(view: ReferenceView, embeddings: list[Any]) -> list[Any]:
    """The embeddings a lookup can use (right size), in order."""
    return [e for e in embeddings if e is not None and np.shape(e) == (view.featurizer.dim,)]


def page_lookups(view: ReferenceView, current: F32, examples: list[list[Any]], k: int = 3
                 ) -> tuple[tuple[I64, F64], list[list[tuple[Neighbour, ...]]]]:
    """Nearest reference points of the current points and of each list of example embeddings, in one
    matrix product: (indices, distances) of the current points, and per list its neighbours."""
    lists = [usable(view, xs) for xs in examples]
    stacked = [current.reshape(-1, view.featurizer.dim), *(np.vstack(u).astype(np.float32) for u in lists if u)]
    idx, dist = view.nearest(np.vstack(stacked), k) if len(view) else (
        np.zeros((sum(len(x) for x in stacked), 0), np.int64), np.zeros((sum(len(x) for x in stacked), 0)))
    n = current.shape[0]
    out: list[list[tuple[Neighbour, ...]]] = []
    at = n
    for xs, u in zip(examples, lists, strict=True):
        none: list[tuple[Neighbour, ...]] = [() for _ in xs]
        out.append(view.neighbours(xs, k, (idx[at:at + len(u)], dist[at:at + len(u)])) if u else none)
        at += len(u)
    return (idx[:n], dist[:n]), out


def projection(view: ReferenceView, index: list[int], event_ids: list[str], texts: list[str | None],
               embeddings: F32, scores: F64, near: tuple[I64, F64]) -> Projection:
    """The PCA projection of the page view: reference and current points (columnar), with each current
    point's score, percentile and nearest reference points (``near``, indices into ``reference``)."""
    xy = view.featurizer.project2d(embeddings) if len(index) else np.zeros((0, 2), np.float32)
    near_idx, dist = near
    pct = view.percentile(scores)
    return Projection(
        "pca", ("principal component 1 (whitened)", "principal component 2 (whitened)"), PERCENTILE_BANDS,
        view.scale, ReferencePoints(tuple(view.xy[:, 0].tolist()), tuple(view.xy[:, 1].tolist()), tuple(view.texts)),
        CurrentPoints(tuple(xy[:, 0].tolist()), tuple(xy[:, 1].tolist()), tuple(index), tuple(event_ids),
                      tuple(texts), tuple(np.asarray(scores).tolist()),
                      tuple(None if np.isnan(p) else float(p) for p in pct.tolist()),
                      tuple(tuple(n) for n in near_idx.tolist()), tuple(tuple(d) for d in np.round(dist, 4).tolist())),
        len(view), len(index))
