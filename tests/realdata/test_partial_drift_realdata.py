"""Partial drift on real NER predictions: mixtures of two domains, and small references on stationary traffic.

Mixtures are built by benchmarks/mixture.py from the data's make_stream.py: 3,000 held-out events of A,
then 4,000 events each from B with probability p. Nothing is tuned to these domains; the baseline is the
issue's 20-line outlier counter (benchmarks/baseline_outliers.py) on the same streams.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from nlpmon.drift.signal import OUTLIER_BLOCK
from nlpmon.monitor.config import MonitorConfig
from nlpmon.replay import replay

from .conftest import Streams

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from baseline_outliers import alarms as baseline_alarms
from mixture import build_mixture

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

CHANGE = 3000
INF = 10**9


def delay(indices: list[int]) -> int:
    """Events from the change point to the first alarm after it, counting the alarm event."""
    return next((i - CHANGE + 1 for i in indices if i >= CHANGE), INF)


@pytest.fixture(scope="module", params=[("quotes", "pydocs", 0.05), ("quotes", "pydocs", 0.1),
                                        ("quotes", "pydocs", 0.3), ("pydocs", "quotes", 0.05),
                                        ("pydocs", "quotes", 0.1), ("pydocs", "quotes", 0.3)],
                ids=lambda p: f"{p[0]}+{p[2]:.0%}{p[1]}")
def mixture(request: pytest.FixtureRequest, streams: Streams) -> tuple[str, float, dict[str, Any], list[int]]:
    a, b, p = request.param
    ref, stream = build_mixture(streams.data, streams.root, a, b, p=p)
    report = replay(stream, [ref], MonitorConfig())
    return a, p, report, baseline_alarms(ref, stream, 1e-6)


def test_outlier_share_is_no_slower_than_the_baseline_and_silent_before_the_change(
        mixture: tuple[str, float, dict[str, Any], list[int]]) -> None:
    """No later than the baseline, up to the 5 events between two judgements of the outlier windows (the
    baseline judges every window at every event; docs/benchmarks.md says where it is ahead)."""
    a, p, report, base = mixture
    assert [x for x in report["alerts"] if x["event_index"] < CHANGE] == [], "alarm before the change"
    ours = delay([x["event_index"] for x in report["alerts"] if x["signal"] == "embedding_outliers"])
    theirs = delay(base)
    assert ours < INF and ours <= theirs + OUTLIER_BLOCK, f"{a} + {p:.0%}: embedding_outliers {ours}, baseline {theirs}"
    if (a, p) in TARGETS:  # the targets where the development data allow them (docs/benchmarks.md)
        assert ours <= TARGETS[(a, p)], f"{a} + {p:.0%}: embedding_outliers delay {ours}, target {TARGETS[(a, p)]}"


TARGETS = {("pydocs", 0.05): 400, ("pydocs", 0.1): 100, ("pydocs", 0.3): 25}
# the targets for the first alarm of any signal: all six mixtures (quotes + 30 % pydocs met since
# embedding_clusters judges a ladder of marking levels, docs/benchmarks.md)
ANY_TARGETS = {("quotes", 0.05): 400, ("quotes", 0.1): 150, ("quotes", 0.3): 25, **TARGETS}


def test_first_alarm_of_any_signal_meets_the_targets_and_is_no_slower_than_the_baseline(
        mixture: tuple[str, float, dict[str, Any], list[int]]) -> None:
    """With embedding_clusters (a new sub-population's events resemble each other) beside the outlier count."""
    a, p, report, base = mixture
    ours = delay([x["event_index"] for x in report["alerts"]])
    theirs = delay(base)
    assert ours < INF and ours <= theirs + OUTLIER_BLOCK, f"{a} + {p:.0%}: first alarm {ours}, baseline {theirs}"
    if (a, p) in ANY_TARGETS:
        assert ours <= ANY_TARGETS[(a, p)], f"{a} + {p:.0%}: first alarm {ours}, target {ANY_TARGETS[(a, p)]}"
    if a == "quotes":  # where the outlier count is slow: the cluster signal is what meets the targets
        clusters = delay([x["event_index"] for x in report["alerts"] if x["signal"] == "embedding_clusters"])
        assert clusters == ours, f"{a} + {p:.0%}: embedding_clusters {clusters}, first alarm {ours}"


#: Signals whose thresholds are exact beta-binomial counts (no resampling of the reference): every window counts.
EXACT_COUNT_SIGNALS = {"embedding_outliers", "tag_validity", "span_boundary"}


@pytest.mark.parametrize("size", [300, 600, 1000])
@pytest.mark.parametrize("domain", ["quotes", "pydocs"])
def test_small_references_raise_no_alarm_on_stationary_traffic(streams: Streams, domain: str, size: int) -> None:
    """Issue 10, item 6: windows longer than the held-out half of the reference are not evaluated."""
    ref = streams.build(f"ref-{domain}-{size}", f"{domain}:{size}", seed=41 + size)
    stream = streams.build(f"stationary-{domain}-after-{size}", f"{domain}:8000", seed=43, exclude=ref)
    report = replay(stream, [ref], MonitorConfig())
    assert report["alerts"] == [], f"{domain}, {size}-event reference: {report['alerts'][:5]}"
    signals = report["models"]["ner-en/1"]["signals"]
    for name, s in signals.items():
        windows = {x["window"] for x in s["windows"]}
        if name not in EXACT_COUNT_SIGNALS:  # exact beta-binomial thresholds: every window is calibrated
            assert max(windows) <= size - size // 2, (name, windows)
            assert all(w > size - size // 2 for w in s["windows_not_evaluated"]), name
