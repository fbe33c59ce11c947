"""The typed page view (``nlpmon.monitor.page_view``): ``ModelPage.to_json()`` is exactly the dict report the
monitor built before the view (kept below as the oracle), key for key and in order, on a seeded stream with
every signal, the quality join, a projection and a model still collecting its baseline; ``from_json`` reads
it back to the same view."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from nlpmon.drift.outliers import OutlierShareFeaturizer
from nlpmon.events import decode_event
from nlpmon.monitor.model_monitor import ModelMonitor
from nlpmon.monitor.page_view import (
    BinnedEvidence,
    CategoricalEvidence,
    ClusterEvidence,
    EmbeddingEvidence,
    EventShareEvidence,
    LabelShareEvidence,
    ModelPage,
    ModelSummary,
    OutlierShareEvidence,
)
from nlpmon.monitor.pipeline import Pipeline
from nlpmon.monitor.signals import SIGNALS
from nlpmon.quality import QualityConfig
from tests.core.test_pipeline import CONFIG, stream


def classification(split: str, n: int, seed: int) -> list[str]:
    """Text-classification events with per-class probabilities (margins) and embeddings."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = rng.dirichlet([2.0, 1.0, 1.0] if split == "reference" or i < n // 2 else [1.0, 1.0, 3.0])
        probs = dict(zip(("POS", "NEG", "NEU"), (round(float(x), 4) for x in p), strict=True))
        label = max(probs, key=probs.__getitem__)
        emb = rng.standard_normal(16).astype("<f4")
        out.append(json.dumps({"event_id": f"clf-{split}-{i}", "model": "clf", "task": "text-classification",
                               "split": split, "text": f"text {i}", "timestamp": 1.7e9 + i,
                               "embedding": {"dtype": "float32", "base64": base64.b64encode(emb.tobytes()).decode()},
                               "prediction": {"label": label, "score": probs[label], "probabilities": probs}}))
    return out


def bio(lines: list[str], drift_at: int) -> list[str]:
    """The NER events as model ``bio``: BIO token tags (invalid I- tags after O from ``drift_at``) and a span
    embedding on each entity."""
    rng = np.random.default_rng(7)
    out = []
    for i, raw in enumerate(lines):
        e = json.loads(raw)
        tags = ["B-X" if j % 4 == 0 else "I-X" if j % 4 == 1 else "O" for j in range(len(e["tokens"]))]
        if i >= drift_at and tags:
            tags[-1] = "I-X"  # after an O: invalid under BIO
        ents = [{**x, "embedding": rng.standard_normal(8).round(3).tolist()} for x in e["entities"]]
        out.append(json.dumps({**e, "model": "bio", "event_id": f"bio-{e['event_id']}", "entities": ents,
                               "tokens": [{**t, "tag": g} for t, g in zip(e["tokens"], tags, strict=True)]}))
    return out


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x))


def test_to_json_is_the_dict_report_on_a_stream_with_every_signal_quality_and_a_projection() -> None:
    ref, prod, labels = stream()
    p = Pipeline(CONFIG, reference_events=[decode_event(x) for x in ref], quality=QualityConfig())
    p.process_lines(classification("reference", 400, 1) + bio(ref, 10**9))
    clf, tagged = classification("production", 900, 2), bio(prod, 450)
    for i in range(0, len(prod), 300):
        p.process_lines(prod[i:i + 300] + clf[i:i + 300] + tagged[i:i + 300])
    p.process_lines([json.dumps({**json.loads(prod[0]), "model": "late", "event_id": "late-0"})])
    p.process_label_lines(labels)
    views = p.page_views()
    assert set(views) == {"demo-ner/1", "clf/unversioned", "bio/1", "late/1"}
    quality = p.quality.report()
    seen: set[str] = set()
    kinds: set[type] = set()
    for key, view in views.items():
        mon = p.monitors.monitors[(view.model, view.model_version)]
        want = legacy_report(mon)
        if key in quality:
            want["quality"] = quality[key]
        got = view.to_json()
        # the same JSON text: every key, value and key order
        assert json.dumps(got, default=_plain) == json.dumps(want, default=_plain), key
        assert ModelPage.from_json(json.loads(json.dumps(got, default=_plain))).to_json() == json.loads(
            json.dumps(got, default=_plain)), key
        row = json.loads(json.dumps(ModelSummary.of(key, view).to_json(), default=_plain))
        assert ModelSummary.from_json(row).to_json() == row  # a member's /api/models row, read by the parent
        assert row["drift"] == bool(view.drifting) and row["drifting_signals"] == sorted(view.drifting)
        seen |= set(view.signals)
        kinds |= {type(s.evidence) for s in view.signals.values()}
    assert seen == {s.name for s in SIGNALS}  # every signal is on a page
    assert kinds == {CategoricalEvidence, BinnedEvidence, EmbeddingEvidence, OutlierShareEvidence,
                     EventShareEvidence, ClusterEvidence, LabelShareEvidence}
    ner, cls, late = views["demo-ner/1"], views["clf/unversioned"], views["late/1"]
    assert ner.quality is not None and ner.monitored is not None and ner.monitored.projection is not None
    assert ner.drifting and ner.monitored.outliers and ner.monitored.history.outlier_share is not None
    assert cls.monitored is not None and cls.monitored.examples.margin_available
    assert late.monitored is None and not late.reference.calibrated and "signals" not in late.to_json()
    span = ner.signals["span_length"].evidence
    assert isinstance(span, BinnedEvidence) and span.by_label


