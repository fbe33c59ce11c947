"""The small HTTP server of ``nlpmon run``: Prometheus metrics, health probes and the model reports.

Endpoints (GET, and HEAD for each: the same status and headers without the body; docs/api.md documents
the JSON, docs/pages.md the pages):

- ``/metrics``: the registry in the Prometheus text format (``render_exposition``: ``generate_latest``'s
  samples, rendered fast).
- ``/healthz``: liveness. 200 when the consumer loop polled within ``liveness_limit_s`` (by the injected
  ``last_poll()`` and ``clock``; before the first poll, the age counts from ``start()``), else 503.
- ``/readyz``: readiness. 200 only when every check returned by ``readiness()`` is true, else 503 with
  the failing checks; ``notes`` (when ``readiness_notes()`` has any) says what an operator should know
  without failing the probe (state the broker lost).
- ``/api/models`` (JSON; ``?offset=&limit=``): the model versions with their status, each signal's score,
  threshold, flag, throughput and labelled fraction; at most ``limit`` (default ``PAGE_MODELS``, at
  most ``MAX_PAGE_MODELS``) from ``offset`` (drifting ones first, then by name), with ``total`` and
  ``omitted`` counts.
- ``/api/models/<model>`` (JSON; URL-encoded name, ``?version=`` to pick a version): the model's full
  report (signals with evidence, history, label confidence, projection, examples); 404 when unknown,
  400 when the model has several versions and none was given.
- ``/`` and ``/models`` (HTML, ``?offset=``): the model versions at a glance, a page of ``PAGE_MODELS``
  at a time (drifting ones first), with the count of the others and links to them.
  ``/models/<model>`` (HTML, ``?version=``, ``?example=<event id>``, ``?refresh=<seconds>``): what
  drifted. ``/static/nlpmon.{js,css}``: the bundled script and style sheet of the pages.

Unknown or repeated query parameters and bad values are a 400 with a one-line message.

With a web configuration (``web``, :mod:`nlpmon.observability.web_config`) the server speaks TLS (the
handshake runs on the connection's own thread, bounded by ``request_timeout_s``) and every endpoint,
static files and unknown paths included, needs basic auth: without valid credentials a 401 with
``WWW-Authenticate: Basic`` and no other information. ``open_healthz=True`` leaves ``/healthz`` (only)
without auth, for orchestrator probes. The configured ``http_server_config.headers`` go on every response
(and replace the pages' own header of the same name).

The server never touches Kafka or the monitors: it only calls the injected callables, from its own
threads. ``reports()`` must therefore return a snapshot the caller no longer mutates (a copy made under
the caller's lock), shaped ``{"model/version": page view}``: ``ModelPage`` (the service's, typed), or its
JSON (``ModelPage.to_json``: tests, a saved report). The pages and ``/api/models`` read the typed views
(``ModelSummary`` per row). ``readiness()`` and
``last_poll()`` must be thread-safe and quick. JSON bodies turn numpy scalars and arrays into plain
numbers and lists, and NaN or infinite floats into null.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from ..errors import UserError
from ..monitor.page_view import ModelPage, ModelsPage, ModelSummary
from . import pages
from .exposition import render_exposition
from .markup import model_href
from .web_config import BasicAuth, WebConfig

log = logging.getLogger(__name__)

Report = ModelPage | Mapping[str, Any]  # a page view, or its JSON (``ModelPage.to_json``; tests, a saved report)
ReportsFn = Callable[[], Mapping[str, Report]]
ReadinessFn = Callable[[], Mapping[str, bool]]
LastPollFn = Callable[[], float | None]
JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
STATIC = {"nlpmon.js": "text/javascript; charset=utf-8", "nlpmon.css": "text/css; charset=utf-8"}
DEFAULT_REFRESH_S = 5
MAX_REFRESH_S = 3600


class BadQuery(ValueError):
    """A query parameter is unknown, repeated or invalid (the message says which, in one line)."""


def query_params(raw: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query string as a dict; raises BadQuery on an unknown or repeated parameter."""
    try:
        parsed = parse_qs(raw, keep_blank_values=True, strict_parsing=bool(raw), max_num_fields=20)
    except ValueError as exc:
        raise BadQuery(f"malformed query string: {exc}") from None
    for k, v in parsed.items():
        if k not in allowed:
            raise BadQuery(f"unknown query parameter {k!r}; allowed: {', '.join(allowed) or 'none'}")
        if len(v) > 1:
            raise BadQuery(f"query parameter {k!r} given {len(v)} times; give it once")
        if v[0] == "":
            raise BadQuery(f"query parameter {k!r} is empty")
    return {k: v[0] for k, v in parsed.items()}


