"""A calibration executor of ``nlpmon run`` (``calibration_worker: thread``): one worker thread beside the loop.

The default is a worker process (``nlpmon.app.calibration_process``): much of ``ReferenceProfile.calibrate``
is Python and fancy indexing that holds the GIL, so this thread competes with the loop thread for it. The
loop still keeps polling, processing other models, checkpointing and committing while a reference
calibrates (``nlpmon.monitor.calibration_jobs``; the monitor holds that model's events meanwhile). One
worker: calibrations queue behind each other rather than compete with the loop for the cores.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

from ..monitor.calibration_jobs import CalibrationJob
from ..monitor.reference import ReferenceProfile

_Item = tuple[CalibrationJob, "Future[ReferenceProfile]"] | None


class ThreadCalibrationExecutor:
    """Runs calibration jobs on one daemon worker thread, in submission order. ``close`` cancels those not
    started (a monitor that still needs one runs it itself) and does not wait for the running one: a stop
    (SIGTERM) is never held up by a calibration, whose job is in the snapshot and is resubmitted on restore."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="nlpmon-calibration", daemon=True)
        self._thread.start()

    def submit(self, job: CalibrationJob) -> Future[ReferenceProfile]:
        future: Future[ReferenceProfile] = Future()
        self._jobs.put((job, future))
        return future

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job.run())
            except BaseException as exc:  # handed to the monitor that waits for it
                future.set_exception(exc)

    def close(self) -> None:
        cancel_queued(self._jobs)


def cancel_queued(jobs: queue.SimpleQueue[_Item]) -> None:
    """Cancel every job still in ``jobs`` (their monitors run them themselves if they need them), then queue
    the ``None`` that ends the worker."""
    while True:
        try:
            item = jobs.get_nowait()
        except queue.Empty:
            break
        if item is not None:
            item[1].cancel()
    jobs.put(None)


__all__ = ["ThreadCalibrationExecutor", "cancel_queued"]
