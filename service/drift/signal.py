"""A drift signal: a fitted featurizer, windows of several sizes, and calibrated thresholds.

``calibrate_signal`` builds a ``SignalModel`` from reference items. Calibration resamples windows from
reference events held out of the part that fitted the featurizer, over several random splits, so that
thresholds include the error of estimating the reference itself (in-sample calibration sets them too
low). The false-alarm budget of the signal is shared equally by every (statistic, window size) pair
(Bonferroni), so the per-event probability that any of them exceeds its threshold on stationary
traffic is at most ``false_alarm_rate``; alarms (no-drift -> drift transitions) are rarer still.

``SignalWindow`` is the streaming half: it turns a batch of event rows into per-event drift flags.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

from ..sketches.multiscale import MultiScaleWindow, WindowSums, stacked_rows
from .calibration import calibrate_threshold
from .clusters import ClusterFeaturizer, marking_threshold, usable_levels
from .distribution import LabelShareFeaturizer
from .embedding import EmbeddingFeaturizer, out_of_sample_scores
from .featurizers import (
    Featurizer,
    Kind,
    event_rows,
    featurizer_from_state,
    featurizer_state,
    fit_featurizer,
)
from .items import ItemColumn, per_event_counts
from .outliers import OutlierShareFeaturizer
from .shares import EventShareFeaturizer

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: A window is evaluated only when the reference's held-out half holds at least this many times its
#: events (see ``usable_windows``).
HELD_OUT_PER_WINDOW = 1.0
OUTLIER_BLOCK = 5
CLUSTER_BLOCK = 10
SAMPLE_BUDGET = 200_000  # resampled events per split and window size: windows = budget / window size
MIN_SAMPLES = 4000
GATHER_MAX_WINDOW = 64
GATHER_CHUNK_VALUES = 65_536  # float64 values per chunk of gathered window sums (512 KB: in cache)
WEIGHT_CHUNK_WINDOWS = 64  # windows per chunk of bootstrap multiplicities (64 x n int64 counts)


@dataclass
class SignalModel:
    """Everything fixed after calibration: the featurizer, window sizes and thresholds (windows x stats)."""

    name: str
    featurizer: Featurizer
    windows: tuple[int, ...]
    thresholds: F64
    false_alarm_rate: float
    reference_events: int
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def stat_names(self) -> tuple[str, ...]:
        return self.featurizer.stat_names

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "featurizer": featurizer_state(self.featurizer),
                "windows": list(self.windows), "thresholds": self.thresholds,
                "false_alarm_rate": self.false_alarm_rate, "reference_events": self.reference_events,
                "calibration": self.calibration}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> SignalModel:
        return cls(s["name"], featurizer_from_state(s["featurizer"]), tuple(int(w) for w in s["windows"]),
                   np.asarray(s["thresholds"], np.float64), float(s["false_alarm_rate"]),
                   int(s["reference_events"]), dict(s["calibration"]))


def samples_for_window(window: int) -> int:
    """Resampled windows per split: many for short windows (their tail is reached far out), fewer for long."""
    return max(MIN_SAMPLES, SAMPLE_BUDGET // window)


@dataclass(frozen=True, slots=True)
class HeldOut:
    """The event rows of one held-out half, prepared once for every window size resampled from it.

    ``r32``: the rows rounded to float32 (the multiplicity product's operand); ``r64``: the same values
    widened to float64 (what gathered windows accumulate); ``i32``: the item counts in float32;
    ``scratch``: buffers reused from one window size to the next.
    """

    rows: F64
    items: F64
    r32: npt.NDArray[np.float32]
    r64: F64
    i32: npt.NDArray[np.float32]
    scratch: dict[tuple[str, int], npt.NDArray[Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, rows: F64, items: F64) -> HeldOut:
        r32 = rows.astype(np.float32)  # as the rows come (C order from event_rows): the BLAS kernel follows
        return cls(rows, items, r32, r32.astype(np.float64), items.astype(np.float32))

    def buffer(self, name: str, shape: tuple[int, int], dtype: Any) -> npt.NDArray[Any]:
        """A scratch array of ``shape`` (contents undefined), reused across calls."""
        key = (name, shape[0] * shape[1])
        buf = self.scratch.get(key)
        if buf is None or buf.dtype != dtype:
            buf = self.scratch[key] = np.empty(shape, dtype)
        return buf.reshape(shape)


def resample_window_sums(rows: F64, items: F64, window: int, count: int,
                         rng: np.random.Generator) -> tuple[F64, F64]:
    """``count`` windows of ``window`` events drawn with replacement: (sums (count, F), items (count,)).

    See ``resample_held_out``; this prepares the rows for one call.
    """
    return resample_held_out(HeldOut.of(rows, items), window, count, rng)


def _draw(held: HeldOut, window: int, count: int, rng: np.random.Generator) -> npt.NDArray[np.integer[Any]]:
    """The window draws ``rng.integers(0, n, (count, window))``, as int32: numpy draws the same bounded 32-bit
    values for int32 and int64 when ``n < 2**31`` (the same generator state after), at half the cost."""
    n = held.r32.shape[0]
    return rng.integers(0, n, (count, window), dtype=np.int32 if n < 2**31 else np.int64)


def _gathered(held: HeldOut, idx: npt.NDArray[np.integer[Any]]) -> Iterator[tuple[int, int, F64, F64]]:
    """Sums of short windows, chunk by chunk: (first, end, sums (end - first, F), items (end - first,)).

    Float64 sums in draw order from +0.0, as numpy's ``r32[idx].sum(axis=1, dtype=float64)`` adds them (so
    bit-identical to it), over chunks of windows small enough for the accumulator to stay in cache. The
    yielded arrays are reused by the next chunk."""
    count, window = idx.shape
    f = held.r64.shape[1]
    chunk = max(1, GATHER_CHUNK_VALUES // max(f, 1))
    acc = held.buffer("acc", (min(chunk, count), f), np.float64)
    tmp = held.buffer("tmp", (min(chunk, count), f), np.float64)
    for a in range(0, count, chunk):
        b = min(count, a + chunk)
        out, t, cols = acc[: b - a], tmp[: b - a], idx[a:b]
        np.take(held.r64, cols[:, 0], axis=0, out=out)
        out += 0.0  # numpy's sum starts from +0.0: a window of negative zeros sums to +0.0
        for j in range(1, window):
            np.take(held.r64, cols[:, j], axis=0, out=t)
            out += t
        yield a, b, out, held.items[cols].sum(axis=1)


def _multiplied(held: HeldOut, idx: npt.NDArray[np.integer[Any]]) -> tuple[F64, F64]:
    """Sums of long windows: vectors of bootstrap multiplicities over the events (built per chunk of
    windows, in cache) times the float32 rows, one matrix product for all windows (exact enough for sums
    of rows of order one; the same product as before issue 14, hence the same bits)."""
    count, _ = idx.shape
    n = held.r32.shape[0]
    weights = held.buffer("weights", (count, n), np.float32)
    step = WEIGHT_CHUNK_WINDOWS
    offsets = (np.arange(step, dtype=np.int64) * n)[:, None]
    for a in range(0, count, step):
        b = min(count, a + step)
        flat = (idx[a:b] + offsets[: b - a]).ravel()
        weights[a:b] = np.bincount(flat, minlength=(b - a) * n).reshape(b - a, n)
    return (weights @ held.r32).astype(np.float64), (weights @ held.i32).astype(np.float64)


def resample_held_out(held: HeldOut, window: int, count: int, rng: np.random.Generator) -> tuple[F64, F64]:
    """``count`` windows of ``window`` held-out events drawn with replacement: (sums (count, F), items (count,)).

    Bit-identical to the implementation before issue 14 (``tests/core/test_calibration_cost.py`` keeps it as
    the oracle): the same draws, the same float operations in the same order. Short windows (up to
    ``GATHER_MAX_WINDOW`` events) gather their rows; long ones are multiplicity vectors times the rows.
    """
    idx = _draw(held, window, count, rng)
    if window > GATHER_MAX_WINDOW:
        return _multiplied(held, idx)
    sums = np.empty((count, held.r64.shape[1]))
    items = np.empty(count)
    for a, b, s, i in _gathered(held, idx):
        sums[a:b], items[a:b] = s, i
    return sums, items


def resampled_statistics(featurizer: Featurizer, held: HeldOut, window: int, count: int,
                         rng: np.random.Generator) -> F64:
    """The statistics (count, stats) of ``count`` stationary windows of ``window`` held-out events: those of
    ``resample_held_out``'s sums, computed chunk by chunk for short windows (statistics are row-wise, so
    the values are the same bits as on the whole array)."""
    idx = _draw(held, window, count, rng)
    if window > GATHER_MAX_WINDOW:
        return featurizer.statistics(*_multiplied(held, idx))
    out = np.empty((count, len(featurizer.stat_names)))
    for a, b, s, i in _gathered(held, idx):
        out[a:b] = featurizer.statistics(s, i)
    return out


def resample_cluster_sums(rows: F64, items: F64, window: int, count: int, rng: np.random.Generator,
                          pair_columns: tuple[int, ...] = (-1,)) -> tuple[F64, F64]:
    """As ``resample_window_sums`` for ``embedding_clusters`` rows, with each of ``pair_columns`` (the sum of
    the marked items' ``||u||^2``, one column per marking level) weighted by each event's multiplicity
    squared, ``sum_i W_i^2 q_i``.

    A window drawn with replacement can hold an event twice; ``||S||^2`` then counts the pairs of its
    copies (cosine 1), which no live window holds: subtracting ``sum W_i^2 q_i`` removes exactly them,
    leaving the pairs of distinct events (weighted ``W_i W_j``: heavier tails than live windows, so the
    thresholds err high for windows near the held-out size, and are exact in the limit of short ones).
    """
    n = rows.shape[0]
    idx = rng.integers(0, n, (count, window), dtype=np.int64)
    if window <= GATHER_MAX_WINDOW:
        sums = rows.astype(np.float32)[idx].sum(axis=1, dtype=np.float64)
        mult = (idx[:, :, None] == idx[:, None, :]).sum(axis=2)  # copies of each drawn event in its window
        for c in pair_columns:
            sums[:, c] = np.sum(rows[:, c][idx] * mult, axis=1)
        return sums, items[idx].sum(axis=1)
    idx += (np.arange(count, dtype=np.int64) * n)[:, None]
    weights = np.bincount(idx.ravel(), minlength=count * n).reshape(count, n).astype(np.float32)
    sums = (weights @ rows.astype(np.float32)).astype(np.float64)
    squared = weights * weights
    for c in pair_columns:
        sums[:, c] = squared @ rows[:, c].astype(np.float32)
    return sums, (weights @ items.astype(np.float32)).astype(np.float64)


def usable_windows(windows: tuple[int, ...], n_events: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(evaluated, not evaluated) window sizes for a reference of ``n_events`` events.

    Resampling calibrates a window from the held-out half of the reference; a window longer than that
    half would mostly repeat its events, and its statistic's null spread is then dominated by the error
    of the reference's own mean, of which the calibration sees one draw per split. Such windows are not
    evaluated until the reference is large enough (at least ``2 * w`` events for a window of ``w``)."""
    held_out = n_events - n_events // 2
    ok = tuple(w for w in windows if w * HELD_OUT_PER_WINDOW <= held_out)
    return ok, tuple(w for w in windows if w not in ok)


def calibrate_signal(name: str, kind: Kind, column: ItemColumn, n_events: int, *,
                     windows: tuple[int, ...], false_alarm_rate: float, splits: int,
                     n_components: int = 32, n_random_features: int = 128, max_labels: int = 64,
                     rng: np.random.Generator) -> SignalModel:
    """Fit and calibrate one signal on reference items of ``n_events`` events.

    Raises ValueError when the reference is too small to fit (the message says what is missing).
    """
    windows, skipped = usable_windows(tuple(sorted(set(windows))), n_events)
    if not windows:
        raise ValueError(f"a reference of {n_events} events is too small for any window of {sorted(skipped)}")
    # calibration fits see half of the items: the live fit keeps no more components than they can
    n_components = max(2, min(n_components, (len(column) // 2) // 10))
    fit_kw: dict[str, Any] = {"n_components": n_components, "n_random_features": n_random_features,
                              "max_labels": max_labels}
    featurizer = fit_featurizer(kind, column, rng=rng, **fit_kw)
    samples: list[list[F64]] = [[] for _ in windows]
    for _ in range(splits):
        perm = rng.permutation(n_events)
        half = n_events // 2
        a, b = np.sort(perm[:half]), np.sort(perm[half:])
        fitted = fit_featurizer(kind, column.select_events(a, n_events), rng=rng, like=featurizer, **fit_kw)
        rows, items = event_rows(fitted, column.select_events(b, n_events), b.shape[0])
        held = HeldOut.of(rows, items)
        for j, w in enumerate(windows):
            samples[j].append(resampled_statistics(fitted, held, w, samples_for_window(w), rng))
    n_stats = len(featurizer.stat_names)
    per_test = false_alarm_rate / (len(windows) * n_stats)
    thresholds = np.empty((len(windows), n_stats))
    for j in range(len(windows)):
        pooled = np.vstack(samples[j])
        for k in range(n_stats):
            thresholds[j, k] = calibrate_threshold(pooled[:, k], per_test)
    return SignalModel(name, featurizer, windows, thresholds, false_alarm_rate, n_events,
                       {"splits": splits, "samples_per_window": [splits * samples_for_window(w) for w in windows],
                        "tail_probability_per_test": per_test, "items": len(column),
                        "windows_not_evaluated": list(skipped)})


def calibrate_outlier_signal(name: str, embedding: EmbeddingFeaturizer, column: ItemColumn, n_events: int, *,
                             windows: tuple[int, ...], false_alarm_rate: float, level: float,
                             rng: np.random.Generator) -> SignalModel:
    """The outlier-share signal of the deployed ``embedding`` featurizer (see ``nlpmon.drift.outliers``).

    Every reference embedding is scored out of sample; the thresholds are exact beta-binomial counts, so
    every window is calibrated whatever the reference size. Raises ValueError with too few embeddings.
    """
    windows = tuple(sorted(set(windows)))
    scores = out_of_sample_scores(embedding, column.values, rng)
    per_test = false_alarm_rate / len(windows)
    feat = OutlierShareFeaturizer.fit(scores, level, max(windows), per_test)
    return SignalModel(name, feat, windows, np.ones((len(windows), 1)), false_alarm_rate, n_events,
                       {"method": "beta-binomial (exact)", "marking_level": level,
                        "reference_exceedances": feat.exceedances, "scored_items": feat.reference_items,
                        "tail_probability_per_test": per_test, "items": len(column),
                        "windows_not_evaluated": []})


def calibrate_event_share_signal(name: str, probe: EventShareFeaturizer, column: ItemColumn, n_events: int, *,
                                 windows: tuple[int, ...], false_alarm_rate: float,
                                 extra: dict[str, Any] | None = None) -> SignalModel:
    """An event-share signal (see ``nlpmon.drift.shares``): ``probe`` (uncalibrated) says which units of the
    reference ``column`` are bad; the thresholds are exact beta-binomial counts for every window.
    Raises ValueError with fewer than 20 reference events with units."""
    windows = tuple(sorted(set(windows)))
    rows, items = probe.event_rows(column, n_events)
    per_test = false_alarm_rate / len(windows)
    marked, m = int(rows[:, 0].sum()), int(items.sum())
    feat = probe.fitted(marked, m, max(windows), per_test)
    return SignalModel(name, feat, windows, np.ones((len(windows), 1)), false_alarm_rate, n_events,
                       {"method": "beta-binomial (exact)", "marked_reference_events": marked,
                        "reference_events_with_units": m, "bad_reference_units": int(rows[:, 1].sum()),
                        "reference_units": int(rows[:, 2].sum()), "tail_probability_per_test": per_test,
                        "items": len(column), "windows_not_evaluated": [], **(extra or {})})


def cluster_event_rows(feat: ClusterFeaturizer, embedding: EmbeddingFeaturizer, column: ItemColumn,
                       n_events: int) -> tuple[F64, F64]:
    """Event rows (n_events, levels * (k + 2)) and item counts of ``embedding_clusters`` for embedding items."""
    items = per_event_counts(column.event, n_events)
    if len(column) == 0:
        return np.zeros((n_events, feat.n_features)), items
    z, scores = embedding.transform_scored(column.values)
    return feat.event_rows(z, scores, column.event, n_events), items


def calibrate_cluster_signal(name: str, embedding: EmbeddingFeaturizer, column: ItemColumn, n_events: int, *,
                             windows: tuple[int, ...], false_alarm_rate: float, levels: tuple[float, ...],
                             splits: int, rng: np.random.Generator) -> SignalModel:
    """The cluster-of-outliers signal of the deployed ``embedding`` featurizer (``nlpmon.drift.clusters``).

    The marking thresholds are the reference's out-of-sample ``1 - level`` quantiles (as
    ``embedding_outliers``), one per level of the ladder ``levels``; levels narrower than the widest that
    the reference is too small for are not judged (``usable_levels``). Thresholds: ``splits`` random
    halvings; on each, an embedding featurizer oriented like the deployed one and the marking thresholds are
    fitted on one half, and windows are resampled from the other half's rows (as ``calibrate_signal``; the
    pairs of an event with its own copies removed, ``resample_cluster_sums``; the same draws serve every
    level). The budget ``false_alarm_rate`` is split equally over (window, level) pairs. Windows longer than
    the held-out half are not evaluated. Raises ValueError when the reference is too small.
    """
    windows, skipped = usable_windows(tuple(sorted(set(windows))), n_events)
    if not windows:
        raise ValueError(f"a reference of {n_events} events is too small for any window of {sorted(skipped)}")
    levels, levels_skipped = usable_levels(levels, n_events)
    x = np.asarray(column.values, np.float32)
    k, n_rff = embedding.k, int(embedding.omega.shape[1])
    scores = out_of_sample_scores(embedding, x, rng)
    feat = ClusterFeaturizer(tuple(marking_threshold(scores, q) for q in levels), levels, k)
    pair_columns = tuple((j + 1) * feat.width - 1 for j in range(len(levels)))
    samples: list[list[F64]] = [[] for _ in windows]
    for _ in range(splits):
        perm = rng.permutation(n_events)
        half = n_events // 2
        a, b = np.sort(perm[:half]), np.sort(perm[half:])
        ca, cb = column.select_events(a, n_events), column.select_events(b, n_events)
        xa = np.asarray(ca.values, np.float32)
        fitted = EmbeddingFeaturizer.fit(xa, k, n_rff, rng, like=embedding)
        split_scores = out_of_sample_scores(fitted, xa, rng)
        split_feat = ClusterFeaturizer(tuple(marking_threshold(split_scores, q) for q in levels), levels, k)
        rows, items = cluster_event_rows(split_feat, fitted, cb, b.shape[0])
        for j, w in enumerate(windows):
            sums, its = resample_cluster_sums(rows, items, w, samples_for_window(w), rng, pair_columns)
            samples[j].append(split_feat.statistics(sums, its))
    per_test = false_alarm_rate / (len(windows) * len(levels))
    thresholds = np.empty((len(windows), len(levels)))
    for j, p in enumerate(samples):
        pooled = np.vstack(p)
        for i in range(len(levels)):
            thresholds[j, i] = calibrate_threshold(pooled[:, i], per_test)
    return SignalModel(name, feat, windows, thresholds, false_alarm_rate, n_events,
                       {"method": "resampled halvings, tail fit", "marking_levels": list(levels),
                        "marking_levels_not_judged": list(levels_skipped), "splits": splits,
                        "samples_per_window": [splits * samples_for_window(w) for w in windows],
                        "tail_probability_per_test": per_test, "items": len(column),
                        "windows_not_evaluated": list(skipped)})


_MAX_FLOAT = float(np.finfo(np.float64).max)


def nan_to_minus_inf(x: F64) -> F64:
    """``np.nan_to_num(x, nan=-np.inf)``, the same values, at a fraction of its fixed cost: NaN -> -inf,
    +inf -> the largest float, -inf -> minus the largest float, the rest unchanged."""
    return np.where(np.isnan(x), -np.inf, np.minimum(np.maximum(x, -_MAX_FLOAT), _MAX_FLOAT))


@dataclass(frozen=True, slots=True)
class SignalUpdate:
    """Per-event result of one batch: ``drift`` (n,) bool, and at each event the worst (window, stat)."""

    drift: npt.NDArray[np.bool_]
    ratio: F64  # (n,) largest statistic / threshold over the windows in force at each event
    window: I64  # (n,) window size of that largest ratio (0 when no window is full yet)
    stat: I64  # (n,) index of that statistic
    value: F64  # (n,) its raw value
    detail: I64 | None = None  # (n,) e.g. the label index behind that value (per-label signals), -1: none


class SignalWindow:
    """Streaming state of one signal for one model: windows of event rows and the last values seen."""

    def __init__(self, model: SignalModel, block_events: int, max_age: float | None) -> None:
        self.model = model
        every_event = True
        if isinstance(model.featurizer, OutlierShareFeaturizer | EventShareFeaturizer | ClusterFeaturizer):
            # counts per event, judged every 5 events (a count seen at most 4 events late) when every window
            # is a multiple of 5, else at every event; the k + 2 sums of embedding_clusters every 10 events
            # when every window is a multiple of 10 (its cost is per judgement and per feature)
            if isinstance(model.featurizer, ClusterFeaturizer) and all(w % CLUSTER_BLOCK == 0 for w in model.windows):
                block_events, every_event = CLUSTER_BLOCK, False
            elif all(w % OUTLIER_BLOCK == 0 for w in model.windows):
                block_events, every_event = OUTLIER_BLOCK, False
            else:
                block_events = max(model.windows)
        elif isinstance(model.featurizer, LabelShareFeaturizer) and all(w % block_events == 0 for w in model.windows):
            every_event = False  # a label's share builds up over many events: judged once per block
        self.windows = MultiScaleWindow(model.featurizer.n_features, model.windows, block_events, max_age,
                                        every_event)
        self._detail = getattr(model.featurizer, "statistics_detail", None)
        self.last_detail = np.full(len(model.windows), -1, dtype=np.int64)
        n_w, n_s = model.thresholds.shape
        self.last_values = np.full((n_w, n_s), np.nan)  # latest statistic per window
        self._widx = {w: j for j, w in enumerate(model.windows)}
        # windows judged per block while others are judged at every event (``_update_events``)
        self._long_j = np.asarray([j for j, w in enumerate(model.windows) if w not in self.windows.short], np.int64)

    def update(self, column: ItemColumn, n_events: int, times: F64) -> SignalUpdate:
        """Fold a batch of items into the windows; return per-event drift flags. Never blocks."""
        rows, items = event_rows(self.model.featurizer, column, n_events)
        return self.update_rows(rows, items, times)

    def update_rows(self, rows: F64, items: F64, times: F64) -> SignalUpdate:
        """Fold a batch of event rows (n, F) with item counts and event times; per-event drift flags."""
        if not self.windows.short:
            return self._update_blocks(rows, items, times)
        return self._update_events(rows, items, times)

    def update_sparse(self, n: int, positions: I64, values: F64, items: F64, times: F64) -> SignalUpdate:
        """``update_rows`` of ``n`` event rows that are zero except at ``positions`` (ascending, distinct),
        where they are ``values``: the same result, without an (n, F) array when every window is judged per
        block (``MultiScaleWindow.update_sparse``)."""
        if not self.windows.short:
            return self._judge_blocks(self.windows.update_sparse(n, positions, values, items, times), n)
        rows = np.zeros((n, values.shape[1]))
        rows[positions] = values
        return self._update_events(rows, items, times)

    def _stacked_statistics(self, found: list[WindowSums]) -> tuple[F64, I64 | None, list[int]]:
        """The statistics (and details: None without ``statistics_detail``) of every window of ``found``,
        stacked in its order, and where each window's rows start (one more: the end), from one call of the
        featurizer over the short windows' sums stacked and one over the long ones'. Every featurizer's statistics
        are row by row (a row's value depends on that row alone: ``tests/test_signal_batch.py``), so the values
        are those of one call per window, bit for bit, at two calls' fixed cost."""
        # the windows' rows stacked: the short windows' sums as they lie (one array, ``stacked_rows``), the long
        # windows' (a few rows a block) copied after them; one call per part
        short = 0
        while short < len(found) and found[short].window in self.windows.short:
            short += 1
        parts = [found[:short], found[short:]] if 0 < short < len(found) else [found]
        results = [self._part_statistics(part) for part in parts]
        if len(results) == 1:
            st, det = results[0]
        else:
            st = np.concatenate([r[0] for r in results])
            det = None if results[0][1] is None else np.concatenate([r[1] for r in results])
        starts = [0]
        for ws in found:
            starts.append(starts[-1] + ws.sums.shape[0])
        return st, det, starts

    def _part_statistics(self, found: list[WindowSums]) -> tuple[F64, I64 | None]:
        """The statistics (and details) of the windows of ``found`` stacked, from one call of the featurizer."""
        if len(found) == 1:
            sums, items = found[0].sums, found[0].items
        else:
            sums = stacked_rows([ws.sums for ws in found])
            items = stacked_rows([ws.items for ws in found])
        if self._detail is not None:
            st, det = self._detail(sums, items)
            return st, det
        return self.model.featurizer.statistics(sums, items), None

    def _statistics(self, found: list[WindowSums]) -> list[tuple[F64, I64 | None]]:
        """Each window's ``(statistics, detail)``: ``_stacked_statistics`` cut back into windows."""
        if not found:
            return []
        st, det, starts = self._stacked_statistics(found)
        return [(st[lo:hi], None if det is None else det[lo:hi]) for lo, hi in pairwise(starts)]

    def _update_events(self, rows: F64, items: F64, times: F64) -> SignalUpdate:
        """``update_rows`` when some windows are judged at every event. The windows' statistics, ratios and
        best statistics are computed stacked (one array operation for all windows, each row as it would be
        alone: the same values as window by window) and written into the per-event table in one assignment
        per kind of window."""
        n = rows.shape[0]
        thr = self.model.thresholds
        n_w = thr.shape[0]
        ratio = np.full((n, n_w), np.nan)
        stat_i = np.zeros((n, n_w), dtype=np.int64)
        value = np.full((n, n_w), np.nan)
        detail = np.full((n, n_w), -1, dtype=np.int64) if self._detail is not None else None
        # long windows hold their last value until their next block closes (also across batches)
        long_j = self._long_j
        if long_j.size:
            last = self.last_values[long_j]
            held = ~np.isnan(last).all(axis=1)
            if held.any():
                jj, last = long_j[held], last[held]
                r = last / thr[jj]
                k = np.argmax(r, axis=1)
                g = np.arange(jj.size)
                ratio[:, jj], stat_i[:, jj], value[:, jj] = r[g, k], k, last[g, k]
                if detail is not None:
                    detail[:, jj] = self.last_detail[jj]
        found = self.windows.update(rows, items, times)
        if found:
            st, det, starts = self._stacked_statistics(found)
            js = np.fromiter((self._widx[ws.window] for ws in found), np.int64, count=len(found))
            counts = np.diff(starts)
            r = st / thr[np.repeat(js, counts)]
            best = np.argmax(r, axis=1)
            m = np.arange(r.shape[0])
            r_best, v_best = r[m, best], st[m, best]
            short = [i for i, ws in enumerate(found) if ws.window in self.windows.short]
            # each at the events where it is full: a run of events (a slice of the table's column) unless
            # ``max_age`` dropped some of them
            runs = [i for i in short if found[i].positions[-1] - found[i].positions[0] + 1 == counts[i]]
            for i in runs:
                lo, hi, j = int(found[i].positions[0]), int(found[i].positions[-1]) + 1, int(js[i])
                a, b = starts[i], starts[i + 1]
                ratio[lo:hi, j], stat_i[lo:hi, j], value[lo:hi, j] = r_best[a:b], best[a:b], v_best[a:b]
                if detail is not None and det is not None:
                    detail[lo:hi, j] = det[a:b]
            scattered = [i for i in short if i not in runs]
            if scattered:
                at = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in scattered])
                pos = np.concatenate([found[i].positions for i in scattered])
                col = np.repeat(js[scattered], counts[scattered])
                ratio[pos, col], stat_i[pos, col], value[pos, col] = r_best[at], best[at], v_best[at]
                if detail is not None and det is not None:
                    detail[pos, col] = det[at]
            # long ones: each block's value forward-filled until the next block closes; windows closing at the
            # same blocks (most: all once full) filled together
            fill: dict[bytes, list[int]] = {}
            for i, ws in enumerate(found):
                if ws.window not in self.windows.short:
                    fill.setdefault(ws.positions.tobytes(), []).append(i)
            for group in fill.values():
                positions = found[group[0]].positions
                first = int(positions[0])
                src = np.searchsorted(positions, np.arange(first, n), side="right") - 1
                at = (np.asarray([starts[i] for i in group])[None, :] + src[:, None])  # (n - first, windows)
                col = js[group]
                ratio[first:, col], stat_i[first:, col], value[first:, col] = r_best[at], best[at], v_best[at]
                if detail is not None and det is not None:
                    detail[first:, col] = det[at]
            ends = np.asarray(starts[1:]) - 1
            self.last_values[js] = st[ends]
            if det is not None:
                self.last_detail[js] = det[ends]
        safe = nan_to_minus_inf(ratio)
        best_w = np.argmax(safe, axis=1)
        rows_i = np.arange(n)
        best_ratio = safe[rows_i, best_w]
        any_full = np.isfinite(best_ratio)
        return SignalUpdate(
            drift=best_ratio > 1.0,
            ratio=np.where(any_full, best_ratio, 0.0),
            window=np.where(any_full, np.asarray(self.model.windows)[best_w], 0).astype(np.int64),
            stat=stat_i[rows_i, best_w],
            value=np.where(any_full, value[rows_i, best_w], np.nan),
            detail=None if detail is None else np.where(any_full, detail[rows_i, best_w], -1),
        )

    def _update_blocks(self, rows: F64, items: F64, times: F64) -> SignalUpdate:
        """``update_rows`` when every window is judged once per block."""
        return self._judge_blocks(self.windows.update(rows, items, times), rows.shape[0])

    def _judge_blocks(self, found: list[WindowSums], n: int) -> SignalUpdate:
        """The result for ``n`` events when every window is judged once per block (``found``: the windows that
        closed in them): the state changes only where a block closes, so the windows are compared at those
        few positions and the result is spread over the events."""
        thr = self.model.thresholds
        n_w, n_s = thr.shape
        ends = np.unique(np.concatenate([ws.positions for ws in found])) if found else np.zeros(0, np.int64)
        m = ends.shape[0] + 1  # row 0: the values carried in from before this batch
        values = np.repeat(self.last_values[None, :, :], m, axis=0)  # (m, n_w, n_s)
        details = np.repeat(self.last_detail[None, :], m, axis=0)
        for ws, (st, det) in zip(found, self._statistics(found), strict=True):
            j = self._widx[ws.window]
            at = int(np.searchsorted(ends, ws.positions[0])) + 1  # a full window stays full: a suffix of ends
            values[at:, j] = st
            if det is not None:
                details[at:, j] = det
            self.last_values[j] = st[-1]
            if det is not None:
                self.last_detail[j] = det[-1]
        ratio = nan_to_minus_inf(values / thr[None, :, :])  # (m, n_w, n_s)
        flat = ratio.reshape(m, n_w * n_s)
        best = np.argmax(flat, axis=1)
        rows_i = np.arange(m)
        best_ratio = flat[rows_i, best]
        w_i, s_i = best // n_s, best % n_s
        full = np.isfinite(best_ratio)
        row_of = np.searchsorted(ends, np.arange(n), side="right")
        r = np.where(full, best_ratio, 0.0)[row_of]
        return SignalUpdate(
            drift=r > 1.0,
            ratio=r,
            window=np.where(full, np.asarray(self.model.windows)[w_i], 0).astype(np.int64)[row_of],
            stat=s_i.astype(np.int64)[row_of],
            value=np.where(full, values[rows_i, w_i, s_i], np.nan)[row_of],
            detail=None if self._detail is None else np.where(full, details[rows_i, w_i], -1)[row_of],
        )

    def current(self) -> dict[str, Any]:
        """The latest statistic of every (window, statistic), with its threshold."""
        out = []
        for j, w in enumerate(self.model.windows):
            for k, name in enumerate(self.model.stat_names):
                v = self.last_values[j, k]
                out.append({"window": w, "statistic": name,
                            "value": None if np.isnan(v) else float(v),
                            "threshold": float(self.model.thresholds[j, k])})
        return {"windows": out}

    def state(self) -> dict[str, Any]:
        return {"windows": self.windows.state(), "last_values": self.last_values, "last_detail": self.last_detail}

    def load_state(self, s: dict[str, Any]) -> None:
        self.windows.load_state(s["windows"])
        self.last_values = np.asarray(s["last_values"], np.float64)
        if "last_detail" in s:
            self.last_detail = np.asarray(s["last_detail"], np.int64).reshape(len(self.model.windows))
