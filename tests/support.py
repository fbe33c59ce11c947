"""Helpers shared by the tests: bounded waiting, and float32 tolerances derived from the arithmetic.

Float32 tolerances. A float32 sum (or dot product) of ``n`` terms, evaluated in any order, is within
``gamma_n * sum(|terms|)`` of the exact value, with ``gamma_n ~ n * u`` and ``u = eps / 2`` (Higham,
Accuracy and Stability of Numerical Algorithms, 3.1). Two evaluations in different orders (another batch
shape, another BLAS kernel, another thread split) therefore differ by at most ``n * eps * sum(|terms|)``.
That is what the helpers below return; a test compares through them or through the same batch shape
(same operations in the same order: exact). Integers and values exact by construction stay exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F32_EPS = float(np.finfo(np.float32).eps)  # 2**-23 ~ 1.19e-7


def f32_sum_rtol(terms: int) -> float:
    """Relative difference two float32 evaluations of a sum of ``terms`` terms may show (relative to the sum
    of the terms' absolute values, so also relative to the result when there is no cancellation)."""
    return terms * F32_EPS


def f32_matmul_atol(a: npt.ArrayLike, b: npt.ArrayLike, extra_roundings: int = 0) -> npt.NDArray[np.float64]:
    """Elementwise bound on the difference between two float32 evaluations of ``a @ b`` (or between one and
    the exact product): ``n * eps * (|a| @ |b|)`` with ``n`` the inner dimension. ``extra_roundings`` adds
    the rounding of operands stored in float32 on one side only (each costs ``eps / 2`` relative)."""
    a64, b64 = np.abs(np.asarray(a, np.float64)), np.abs(np.asarray(b, np.float64))
    n = a64.shape[-1]
    return (n + extra_roundings / 2) * F32_EPS * (a64 @ b64)


def wait_until(cond: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    """Poll ``cond`` until it returns something truthy (returned); fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def process_gone(pid: int) -> bool:
    """Process ``pid`` runs no more: gone, or a zombie its (dead) parent left for init to reap (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
