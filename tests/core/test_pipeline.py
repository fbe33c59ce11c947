"""The core composition (``Pipeline``) and its typed metrics view.

- reference-file events join their labels (the baseline of the quality report), whichever comes first:
  the model's predictions or its labels; a snapshot restores them without adding them again;
- ``metrics_views`` carries exactly what the page report says about every exported figure, and never
  builds page evidence (the pages' projection and neighbours).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from nlpmon.demo import SyntheticStream
from nlpmon.events import decode_event
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.page_evidence import PageEvidence
from nlpmon.monitor.pipeline import Pipeline
from nlpmon.monitor.views import ModelMetrics
from nlpmon.quality import QualityConfig

CONFIG = MonitorConfig(calibration_splits=2)


def stream(n_ref: int = 400, n: int = 900) -> tuple[list[str], list[str], list[str]]:
    """Reference events (as from a reference file), production events drifting at 500, a label per event."""
    ref = [dict(e, event_id=f"ref-{i}") for i, e in enumerate(SyntheticStream(seed=3).events(n_ref, "reference"))]
    s = SyntheticStream(seed=3, drift_at=500)
    prod = [dict(e, event_id=f"ev-{i}") for i, e in enumerate(s.events(n))]
    labels = [json.dumps({"event_id": e["event_id"], "model": e["model"],
                          "entities": [{"label": x["label"], "start": x["start"], "end": x["end"] + (i % 3 == 0)}
                                       for x in e["entities"]]}) for i, e in enumerate(ref + prod)]
    return [json.dumps(e) for e in ref], [json.dumps(e) for e in prod], labels


@pytest.mark.parametrize("labels_first", [False, True])
def test_reference_file_events_join_their_labels(labels_first: bool) -> None:
    ref, prod, labels = stream()
    p = Pipeline(CONFIG, reference_events=[decode_event(x) for x in ref], quality=QualityConfig())
    if labels_first:
        p.process_label_lines(labels)
    for i in range(0, len(prod), 300):
        p.process_lines(prod[i:i + 300])
    if not labels_first:
        p.process_label_lines(labels)
    q = p.report()["demo-ner/1"]["quality"]
    assert q["join"]["matched"] == len(ref) + len(prod)
    assert q["join"]["label_expired_unmatched"] == 0 and q["join"]["pending_labels"] == 0
    assert q["reference"]["source"] is not None  # the reference labels are the baseline
    restored = Pipeline(CONFIG, reference_events=[decode_event(x) for x in ref], quality=QualityConfig())
    restored.restore(p.snapshot())
    restored.process_lines(prod[:1])  # a duplicate: the reference predictions are not added again
    assert restored.report()["demo-ner/1"]["quality"]["join"]["predictions"] == q["join"]["predictions"]


def test_without_ground_truth_reference_events_stay_out_of_the_join() -> None:
    ref, prod, _ = stream(300, 300)
    p = Pipeline(CONFIG, reference_events=[decode_event(x) for x in ref])
    p.process_lines(prod)
    assert "quality" not in p.report()["demo-ner/1"] and not p.quality.monitors


def test_metrics_view_equals_the_page_report_without_building_page_evidence(monkeypatch: Any) -> None:
    ref, prod, labels = stream()
    p = Pipeline(CONFIG, reference_events=[decode_event(x) for x in ref], quality=QualityConfig())
    for i in range(0, len(prod), 300):
        p.process_lines(prod[i:i + 300])
    p.process_label_lines(labels)
    built: list[int] = []
    page_blocks = PageEvidence.page_blocks

    def counting(self: PageEvidence, *a: Any) -> Any:
        built.append(1)
        return page_blocks(self, *a)

    monkeypatch.setattr(PageEvidence, "page_blocks", counting)
    views = p.metrics_views()
    assert built == []  # a metrics refresh builds no page evidence
    reports = p.report()
    assert built == [1]
    view = views["demo-ner/1"]
    assert any(s.drift for s in view.signals.values()) and view.quality is not None
    assert any(s.moved_labels for s in view.signals.values())
    assert any(s.current_quantiles for s in view.signals.values())
    want = ModelMetrics.from_report(json.loads(json.dumps(reports["demo-ner/1"], default=_plain)))
    assert want.quality is not None
    got = json.loads(json.dumps(view.quality.to_json(), default=_plain))
    assert got == want.quality.to_json()
    # every figure the exporter reads agrees; ``window`` only where the page evidence states one
    assert view.status == want.status and view.events == want.events and view.events_here == want.events_here
    assert view.reference_events == want.reference_events and view.last_event_time == want.last_event_time
    assert view.label_confidence == want.label_confidence
    assert view.signals.keys() == want.signals.keys()
    for name, s in view.signals.items():
        assert s == want.signals[name], name


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x))
