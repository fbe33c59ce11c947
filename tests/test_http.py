"""ObservabilityServer on 127.0.0.1 port 0: every endpoint with urllib, injected clock, probes and reports."""

from __future__ import annotations

import json
import math
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from nlpmon.demo import generate_events
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.observability.exporter import NlpmonMetrics
from nlpmon.observability.http import HttpBindError, ObservabilityServer, to_jsonable

TIMEOUT = 5.0
ODD_NAME = "org/ner model+v2"  # a slash, a space and a plus: must be URL-encoded


@pytest.fixture(scope="module")
def reports() -> dict[str, Any]:
    """Real reports: a drifting NER model (two versions, one under an awkward name) plus numpy oddities."""
    events = generate_events(900, drift_at=600)
    for e in events[:300]:
        e["split"] = "reference"
    ms = MonitorSet(MonitorConfig(calibration_splits=2))
    lines = [json.dumps(e) for e in events]
    for i in range(0, len(lines), 300):
        ms.process_lines(lines[i:i + 300])
    rep = ms.report()["demo-ner/1"]
    weird = {**rep, "model": ODD_NAME, "model_version": "2",
             "extra": {"f32": np.float32(0.5), "i64": np.int64(3), "nan": math.nan, "inf": -math.inf,
                       "arr": np.array([1.0, np.nan]), "flag": np.bool_(True), "tuple": (1, 2)}}
    return {"demo-ner/1": rep, "demo-ner/2": {**rep, "model_version": "2"}, f"{ODD_NAME}/2": weird}


@dataclass
class Fakes:
    now: float = 100.0
    last_poll: float | None = None
    checks: dict[str, bool] = field(default_factory=lambda: {
        "broker_reachable": True, "partitions_assigned": True, "references_loaded": True})
    reports: dict[str, Any] = field(default_factory=dict)
    fail_reports: bool = False

    def get_reports(self) -> dict[str, Any]:
        if self.fail_reports:
            raise RuntimeError("boom")
        return dict(self.reports)


@pytest.fixture
def served(reports: dict[str, Any]) -> Iterator[tuple[ObservabilityServer, Fakes, CollectorRegistry]]:
    fakes = Fakes(reports=reports)
    registry = CollectorRegistry()
    NlpmonMetrics(registry, clock=lambda: 1.7e9).observe_reports(
        {k: r for k, r in reports.items() if not r["model"].startswith("org")})
    server = ObservabilityServer(registry, reports=fakes.get_reports, readiness=lambda: fakes.checks,
                                 last_poll=lambda: fakes.last_poll, host="127.0.0.1", port=0,
                                 liveness_limit_s=30.0, clock=lambda: fakes.now)
    server.start()
    try:
        yield server, fakes, registry
    finally:
        server.stop()


def get(server: ObservabilityServer, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=TIMEOUT) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers["Content-Type"], e.read()


def get_json(server: ObservabilityServer, path: str) -> tuple[int, Any]:
    status, ctype, body = get(server, path)
    assert ctype.startswith("application/json"), (path, ctype)
    return status, json.loads(body)


def test_metrics_endpoint_serves_the_registry(served: tuple[ObservabilityServer, Fakes, CollectorRegistry],
                                              reports: dict[str, Any]) -> None:
    server, _, _ = served
    status, ctype, body = get(server, "/metrics")
    assert status == 200 and ctype.startswith("text/plain") and "version=" in ctype
    text = body.decode()
    score = reports["demo-ner/1"]["signals"]["embedding"]["score"]
    line = f'nlpmon_drift_score{{model="demo-ner",model_version="1",signal="embedding"}} {score!r}'
    assert line in text
    assert "# HELP nlpmon_drift_threshold " in text


