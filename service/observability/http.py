"""The small HTTP server of ``nlpmon run``: Prometheus metrics, health probes and the model reports.

Endpoints (GET only):

- ``/metrics``: ``generate_latest(registry)`` in the Prometheus text format.
- ``/healthz``: liveness. 200 when the consumer loop polled within ``liveness_limit_s`` (by the injected
  ``last_poll()`` and ``clock``; before the first poll, the age counts from ``start()``), else 503.
- ``/readyz``: readiness. 200 only when every check returned by ``readiness()`` is true, else 503 with
  the failing checks.
- ``/models`` and ``/api/models``: every model with its status and each signal's score, threshold, flag.
- ``/models/<model>`` and ``/api/models/<model>`` (URL-encoded name, ``?version=`` to pick a version):
  the model's full report (signals with evidence, label confidence, change points, outliers); 404 when
  unknown, 400 when the model has several versions and none was given.

The server never touches Kafka or the monitors: it only calls the injected callables, from its own
threads. ``reports()`` must therefore return a snapshot the caller no longer mutates (a copy made under
the caller's lock), shaped ``{"model/version": ModelMonitor.report()}``. ``readiness()`` and
``last_poll()`` must be thread-safe and quick. JSON bodies turn numpy scalars and arrays into plain
numbers and lists, and NaN or infinite floats into null.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

ReportsFn = Callable[[], Mapping[str, Mapping[str, Any]]]
ReadinessFn = Callable[[], Mapping[str, bool]]
LastPollFn = Callable[[], float | None]
JSON_TYPE = "application/json; charset=utf-8"
MODEL_PREFIXES = ("/api/models/", "/models/")


class HttpBindError(OSError):
    """The server could not listen on the configured address (the message says which and what to do)."""


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays as Python numbers/lists, tuples as lists, NaN/inf as None.

    Dict keys become strings; anything else unknown becomes ``str(obj)``.
    """
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    return str(obj)


def json_bytes(obj: Any) -> bytes:
    """Strict JSON (no NaN tokens) of ``to_jsonable(obj)``, UTF-8."""
    return json.dumps(to_jsonable(obj), allow_nan=False, separators=(",", ":")).encode()


def model_summary(key: str, report: Mapping[str, Any]) -> dict[str, Any]:
    """The ``/models`` entry of one report: status, counts and each signal's score/threshold/drift."""
    signals = report.get("signals") or {}
    return {
        "key": key, "model": report.get("model"), "model_version": report.get("model_version"),
        "status": report.get("status"), "events": report.get("events"),
        "last_event_time": report.get("last_event_time"),
        "drift": any(bool(s.get("drift")) for s in signals.values()),
        "drifting_signals": sorted(n for n, s in signals.items() if s.get("drift")),
        "signals": {n: {"score": s.get("score"), "threshold": s.get("threshold"), "drift": s.get("drift"),
                        "alarms": s.get("alarms")} for n, s in signals.items()},
    }


