"""Label-free precision estimate: calibration maps against oracles, and behaviour on synthetic data."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import isotonic_regression

from nlpmon.quality.estimate import Calibrator, ScoreWindow, calibration_gap, estimated_precision, fit_curve
from nlpmon.state import decode_state, encode_state


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0]), st.booleans()),
                min_size=1, max_size=40))
def test_isotonic_equals_scipy(pairs: list[tuple[float, bool]]) -> None:
    s = np.array([p[0] for p in pairs])
    c = np.array([p[1] for p in pairs])
    x, y = fit_curve(s, c, "isotonic")
    xs, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    want = isotonic_regression(np.bincount(inv, weights=c) / counts, weights=counts.astype(float)).x
    assert np.array_equal(x, xs)
    np.testing.assert_allclose(y, want, atol=1e-12)
    assert np.all(np.diff(y) >= -1e-12)


def test_histogram_binning_by_hand() -> None:
    s = np.array([0.05, 0.05, 0.55, 0.55, 0.55, 0.95])
    c = np.array([0, 1, 1, 1, 0, 1], dtype=bool)
    x, y = fit_curve(s, c, "histogram", bins=2)
    assert np.interp(0.2, x, y) == 0.5  # bin [0, 0.5): 1 of 2 correct
    assert np.interp(0.7, x, y) == 0.75  # bin [0.5, 1]: 3 of 4
    x, y = fit_curve(np.array([0.9]), np.array([True]), "histogram", bins=4)
    assert np.interp(0.1, x, y) == 0.125  # empty bin: its centre, i.e. the raw confidence


def synthetic(rng: np.random.Generator, n: int, power: float = 1.0,
              labels: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spans whose confidence s is correct with probability s**power (power 1: calibrated)."""
    lab = rng.integers(0, labels, n)
    s = rng.uniform(0.2, 1.0, n)
    return lab, s, rng.random(n) < s**power


def test_calibrated_by_construction_estimate_matches_realised() -> None:
    rng = np.random.default_rng(1)
    cal = Calibrator("isotonic").fit(*synthetic(rng, 20000))
    lab, s, ok = synthetic(rng, 6000)
    est, n = estimated_precision(cal, lab, s, 3)
    realised = np.bincount(lab, weights=ok, minlength=3) / n
    se = np.sqrt(realised * (1 - realised) / n)
    assert np.all(np.abs(est - realised) < 4 * se + 0.01)  # sampling error + calibration-fit error
    gap, overall, _ = calibration_gap(cal, lab, s, ok, 3)
    assert np.all(np.abs(gap) < 4 * se + 0.01) and abs(overall[2]) < 0.015


def test_gap_grows_with_over_confidence() -> None:
    rng = np.random.default_rng(2)
    cal = Calibrator("histogram", bins=20).fit(*synthetic(rng, 20000))
    gaps = []
    for power in (1.0, 2.0, 4.0):
        lab, s, ok = synthetic(rng, 6000, power)
        gaps.append(calibration_gap(cal, lab, s, ok, 3)[1][2])
    assert abs(gaps[0]) < 0.015
    assert gaps[1] < -0.08 and gaps[2] < gaps[1] - 0.08


def test_calibration_corrects_a_miscalibrated_model_and_uncalibrated_is_flagged() -> None:
    rng = np.random.default_rng(3)
    ref = synthetic(rng, 20000, power=2.0)  # over-confident already on the reference
    lab, s, ok = synthetic(rng, 6000, power=2.0)
    raw = Calibrator()
    assert not raw.calibrated
    np.testing.assert_array_equal(raw.apply(lab, s), s)
    fitted = Calibrator(min_per_label=1000).fit(*ref)
    assert fitted.calibrated and set(fitted.curves) == {0, 1, 2}
    assert calibration_gap(raw, lab, s, ok, 3)[1][2] < -0.08
    assert abs(calibration_gap(fitted, lab, s, ok, 3)[1][2]) < 0.015
    again = Calibrator.from_state(decode_state(encode_state(fitted.state())))
    np.testing.assert_array_equal(again.apply(lab, s), fitted.apply(lab, s))


def test_unscored_spans_are_left_out() -> None:
    cal = Calibrator()
    est, n = estimated_precision(cal, np.array([0, 0, 1]), np.array([0.5, np.nan, np.nan]), 2)
    assert n.tolist() == [1, 0] and est[0] == 0.5 and np.isnan(est[1])


def test_score_window_count_and_age() -> None:
    w = ScoreWindow(max_documents=2, max_age=10)
    w.add(np.array([0.0, 5.0, 6.0]), np.array([0, 1, 1, 2]), np.array([0, 1, 2, 0]), np.array([.1, .2, .3, .4]))
    lab, s = w.spans()
    assert len(w) == 2 and lab.tolist() == [1, 2, 0] and s.tolist() == [.2, .3, .4]
    w.expire(15.5)  # the document at 5 is more than 10 s old
    w = ScoreWindow.from_state(decode_state(encode_state(w.state())))
    assert len(w) == 1 and w.spans()[1].tolist() == [.4]
