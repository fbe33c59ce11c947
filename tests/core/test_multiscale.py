"""MultiScaleWindow against brute-force recomputation, for any batch split; state round-trips."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nlpmon.sketches import MultiScaleWindow
from nlpmon.sketches.multiscale import stacked_rows

WINDOWS = (3, 5, 10, 20, 40)
BLOCK = 5


def brute(rows: np.ndarray, items: np.ndarray, w: int, end: int) -> tuple[np.ndarray, float]:
    return rows[end - w + 1:end + 1].sum(axis=0), float(items[end - w + 1:end + 1].sum())


def run(rows: np.ndarray, items: np.ndarray, times: np.ndarray, cuts: list[int],
        max_age: float | None = None) -> dict[int, dict[int, tuple[np.ndarray, float]]]:
    win = MultiScaleWindow(rows.shape[1], WINDOWS, BLOCK, max_age)
    out: dict[int, dict[int, tuple[np.ndarray, float]]] = {w: {} for w in WINDOWS}
    bounds = [0, *sorted(set(cuts)), rows.shape[0]]
    for a, b in itertools.pairwise(bounds):
        if a == b:
            continue
        for ws in win.update(rows[a:b], items[a:b], times[a:b]):
            for p, s, it in zip(ws.positions, ws.sums, ws.items, strict=True):
                out[ws.window][a + int(p)] = (s, float(it))
    return out


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 120), seed=st.integers(0, 10**6), cuts=st.lists(st.integers(0, 120), max_size=6))
def test_window_sums_equal_recomputation_for_any_batch_split(n: int, seed: int, cuts: list[int]) -> None:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, 3))
    items = rng.integers(0, 3, n).astype(float)
    got = run(rows, items, np.full(n, np.nan), [c for c in cuts if c < n])
    for w in WINDOWS:
        if w <= BLOCK:
            expected_ends = list(range(w - 1, n))
        else:  # long windows close at block ends
            expected_ends = [e for e in range(n) if (e + 1) % BLOCK == 0 and e + 1 >= w]
        assert sorted(got[w]) == expected_ends
        for end in expected_ends:
            s, it = brute(rows, items, w, end)
            np.testing.assert_allclose(got[w][end][0], s, atol=1e-9)
            assert got[w][end][1] == it


def test_max_age_excludes_windows_spanning_old_events() -> None:
    n = 60
    rows = np.ones((n, 1))
    times = np.arange(n, dtype=float)
    times[30:] += 1000.0  # a long pause after event 29
    got = run(rows, np.ones(n), times, [17, 40], max_age=100.0)
    for w in WINDOWS:
        for end, (_, items) in got[w].items():
            start = end - w + 1
            fresh = times[end] - times[start] <= 100.0
            assert fresh == (not np.isnan(items)), (w, end)  # long windows: stale ones come as NaN
    assert 29 in got[10] and 31 not in got[10] and 39 in got[10]
    assert np.isnan(got[40][39][1]) and not np.isnan(got[20][49][1])


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 100), cut=st.integers(0, 100), seed=st.integers(0, 1000))
def test_state_round_trip_resumes_exactly(n: int, cut: int, seed: int) -> None:
    cut = min(cut, n)
    rng = np.random.default_rng(seed)
    rows, items, times = rng.normal(size=(n, 2)), np.ones(n), np.arange(n, dtype=float)
    whole = MultiScaleWindow(2, WINDOWS, BLOCK)
    a = whole.update(rows, items, times)
    first = MultiScaleWindow(2, WINDOWS, BLOCK)
    first.update(rows[:cut], items[:cut], times[:cut])
    resumed = MultiScaleWindow(2, WINDOWS, BLOCK)
    resumed.load_state(first.state())
    b = resumed.update(rows[cut:], items[cut:], times[cut:])
    tail = {(ws.window, int(p) + cut): s for ws in b for p, s in zip(ws.positions, ws.sums, strict=True)}
    full = {(ws.window, int(p)): s for ws in a for p, s in zip(ws.positions, ws.sums, strict=True)
            if int(p) >= cut}
    assert tail.keys() == full.keys()
    for k in full:
        np.testing.assert_allclose(tail[k], full[k], atol=1e-9)


def test_current_sums_merge_blocks_like_one_sketch() -> None:
    """Fed in odd batches that cut blocks (so block sums are merged from partial sums, across a state round
    trip too), the window's current sums equal those of one window fed everything at once and the brute
    force. Integer-valued rows: float64 sums are exact in any order, so the comparison is exact."""
    rng = np.random.default_rng(1)
    n = 97
    rows = rng.integers(-50, 50, size=(n, 4)).astype(np.float64)
    items = rng.integers(0, 3, n).astype(np.float64)
    times = np.zeros(n)
    one = MultiScaleWindow(4, WINDOWS, BLOCK)
    one.update(rows, items, times)
    merged = MultiScaleWindow(4, WINDOWS, BLOCK)
    for a, b in itertools.pairwise([0, 3, 4, 11, 37, 38, 60, n]):
        merged.update(rows[a:b], items[a:b], times[a:b])
        if b == 37:  # mid-block: the open block's partial sum goes through the state
            restored = MultiScaleWindow(4, WINDOWS, BLOCK)
            restored.load_state(merged.state())
            merged = restored
    for w in WINDOWS:
        end = n if w <= BLOCK else n - n % BLOCK  # long windows: whole blocks only (events 0..94)
        want_sums, want_items = rows[end - w:end].sum(axis=0).tolist(), float(items[end - w:end].sum())
        for win in (one, merged):
            got = win.current_sums(w)
            assert got is not None, w
            assert got[0].tolist() == want_sums and got[1] == want_items, w
    fresh = MultiScaleWindow(4, WINDOWS, BLOCK)
    fresh.update(rows[:7], items[:7], times[:7])  # one whole block and a partial one
    assert fresh.current_sums(10) is None and fresh.current_sums(40) is None
    five = fresh.current_sums(5)
    assert five is not None and five[0].tolist() == rows[2:7].sum(axis=0).tolist()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 120), seed=st.integers(0, 10**6), cuts=st.lists(st.integers(0, 120), max_size=6),
       every_event=st.booleans(), max_age=st.sampled_from([None, 30.0]))
def test_sparse_rows_give_the_windows_of_the_dense_rows_for_any_batch_split(
        n: int, seed: int, cuts: list[int], every_event: bool, max_age: float | None) -> None:
    """update_sparse (rows zero except at some positions) against update on the same rows made dense: the
    same windows at the same positions with the same sums, across batch splits and, with every_event=False,
    with every window judged per block (the sparse path). The sparse block sums add the non-zero rows one
    after the other, numpy's reduceat in its own unrolled order: equal to a few ulps (1e-12 relative)."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, 3)) * (rng.random((n, 1)) < 0.2)  # about 1 row in 5 non-zero
    items, times = rng.integers(0, 3, n).astype(float), np.cumsum(rng.exponential(2.0, n))
    windows = (5, 10, 20, 40)
    dense = MultiScaleWindow(3, windows, BLOCK, max_age, every_event)
    sparse = MultiScaleWindow(3, windows, BLOCK, max_age, every_event)
    bounds = [0, *sorted({min(c, n) for c in cuts}), n]
    for a, b in itertools.pairwise(bounds):
        if a == b:
            continue
        nz = np.flatnonzero(np.any(rows[a:b] != 0.0, axis=1))
        want = dense.update(rows[a:b], items[a:b], times[a:b])
        got = sparse.update_sparse(b - a, nz, rows[a:b][nz], items[a:b], times[a:b])
        assert [(g.window, g.positions.tolist()) for g in got] == [(w.window, w.positions.tolist()) for w in want]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g.sums, w.sums, rtol=1e-12, atol=1e-12)
            assert np.array_equal(g.items, w.items, equal_nan=True)
    for w in windows:
        d, s = dense.current_sums(w), sparse.current_sums(w)
        assert (d is None) == (s is None)
        if d is not None and s is not None:
            np.testing.assert_allclose(s[0], d[0], rtol=1e-12, atol=1e-12)
            assert d[1] == s[1]


