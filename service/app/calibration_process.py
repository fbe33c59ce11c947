"""The default calibration executor of ``nlpmon run``: one worker process beside the consumer loop.

``ReferenceProfile.calibrate`` is largely Python and fancy indexing that holds the GIL, so a worker *thread*
(``nlpmon.app.calibration_worker``) competes with the loop thread for it: polls, batches and ``/metrics``
scrapes wait while a reference calibrates. ``ProcessCalibrationExecutor`` runs the jobs in a child process
instead, on another core, without touching the loop's GIL.

* The child comes from a multiprocessing **spawn** context (never fork: librdkafka's threads live in the
  parent), started lazily by the first ``submit``. It inherits the environment and, set at start, the
  parent's BLAS and OpenMP thread counts (``nlpmon``'s CLI limits BLAS to one thread at run time, with
  threadpoolctl, which a spawned child would not inherit: it would run two BLAS threads that spin against
  the loop, 8x slower on a busy 2-core machine, and could round differently), so its floats are those of an
  inline calibration. It runs one job at a time, in submission order.
* ``submit`` returns a future at once: a feeder thread pickles the job (``CalibrationJob``: the sample and
  the configuration), sends it over a pipe, waits for the profile and sets the future. The pipe joins the
  parent and the child it started, nothing else writes to it (pickle is safe there).
* The child lowers its own CPU priority by ``nice`` (``calibration_nice``, 10 by default): when the cores are
  contended, the consumer loop, its ``/metrics`` and the broker run first and calibrations take what they
  leave; on idle cores it changes nothing.
* A job's own exception comes back through the future (with the child's traceback as a note).
* A child that dies mid-job (killed, out of memory) is started again and the job resubmitted, ``attempts``
  times in all; then the future gets a ``CalibrationWorkerDied`` naming the model and the exit code.
* ``close`` cancels the queued jobs and kills the child at once (SIGKILL: it holds nothing to clean up): a
  stop (SIGTERM) is never held up by a calibration, whose job is in the snapshot and is resubmitted on
  restore. The running job's future then gets ``CalibrationWorkerClosed``.
* The child exits by itself when its parent is gone (SIGKILL included): a watchdog thread sees the parent
  pid change; between jobs it also sees the pipe close. It ignores SIGINT and SIGTERM: a Ctrl-C, or a stop signal sent
  to the whole process group or cgroup, reaches the parent too, which decides when the child stops (the
  child dying first would be taken for a crash and restarted).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
import traceback
from concurrent.futures import Future
from multiprocessing.connection import Connection, wait
from typing import Any

from ..monitor.calibration_jobs import CalibrationJob
from ..monitor.reference import ReferenceProfile
from .calibration_worker import cancel_queued

log = logging.getLogger(__name__)

_Item = tuple[CalibrationJob, "Future[ReferenceProfile]"] | None
PARENT_CHECK_S = 0.5  # how often the child looks whether its parent is still there


class CalibrationWorkerDied(RuntimeError):
    """The worker process died while it ran a job, every attempt."""


class CalibrationWorkerClosed(RuntimeError):
    """The executor was closed while the job ran: the job did not finish."""


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(0)
        time.sleep(PARENT_CHECK_S)


def thread_limits() -> dict[str, int]:
    """This process's thread count per threadpool API now (``{"blas": 1}`` under ``nlpmon``'s CLI): the fewest
    of the loaded libraries of each API."""
    from threadpoolctl import threadpool_info

    limits: dict[str, int] = {}
    for lib in threadpool_info():
        api, n = str(lib["user_api"]), int(lib["num_threads"])
        limits[api] = min(limits.get(api, n), n)
    return limits


def _child_main(conn: Connection, parent_pid: int, limits: dict[str, int], nice: int = 0) -> None:
    """The worker process: receive a job, send ``("ok", profile)`` or ``("error", exception)``, until the pipe
    closes or the parent is gone. ``limits``: the parent's ``thread_limits``; ``nice``: added to its niceness."""
    from threadpoolctl import threadpool_limits

    if nice:
        os.nice(nice)

    threadpool_limits(limits=limits)  # the libraries calibration uses are loaded: this module imported them
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="nlpmon-parent-watch").start()
    if os.getppid() != parent_pid:  # the parent died before the watchdog started
        return
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, Any] = ("ok", job.run())
        except Exception as exc:  # the job's own error, re-raised by the parent's future
            exc.add_note("in the calibration worker process:\n" + traceback.format_exc())
            reply = ("error", exc)
        try:
            conn.send(reply)
        except (BrokenPipeError, EOFError):
            return
        except Exception as exc:  # the result or the exception could not be pickled
            conn.send(("error", RuntimeError(f"the calibration worker could not send its result back: {exc!r}; "
                                             f"the job's outcome was {reply[1]!r}")))


