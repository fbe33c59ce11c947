"""``ProcessCalibrationExecutor``: calibrations in a spawned worker process (``nlpmon run``'s default).

The jobs here are small module-level classes (the worker unpickles them by importing this module); each
waits on files, never on a clock, and is bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from nlpmon.app.calibration_process import CalibrationWorkerClosed, CalibrationWorkerDied, ProcessCalibrationExecutor
from nlpmon.demo import SyntheticStream
from nlpmon.events import decode_event
from nlpmon.monitor.calibration_jobs import INLINE, CalibrationJob
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.reference import ReferenceSample
from nlpmon.monitor.signals import extract_columns
from nlpmon.state import encode_state
from tests.support import process_gone, wait_until

WAIT_S = 60


def _wait_file(path: Path) -> None:
    wait_until(path.exists, WAIT_S, f"{path}", interval_s=0.02)


class Job:
    """Records its start (``<dir>/<name>.start``, holding the worker's pid), waits for ``<dir>/<name>.go`` when
    ``gated``, then returns ``name``, raises, or kills its own worker (once, or every time)."""

    def __init__(self, folder: Path, name: str, *, gated: bool = False, fail: bool = False,
                 die: str = "") -> None:
        self.folder, self.name, self.gated, self.fail, self.die = folder, name, gated, fail, die
        self.model, self.model_version, self.source = name, "1", "reference"

    def run(self) -> str:
        starts = sorted(self.folder.glob(f"{self.name}.start*"))
        (self.folder / f"{self.name}.start{len(starts)}").write_text(str(os.getpid()))
        if self.die == "always" or (self.die == "once" and not starts):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.gated:
            _wait_file(self.folder / f"{self.name}.go")
        if self.fail:
            raise ValueError(f"{self.name}: the sample is bad")
        return self.name


class ThreadsJob:
    """Returns the worker's thread count per threadpool API."""

    model, model_version, source = "threads", "1", "reference"

    def run(self) -> dict[str, int]:
        from nlpmon.app.calibration_process import thread_limits

        return thread_limits()


def test_the_worker_runs_with_the_parents_blas_threads() -> None:
    """``nlpmon``'s CLI limits BLAS to one thread at run time (threadpoolctl), which the environment of a
    spawned child does not carry: the worker sets it itself, as the parent has it when it starts it."""
    from threadpoolctl import threadpool_limits

    from nlpmon.app.calibration_process import thread_limits

    def same_as_parent(child: dict[str, int]) -> bool:
        # the APIs the child loaded (BLAS at least) have the parent's counts; the parent may have loaded more
        # (an OpenMP runtime that another test module's imports brought in), which calibration does not use
        parent = thread_limits()
        return "blas" in child and all(parent.get(api) == n for api, n in child.items())

    with threadpool_limits(limits=1):
        assert set(thread_limits().values()) == {1}
        ex = ProcessCalibrationExecutor()
        try:
            assert same_as_parent(ex.submit(ThreadsJob()).result(WAIT_S))  # type: ignore[arg-type]
        finally:
            ex.close()
    ex = ProcessCalibrationExecutor()
    try:
        assert same_as_parent(ex.submit(ThreadsJob()).result(WAIT_S))  # type: ignore[arg-type]
    finally:
        ex.close()


def _submit(ex: ProcessCalibrationExecutor, job: Job) -> Future[Any]:
    return ex.submit(job)  # type: ignore[arg-type]


class NiceJob:
    """Returns the worker's niceness."""

    model, model_version, source = "nice", "1", "reference"

    def run(self) -> int:
        return os.getpriority(os.PRIO_PROCESS, 0)


def test_the_worker_runs_at_a_lower_cpu_priority_than_its_parent() -> None:
    """``nice`` (the service's ``calibration_nice``) is added to the worker's niceness, not the parent's: under
    contention the loop runs first. 0 leaves it as the parent's; out of 0-19 is refused."""
    own = os.getpriority(os.PRIO_PROCESS, 0)
    for nice in (7, 0):
        ex = ProcessCalibrationExecutor(nice=nice)
        try:
            assert _submit(ex, NiceJob()).result(WAIT_S) == min(19, own + nice)
        finally:
            ex.close()
    assert os.getpriority(os.PRIO_PROCESS, 0) == own
    with pytest.raises(ValueError, match="nice must be 0-19"):
        ProcessCalibrationExecutor(nice=20)


def test_jobs_run_in_the_worker_in_submission_order(tmp_path: Path) -> None:
    ex = ProcessCalibrationExecutor()
    try:
        first = _submit(ex, Job(tmp_path, "a", gated=True))
        rest = [_submit(ex, Job(tmp_path, name)) for name in "bcd"]
        wait_until(lambda: (tmp_path / "a.start0").exists(), WAIT_S, "the first job")
        assert not any((tmp_path / f"{n}.start0").exists() for n in "bcd")  # one at a time
        (tmp_path / "a.go").write_text("")
        assert [f.result(WAIT_S) for f in [first, *rest]] == ["a", "b", "c", "d"]
        starts = [(tmp_path / f"{n}.start0").stat().st_mtime_ns for n in "abcd"]
        assert starts == sorted(starts)
        pids = {(tmp_path / f"{n}.start0").read_text() for n in "abcd"}
        assert pids == {str(ex.pid)} and ex.pid != os.getpid() and ex.starts == 1
    finally:
        ex.close()


def test_a_jobs_exception_is_raised_through_its_future(tmp_path: Path) -> None:
    ex = ProcessCalibrationExecutor()
    try:
        bad = _submit(ex, Job(tmp_path, "bad", fail=True))
        good = _submit(ex, Job(tmp_path, "good"))
        with pytest.raises(ValueError, match="bad: the sample is bad") as info:
            bad.result(WAIT_S)
        assert any("calibration worker process" in n for n in getattr(info.value, "__notes__", []))
        assert good.result(WAIT_S) == "good" and ex.starts == 1  # the worker goes on
    finally:
        ex.close()


def test_a_worker_killed_mid_job_is_restarted_and_the_job_run_again(tmp_path: Path) -> None:
    ex = ProcessCalibrationExecutor(attempts=2)
    try:
        assert _submit(ex, Job(tmp_path, "once", die="once")).result(WAIT_S) == "once"
        assert ex.starts == 2
        doomed = _submit(ex, Job(tmp_path, "doomed", die="always"))
        with pytest.raises(CalibrationWorkerDied, match=r"doomed/1: .* exited with code -9 .*2 attempts"):
            doomed.result(WAIT_S)
        assert len(list(tmp_path.glob("doomed.start*"))) == 2 and ex.starts == 3
        assert _submit(ex, Job(tmp_path, "after")).result(WAIT_S) == "after"  # a fresh worker for the next
        assert ex.starts == 4
    finally:
        ex.close()


def test_close_cancels_the_queue_and_terminates_the_worker_without_waiting(tmp_path: Path) -> None:
    ex = ProcessCalibrationExecutor()
    running = _submit(ex, Job(tmp_path, "slow", gated=True))  # never released: it would wait 60 s
    queued = _submit(ex, Job(tmp_path, "queued"))
    wait_until(lambda: (tmp_path / "slow.start0").exists(), WAIT_S, "the job to start")
    pid = int((tmp_path / "slow.start0").read_text())
    ex.close()
    assert queued.cancelled()
    assert process_gone(pid)  # terminated and reaped by close itself
    with pytest.raises(CalibrationWorkerClosed, match="slow/1"):
        running.result(WAIT_S / 4)  # well before the job's own end
    assert ex.submit(Job(tmp_path, "late")).cancelled()  # type: ignore[arg-type]  # the monitor runs it itself
    ex.close()  # idempotent


def test_the_worker_leaves_sigterm_and_sigint_to_its_parent(tmp_path: Path) -> None:
    """A stop signal sent to the whole process group (Ctrl-C, a cgroup stop) reaches the parent, which
    decides: the worker goes on (were it to die, the job would be run again from the start)."""
    ex = ProcessCalibrationExecutor()
    try:
        job = _submit(ex, Job(tmp_path, "on", gated=True))
        wait_until(lambda: (tmp_path / "on.start0").exists(), WAIT_S, "the job to start")
        pid = int((tmp_path / "on.start0").read_text())
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGINT)
        (tmp_path / "on.go").write_text("")
        assert job.result(WAIT_S) == "on" and ex.starts == 1 and ex.pid == pid
    finally:
        ex.close()


CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from nlpmon.app.calibration_process import ProcessCalibrationExecutor
from tests.test_calibration_process import Job
if __name__ == "__main__":
    ex = ProcessCalibrationExecutor()
    ex.submit(Job(Path({folder!r}), "orphan", gated=True))
    print("submitted", flush=True)
    sys.stdin.read()  # idle until the test kills it (or its stdin closes: the test is gone)
"""


def test_the_worker_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(CHILD.format(root=str(Path(__file__).parents[1]), folder=str(tmp_path)))
    parent = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (tmp_path / "orphan.start0").exists(), WAIT_S, "the worker's job")
        pid = int((tmp_path / "orphan.start0").read_text())
        parent.kill()
        parent.wait(WAIT_S)
        wait_until(lambda: process_gone(pid), 10, "the orphaned worker to exit")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(WAIT_S)


def _sample(config: MonitorConfig) -> ReferenceSample:
    events = [decode_event(json.dumps(e)) for e in SyntheticStream(seed=1, dim=16).events(400, "reference")]
    cols, _ = extract_columns(events)
    sample = ReferenceSample(config.reference_reservoir, config.seed)
    sample.add(cols, len(events), [e.text for e in events])
    return sample


def test_the_profile_is_identical_to_an_inline_calibration() -> None:
    config = MonitorConfig(calibration_splits=2, min_reference_events=200, embedding_windows=(5, 20),
                           distribution_windows=(50,), outlier_windows=(20,), seed=7)
    job = CalibrationJob("demo-ner", "1", "reference", _sample(config), config)
    ex = ProcessCalibrationExecutor()
    try:
        got = ex.submit(job).result(WAIT_S * 2)
    finally:
        ex.close()
    want = INLINE.submit(job).result()
    assert len(got.signals) > 3 and got.signals.keys() == want.signals.keys()
    g, w = got.state(), want.state()
    g.pop("calibration_seconds")
    w.pop("calibration_seconds")
    assert encode_state(g) == encode_state(w)  # value for value, to the last bit