class ObservabilityServer:
    """A threaded HTTP server over injected callables (see the module docstring). No global state.

    ``clock`` must be the clock ``last_poll()`` is stamped with (the consumer loop's, monotonic).
    ``port=0`` picks a free port; read the bound one from ``port`` after ``start()``.
    """

    def __init__(self, registry: CollectorRegistry, *, reports: ReportsFn, readiness: ReadinessFn,
                 last_poll: LastPollFn, host: str = "127.0.0.1", port: int = 0,
                 liveness_limit_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 request_timeout_s: float = 10.0) -> None:
        if liveness_limit_s <= 0:
            raise ValueError("liveness_limit_s must be > 0")
        self.registry = registry
        self.reports, self.readiness, self.last_poll = reports, readiness, last_poll
        self.host, self._port = host, port
        self.liveness_limit_s = liveness_limit_s
        self.clock = clock
        self.request_timeout_s = request_timeout_s
        self.started_at: float | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port once started (the configured one before; stays the bound one after stop)."""
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Bind and serve on a daemon thread; returns at once. Raises HttpBindError when the address is
        taken or invalid, RuntimeError when already started."""
        if self._httpd is not None:
            raise RuntimeError("ObservabilityServer already started")
        handler = type("Handler", (_Handler,), {"app": self, "timeout": self.request_timeout_s})
        try:
            httpd = ThreadingHTTPServer((self.host, self._port), handler)
        except OSError as exc:
            err = HttpBindError(f"cannot serve HTTP on {self.host}:{self._port}: {exc.strerror or exc}; "
                                "choose another port (--port) or host")
            err.errno = exc.errno
            raise err from None
        httpd.daemon_threads = True
        self._httpd = httpd
        self._port = int(httpd.server_address[1])
        self.started_at = self.clock()
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="nlpmon-http", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting requests and close the socket; waits up to ``timeout_s`` for the serve loop.
        Requests in flight finish on their daemon threads. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self) -> ObservabilityServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- endpoint bodies (status, content type, body) -----------------------------------------------------
    def metrics(self) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)

    def health(self) -> tuple[int, Any]:
        last = self.last_poll()
        now = self.clock()
        since = last if last is not None else (self.started_at if self.started_at is not None else now)
        age = max(0.0, now - since)
        ok = age <= self.liveness_limit_s
        return (200 if ok else 503), {"status": "ok" if ok else "stale", "polled": last is not None,
                                      "last_poll_age_s": age, "limit_s": self.liveness_limit_s}

    def ready(self) -> tuple[int, Any]:
        try:
            checks = {str(k): bool(v) for k, v in self.readiness().items()}
        except Exception as exc:  # a failing check function means: not ready
            log.warning("readiness check failed: %s", exc)
            return 503, {"ready": False, "checks": {}, "failing": [], "error": str(exc)}
        failing = sorted(k for k, v in checks.items() if not v)
        ok = bool(checks) and not failing
        return (200 if ok else 503), {"ready": ok, "checks": checks, "failing": failing}

    def models(self) -> tuple[int, Any]:
        reports = self.reports()
        return 200, {"models": [model_summary(k, r) for k, r in sorted(reports.items())]}

    def model(self, name: str, version: str | None) -> tuple[int, Any]:
        reports = self.reports()
        found = {str(r.get("model_version")): (k, r) for k, r in reports.items() if r.get("model") == name}
        if not found:
            return 404, {"error": f"unknown model {name!r}", "models": sorted({str(r.get("model"))
                                                                             for r in reports.values()})}
        if version is None:
            if len(found) > 1:
                return 400, {"error": f"model {name!r} has several versions; pass ?version=",
                             "versions": sorted(found)}
            version = next(iter(found))
        if version not in found:
            return 404, {"error": f"unknown version {version!r} of model {name!r}", "versions": sorted(found)}
        key, report = found[version]
        return 200, {"key": key, **report}


class _Handler(BaseHTTPRequestHandler):
    """Routes GET requests to the ``ObservabilityServer`` set as ``app`` on a per-server subclass."""

    app: ObservabilityServer
    server_version = "nlpmon"

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        raw = parts.path.rstrip("/") or "/"
        try:
            if raw == "/metrics":
                self._send(*self.app.metrics())
                return
            if raw == "/healthz":
                status, body = self.app.health()
            elif raw == "/readyz":
                status, body = self.app.ready()
            elif raw in ("/models", "/api/models"):
                status, body = self.app.models()
            elif raw.startswith(MODEL_PREFIXES):
                name = unquote(raw.split("/models/", 1)[1])
                version = parse_qs(parts.query).get("version", [None])[-1]
                status, body = self.app.model(name, version)
            elif raw == "/":
                status, body = 200, {"endpoints": ["/metrics", "/healthz", "/readyz", "/models",
                                                   "/api/models", "/api/models/<model>?version=<version>"]}
            else:
                status, body = 404, {"error": f"no such endpoint: {parts.path}"}
            self._send(status, JSON_TYPE, json_bytes(body))
        except Exception as exc:
            log.exception("HTTP %s failed", self.path)
            self._send(500, JSON_TYPE, json_bytes({"error": f"{type(exc).__name__}: {exc}"}))

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)