def refresh_seconds(params: dict[str, str]) -> int:
    raw = params.get("refresh")
    if raw is None:
        return DEFAULT_REFRESH_S
    if not raw.isdigit() or int(raw) > MAX_REFRESH_S:
        raise BadQuery(f"refresh must be a whole number of seconds from 0 (off) to {MAX_REFRESH_S}, got {raw!r}")
    return int(raw)


class HttpBindError(UserError, OSError):
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


#: Model versions per overview page and per ``/api/models`` answer by default, and the largest ``limit``.
PAGE_MODELS = 200
MAX_PAGE_MODELS = 1000


def page_of_models(summaries: Mapping[str, ModelSummary], params: dict[str, str],
                   default_limit: int | None = PAGE_MODELS) -> ModelsPage:
    """One page of ``summaries`` (drifting first, then by key) with ``total``, ``offset``, ``limit``,
    ``omitted`` and ``drifting`` (over all models). ``default_limit=None``: every model. Raises BadQuery on
    a bad ``offset`` or ``limit``."""
    ordered = sorted(summaries.values(), key=lambda m: (not m.drift, m.key))
    offset = _int_param(params, "offset", 0, 0, 10**9)
    limit = _int_param(params, "limit", default_limit, 1, MAX_PAGE_MODELS) if default_limit is not None else None
    page = ordered[offset:] if limit is None else ordered[offset:offset + limit]
    return ModelsPage(tuple(page), len(ordered), offset, limit, len(ordered) - len(page),
                      sum(1 for m in ordered if m.drift))


