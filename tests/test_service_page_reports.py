"""``NlpmonService.reports``: the page reports are built by the consumer loop only when HTTP asks, once per
metrics refresh; the metrics refresh itself builds none (no broker: the loop's hooks are called directly)."""

from __future__ import annotations

import json
import threading
from typing import Any

from nlpmon.app.processor import MonitorPartitionProcessor, References
from nlpmon.app.service import NlpmonService
from nlpmon.app.settings import load_settings
from nlpmon.demo import generate_events
from nlpmon.kafka.runner_metrics import RunnerMetrics
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.page_evidence import PageEvidence
from nlpmon.monitor.page_view import ModelPage
from tests.support import wait_until


class FakeRunner:
    """What ``_refresh`` reads of the consumer runner."""

    def metrics(self) -> RunnerMetrics:
        return RunnerMetrics(assigned=(("t", 0),))


def test_page_reports_are_built_on_the_loop_when_asked_and_cached_until_the_next_refresh(monkeypatch: Any) -> None:
    built: list[int] = []
    page_blocks = PageEvidence.page_blocks

    def counting(self: PageEvidence, *a: Any) -> Any:
        built.append(1)
        return page_blocks(self, *a)

    monkeypatch.setattr(PageEvidence, "page_blocks", counting)
    svc = NlpmonService(load_settings())
    svc.runner = FakeRunner()  # type: ignore[assignment]
    events = generate_events(500, model="m")
    for e in events[:300]:
        e["split"] = "reference"
    proc = MonitorPartitionProcessor("t", 0, MonitorConfig(calibration_splits=2), References())
    svc._processors[("t", 0)] = proc
    proc.pipeline.process_lines([json.dumps(e) for e in events])
    svc._refresh(svc.runner)  # type: ignore[arg-type]
    assert built == []  # the metrics refresh built no page evidence
    (key,) = svc._views
    model, version = key.split("/")
    assert svc.metrics.registry.get_sample_value(
        "nlpmon_events_total", {"model": model, "model_version": version, "split": "production"}) == 200

    got: list[dict[str, ModelPage]] = []
    asker = threading.Thread(target=lambda: got.append(svc.reports()))
    asker.start()
    wait_until(lambda: svc._page_request is not None, 30, "the HTTP thread's request")
    svc._serve_page_request()  # the loop's next poll
    asker.join(30)
    assert list(got[0]) == [key] and got[0][key].events["production"] == 200
    assert built == [1]
    assert svc.reports() == got[0] and built == [1]  # cached: no request, nothing built again
    svc._refresh(svc.runner)  # type: ignore[arg-type]
    svc.page_wait_s = 0.01  # nobody serves this one: the last reports are returned
    assert svc.reports() == got[0] and built == [1]
