"""One interface over the three featurizer kinds: fit on reference items, turn items into event rows."""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from .clusters import ClusterFeaturizer
from .distribution import BinnedFeaturizer, CategoricalFeaturizer, LabelShareFeaturizer
from .embedding import EmbeddingFeaturizer
from .items import ItemColumn, per_event_counts, per_event_sums
from .outliers import OutlierShareFeaturizer
from .shares import EventShareFeaturizer, TagValidityFeaturizer

F64 = npt.NDArray[np.float64]
Kind = Literal["embedding", "categorical", "binned", "label_share", "outliers", "event_share", "tag_validity",
               "clusters"]


class Featurizer(Protocol):
    @property
    def stat_names(self) -> tuple[str, ...]: ...

    @property
    def n_features(self) -> int: ...

    def statistics(self, sums: F64, items: F64) -> F64: ...

    def state(self) -> dict[str, Any]: ...


def fit_featurizer(kind: Kind, column: ItemColumn, *, n_components: int, n_random_features: int,
                   max_labels: int, rng: np.random.Generator, like: Featurizer | None = None) -> Featurizer:
    """Fit a featurizer of ``kind`` on reference items. Raises ValueError when there are too few items.

    ``like``: the deployed featurizer, whose random draws a calibration fit should share.
    """
    if kind == "embedding":
        return EmbeddingFeaturizer.fit(column.values, n_components, n_random_features, rng,
                                       like if isinstance(like, EmbeddingFeaturizer) else None)
    if kind in ("categorical", "label_share"):
        if len(column) == 0:
            raise ValueError("no reference labels")
        cls = LabelShareFeaturizer if kind == "label_share" else CategoricalFeaturizer
        return cls.fit(dict(Counter(column.values)), max_labels)
    if kind in ("outliers", "clusters"):  # pragma: no cover - programming error: see nlpmon.drift.signal
        raise TypeError(f"{kind} signals are fitted from an embedding featurizer (calibrate_{kind[:-1]}_signal)")
    if kind in ("event_share", "tag_validity"):  # pragma: no cover - programming error
        raise TypeError("event-share signals are fitted from reference counts (calibrate_event_share_signal)")
    return BinnedFeaturizer.fit(np.asarray(column.values, dtype=np.float64))


def event_rows(featurizer: Featurizer, column: ItemColumn, n_events: int) -> tuple[F64, F64]:
    """Per-event feature rows (n_events, F) and item counts (n_events,). Vectorised over the batch."""
    if isinstance(featurizer, EventShareFeaturizer):  # items: events with units (see nlpmon.drift.shares)
        return featurizer.event_rows(column, n_events)
    items = per_event_counts(column.event, n_events)
    f = featurizer.n_features
    if isinstance(featurizer, EmbeddingFeaturizer):
        if len(column) == 0:
            return np.zeros((n_events, f)), items
        return per_event_sums(featurizer.transform(column.values), column.event, n_events), items
    if isinstance(featurizer, CategoricalFeaturizer):
        idx = np.fromiter(map(featurizer.lookup().__getitem__, column.values), dtype=np.int64, count=len(column))
    elif isinstance(featurizer, BinnedFeaturizer):
        idx = featurizer.bin_index(np.asarray(column.values, dtype=np.float64))
    elif isinstance(featurizer, OutlierShareFeaturizer):
        # the column's values are the items' out-of-reference scores (EmbeddingFeaturizer.transform_scored)
        marks = featurizer.marks(np.asarray(column.values, np.float64))
        return np.bincount(column.event, weights=marks, minlength=n_events).astype(np.float64)[:, None], items
    elif isinstance(featurizer, ClusterFeaturizer):
        # the column's values are (n_items, k + 1): each item's whitened coordinates, then its score
        vals = np.asarray(column.values, np.float64).reshape(len(column), -1)
        if len(column) == 0:
            return np.zeros((n_events, f)), items
        return featurizer.event_rows(vals[:, :-1], vals[:, -1], column.event, n_events), items
    else:  # pragma: no cover - programming error
        raise TypeError(f"unknown featurizer {type(featurizer).__name__}")
    flat = np.bincount(column.event * f + idx, minlength=n_events * f)
    return flat.reshape(n_events, f).astype(np.float64), items


def featurizer_state(featurizer: Featurizer) -> dict[str, Any]:
    return {"kind": kind_of(featurizer), **featurizer.state()}


def kind_of(featurizer: Featurizer) -> Kind:
    if isinstance(featurizer, EmbeddingFeaturizer):
        return "embedding"
    if isinstance(featurizer, OutlierShareFeaturizer):
        return "outliers"
    if isinstance(featurizer, TagValidityFeaturizer):
        return "tag_validity"
    if isinstance(featurizer, EventShareFeaturizer):
        return "event_share"
    if isinstance(featurizer, ClusterFeaturizer):
        return "clusters"
    if isinstance(featurizer, LabelShareFeaturizer):
        return "label_share"
    if isinstance(featurizer, CategoricalFeaturizer):
        return "categorical"
    return "binned"


def featurizer_from_state(s: dict[str, Any]) -> Featurizer:
    kind = s["kind"]
    if kind == "embedding":
        return EmbeddingFeaturizer.from_state(s)
    if kind == "categorical":
        return CategoricalFeaturizer.from_state(s)
    if kind == "binned":
        return BinnedFeaturizer.from_state(s)
    if kind == "label_share":
        return LabelShareFeaturizer.from_state(s)
    if kind == "outliers":
        return OutlierShareFeaturizer.from_state(s)
    if kind == "tag_validity":
        return TagValidityFeaturizer.from_state(s)
    if kind == "event_share":
        return EventShareFeaturizer.from_state(s)
    if kind == "clusters":
        return ClusterFeaturizer.from_state(s)
    raise ValueError(f"unknown featurizer kind {kind!r}")
