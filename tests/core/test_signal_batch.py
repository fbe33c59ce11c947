"""Signal windows judge every window of a batch with one stacked statistics call: the same results, bit for bit,
as one call per window (the implementation before, kept here as the oracle), for any batch split; and a whole
monitor so judged gives the oracle's alarms, state, report and snapshots on a stream with a domain switch."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from nlpmon.demo import SyntheticStream
from nlpmon.drift.clusters import ClusterFeaturizer
from nlpmon.drift.distribution import BinnedFeaturizer, CategoricalFeaturizer
from nlpmon.drift.outliers import OutlierShareFeaturizer
from nlpmon.drift.shares import EventShareFeaturizer
from nlpmon.drift.signal import SignalModel, SignalUpdate, SignalWindow, nan_to_minus_inf
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.sketches.multiscale import WindowSums
from nlpmon.state import decode_state

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
CONFIG = MonitorConfig(calibration_splits=3, auto_baseline_events=600, min_reference_events=200)


@pytest.fixture(scope="module")
def models() -> dict[str, SignalModel]:
    """Every signal of a profile calibrated on 600 synthetic NER events."""
    ms = MonitorSet(CONFIG)
    s = SyntheticStream(seed=3)
    ms.process_lines([json.dumps(e).encode() for e in s.events(600, "reference")])
    ms.process_lines([json.dumps(e).encode() for e in s.events(1)])
    profile = ms.monitors[("demo-ner", "1")].profile
    assert profile is not None and len(profile.signals) >= 10
    return {name: sig for name, sig in profile.signals.items()}


def random_rows(model: SignalModel, n: int, rng: np.random.Generator) -> tuple[F64, F64]:
    """Event rows (n, F) and item counts (n,) of the kind the signal's featurizer sums: counts where it counts,
    real values where it averages; some events without items."""
    f = model.featurizer.n_features
    items = rng.integers(0, 4, n).astype(np.float64)
    if isinstance(model.featurizer, OutlierShareFeaturizer | EventShareFeaturizer):
        rows = np.minimum(rng.integers(0, 3, (n, f)), items[:, None]).astype(np.float64)
    elif isinstance(model.featurizer, ClusterFeaturizer):
        rows = rng.standard_normal((n, f)) * (items[:, None] > 0)
    elif isinstance(model.featurizer, CategoricalFeaturizer | BinnedFeaturizer):  # one count per item
        rows = rng.multinomial(1, np.full(f, 1.0 / f), n).astype(np.float64) * items[:, None]
    else:  # embedding signals: real-valued sums
        rows = rng.standard_normal((n, f)) * (items[:, None] > 0)
    return rows, items


def assert_same_update(a: SignalUpdate, b: SignalUpdate) -> None:
    for field in ("drift", "ratio", "window", "stat", "value", "detail"):
        x, y = getattr(a, field), getattr(b, field)
        if x is None or y is None:
            assert x is None and y is None, field
            continue
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), field


@pytest.mark.parametrize("max_age", [None, 0.4])
def test_every_signal_gives_the_per_window_results_bit_for_bit_for_any_batch_split(
        models: dict[str, SignalModel], max_age: float | None) -> None:
    rng = np.random.default_rng(7)
    for name, model in models.items():
        stacked = SignalWindow(model, CONFIG.block_events, max_age)
        oracle = SignalWindow(model, CONFIG.block_events, max_age)
        t = 0.0
        for _ in range(40):  # batches of 1 to 130 events: windows fill, blocks close inside and across batches
            n = int(rng.integers(1, 131))
            rows, items = random_rows(model, n, rng)
            times = t + 0.01 * np.arange(n)
            if rng.random() < 0.2:
                times[rng.integers(n)] = np.nan  # an event without a time
            t += 0.01 * n
            got = stacked.update_rows(rows, items, times)
            want = (per_window_update_events(oracle, rows, items, times) if oracle.windows.short
                    else per_window_update_blocks(oracle, rows, items, times))
            assert_same_update(got, want)
            assert np.array_equal(stacked.last_values, oracle.last_values, equal_nan=True), name
            assert np.array_equal(stacked.last_detail, oracle.last_detail), name
        assert np.isfinite(stacked.last_values).any(), name  # windows were full: something was compared


def test_statistics_are_row_by_row(models: dict[str, SignalModel]) -> None:
    """What stacking relies on: a window's statistics depend on its own row only (also empty and NaN rows)."""
    rng = np.random.default_rng(11)
    for name, model in models.items():
        sums, items = random_rows(model, 60, rng)
        sums, items = np.cumsum(sums, axis=0), np.cumsum(items)  # window-like sums
        items[:3] = 0.0
        sums[:3] = 0.0
        sums[5], items[5] = np.nan, np.nan  # a window too old (``max_age``)
        feat = model.featurizer
        whole = feat.statistics(sums, items)
        parts = np.concatenate([feat.statistics(sums[i:i + k], items[i:i + k])
                                for i, k in ((0, 1), (1, 7), (8, 52))])
        assert np.array_equal(whole, parts, equal_nan=True), name
        detail = getattr(feat, "statistics_detail", None)
        if detail is not None:
            assert np.array_equal(detail(sums, items)[1], np.concatenate(
                [detail(sums[:10], items[:10])[1], detail(sums[10:], items[10:])[1]])), name


