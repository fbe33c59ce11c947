"""Thresholds from the reference itself: resampled null statistics plus a generalised-Pareto tail.

``calibrate_threshold(samples, tail_probability)`` returns the value that a statistic drawn from the
null distribution (represented by ``samples``) exceeds with probability ``tail_probability``. When that
probability is within reach of the samples (at least 50 samples beyond it) the empirical quantile is
used; beyond, a generalised Pareto distribution is fitted to the exceedances over a high quantile
(peaks over threshold) and extrapolated, as extreme-value theory prescribes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

F64 = npt.NDArray[np.float64]

TAIL_FRACTION = 0.05  # exceedances over the 95th percentile feed the tail fit
MIN_EXCEEDANCES = 50


@dataclass(frozen=True, slots=True)
class TailFit:
    """A fitted tail: ``P(X > u + y) = p_u * (1 + xi * y / sigma) ** (-1 / xi)``."""

    u: float
    p_u: float
    xi: float
    sigma: float
    n: int

    def quantile(self, tail_probability: float) -> float:
        q = self.p_u / tail_probability
        if q <= 1:
            return self.u
        if abs(self.xi) < 1e-9:
            return self.u + self.sigma * float(np.log(q))
        return self.u + self.sigma / self.xi * (q**self.xi - 1.0)


def fit_tail(samples: F64, tail_fraction: float = TAIL_FRACTION) -> TailFit:
    """Fit a generalised Pareto distribution to the top ``tail_fraction`` of ``samples``.

    Raises ValueError when fewer than 50 exceedances are available.
    """
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = x.size
    k = int(n * tail_fraction)
    if k < MIN_EXCEEDANCES:
        raise ValueError(f"need at least {MIN_EXCEEDANCES} exceedances for a tail fit, got {k} of {n} samples")
    u = float(x[n - k - 1])
    y = x[n - k:] - u
    if np.ptp(y) <= 0 or y.max() <= 0:
        return TailFit(u, k / n, 0.0, 1e-12, n)
    xi, _, sigma = stats.genpareto.fit(y, floc=0.0)
    # a fit whose support ends before the largest sample is inconsistent; fall back to exponential
    if xi < 0 and -sigma / xi < y.max():
        xi, sigma = 0.0, float(np.mean(y))
    # err towards fewer false alarms: take the shape one standard error above its estimate
    # (the MLE's asymptotic standard error is (1 + xi) / sqrt(k)); the scale is refitted for that shape
    xi_safe = float(xi) + (1.0 + float(xi)) / np.sqrt(k)
    sigma_safe = _scale_for_shape(y, xi_safe)
    return TailFit(u, k / n, xi_safe, sigma_safe, n)


def _scale_for_shape(y: F64, xi: float) -> float:
    """Maximum-likelihood GPD scale for a fixed shape (1-D bounded search)."""
    from scipy.optimize import minimize_scalar

    def nll(log_sigma: float) -> float:
        ll = float(np.sum(stats.genpareto.logpdf(y, xi, loc=0.0, scale=np.exp(log_sigma))))
        return -ll if np.isfinite(ll) else 1e300  # outside the support of a bounded tail

    m = float(np.mean(y)) or 1e-12
    res = minimize_scalar(nll, bounds=(np.log(m) - 5, np.log(m) + 5), method="bounded")
    return float(np.exp(res.x))


def calibrate_threshold(samples: F64, tail_probability: float) -> float:
    """The value exceeded under the null with probability ``tail_probability`` (see the module docstring)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples to calibrate on")
    if tail_probability * x.size >= MIN_EXCEEDANCES:
        return float(np.quantile(x, 1.0 - tail_probability))
    return fit_tail(x).quantile(tail_probability)
