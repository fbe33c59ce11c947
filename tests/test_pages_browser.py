"""The model page of a drifted model in headless Chromium, served by the real ObservabilityServer on 127.0.0.1.

Checks the DOM after the bundled script ran (``--dump-dom``): the drifted signal is shown as drifted,
the projection has reference and current points, and the script refreshed ``<main>`` without a reload.
Saves a screenshot under the test's temporary folder (and copies it to ``$NLPMON_ARTIFACTS`` when set).

Needs Debian's ``chromium`` (``make chromium``, or ``scripts/install-chromium.sh`` as root; ``make pytest``
installs it when missing and root, or under CI). Skipped with the reason when absent; a failure under CI.
``NLPMON_CHROMIUM`` names another Chromium binary.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from nlpmon.demo import generate_events
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.observability.http import ObservabilityServer

pytestmark = pytest.mark.slow
BROWSER_TIMEOUT_S = 120


def chromium() -> str:
    exe = os.environ.get("NLPMON_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    why = "chromium is not installed: run `make chromium` as root (or apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI must run the browser test")
    pytest.skip(why)


@pytest.fixture(scope="module")
def served() -> Iterator[ObservabilityServer]:
    """A model that drifted: a MonitorSet fed a synthetic stream that changes domain at event 600."""
    events = generate_events(1100, drift_at=700, model="news-ner")
    for e in events[:400]:
        e["split"] = "reference"
    events[1050]["text"] = "<script>document.title='owned'</script> " + events[1050]["text"]
    ms = MonitorSet(MonitorConfig(calibration_splits=2))
    lines = [json.dumps(e) for e in events]
    for i in range(0, len(lines), 100):
        ms.process_lines(lines[i:i + 100])
    reports = ms.report()
    assert reports["news-ner/1"]["signals"]["embedding"]["drift"]  # the premise of the test
    srv = ObservabilityServer(CollectorRegistry(), reports=lambda: reports, readiness=dict, last_poll=lambda: None,
                              host="127.0.0.1", port=0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def run_chromium(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--disable-background-networking", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False)


class Dom(HTMLParser):
    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.signal_text: dict[str, str] = {}
        self._row: str | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "tr" and a.get("data-signal"):
            self._row = a["data-signal"]
            self.signal_text[self._row] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row is not None:
            self.signal_text[self._row] += data

    def count(self, tag: str, cls: str) -> int:
        return sum(1 for t, a in self.tags if t == tag and cls in (a.get("class") or "").split())


def test_drifted_model_page_in_headless_chromium(served: ObservabilityServer, tmp_path: Path) -> None:
    exe = chromium()
    url = f"{served.url}/models/news-ner?refresh=1"
    t0 = time.monotonic()
    res = run_chromium(exe, tmp_path / "profile-dom", "--virtual-time-budget=6000", "--dump-dom", url)
    assert res.returncode == 0, res.stderr[-2000:]
    dom = Dom(res.stdout)
    body = [a for t, a in dom.tags if t == "body"]
    assert body, res.stdout[:500]
    # the drifted signal is shown as drifted, in words
    assert [a.get("data-drift") for t, a in dom.tags if t == "tr" and a.get("data-signal") == "embedding"] == ["true"]
    assert "DRIFT" in dom.signal_text["embedding"]
    # the projection is drawn: reference and current points
    svg = [a for t, a in dom.tags if t == "svg" and a.get("id") == "projection"]
    assert svg and int(svg[0]["data-reference-points"] or 0) > 0 and int(svg[0]["data-current-points"] or 0) > 0
    assert dom.count("circle", "pt-ref") == int(svg[0]["data-reference-points"] or 0)
    assert dom.count("circle", "pt-cur") + dom.count("path", "pt-cur") == int(svg[0]["data-current-points"] or 0)
    # the bundled script ran and swapped in a fresh <main> (no reload); the injected text stayed text
    assert int(body[0].get("data-refreshed") or 0) >= 1, "the page did not refresh itself"
    title = [t for t, _ in dom.tags if t == "title"]
    assert title and "owned" not in res.stdout.split("</title>")[0]
    shot = tmp_path / "model-page.png"
    res = run_chromium(exe, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2000",
                       "--hide-scrollbars", "--virtual-time-budget=3000", url.replace("refresh=1", "refresh=0"))
    assert res.returncode == 0 and shot.stat().st_size > 10_000, res.stderr[-2000:]
    artifacts = os.environ.get("NLPMON_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "model-page.png")
    print(f"browser test: {time.monotonic() - t0:.1f} s, screenshot {shot}")