def test_healthz_turns_503_when_the_last_poll_gets_old(
        served: tuple[ObservabilityServer, Fakes, CollectorRegistry]) -> None:
    server, fakes, _ = served
    status, body = get_json(server, "/healthz")  # never polled, just started: alive
    assert status == 200 and body["polled"] is False and body["last_poll_age_s"] == 0
    fakes.now = 131.0
    status, body = get_json(server, "/healthz")  # never polled for 31 s > 30 s
    assert status == 503 and body["status"] == "stale" and body["last_poll_age_s"] == 31
    fakes.last_poll = 130.0
    status, body = get_json(server, "/healthz")
    assert status == 200 and body == {"status": "ok", "polled": True, "last_poll_age_s": 1.0, "limit_s": 30.0}
    fakes.now = 160.5
    status, body = get_json(server, "/healthz")
    assert status == 503 and body["last_poll_age_s"] == 30.5


def test_readyz_lists_the_failing_checks(served: tuple[ObservabilityServer, Fakes, CollectorRegistry]) -> None:
    server, fakes, _ = served
    status, body = get_json(server, "/readyz")
    assert status == 200 and body["ready"] is True and body["failing"] == []
    fakes.checks = {"broker_reachable": True, "partitions_assigned": False, "references_loaded": False}
    status, body = get_json(server, "/readyz")
    assert status == 503 and body["ready"] is False
    assert body["failing"] == ["partitions_assigned", "references_loaded"]
    assert body["checks"]["broker_reachable"] is True
    fakes.checks = {}
    assert get_json(server, "/readyz")[0] == 503  # no checks at all is not ready

    def broken() -> dict[str, bool]:
        raise ConnectionError("broker down")

    server.readiness = broken
    status, body = get_json(server, "/readyz")
    assert status == 503 and body["error"] == "broker down"


def test_models_list_with_status_and_signal_scores(served: tuple[ObservabilityServer, Fakes, CollectorRegistry],
                                                    reports: dict[str, Any]) -> None:
    server, _, _ = served
    for path in ("/api/models", "/api/models/"):
        status, body = get_json(server, path)
        assert status == 200
        assert [m["key"] for m in body["models"]] == sorted(reports)
    first = next(m for m in body["models"] if m["key"] == "demo-ner/1")
    rep = reports["demo-ner/1"]
    assert first["status"] == "monitoring" and first["model"] == "demo-ner" and first["model_version"] == "1"
    assert first["drift"] is True and "embedding" in first["drifting_signals"]
    assert first["throughput"] == rep["throughput"] and first["labelled_fraction"] is None  # no quality yet
    for name, sig in rep["signals"].items():
        assert first["signals"][name] == {"score": sig["score"], "threshold": 1.0, "drift": sig["drift"],
                                          "alarms": sig["alarms"]}


def test_model_detail_is_the_full_report(served: tuple[ObservabilityServer, Fakes, CollectorRegistry],
                                         reports: dict[str, Any]) -> None:
    server, _, _ = served
    status, body = get_json(server, "/api/models/demo-ner?version=1")
    assert status == 200 and body["key"] == "demo-ner/1"
    rep = reports["demo-ner/1"]
    assert body["signals"] == json.loads(json.dumps(rep["signals"]))
    assert body["signals"]["entity_label"]["evidence"]["moved_labels"]
    assert body["signals"]["embedding"]["windows"][0]["threshold"] > 0
    assert body["outliers"] and body["outliers"][0]["text"] == rep["outliers"][0]["text"]
    assert get_json(server, "/api/models/demo-ner?version=2")[1]["key"] == "demo-ner/2"
    for path in ("/", "/models", "/models/demo-ner?version=1"):  # the pages are HTML now
        status, ctype, _ = get(server, path)
        assert status == 200 and ctype == "text/html; charset=utf-8", path


def test_url_encoded_model_name_and_numpy_nan_encoding(
        served: tuple[ObservabilityServer, Fakes, CollectorRegistry]) -> None:
    server, _, _ = served
    status, ctype, raw = get(server, "/api/models/" + quote(ODD_NAME, safe=""))
    assert status == 200 and ctype == "application/json; charset=utf-8"
    assert b"NaN" not in raw and b"Infinity" not in raw  # strict JSON
    body = json.loads(raw)
    assert body["model"] == ODD_NAME and body["model_version"] == "2"  # the only version: no ?version needed
    assert body["extra"] == {"f32": 0.5, "i64": 3, "nan": None, "inf": None, "arr": [1.0, None], "flag": True,
                             "tuple": [1, 2]}


