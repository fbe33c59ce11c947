"""The UMAP projection: the worker never fits on the caller's thread and never blocks it, the page shows PCA
with a note until UMAP is ready, a new reference is fitted anew, failures fall back to PCA; and real
umap-learn fits are reproducible with a seed."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from nlpmon.app.projection_worker import UmapProjections
from nlpmon.monitor.page_view import ModelPage, Projection
from nlpmon.monitor.umap_projection import UMAP_AXES, UmapModel, fit_umap, umap_block, umap_missing

WAIT_S = 60.0


class Shift:
    """A stand-in for umap.UMAP: its 'transform' is the first two coordinates plus 100."""

    def transform(self, x: Any) -> Any:
        return np.asarray(x)[:, :2] + 100.0


def fake_fit(release: threading.Event | None = None, calls: list[str] | None = None) -> Any:
    def fit(ref: Any) -> UmapModel:
        if calls is not None:
            calls.append(threading.current_thread().name)
        if release is not None:
            assert release.wait(WAIT_S), "the test never released the fit"
        return UmapModel(np.asarray(ref, np.float32)[:, :2] * 10.0, Shift())
    return fit


def block(n_ref: int, n_cur: int, seed: int = 0) -> tuple[Projection, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref, cur = rng.standard_normal((n_ref, 8)).astype(np.float32), rng.standard_normal((n_cur, 8)).astype(np.float32)
    b = {"method": "pca", "axes": ["pc1", "pc2"], "percentile_bands": [0.9, 0.99],
         "reference": {"x": [0.0] * n_ref, "y": [0.0] * n_ref, "text": ["r"] * n_ref},
         "current": {"x": [0.0] * n_cur, "y": [0.0] * n_cur, "event_id": [f"e{i}" for i in range(n_cur)],
                     "index": list(range(n_cur)), "text": ["c"] * n_cur, "score": [0.0] * n_cur,
                     "percentile": [0.5] * n_cur, "nearest": [[0]] * n_cur, "distance": [[0.1]] * n_cur}}
    return Projection.from_json(b), ref, cur


def note(p: Projection | None) -> str:
    assert p is not None and p.note is not None
    return p.note


def method(p: Projection | None) -> str:
    assert p is not None
    return p.method


def projection(view: ModelPage) -> Projection:
    assert view.monitored is not None and view.monitored.projection is not None
    return view.monitored.projection


def test_pca_with_a_note_until_the_fit_on_the_worker_is_ready() -> None:
    release, calls = threading.Event(), []
    w = UmapProjections(fit=fake_fit(release, calls))
    profile = object()
    b, ref, cur = block(30, 5)
    try:
        out = w.apply("m/1", profile, b, cur, 100, reference=lambda: ref)
        assert out is not None and out.method == "pca" and out.requested == "umap"
        assert note(out).startswith("UMAP fitting on 30 reference points")
        # apply did not wait for the fit (still blocked), and says the same again
        assert note(w.apply("m/1", profile, b, cur, 101, reference=lambda: ref)).startswith("UMAP fitting")
        release.set()
        assert w.wait_idle(WAIT_S)
        assert calls == ["nlpmon-umap"] and threading.current_thread().name != "nlpmon-umap"
        out = w.apply("m/1", profile, b, cur, 102, reference=lambda: ref)
        assert out is not None and out.method == "pca" and "transforming" in note(out)
        assert w.wait_idle(WAIT_S)
        out = w.apply("m/1", profile, b, cur, 103, reference=lambda: ref)
        assert out is not None and out.method == "umap" and out.axes == UMAP_AXES and out.as_of_event == 102
        assert list(out.reference.x) == (ref[:, 0] * 10).tolist()
        assert list(out.current.y) == (cur[:, 1] + 100).tolist()
        assert out.current.event_id == b.current.event_id and out.percentile_bands == (0.9, 0.99)
        assert out.to_json()["fit_seconds"] is not None and "requested" not in out.to_json()
        assert Projection.from_json(out.to_json()) == out  # a member's UMAP block reads back the same
    finally:
        release.set()
        w.close()


def test_a_new_reference_is_fitted_anew_and_failures_fall_back_to_pca() -> None:
    calls: list[str] = []
    w = UmapProjections(fit=fake_fit(None, calls))
    b, ref, cur = block(20, 3)
    p1, p2 = object(), object()
    try:
        w.apply("m/1", p1, b, cur, 1, reference=lambda: ref)
        assert w.wait_idle(WAIT_S)
        w.apply("m/1", p1, b, cur, 2, reference=lambda: ref)
        assert w.wait_idle(WAIT_S) and len(calls) == 1
        assert method(w.apply("m/1", p1, b, cur, 3, reference=lambda: ref)) == "umap"
        assert note(w.apply("m/1", p2, b, cur, 4, reference=lambda: ref)).startswith("UMAP fitting")
        assert w.wait_idle(WAIT_S) and len(calls) == 2
    finally:
        w.close()

    def broken(ref: Any) -> UmapModel:
        raise ValueError("no good\nsecond line")

    bad = UmapProjections(fit=broken)
    try:
        bad.apply("m/1", p1, b, cur, 1, reference=lambda: ref)
        assert bad.wait_idle(WAIT_S)
        out = bad.apply("m/1", p1, b, cur, 2, reference=lambda: ref)
        assert method(out) == "pca" and note(out) == "UMAP failed: no good"
    finally:
        bad.close()


def test_bounds_sample_size_and_cached_models() -> None:
    calls: list[str] = []
    w = UmapProjections(fit=fake_fit(None, calls), max_reference=25, cached_models=2)
    big, ref_big, cur = block(30, 3)
    try:
        out = w.apply("big/1", object(), big, cur, 1, reference=lambda: ref_big)
        assert method(out) == "pca" and "at most pages.umap_max_reference = 25" in note(out) and not calls
        b, ref, cur = block(20, 3)
        profiles = [object() for _ in range(4)]
        for i, p in enumerate(profiles):
            w.apply(f"m{i}/1", p, b, cur, 1, reference=lambda: ref)
            assert w.wait_idle(WAIT_S)
        assert list(w._entries) == ["m2/1", "m3/1"]  # the least recently shown left
        assert note(w.apply("m0/1", profiles[0], b, cur, 2, reference=lambda: ref)).startswith("UMAP fitting")
        assert w.wait_idle(WAIT_S) and len(calls) == 5
        assert w.apply("x/1", object(), None, cur, 1) is None  # no projection: nothing to do
    finally:
        w.close()


def test_umap_block_keeps_everything_but_the_coordinates() -> None:
    b, _, _ = block(4, 2)
    out = umap_block(b, np.ones((4, 2), np.float32), np.zeros((2, 2), np.float32), as_of_event=7)
    assert out.reference.x == (1.0,) * 4 and out.current.x == (0.0, 0.0)
    assert out.current.nearest == b.current.nearest and out.as_of_event == 7
    assert out.current.text == b.current.text and out.current.percentile == b.current.percentile
    with pytest.raises(ValueError, match="do not match"):
        umap_block(b, np.ones((3, 2), np.float32), np.zeros((2, 2), np.float32))


def require_umap() -> None:
    missing = umap_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; make test installs it")
        pytest.skip(missing)


@pytest.mark.slow
def test_real_umap_fit_and_transform_are_reproducible() -> None:
    require_umap()
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((3, 64)).astype(np.float32) * 4
    ref = np.vstack([c + rng.standard_normal((40, 64)).astype(np.float32) for c in centres])
    cur = centres[1] + rng.standard_normal((10, 64)).astype(np.float32)
    a, b = fit_umap(ref, seed=5, n_neighbors=10), fit_umap(ref, seed=5, n_neighbors=10)
    assert a.reference_xy.shape == (120, 2) and np.array_equal(a.reference_xy, b.reference_xy)
    ta, tb = a.transform(cur), b.transform(cur)
    assert ta.shape == (10, 2) and np.array_equal(ta, tb)
    # the new points land among the reference points of their own cluster
    centre = a.reference_xy[40:80].mean(axis=0)
    others = [a.reference_xy[:40].mean(axis=0), a.reference_xy[80:].mean(axis=0)]
    d = np.linalg.norm(ta.mean(axis=0) - centre)
    assert all(d < np.linalg.norm(ta.mean(axis=0) - o) for o in others)
    with pytest.raises(ValueError, match="at least 4"):
        fit_umap(ref[:3], seed=0)


def test_service_hands_the_reports_projection_to_the_worker() -> None:
    """NlpmonService with pages.projection=umap: the refresh puts the worker's answer in the report, for the
    points the report's projection shows; without the setting there is no worker."""
    import json

    from nlpmon.app.processor import MonitorPartitionProcessor, References
    from nlpmon.app.service import NlpmonService
    from nlpmon.app.settings import load_settings
    from nlpmon.demo import generate_events
    from nlpmon.monitor.config import MonitorConfig

    assert NlpmonService(load_settings()).projections is None
    svc = NlpmonService(load_settings(pages={"projection": "umap"}))
    assert svc.projections is not None
    svc.projections.close()
    calls: list[str] = []
    svc.projections = UmapProjections(fit=fake_fit(None, calls))
    events = generate_events(500, model="m")
    for e in events[:300]:
        e["split"] = "reference"
    proc = MonitorPartitionProcessor("t", 0, MonitorConfig(calibration_splits=2), References())
    proc.monitors.process_lines([json.dumps(e) for e in events])
    try:
        (key, view), = proc.page_views().items()
        assert projection(view).method == "pca"
        out = svc._umap(proc, key, view)
        assert projection(out).requested == "umap" and "UMAP fitting" in note(projection(out))
        for _ in range(2):
            assert svc.projections.wait_idle(WAIT_S)
            out = svc._umap(proc, key, view)
        assert projection(out).method == "umap" and calls == ["nlpmon-umap"]
        assert projection(out).current.event_id == projection(view).current.event_id
        assert view.monitored is not None
        moved = replace(projection(view), current=replace(projection(view).current, event_id=("other",)))
        stale = replace(view, monitored=replace(view.monitored, projection=moved))
        assert svc._umap(proc, key, stale) is stale  # not the points the worker would place: untouched
    finally:
        svc.projections.close()