def test_nan_to_minus_inf_is_numpys_nan_to_num() -> None:
    x = np.array([[np.nan, np.inf, -np.inf, 0.0], [1e308, -1e308, 2.5, -0.0]])
    want = np.nan_to_num(x, nan=-np.inf)
    got = nan_to_minus_inf(x)
    assert np.array_equal(got, want) and got.dtype == want.dtype
    assert np.array_equal(np.signbit(got), np.signbit(want))


def test_threshold_counts_are_the_clipped_counts(models: dict[str, SignalModel]) -> None:
    items = np.array([np.nan, np.inf, -np.inf, -3.0, 0.0, 1.0, 7.0, 1e9, 2.5])
    for model in models.values():
        feat = model.featurizer
        if isinstance(feat, OutlierShareFeaturizer | EventShareFeaturizer):
            top = feat.count_threshold.size - 1
            with np.errstate(invalid="ignore"):
                want = feat.count_threshold[np.clip(np.nan_to_num(items, nan=0.0), 0, top).astype(np.int64)]
            assert np.array_equal(feat.threshold_counts(items), want)


# -- the implementation before stacking: one statistics call per window ------------------------------------
def per_window_update_events(self: SignalWindow, rows: F64, items: F64, times: F64) -> SignalUpdate:
    n = rows.shape[0]
    thr = self.model.thresholds
    n_w = thr.shape[0]
    ratio = np.full((n, n_w), np.nan)
    stat_i = np.zeros((n, n_w), dtype=np.int64)
    value = np.full((n, n_w), np.nan)
    detail = np.full((n, n_w), -1, dtype=np.int64) if self._detail is not None else None
    # long windows hold their last value until their next block closes (also across batches)
    for j, w in enumerate(self.model.windows):
        if w not in self.windows.short and not np.isnan(self.last_values[j]).all():
            r = self.last_values[j] / thr[j]
            k = int(np.argmax(r))
            ratio[:, j], stat_i[:, j], value[:, j] = r[k], k, self.last_values[j, k]
            if detail is not None:
                detail[:, j] = self.last_detail[j]
    fill: tuple[I64, int, I64] | None = None
    for ws in self.windows.update(rows, items, times):
        j = self._widx[ws.window]
        if self._detail is not None:
            st, det = self._detail(ws.sums, ws.items)
        else:
            st, det = self.model.featurizer.statistics(ws.sums, ws.items), None
        r = st / thr[j]
        best = np.argmax(r, axis=1)
        m = np.arange(r.shape[0])
        if ws.window in self.windows.short:
            ratio[ws.positions, j] = r[m, best]
            stat_i[ws.positions, j] = best
            value[ws.positions, j] = st[m, best]
            if detail is not None and det is not None:
                detail[ws.positions, j] = det
        else:  # forward-fill each block's value until the next block closes
            if fill is None or not np.array_equal(fill[0], ws.positions):  # the same for most windows
                first = int(ws.positions[0])
                fill = (ws.positions, first, np.searchsorted(ws.positions, np.arange(first, n), side="right") - 1)
            _, first, src = fill
            ratio[first:, j] = r[m, best][src]
            stat_i[first:, j] = best[src]
            value[first:, j] = st[m, best][src]
            if detail is not None and det is not None:
                detail[first:, j] = det[src]
        self.last_values[j] = st[-1]
        if det is not None:
            self.last_detail[j] = det[-1]
    safe = np.nan_to_num(ratio, nan=-np.inf)
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

def per_window_update_blocks(self: SignalWindow, rows: F64, items: F64, times: F64) -> SignalUpdate:
    """``update_rows`` when every window is judged once per block."""
    return per_window_judge_blocks(self, self.windows.update(rows, items, times), rows.shape[0])

