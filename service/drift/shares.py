"""Event shares with exact count thresholds: tag-sequence validity and entities crossing token boundaries.

Both signals look at *units* (tokens, entities) that are either bad (a tag invalid after the previous one,
an entity whose start or end falls inside a token) or not. A window is judged on its count of **marked
events** (events with at least one bad unit) among the events that have units: units of one event are not
independent (one mangled text breaks several tags), events are, which is the assumption every other signal's
calibration makes too. The page also shows the share of bad units.

Calibration, exact given one assumption: the reference's ``m`` events with units hold ``k`` marked ones;
the marking probability ``U`` of a stationary event is uncertain, with the uniform-prior posterior
``U ~ Beta(k + 1, m - k + 1)`` (mean ``(k + 1) / (m + 2)``, Laplace's rule: a reference without any marked
event still predicts a small, non-zero share). Given ``U`` the events of a window are marked independently,
so the count among ``n`` events is beta-binomial ``BB(n, k + 1, m - k + 1)``; each window's threshold is
the smallest count ``c`` with ``P(BB >= c) <= alpha / M`` (``beta_binomial_thresholds``),
for every ``n`` up to the longest window. A reference with almost no marked event therefore makes a rise
significant after a handful of marked events.

Rows are (events, 3): marked (0/1), bad units, units; ``statistics`` returns
``marked / (threshold(n) - 0.5)``, above 1 exactly when the count reaches its threshold (thresholds 1.0).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special

from .items import ItemColumn
from .tagging import Scheme, TagCodes, invalid_tokens

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def beta_binomial_thresholds(a: float, b: float, max_items: int, tail_probability: float) -> F64:
    """For n = 0..max_items, the smallest count c with P(BB(n, a, b) >= c) <= tail_probability (n + 1 where
    no count can reach it). As ``nlpmon.drift.outliers.count_thresholds`` (which fixes a = k, b = m + 1 - k):
    one pass over the (n, c) triangle, log pmf from log-gamma terms, tails summed from the top count down."""
    n = np.arange(max_items + 1, dtype=np.float64)[:, None]
    c = np.arange(max_items + 1, dtype=np.float64)[None, :]
    inside = c <= n
    nc = np.where(inside, n - c, 0.0)
    logpmf = (special.gammaln(n + 1) - special.gammaln(c + 1) - special.gammaln(nc + 1)
              + special.betaln(c + a, nc + b) - special.betaln(a, b))
    pmf = np.where(inside, np.exp(logpmf), 0.0)
    sf = np.cumsum(pmf[:, ::-1], axis=1)[:, ::-1]  # sf[n, c] = P(C >= c)
    ok = inside & (sf <= tail_probability)
    first = np.where(ok.any(axis=1), ok.argmax(axis=1), n[:, 0] + 1).astype(np.float64)
    first[0] = 1.0
    return first


def unit_rows(event: I64, bad: npt.NDArray[np.bool_], n_events: int) -> tuple[F64, F64]:
    """Per-event rows (n_events, 3) [marked, bad units, units] and items (1 for events with units)."""
    units = np.bincount(event, minlength=n_events).astype(np.float64)
    nbad = np.bincount(event, weights=bad.astype(np.float64), minlength=n_events)
    rows = np.stack([(nbad > 0).astype(np.float64), nbad, units], axis=1)
    return rows, (units > 0).astype(np.float64)


@dataclass
class EventShareFeaturizer:
    """Counts marked events per window against exact beta-binomial thresholds (module docstring)."""

    marked: int  # k: marked reference events
    reference_items: int  # m: reference events with units
    count_threshold: F64  # (max_items + 1,) smallest alarming count per number of events with units
    tail_probability: float  # alpha / M
    stat_names: tuple[str, ...] = ("marked_count",)

    @property
    def n_features(self) -> int:
        return 3

    @property
    def expected_share(self) -> float:
        """The marked share the reference predicts (the mean of U)."""
        return (self.marked + 1) / (self.reference_items + 2)

    def fitted(self, marked: int, items: int, max_items: int, tail_probability: float) -> Any:
        """A copy calibrated on the reference's counts: ``marked`` of ``items`` events with units.

        Raises ValueError when the reference has fewer than 20 events with units."""
        if items < 20:
            raise ValueError(f"need at least 20 reference events with units, got {items}")
        thr = beta_binomial_thresholds(marked + 1.0, items - marked + 1.0, max_items, tail_probability)
        return replace(self, marked=int(marked), reference_items=int(items), count_threshold=thr,
                       tail_probability=tail_probability)

    def bad_units(self, column: ItemColumn) -> npt.NDArray[np.bool_]:
        """Which units of ``column`` are bad; here the column's values are already 0/1 marks."""
        return np.asarray(column.values, np.float64) > 0

    def event_rows(self, column: ItemColumn, n_events: int) -> tuple[F64, F64]:
        return unit_rows(column.event, self.bad_units(column), n_events)

    def threshold_counts(self, items: F64) -> F64:
        # np.clip(np.nan_to_num(items, nan=0.0), 0, top): the same values, a fraction of its fixed cost
        n = np.minimum(np.maximum(np.where(np.isnan(items), 0.0, items), 0), self.count_threshold.size - 1)
        return self.count_threshold[n.astype(np.int64)]

    def statistics(self, sums: F64, items: F64) -> F64:
        """(m, 1): marked events / (alarming count - 0.5); above 1 exactly when the count alarms."""
        out = (sums[:, 0] / (self.threshold_counts(items) - 0.5))[:, None]
        out[~(items > 0)] = 0.0
        return out

    def share_report(self, sums: F64, items: float) -> dict[str, float | int]:
        """A window's marked share beside the reference's prediction and the alarming share; bad-unit share."""
        n = int(items)
        c = float(sums[0])
        thr = float(self.threshold_counts(np.array([float(n)]))[0])
        units = float(sums[2])
        return {"items": n, "marked": round(c), "share": c / n if n else 0.0,
                "expected_share": self.expected_share, "alarm_count": int(thr),
                "threshold_share": thr / n if n else 0.0,
                "units": round(units), "bad_units": round(float(sums[1])),
                "unit_share": float(sums[1]) / units if units else 0.0}

    def state(self) -> dict[str, Any]:
        return {"marked": self.marked, "reference_items": self.reference_items,
                "count_threshold": self.count_threshold, "tail_probability": self.tail_probability}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Any:
        return cls(int(s["marked"]), int(s["reference_items"]), np.asarray(s["count_threshold"], np.float64),
                   float(s["tail_probability"]))


@dataclass
class TagValidityFeaturizer(EventShareFeaturizer):
    """Units are token tags (the ``token_tag`` column); bad: invalid after the previous tag under ``scheme``."""

    scheme: Scheme = "iob2"
    stat_names: tuple[str, ...] = ("invalid_count",)
    _codes: TagCodes | None = field(default=None, repr=False)

    def codes(self) -> TagCodes:
        if self._codes is None:
            self._codes = TagCodes(self.scheme)
        return self._codes

    def bad_units(self, column: ItemColumn) -> npt.NDArray[np.bool_]:
        return invalid_tokens(self.scheme, self.codes().codes(column.values), column.event)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "scheme": self.scheme}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> TagValidityFeaturizer:
        return cls(int(s["marked"]), int(s["reference_items"]), np.asarray(s["count_threshold"], np.float64),
                   float(s["tail_probability"]), scheme=s["scheme"])