class ProcessCalibrationExecutor:
    """Runs calibration jobs in one worker process, in submission order. See the module docstring.

    ``attempts``: how many times a job is run when the worker dies under it. ``nice``: added to the worker's
    niceness (0-19). ``submit`` and ``close`` from one thread (the loop)."""

    def __init__(self, *, attempts: int = 2, nice: int = 0) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if not 0 <= nice <= 19:
            raise ValueError(f"nice must be 0-19, got {nice}")
        self.attempts, self.nice = attempts, nice
        self._jobs: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._feeder: threading.Thread | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self.starts = 0  # worker processes started (tests, logs)

    @property
    def pid(self) -> int | None:
        """The worker process's pid, while one runs."""
        p = self._process
        return p.pid if p is not None and p.is_alive() else None

    def submit(self, job: CalibrationJob) -> Future[ReferenceProfile]:
        """Queue ``job``; never blocks (the first call starts the feeder thread, which starts the worker).
        After ``close`` the future is cancelled at once (the monitor then runs the job itself)."""
        future: Future[ReferenceProfile] = Future()
        with self._lock:
            if self._closed:
                future.cancel()
                return future
            if self._feeder is None:
                self._feeder = threading.Thread(target=self._feed, name="nlpmon-calibration-feeder", daemon=True)
                self._feeder.start()
        self._jobs.put((job, future))
        return future

    # -- the feeder thread ----------------------------------------------------------------------------
    def _start_worker(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        process = ctx.Process(target=_child_main, args=(child_conn, os.getpid(), thread_limits(), self.nice),
                              name="nlpmon-calibration", daemon=True)
        with self._lock:
            if self._closed:
                parent_conn.close()
                child_conn.close()
                return
            process.start()
            self._process, self._conn = process, parent_conn
            self.starts += 1
        child_conn.close()  # the child's end lives in the child: its exit closes the pipe
        log.info("calibration worker process started (pid %d)", process.pid)

    def _feed(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                self._run(job, future)
            except BaseException as exc:  # never leave a future unset: the monitor would wait forever
                if not future.done():
                    future.set_exception(exc)

    def _run(self, job: CalibrationJob, future: Future[ReferenceProfile]) -> None:
        """Run ``job`` in the worker (started again if it is gone), ``attempts`` times at most."""
        code: int | None = None
        for attempt in range(1, self.attempts + 1):
            if self._process is None or not self._process.is_alive():
                self._start_worker()
            process, conn = self._process, self._conn
            if self._closed or process is None or conn is None:
                future.set_exception(CalibrationWorkerClosed(
                    f"{job.model}/{job.model_version}: the calibration executor was closed"))
                return
            try:
                conn.send(job)
                wait([conn, process.sentinel])
                kind, value = conn.recv()  # raises EOFError when the child died and sent nothing
            except (EOFError, OSError):
                process.join(5)
                code = process.exitcode
                with self._lock:
                    closed = self._closed
                    if self._process is process:
                        self._process, self._conn = None, None
                conn.close()
                if closed:
                    future.set_exception(CalibrationWorkerClosed(
                        f"{job.model}/{job.model_version}: the calibration executor was closed while the "
                        "reference calibrated"))
                    return
                log.warning("%s/%s: the calibration worker process exited with code %s (attempt %d of %d)",
                            job.model, job.model_version, code, attempt, self.attempts)
                continue
            if kind == "ok":
                future.set_result(value)
            else:
                future.set_exception(value)
            return
        future.set_exception(CalibrationWorkerDied(
            f"{job.model}/{job.model_version}: the calibration worker process exited with code {code} while "
            f"calibrating the {job.source} ({self.attempts} attempts)"))

    # -- the loop thread --------------------------------------------------------------------------------
    def close(self) -> None:
        """Cancel the queued jobs and kill the worker without waiting for its job (then reap it: a second
        at most). Idempotent."""
        with self._lock:
            self._closed = True
            process = self._process
        cancel_queued(self._jobs)
        if process is not None:
            process.kill()  # it ignores SIGTERM (see the module docstring)
            process.join(1.0)


__all__ = ["CalibrationWorkerClosed", "CalibrationWorkerDied", "ProcessCalibrationExecutor"]
