"""The partial-match part of the model page and of /api/models/<model>, from real QualityMonitor reports."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from nlpmon.observability import pages
from nlpmon.observability.http import ObservabilityServer
from nlpmon.observability.partial_match_page import reading
from tests.quality.test_quality_monitor import _scheme_run
from tests.test_pages import Dom

NOW = 1_700_000_060.0


@pytest.fixture(scope="module")
def reports() -> dict[str, Any]:
    base = {"model_version": "1", "status": "monitoring", "signals": {}}
    return {f"{fault}/1": {**base, "model": fault, "quality": _scheme_run(fault)} for fault in ("boundary", "type")}


@pytest.fixture(scope="module")
def server(reports: dict[str, Any]) -> Iterator[ObservabilityServer]:
    srv = ObservabilityServer(CollectorRegistry(), reports=lambda: reports, readiness=dict, last_poll=lambda: None,
                              host="127.0.0.1", port=0, wall=lambda: NOW)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def fetch(server: ObservabilityServer, path: str) -> str:
    with urllib.request.urlopen(server.url + path, timeout=10) as r:
        assert r.status == 200
        return str(r.read().decode())


def test_page_shows_every_scheme_its_counts_and_what_the_flags_point_at(server: ObservabilityServer,
                                                                        reports: dict[str, Any]) -> None:
    for fault, says in (("boundary", "Boundaries moved"), ("type", "their types wrong")):
        dom = Dom(fetch(server, f"/models/{fault}"))
        section = dom.find("section", id="partial-match")
        assert section, fault
        rows = {a["data-scheme"]: a["data-drift"] for t, a in dom.tags if t == "tr" and "data-scheme" in a}
        pm = reports[f"{fault}/1"]["quality"]["partial_match"]
        assert rows == {s: str(b["f1_drop"]["drift"]).lower() for s, b in pm["schemes"].items()}
        text = dom.all_text()
        assert says in text, fault
        strict = pm["schemes"]["strict"]["overall"]
        assert f'{strict["f1"]:.3f}' in text and str(strict["incorrect"]) in text
        assert "F1 per label and scheme" in text


def test_api_carries_the_partial_match_block(server: ObservabilityServer, reports: dict[str, Any]) -> None:
    rep = json.loads(fetch(server, "/api/models/boundary"))
    pm = rep["quality"]["partial_match"]
    assert set(pm) == {"documents", "min_overlap_percent", "schemes", "reference"}
    assert set(pm["schemes"]) == {"strict", "exact", "partial", "ent_type"}
    for block in pm["schemes"].values():
        assert set(block) == {"overall", "labels", "f1_drop"}
        assert set(block["overall"]) == {"correct", "incorrect", "partial", "missed", "spurious", "actual",
                                         "possible", "precision", "recall", "f1"}
    assert pm == json.loads(json.dumps(reports["boundary/1"]["quality"]["partial_match"]))


def test_no_section_without_partial_figures() -> None:
    html = pages.model_page("k", {"model": "m", "model_version": "1", "status": "monitoring", "signals": {},
                                  "quality": {"documents": 0, "partial_match": None}}, NOW, 5)
    assert 'id="partial-match"' not in html and 'id="quality"' in html


def test_reading_of_flag_patterns() -> None:
    assert reading(set()).startswith("No scheme")
    assert "tokenizer" in reading({"strict", "exact", "partial"})
    assert "type" in reading({"strict", "ent_type"})
    assert "misses or invents" in reading({"strict", "exact", "partial", "ent_type"})
    assert "strict" in reading({"strict"})
