"""The calibration executor of ``nlpmon run``: one worker thread beside the consumer loop.

``ReferenceProfile.calibrate`` spends most of its time in numpy, BLAS and LAPACK calls that release the
GIL, so the loop keeps polling, processing other models, checkpointing and committing while a reference
calibrates (``service.monitor.calibration_jobs``; the monitor holds that model's events meanwhile). One
worker: calibrations queue behind each other rather than compete with the loop for the cores.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from service.monitor.calibration_jobs import CalibrationJob
from service.monitor.reference import ReferenceProfile


class ThreadCalibrationExecutor:
    """Runs calibration jobs on one worker thread, in submission order. ``close`` cancels those not started
    (a monitor that still needs one runs it itself) and does not wait for the running one."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlpmon-calibration")

    def submit(self, job: CalibrationJob) -> Future[ReferenceProfile]:
        return self._pool.submit(job.run)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["ThreadCalibrationExecutor"]