def _int_param(params: dict[str, str], name: str, default: int | None, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw is None:
        assert default is not None
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise BadQuery(f"{name} must be an integer from {lo} to {hi}, got {raw[:20]!r}")
    return int(raw)


def page_view(report: Report) -> ModelPage:
    """The typed page view of a report (itself, or read from its JSON)."""
    return report if isinstance(report, ModelPage) else ModelPage.from_json(report)


def find_model(index: Mapping[str, tuple[str, str]], name: str,
               version: str | None) -> tuple[int, str, dict[str, Any]]:
    """The key of ``name`` (at ``version``) in ``index`` (key -> (model, version)): ``(200, key, {})``, or
    ``(404 or 400, "", {"error", "models" or "versions"})`` when unknown or ambiguous (several versions and
    none given)."""
    found = {v: k for k, (m, v) in index.items() if m == name}
    if not found:
        return 404, "", {"error": f"unknown model {name!r}", "models": sorted({m for m, _ in index.values()})}
    if version is None:
        if len(found) > 1:
            return 400, "", {"error": f"model {name!r} has several versions; pass ?version=", "versions": sorted(found)}
        version = next(iter(found))
    if version not in found:
        return 404, "", {"error": f"unknown version {version!r} of model {name!r}", "versions": sorted(found)}
    return 200, found[version], {}


class ObservabilityServer:
    """A threaded HTTP server over injected callables (see the module docstring). No global state.

    ``clock`` must be the clock ``last_poll()`` is stamped with (the consumer loop's, monotonic).
    ``port=0`` picks a free port; read the bound one from ``port`` after ``start()``.
    """

    def __init__(self, registry: CollectorRegistry, *, reports: ReportsFn, readiness: ReadinessFn,
                 last_poll: LastPollFn, host: str = "127.0.0.1", port: int = 0,
                 liveness_limit_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 request_timeout_s: float = 10.0, wall: Callable[[], float] = time.time,
                 readiness_notes: Callable[[], Sequence[str]] | None = None,
                 web: WebConfig | None = None, open_healthz: bool = False) -> None:
        if liveness_limit_s <= 0:
            raise ValueError("liveness_limit_s must be > 0")
        self.registry = registry
        self.reports, self.readiness, self.last_poll = reports, readiness, last_poll
        self.readiness_notes = readiness_notes  # lines shown under "notes" by /readyz (not checks)
        self.host, self._port = host, port
        self.liveness_limit_s = liveness_limit_s
        self.clock = clock
        self.wall = wall  # epoch seconds, for "last event 3 s ago" on the pages
        self.static = {name: resources.files("nlpmon.observability").joinpath("static", name).read_bytes()
                       for name in STATIC}
        self.request_timeout_s = request_timeout_s
        self.web = web
        self.ssl_context = web.ssl_context() if web is not None else None
        self.auth: BasicAuth | None = web.basic_auth() if web is not None else None
        self.open_healthz = open_healthz
        self.extra_headers = dict(web.headers) if web is not None else {}
        self.started_at: float | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port once started (the configured one before; stays the bound one after stop)."""
        return self._port

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context is not None else 'http'}://{self.host}:{self.port}"

    def start(self) -> None:
        """Bind and serve on a daemon thread; returns at once. Raises HttpBindError when the address is
        taken or invalid, RuntimeError when already started."""
        if self._httpd is not None:
            raise RuntimeError("ObservabilityServer already started")
        handler = type("Handler", (_Handler,), {"app": self, "timeout": self.request_timeout_s})
        try:
            httpd = (_TlsServer((self.host, self._port), handler, self.ssl_context) if self.ssl_context is not None
                     else ThreadingHTTPServer((self.host, self._port), handler))
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
        return 200, CONTENT_TYPE_LATEST, render_exposition(self.registry)

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
        body: dict[str, Any] = {"ready": ok, "checks": checks, "failing": failing}
        notes = list(self.readiness_notes()) if self.readiness_notes is not None else []
        if notes:
            body["notes"] = notes
        return (200 if ok else 503), body

    def summaries(self) -> dict[str, ModelSummary]:
        """``/api/models``' rows of every model version (``ModelSummary.of`` each report)."""
        return {k: ModelSummary.of(k, page_view(r)) for k, r in self.reports().items()}

    def models(self, params: dict[str, str] | None = None) -> tuple[int, Any]:
        return 200, page_of_models(self.summaries(), params or {}).to_json()

    def model(self, name: str, version: str | None) -> tuple[int, Any]:
        """``/api/models/<model>``: the report's JSON with its ``key`` first (a JSON report as it is)."""
        reports = self.reports()
        status, key, error = self._find(reports, name, version)
        if status != 200:
            return status, error
        report = reports[key]
        return 200, {"key": key, **(report.to_json() if isinstance(report, ModelPage) else report)}

    def _find(self, reports: Mapping[str, Report], name: str, version: str | None) -> tuple[int, str, dict[str, Any]]:
        """``find_model`` over ``reports``."""
        index = {k: (r.model, r.model_version) if isinstance(r, ModelPage) else
                 (str(r.get("model")), str(r.get("model_version"))) for k, r in reports.items()}
        return find_model(index, name, version)

    def full_view(self, name: str, version: str | None) -> tuple[int, str, ModelPage | None, dict[str, Any]]:
        """The page view of ``name`` (at ``version``): ``(200, key, view, {})`` or ``(status, "", None, error)``."""
        reports = self.reports()
        status, key, error = self._find(reports, name, version)
        return (status, key, page_view(reports[key]), {}) if status == 200 else (status, "", None, error)

    # -- pages ------------------------------------------------------------------------------------------
    def overview_page(self, params: dict[str, str]) -> tuple[int, str]:
        refresh = refresh_seconds(params)
        return 200, pages.overview_page(page_of_models(self.summaries(), params), self.wall(), refresh)

    def model_page(self, name: str, params: dict[str, str]) -> tuple[int, str]:
        refresh = refresh_seconds(params)
        status, key, view, error = self.full_view(name, params.get("version"))
        if status == 404 and "models" in error:
            return 404, pages.error_page(404, error["error"], [(model_href(m), m) for m in error["models"]])
        if view is None:
            return status, pages.error_page(status, error["error"],
                                            [(model_href(name, v), f"{name} version {v}") for v in error["versions"]])
        return 200, pages.model_page(key, view, self.wall(), refresh, params.get("example"))


class _TlsServer(ThreadingHTTPServer):
    """Accepts TCP connections and wraps them in TLS without the handshake: the handshake runs on the
    connection's thread (``_Handler.handle``), so a slow or plain-HTTP client never blocks the accept loop."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 context: ssl.SSLContext) -> None:
        self.ssl_context = context
        super().__init__(address, handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        return self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that breaks mid-request (a client closing its TLS session) is logged, not printed."""
        log.debug("HTTPS connection from %s failed", client_address[0], exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """Routes GET requests to the ``ObservabilityServer`` set as ``app`` on a per-server subclass."""

    app: ObservabilityServer
    server_version = "nlpmon"
    head_only = False

    def handle(self) -> None:
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (ssl.SSLError, OSError) as exc:  # plain HTTP on the TLS port, an untrusted client, a timeout
                log.debug("TLS handshake with %s failed: %s", self.client_address[0], exc)
                self.close_connection = True
                return
        super().handle()

    def do_GET(self) -> None:
        self.head_only = False
        self._respond()

    def do_HEAD(self) -> None:
        """Every GET endpoint answers HEAD: the same status and headers, no body (curl -I, probes)."""
        self.head_only = True
        self._respond()

    def _respond(self) -> None:
        parts = urlsplit(self.path)
        raw = parts.path.rstrip("/") or "/"
        api = raw == "/api" or raw.startswith("/api/") or raw in ("/healthz", "/readyz")
        auth = self.app.auth
        if auth is not None and not (self.app.open_healthz and raw == "/healthz") \
                and not auth.check(self.headers.get("Authorization")):
            self._send(401, JSON_TYPE, json_bytes({"error": "authentication required"}),
                       extra={"WWW-Authenticate": 'Basic realm="nlpmon", charset="UTF-8"'})
            return
        try:
            if raw == "/metrics":
                self._send(*self.app.metrics())
                return
            if raw.startswith("/static/"):
                name = raw[len("/static/"):]
                if name in STATIC:
                    self._send(200, STATIC[name], self.app.static[name], cache="max-age=300")
                    return
                self._send(404, JSON_TYPE, json_bytes({"error": f"no such file: {parts.path}"}))
                return
            if api:
                status, body = self._api(raw, parts.query)
                self._send(status, JSON_TYPE, json_bytes(body))
                return
            status, page = self._page(raw, parts.query)
            self._send(status, HTML_TYPE, page.encode())
        except BadQuery as exc:
            if api:
                self._send(400, JSON_TYPE, json_bytes({"error": str(exc)}))
            else:
                self._send(400, HTML_TYPE, pages.error_page(400, str(exc)).encode())
        except Exception as exc:
            log.exception("HTTP %s failed", self.path)
            message = f"{type(exc).__name__}: {exc}"
            if api:
                self._send(500, JSON_TYPE, json_bytes({"error": message}))
            else:
                self._send(500, HTML_TYPE, pages.error_page(500, message).encode())

    def _api(self, raw: str, qs: str) -> tuple[int, Any]:
        if raw == "/healthz":
            query_params(qs, ())
            return self.app.health()
        if raw == "/readyz":
            query_params(qs, ())
            return self.app.ready()
        if raw == "/api":
            return 200, {"endpoints": ["/metrics", "/healthz", "/readyz", "/api/models",
                                       "/api/models/<model>?version=<version>", "/", "/models/<model>"]}
        if raw == "/api/models":
            return self.app.models(query_params(qs, ("offset", "limit")))
        if raw.startswith("/api/models/"):
            params = query_params(qs, ("version",))
            return self.app.model(unquote(raw[len("/api/models/"):]), params.get("version"))
        return 404, {"error": f"no such endpoint: {raw}"}

    def _page(self, raw: str, qs: str) -> tuple[int, str]:
        if raw in ("/", "/models"):
            return self.app.overview_page(query_params(qs, ("refresh", "offset")))
        if raw.startswith("/models/"):
            params = query_params(qs, ("version", "example", "refresh"))
            return self.app.model_page(unquote(raw[len("/models/"):]), params)
        return 404, pages.error_page(404, f"no such page: {raw}", [("/", "All models"), ("/api", "JSON API")])

    def _send(self, status: int, content_type: str, body: bytes, cache: str = "no-store",
              extra: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": content_type, "Content-Length": str(len(body)), "Cache-Control": cache,
                   **(extra or {})}
        if content_type.startswith("text/html"):  # the pages load nothing from elsewhere, and run no inline script
            headers["Content-Security-Policy"] = ("default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                                  "img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                                                  "frame-ancestors 'none'")
            headers["X-Content-Type-Options"] = "nosniff"
        headers.update(self.app.extra_headers)
        self.send_response(status, HTTPStatus(status).phrase)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not self.head_only:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)