def test_unknown_models_versions_and_paths(served: tuple[ObservabilityServer, Fakes, CollectorRegistry]) -> None:
    server, _, _ = served
    status, body = get_json(server, "/api/models/nope")
    assert status == 404 and "unknown model 'nope'" in body["error"] and "demo-ner" in body["models"]
    status, body = get_json(server, "/api/models/demo-ner?version=9")
    assert status == 404 and body["versions"] == ["1", "2"]
    status, body = get_json(server, "/api/models/demo-ner")  # two versions and none given
    assert status == 400 and body["versions"] == ["1", "2"]
    assert get_json(server, "/api/nothing-here")[0] == 404
    status, ctype, _ = get(server, "/nothing-here")
    assert status == 404 and ctype.startswith("text/html")
    status, body = get_json(server, "/api")
    assert status == 200 and "/api/models" in body["endpoints"]


def test_report_callable_failure_is_a_json_500(served: tuple[ObservabilityServer, Fakes, CollectorRegistry]) -> None:
    server, fakes, _ = served
    fakes.fail_reports = True
    status, body = get_json(server, "/api/models")
    assert status == 500 and "boom" in body["error"]
    assert get(server, "/metrics")[0] == 200  # other endpoints unaffected


def test_bind_error_is_one_line_and_stop_closes_the_port() -> None:
    a = ObservabilityServer(CollectorRegistry(), reports=dict, readiness=dict, last_poll=lambda: None)
    with a:
        b = ObservabilityServer(CollectorRegistry(), reports=dict, readiness=dict, last_poll=lambda: None,
                                port=a.port)
        with pytest.raises(HttpBindError, match=f"cannot serve HTTP on 127.0.0.1:{a.port}") as exc:
            b.start()
        assert isinstance(exc.value, OSError) and "\n" not in str(exc.value)
        assert get(a, "/healthz")[0] == 200
        with pytest.raises(RuntimeError):
            a.start()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(a.url + "/healthz", timeout=TIMEOUT)
    a.stop()  # idempotent


def test_to_jsonable_handles_nested_numpy_values() -> None:
    value = {1: [np.float64("nan"), np.int32(2)], "m": np.arange(3).reshape(1, 3), "s": {np.float32(1.5)}}
    assert to_jsonable(value) == {"1": [None, 2], "m": [[0, 1, 2]], "s": [1.5]}


def raw_request(server: ObservabilityServer, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and the exact bytes after them (HTTP/1.0: the server closes the connection)."""
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(f"{method} {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_head_is_answered_on_every_endpoint(served: tuple[ObservabilityServer, Fakes, CollectorRegistry]) -> None:
    server, fakes, _ = served
    fakes.checks = {"broker_reachable": False}
    paths = ["/metrics", "/healthz", "/readyz", "/api", "/api/models", "/api/models/demo-ner", "/", "/models",
             "/models/demo-ner", "/static/nlpmon.js", "/static/nlpmon.css", "/api/models/nope", "/nope",
             "/models/demo-ner?refresh=x"]
    statuses = set()
    for path in paths:
        status, headers, body = raw_request(server, "GET", path)
        h_status, h_headers, h_body = raw_request(server, "HEAD", path)
        assert (h_status, h_body) == (status, b""), path
        assert h_headers["Content-Type"] == headers["Content-Type"], path
        slack = 32 if path == "/metrics" else 0  # nlpmon_last_poll_age_seconds is computed at each scrape
        assert abs(int(h_headers["Content-Length"]) - len(body)) <= slack and len(body) > 0, path
        statuses.add(status)
    assert statuses == {200, 400, 404, 503}