def test_short_window_sums_are_stacked_without_a_copy_and_equal_their_concatenation() -> None:
    """``stacked_rows`` reads the short windows' sums where ``MultiScaleWindow`` wrote them (one array, one window
    after the other): the values of ``np.concatenate``; parts that do not lie so are concatenated."""
    rng = np.random.default_rng(5)
    msw = MultiScaleWindow(3, (2, 5, 10, 20), block_events=10)
    msw.update(rng.random((7, 3)), np.ones(7), np.arange(7.0))
    found = msw.update(rng.random((30, 3)), rng.integers(0, 3, 30).astype(float), np.arange(7.0, 37.0))
    short = [ws for ws in found if ws.window in msw.short]
    assert len(short) == 3 and len(found) > len(short)
    for pick in ("sums", "items"):
        parts = [getattr(ws, pick) for ws in short]
        got = stacked_rows(parts)
        want = np.concatenate(parts)
        assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()
        assert np.shares_memory(got, parts[0])  # a view: no copy
    mixed = [ws.sums for ws in found]  # the long windows' sums are arrays of their own: copied
    got = stacked_rows(mixed)
    assert got.tobytes() == np.concatenate(mixed).tobytes() and not np.shares_memory(got, mixed[0])
    gap = [short[0].sums, short[2].sums]  # not adjacent: copied
    assert stacked_rows(gap).tobytes() == np.concatenate(gap).tobytes()
    assert not np.shares_memory(stacked_rows(gap), gap[0])
