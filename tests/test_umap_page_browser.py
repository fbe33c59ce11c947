"""The model page with the UMAP projection, rendered in headless Chromium from the real ObservabilityServer.

A MonitorSet is fed a drifting synthetic stream; its projection goes through the real UMAP worker
(``UmapProjections`` with umap-learn, as ``NlpmonService`` does with ``pages.projection: umap``): first the
page says "UMAP fitting" over PCA, then it shows UMAP. Needs chromium (like tests/test_pages_browser.py)
and umap-learn (``nlpmon[umap]``, installed by ``make test``); each skips with the reason, fails under CI.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from nlpmon.app.projection_worker import UmapProjections
from nlpmon.demo import generate_events
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.observability.http import ObservabilityServer
from tests.test_pages_browser import Dom, chromium, run_chromium
from tests.test_umap_projection import require_umap

pytestmark = pytest.mark.slow
FIT_WAIT_S = 600.0  # a cold fit compiles umap's numba code first: about 30 s on these machines


@pytest.fixture(scope="module")
def pages() -> Iterator[dict[str, dict[str, Any]]]:
    """Reports of one model: while UMAP fits (PCA with the note) and once it is ready."""
    require_umap()
    events = generate_events(900, drift_at=600, model="news-ner")
    for e in events[:400]:
        e["split"] = "reference"
    ms = MonitorSet(MonitorConfig(calibration_splits=2))
    lines = [json.dumps(e) for e in events]
    for i in range(0, len(lines), 100):
        ms.process_lines(lines[i:i + 100])
    rep = ms.report()["news-ner/1"]
    mon = ms.monitors[("news-ner", "1")]
    _, _, _, recent, _ = mon.evidence.recent_embeddings.arrays()
    worker = UmapProjections(seed=0)
    try:
        view = ms.page_views()["news-ner/1"]
        assert view.monitored is not None and rep == view.to_json()

        def apply() -> dict[str, Any]:  # the service's path (typed), then the report's JSON the pages are served
            assert view.monitored is not None
            block = worker.apply("news-ner/1", mon.profile, view.monitored.projection, recent, mon.monitored_events)
            assert block is not None
            return replace(view, monitored=replace(view.monitored, projection=block)).to_json()

        fitting = apply()
        assert worker.wait_idle(FIT_WAIT_S)
        apply()  # queues the transform of the recent points
        assert worker.wait_idle(FIT_WAIT_S)
        ready = apply()
        assert worker.fit_threads == ["nlpmon-umap"]
        yield {"fitting": fitting, "ready": ready}
    finally:
        worker.close()


def serve(report: dict[str, Any]) -> ObservabilityServer:
    srv = ObservabilityServer(CollectorRegistry(), reports=lambda: {"news-ner/1": report}, readiness=dict,
                              last_poll=lambda: None, host="127.0.0.1", port=0)
    srv.start()
    return srv


def rendered(exe: str, report: dict[str, Any], profile: Path) -> Dom:
    srv = serve(report)
    try:
        res = run_chromium(exe, profile, "--virtual-time-budget=3000", "--dump-dom",
                           f"{srv.url}/models/news-ner?refresh=0")
    finally:
        srv.stop()
    assert res.returncode == 0, res.stderr[-2000:]
    return Dom(res.stdout)


def test_umap_page_renders_and_says_which_projection(pages: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    exe = chromium()
    ready = pages["ready"]["projection"]
    assert ready["method"] == "umap" and pages["fitting"]["projection"]["method"] == "pca"

    dom = rendered(exe, pages["ready"], tmp_path / "p1")
    method = [a for t, a in dom.tags if t == "p" and a.get("id") == "projection-method"]
    assert method and method[0]["data-method"] == "umap"
    svg = [a for t, a in dom.tags if t == "svg" and a.get("id") == "projection"]
    assert svg and int(svg[0]["data-reference-points"] or 0) == len(ready["reference"]["x"]) > 0
    assert int(svg[0]["data-current-points"] or 0) == len(ready["current"]["x"]) > 0
    assert dom.count("circle", "pt-ref") == len(ready["reference"]["x"])

    dom = rendered(exe, pages["fitting"], tmp_path / "p2")
    method = [a for t, a in dom.tags if t == "p" and a.get("id") == "projection-method"]
    assert method and method[0]["data-method"] == "pca"

    srv = serve(pages["ready"])
    try:
        shot = tmp_path / "umap-page.png"
        res = run_chromium(exe, tmp_path / "p3", f"--screenshot={shot}", "--window-size=1280,2400",
                           "--hide-scrollbars", "--virtual-time-budget=3000", f"{srv.url}/models/news-ner?refresh=0")
    finally:
        srv.stop()
    assert res.returncode == 0 and shot.stat().st_size > 10_000, res.stderr[-2000:]
    import os

    if os.environ.get("NLPMON_ARTIFACTS"):
        Path(os.environ["NLPMON_ARTIFACTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["NLPMON_ARTIFACTS"]) / "umap-page.png")


def test_pages_text_names_the_projection(pages: dict[str, dict[str, Any]]) -> None:
    from nlpmon.observability import pages as html

    ready = html.model_page("k", pages["ready"], 0.0, 0)
    assert "Projection: <strong>UMAP</strong>" in ready and "UMAP (fitted on the reference sample" in ready
    fitting = html.model_page("k", pages["fitting"], 0.0, 0)
    assert "Projection: <strong>PCA</strong>" in fitting and "UMAP fitting on" in fitting
