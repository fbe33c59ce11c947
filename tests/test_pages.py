"""The pages and their JSON API, served by a real ObservabilityServer on 127.0.0.1: the API contract,
what the model page shows for a drifted model, the quality section, escaping, and bad requests."""

from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import pytest
from prometheus_client import CollectorRegistry

from nlpmon.demo import generate_events
from nlpmon.demo.generator import LABELS
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.observability import pages
from nlpmon.observability.http import ObservabilityServer

TIMEOUT = 5.0
NOW = 1.7e9 + 60.0
EVIL = '<script>alert("x")</script>"><img src=x onerror=alert(1)>'


class Dom(HTMLParser):
    """Every start tag with its attributes, and the text, of a page."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.h1 = ""
        self._in_h1 = False
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_h1 = self._in_h1 or tag == "h1"

    def handle_endtag(self, tag: str) -> None:
        self._in_h1 = self._in_h1 and tag != "h1"

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_h1:
            self.h1 += data

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def all_text(self) -> str:
        return " ".join(self.text)


@pytest.fixture(scope="module")
def drifted() -> dict[str, Any]:
    events = generate_events(900, drift_at=600)
    for e in events[:300]:
        e["split"] = "reference"
    ms = MonitorSet(MonitorConfig(calibration_splits=2))
    lines = [json.dumps(e) for e in events]
    for i in range(0, len(lines), 150):
        ms.process_lines(lines[i:i + 150])
    return ms.report()["demo-ner/1"]


QUALITY = {  # shaped like QualityMonitor.report(version)
    "model": "demo-ner", "model_version": "1", "task": "token-classification",
    "labels": {"PERSON": {"precision": 0.91, "recall": 0.8, "f1": 0.8514, "support": 120, "tp": 96, "fp": 9,
                          "fn": 24},
               "ORG": {"precision": None, "recall": 0.0, "f1": 0.0, "support": 7, "tp": 0, "fp": 0, "fn": 7}},
    "micro": {"precision": 0.9143, "recall": 0.7559, "f1": 0.8276, "support": 127}, "documents": 250,
    "macro": {"f1": 0.4257},
    "reference": {"source": "reference", "labels": {"PERSON": {"precision": 0.97, "recall": 0.95, "f1": 0.9599,
                                                               "support": 80}},
                  "micro": {"precision": 0.97, "recall": 0.95, "f1": 0.9599, "support": 80}, "documents": 90,
                  "macro": {"f1": 0.9599}},
    "f1_drop": {"score": 7.5, "threshold": 4.75, "drift": True, "reference_f1": 0.9599, "current_f1": 0.8276},
    "estimated_precision": {"PERSON": 0.88}, "calibrated": True, "calibration_spans": 500,
    "calibration_gap": {"PERSON": 0.03},
    "calibration_gap_overall": {"realised": 0.91, "estimated": 0.88, "gap": 0.03, "score": 1.2, "threshold": 4.75,
                                "drift": False},
    "labelled_fraction": 0.25, "label_delay_histogram": {"edges": [0, 60], "counts": [3, 1], "below_first_edge": 0,
                                                         "unknown": 0},
    "join": {}, "join_here": {}, "counters": {},
}


@pytest.fixture(scope="module")
def reports(drifted: dict[str, Any]) -> dict[str, Any]:
    evil = copy.deepcopy(drifted)
    evil["model"], evil["model_version"] = EVIL, EVIL
    evil["outliers"][0]["text"] = EVIL
    evil["outliers"][0]["event_id"] = EVIL
    evil["outliers"][0]["entities"] = [{"label": EVIL, "start": 0, "end": 8, "score": 0.5}]
    evil["signals"]["entity_label"]["evidence"]["moved_labels"][0]["label"] = EVIL
    evil["projection"]["current"]["text"][0] = EVIL
    evil["projection"]["reference"]["text"][0] = EVIL
    evil["confidence_by_label"]["labels"][0]["label"] = EVIL
    with_quality = {**drifted, "model": "labelled", "quality": QUALITY}
    return {"demo-ner/1": drifted, f"{EVIL}/{EVIL}": evil, "labelled/1": with_quality,
            "two/a": {**drifted, "model": "two", "model_version": "a"},
            "two/b": {**drifted, "model": "two", "model_version": "b"}}


@pytest.fixture(scope="module")
def server(reports: dict[str, Any]) -> Iterator[ObservabilityServer]:
    srv = ObservabilityServer(CollectorRegistry(), reports=lambda: reports, readiness=dict, last_poll=lambda: None,
                              host="127.0.0.1", port=0, wall=lambda: NOW)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def get(server: ObservabilityServer, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=TIMEOUT) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers["Content-Type"], e.read().decode()


def page(server: ObservabilityServer, path: str, status: int = 200) -> Dom:
    got, ctype, body = get(server, path)
    assert (got, ctype) == (status, "text/html; charset=utf-8"), (path, got, body[:300])
    return Dom(body)


# -- the JSON API -------------------------------------------------------------------------------------------
SUMMARY_KEYS = {"key", "model", "model_version", "status", "events", "last_event_time", "throughput",
                "labelled_fraction", "drift", "drifting_signals", "signals"}


def test_api_models_contract(server: ObservabilityServer) -> None:
    status, ctype, body = get(server, "/api/models")
    assert status == 200 and ctype.startswith("application/json")
    models = {m["key"]: m for m in json.loads(body)["models"]}
    for m in models.values():
        assert set(m) == SUMMARY_KEYS
        assert set(m["throughput"]) == {"events_per_second", "over_seconds", "clock"}
        for s in m["signals"].values():
            assert set(s) == {"score", "threshold", "drift", "alarms"}
    assert models["labelled/1"]["labelled_fraction"] == 0.25 and models["demo-ner/1"]["labelled_fraction"] is None
    assert models["demo-ner/1"]["drift"] is True and "embedding" in models["demo-ner/1"]["drifting_signals"]


def test_api_model_detail_contract(server: ObservabilityServer, drifted: dict[str, Any]) -> None:
    status, _, body = get(server, "/api/models/demo-ner")
    assert status == 200
    rep = json.loads(body)
    h = rep["history"]
    assert set(h) == {"events_per_point", "points", "max_points", "event", "time", "signals", "outlier_share"}
    share = h["outlier_share"]  # embedding_outliers' share over the trailing window, per history point
    assert len(share["event"]) == len(share["share"]) == len(share["threshold_share"]) <= h["max_points"]
    assert all(0 <= x <= 1 for x in share["share"]) and 0 < share["expected_share"] < 0.05
    assert set(share["event"]) <= set(h["event"])
    assert 0 < h["points"] == len(h["event"]) == len(h["time"]) <= h["max_points"]
    assert h["event"] == sorted(h["event"]) and h["event"][-1] == rep["monitored_events"] - 1
    assert set(h["signals"]) == set(rep["signals"])
    for s in h["signals"].values():
        assert len(s["score"]) == len(s["drift"]) == h["points"]
    p = rep["projection"]
    n_ref, n_cur = p["reference_events"], p["current_events"]
    assert n_ref > 0 and n_cur > 0
    assert len(p["reference"]["x"]) == len(p["reference"]["y"]) == len(p["reference"]["text"]) == n_ref
    for col in ("x", "y", "index", "event_id", "text", "score", "percentile", "nearest", "distance"):
        assert len(p["current"][col]) == n_cur, col
    assert all(0 <= j < n_ref for near in p["current"]["nearest"] for j in near)
    assert all(0.0 <= v <= 1.0 for v in p["current"]["percentile"])
    ex = rep["examples"]
    assert set(ex) == {"lowest_confidence", "smallest_margin", "margin_available", "margin_note", "recent_events"}
    for item in ex["lowest_confidence"] + rep["outliers"]:
        assert {"score", "index", "event_id", "text", "entities", "nearest_reference"} <= set(item)
        for n in item["nearest_reference"]:
            assert set(n) == {"reference", "distance", "text"} and n["text"] == p["reference"]["text"][n["reference"]]
    c = rep["confidence_by_label"]
    assert c["levels"] == [0.05, 0.25, 0.5, 0.75, 0.95] and c["labels"]
    assert set(c["labels"][0]) == {"label", "reference_count", "reference", "current_count", "current",
                                   "median_change"}
    assert rep["signals"] == json.loads(json.dumps(drifted["signals"]))


# -- the pages ---------------------------------------------------------------------------------------------
def test_model_page_shows_what_drifted(server: ObservabilityServer, drifted: dict[str, Any]) -> None:
    dom = page(server, "/models/demo-ner")
    assert [a.get("src") for t, a in dom.tags if t == "script"] == ["/static/nlpmon.js"]
    assert dom.find("main", id="content") and dom.find("nav") and dom.find("header") and dom.find("footer")
    row = dom.find("tr", data_signal="embedding")
    assert row and row[0]["data-drift"] == "true"
    text = dom.all_text()
    assert "DRIFT" in text and dom.find("p", id="drift-summary", **{"class": "banner drift"})
    svg = dom.find("svg", id="projection")
    assert svg and svg[0]["role"] == "img" and svg[0]["aria-labelledby"] == "proj-t proj-d"
    n_ref, n_cur = drifted["projection"]["reference_events"], drifted["projection"]["current_events"]
    assert int(svg[0]["data-reference-points"] or 0) == n_ref
    assert sum(1 for t, a in dom.tags if "pt-ref" in (a.get("class") or "")) == n_ref
    assert sum(1 for t, a in dom.tags if "pt-cur" in (a.get("class") or "")) == n_cur
    # label shares, largest change first, as in the report
    moved = drifted["signals"]["entity_label"]["evidence"]["moved_labels"]
    assert text.index(moved[0]["label"]) < text.index(moved[-1]["label"])
    # the most out-of-reference text, with its entities marked, and the margin said unavailable
    assert drifted["outliers"][0]["event_id"] in text
    assert dom.find("mark", **{"class": "ent"}) and "prediction.probabilities" in text
    # every chart is labelled for screen readers, every table has column headers
    for t, a in dom.tags:
        if t == "svg":
            assert a.get("role") == "img" and a.get("aria-labelledby"), a
    assert len(dom.find("th", scope="col")) >= 20
    assert dom.find("section", id="quality") == []  # no quality figures for this model


def test_overview_lists_models_with_flags_throughput_and_labelled_fraction(server: ObservabilityServer) -> None:
    for path in ("/", "/models"):
        dom = page(server, path)
        rows = {a["data-model"]: a for a in dom.find("tr") if a.get("data-model")}
        assert set(rows) == {"demo-ner", EVIL, "labelled", "two"} and rows["demo-ner"]["data-drift"] == "true"
        text = dom.all_text()
        assert "25.0 %" in text and "100.0" in text and "—" in text  # labelled fraction, events/s, absent figure
        assert "51 s ago" in text  # last event at 1.7e9 + 8.99 s, page rendered at 1.7e9 + 60 s
        assert dom.find("a", href="/models/demo-ner?version=1")


def test_quality_section_renders_the_quality_report(server: ObservabilityServer) -> None:
    dom = page(server, "/models/labelled")
    assert dom.find("section", id="quality")
    text = dom.all_text()
    for figure in ("25.0 %", "0.910", "0.800", "0.851", "120", "0.880", "0.030", "0.828", "0.426", "250",
                   "0.960 → 0.828", "DROP", "score 7.50, threshold 4.75", "no significant change"):
        assert figure in text, figure
    rendered = pages.model_page("k", {**QUALITY, "model": "m", "model_version": "1", "status": "monitoring",
                                      "signals": {}, "quality": QUALITY}, NOW, 5)
    assert "Micro precision / recall / F1" in rendered and "0.914 / 0.756 / 0.828" in rendered
    assert "Labelled fraction" in rendered and "—" in Dom(rendered).all_text()  # ORG's undefined precision


def test_event_texts_labels_and_names_are_escaped(server: ObservabilityServer) -> None:
    name = quote(EVIL, safe="")
    for path in (f"/models/{name}?version={name}", "/", f"/models/{name}?version={name}&example={name}"):
        status, _, body = get(server, path)
        assert status == 200
        dom = Dom(body)
        assert [a.get("src") for t, a in dom.tags if t == "script"] == ["/static/nlpmon.js"], path
        assert not [t for t, _ in dom.tags if t == "img"], path
        assert not [k for _, a in dom.tags for k in a if k.startswith("on")], path
        assert "<script>alert" not in body and "&lt;script&gt;alert" in body
        assert EVIL in dom.all_text() or path == "/"  # shown, as text
    status, _, body = get(server, f"/models/{quote('<script>x</script>', safe='')}")  # unknown model: 404 page
    assert status == 404 and "<script>x" not in body and "&lt;script&gt;x" in body


def test_selected_example_shows_its_nearest_reference_texts(server: ObservabilityServer,
                                                            drifted: dict[str, Any]) -> None:
    eid = drifted["outliers"][0]["event_id"]
    dom = page(server, f"/models/demo-ner?example={quote(eid)}")
    assert dom.find("section", id="selected") and dom.find("circle", **{"class": "selected"})
    text = dom.all_text()
    for n in drifted["outliers"][0]["nearest_reference"]:
        assert n["text"] in text
    cur = drifted["projection"]["current"]
    dom = page(server, f"/models/demo-ner?example={quote(cur['event_id'][-1])}")  # a point of the projection
    assert "Nearest reference examples" in dom.all_text()
    dom = page(server, "/models/demo-ner?example=gone")
    assert "no longer among the recent examples" in dom.all_text()


def test_bad_requests_are_one_line_400s_and_unknown_models_404(server: ObservabilityServer) -> None:
    for path, message in (("/models/demo-ner?foo=1", "unknown query parameter 'foo'"),
                          ("/models/demo-ner?refresh=soon", "refresh must be a whole number"),
                          ("/models/demo-ner?refresh=99999", "refresh must be a whole number"),
                          ("/models/demo-ner?version=1&version=2", "given 2 times"),
                          ("/models/demo-ner?example=", "is empty"),
                          ("/?version=1", "unknown query parameter 'version'"),
                          ("/models/two", "several versions")):
        dom = page(server, path, 400)
        assert dom.h1.startswith("400: ") and message in dom.h1 and "\n" not in dom.h1, (path, dom.h1)
    status, ctype, body = get(server, "/api/models/demo-ner?refresh=3")
    assert status == 400 and ctype.startswith("application/json")
    assert json.loads(body) == {"error": "unknown query parameter 'refresh'; allowed: version"}
    dom = page(server, "/models/two", 400)
    assert dom.find("a", href="/models/two?version=a") and dom.find("a", href="/models/two?version=b")
    dom = page(server, "/models/nope", 404)
    assert dom.find("a", href="/models/demo-ner")
    assert page(server, "/models/demo-ner?refresh=0").find("body")[0]["data-refresh"] == "0"


def test_static_assets_are_served_and_nothing_else(server: ObservabilityServer) -> None:
    status, ctype, body = get(server, "/static/nlpmon.js")
    assert status == 200 and ctype.startswith("text/javascript") and "DOMParser" in body
    status, ctype, body = get(server, "/static/nlpmon.css")
    assert status == 200 and ctype.startswith("text/css")
    assert get(server, "/static/../http.py")[0] == 404 and get(server, "/static/other.js")[0] == 404
    with urllib.request.urlopen(server.url + "/models/demo-ner", timeout=TIMEOUT) as r:
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]  # no inline or foreign script runs


def test_pages_before_any_model_or_reference() -> None:
    empty = Dom(pages.overview_page([], NOW, 5))
    assert "No model has sent events yet." in empty.all_text() and not empty.find("table")
    waiting = pages.model_page("m/1", {"model": "m", "model_version": "1", "status": "collecting_baseline",
                                       "reference": {"events": 120, "needed": 2000}}, NOW, 5)
    text = Dom(waiting).all_text()
    assert "Not monitoring yet: collecting baseline (120 of 2,000 reference events)" in text
    assert "Signals" not in text and "Embeddings" not in text


def test_model_page_shows_how_alike_the_marked_events_are(server: ObservabilityServer,
                                                          drifted: dict[str, Any]) -> None:
    """embedding_clusters on the page: per full window, the marked count, the expected one, the mean cosine
    between marked events and the statistic against its threshold, as in the report."""
    sig = drifted["signals"]["embedding_clusters"]
    windows = sig["evidence"]["windows"]
    assert windows, "the demo fills at least one window"
    dom = page(server, "/models/demo-ner")
    text = dom.all_text()
    assert "Outside the reference and alike (embedding_clusters" in text
    assert "Marked events per window and how alike they are" in text
    for w in windows:
        assert f'{w["marked"]} of {w["items"]}' in text
    assert "Mean cosine" in text and "Statistic / threshold" in text
def test_every_event_field_is_escaped_through_the_real_monitor() -> None:
    """Model, version, entity labels, tags, texts and event ids all carrying a payload, through MonitorSet:
    every page and the API show them as text, never as markup."""
    events = generate_events(900, drift_at=600)
    for i, e in enumerate(events):
        e["split"] = "reference" if i < 300 else "production"
        e["model"], e["model_version"] = f"m{EVIL}", f"v{EVIL}"
        e["event_id"] = f"{EVIL}{i}"
        shift = len(EVIL) + 1
        e["text"] = f"{EVIL} {e['text']}"
        for x in e["entities"]:
            x["label"] = f"{x['label']}{EVIL}"
            x["start"], x["end"] = x["start"] + shift, x["end"] + shift
        e["tokens"] = [{**t, "tag": f"{t['tag']}{EVIL}"} for t in e["tokens"]]
    ms = MonitorSet(MonitorConfig(calibration_splits=2))
    lines = [json.dumps(e) for e in events]
    for i in range(0, len(lines), 150):
        ms.process_lines(lines[i:i + 150])
    reports = ms.report()
    (_key, rep), = reports.items()
    assert rep["model"] == f"m{EVIL}" and rep["status"] == "monitoring"
    srv = ObservabilityServer(CollectorRegistry(), reports=lambda: reports, readiness=dict, last_poll=lambda: None,
                              wall=lambda: NOW)
    srv.start()
    try:
        model, version = quote(rep["model"], safe=""), quote(rep["model_version"], safe="")
        ids = [rep["outliers"][0]["event_id"], rep["examples"]["lowest_confidence"][0]["event_id"],
               rep["projection"]["current"]["event_id"][-1]]
        paths = ["/", f"/models/{model}?version={version}",
                 *[f"/models/{model}?version={version}&example={quote(i, safe='')}" for i in ids]]
        for path in paths:
            status, _, body = get(srv, path)
            assert status == 200, (path, body[:300])
            dom = Dom(body)
            assert [a.get("src") for t, a in dom.tags if t == "script"] == ["/static/nlpmon.js"], path
            assert not [t for t, _ in dom.tags if t == "img"], path
            assert not [k for _, a in dom.tags for k in a if k.startswith("on")], path
            assert "<script>alert" not in body and "&lt;script&gt;alert" in body, path
        detail = get(srv, f"/models/{model}?version={version}")[2]
        text = Dom(detail).all_text()
        assert f"m{EVIL}" in text and EVIL + " " in text  # the model name and the texts, shown as text
        assert any(f"{label}{EVIL}" in text for label in LABELS)
        api = json.loads(get(srv, f"/api/models/{model}?version={version}")[2])
        assert api["model"] == f"m{EVIL}" and api["outliers"][0]["event_id"].startswith(EVIL)
    finally:
        srv.stop()