def legacy_report(self: ModelMonitor) -> dict[str, Any]:
    """The dict report as ``ModelMonitor.report`` built it before the typed view (the oracle of ``to_json``'s
    assembly; the page evidence is built as the view's classes since, so its blocks enter by their JSON)."""
    out: dict[str, Any] = {
        "model": self.model, "model_version": self.model_version, "status": self.status,
        "events": dict(self.events_total), "events_processed_here": dict(self.events_here),
        "duplicate_events": self.duplicates, "duplicate_events_here": self.duplicates_here,
        "monitored_events": self.monitored_events,
        "last_event_time": self.last_event_time, "reference_error": self.reference_error,
        "texts": {"kept": self.config.texts.keep, "redacted": bool(self.config.texts.redact)},
    }
    if self.calibration is not None:  # only while waiting: the report after the wait is the blocking run's
        out["calibration_pending"] = {"source": self.calibration.job.source,
                                      "reference_events": self.calibration.job.sample.size,
                                      "held_events": self.deferred_events}
    if self.profile is None:
        out["reference"] = {"events": self.pending_reference.size or self.auto_baseline.seen,
                            "needed": self.config.auto_baseline_events}
        return out
    p = self.profile
    out["reference"] = {"source": p.source, "events": p.events, "unavailable": p.unavailable,
                        "calibration_seconds": round(p.calibration_seconds, 3),
                        "false_alarm_rate": self.config.false_alarm_rate}
    signals: dict[str, Any] = {}
    for name, win in self.windows.items():
        s = self.scores.get(name, {"score": 0.0, "window": 0, "statistic": None})
        signals[name] = {**s, "threshold": 1.0, "drift": self.flags.get(name, False),
                         "alarms": self.alarm_counts.get(name, 0),
                         **win.current(), "evidence": self.evidence.signal_evidence(name, win, p).to_json(),
                         "windows_not_evaluated": list(win.model.calibration.get("windows_not_evaluated", []))}
    out["signals"] = signals
    out["label_confidence"] = self.label_confidence_report()
    out["change_points"] = list(self.change_points)
    page = self.evidence.page_blocks(p, self.monitored_events)
    out["outliers"] = [{**o.to_json(), "nearest_reference": [n.to_json() for n in
                                                             page.outlier_neighbours.get(o.index, ())]}
                       for o in self.evidence.outliers]
    out["history"] = self.evidence.history.view().to_json()
    share = self.windows.get("embedding_outliers")
    if share is not None and isinstance(share.model.featurizer, OutlierShareFeaturizer):
        out["history"]["outlier_share"] = self.evidence.share_history.view(share.model.featurizer).to_json()
    rate, span = self.evidence.history.events_per_second()
    out["throughput"] = {"events_per_second": rate, "over_seconds": span, "clock": "event time"}
    out["examples"] = page.examples.to_json()
    out["projection"] = None if page.projection is None else page.projection.to_json()
    out["confidence_by_label"] = page.confidence_by_label.to_json()
    return out
