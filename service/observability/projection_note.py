"""What the model page says about its embedding projection: which one it shows, and why not UMAP yet.

``Projection.method`` is ``pca`` or ``umap``; a PCA projection shown in place of a requested UMAP
(``requested`` "umap") carries a ``note`` (fitting, transforming, failed, missing extra, sample too large).
"""

from __future__ import annotations

from ..monitor.page_view import Projection
from .markup import esc, num

__all__ = ["projection_caption", "projection_note"]


def projection_caption(proj: Projection) -> str:
    """The start of the figure caption, naming the projection."""
    if proj.method == "umap":
        return (f'UMAP (fitted on the reference sample, seeded; recent points placed with its transform, as of '
                f'monitored event {num(proj.as_of_event)})')
    return "PCA: the first two principal components of the reference's PCA"


def projection_note(proj: Projection) -> str:
    """A paragraph saying which projection is shown (and why PCA when UMAP was asked for)."""
    if proj.method == "umap":
        return (f'<p id="projection-method" data-method="umap">Projection: <strong>UMAP</strong> '
                f'(fit took {num(proj.fit_seconds, 1)} s, off the consumer loop).</p>')
    if proj.requested == "umap":
        return (f'<p id="projection-method" data-method="pca" class="banner">Projection: <strong>PCA</strong>. '
                f'{esc(proj.note or "")}</p>')
    return '<p id="projection-method" data-method="pca">Projection: <strong>PCA</strong>.</p>'