def per_window_judge_blocks(self: SignalWindow, found: list[WindowSums], n: int) -> SignalUpdate:
    """The result for ``n`` events when every window is judged once per block (``found``: the windows that
    closed in them): the state changes only where a block closes, so the windows are compared at those
    few positions and the result is spread over the events."""
    thr = self.model.thresholds
    n_w, n_s = thr.shape
    ends = np.unique(np.concatenate([ws.positions for ws in found])) if found else np.zeros(0, np.int64)
    m = ends.shape[0] + 1  # row 0: the values carried in from before this batch
    values = np.repeat(self.last_values[None, :, :], m, axis=0)  # (m, n_w, n_s)
    details = np.repeat(self.last_detail[None, :], m, axis=0)
    for ws in found:
        j = self._widx[ws.window]
        if self._detail is not None:
            st, det = self._detail(ws.sums, ws.items)
        else:
            st, det = self.model.featurizer.statistics(ws.sums, ws.items), None
        at = int(np.searchsorted(ends, ws.positions[0])) + 1  # a full window stays full: a suffix of ends
        values[at:, j] = st
        if det is not None:
            details[at:, j] = det
        self.last_values[j] = st[-1]
        if det is not None:
            self.last_detail[j] = det[-1]
    ratio = np.nan_to_num(values / thr[None, :, :], nan=-np.inf)  # (m, n_w, n_s)
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


def run_stream(config: MonitorConfig, ref: list[bytes], lines: list[bytes], sizes: list[int],
               snapshot: bytes | None = None) -> tuple[list[list[dict[str, Any]]], dict[str, Any], bytes, bytes]:
    """Alarms per batch, report, final snapshot and the snapshot after the first batch of ``lines`` (calibrated from
    ``ref``, or restored from ``snapshot``)."""
    ms = MonitorSet(config)
    if snapshot is None:
        ms.process_lines(ref)
    else:
        ms.restore(snapshot)
    alarms, first, i = [], b"", 0
    for k in sizes:
        alarms.append([a.as_dict() for a in ms.process_lines(lines[i:i + k]).alarms])
        i += k
        first = first or ms.snapshot()
    return alarms, ms.report(), ms.snapshot(), first


def comparable(x: Any) -> Any:
    """A state or report with its arrays as bytes, NaN comparable, and without the calibration's wall time."""
    if isinstance(x, dict):
        return {k: comparable(v) for k, v in x.items() if k != "calibration_seconds"}
    if isinstance(x, list | tuple):
        return [comparable(v) for v in x]
    if isinstance(x, np.ndarray):
        return (x.dtype.str, x.shape, x.tobytes())
    if isinstance(x, float) and x != x:
        return "nan"
    return x


@pytest.mark.parametrize("max_age", [None, 30.0])
def test_a_monitor_judging_window_by_window_gives_the_same_alarms_state_report_and_snapshots(
        max_age: float | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole monitor on a stream with a domain switch, its windows judged by the per-window oracle below and
    by the code: the same alarms, report and state, also when each restores the other's snapshot."""
    config = MonitorConfig(calibration_splits=3, max_window_age_seconds=max_age)
    s = SyntheticStream(seed=11, dim=64, drift_at=1500 + 1200)  # the domain switches at production event 1,200
    ref = [json.dumps(e).encode() for e in s.events(1500, "reference")]
    lines = [json.dumps(e).encode() for e in s.events(2400)]
    sizes = [700, 1, 999, 700]
    with monkeypatch.context() as m:
        m.setattr(SignalWindow, "_update_events", per_window_update_events)
        m.setattr(SignalWindow, "_update_blocks", per_window_update_blocks)
        m.setattr(SignalWindow, "_judge_blocks", per_window_judge_blocks)
        oracle = run_stream(config, ref, lines, sizes)
    code = run_stream(config, ref, lines, sizes)
    assert sum(map(len, oracle[0])) >= 3  # the switch is detected: alarms to compare
    assert code[0] == oracle[0]
    assert comparable(code[1]) == comparable(oracle[1])
    assert comparable(decode_state(code[2])) == comparable(decode_state(oracle[2]))
    with monkeypatch.context() as m:
        m.setattr(SignalWindow, "_update_events", per_window_update_events)
        m.setattr(SignalWindow, "_update_blocks", per_window_update_blocks)
        m.setattr(SignalWindow, "_judge_blocks", per_window_judge_blocks)
        oracle_resumed = run_stream(config, ref, lines[700:], sizes[1:], code[3])
    code_resumed = run_stream(config, ref, lines[700:], sizes[1:], oracle[3])
    assert code_resumed[0] == oracle_resumed[0] == oracle[0][1:]
    assert comparable(decode_state(code_resumed[2])) == comparable(decode_state(oracle_resumed[2]))
    assert comparable(code_resumed[1]) == comparable(oracle_resumed[1])
