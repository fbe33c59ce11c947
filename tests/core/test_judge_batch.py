"""A model's signals are judged together (flags, hysteresis, alarms, scores, score history): the same results as
signal by signal (the code before, kept here as the oracle), for any batch split."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import pytest

from nlpmon.demo import SyntheticStream
from nlpmon.drift.distribution import CategoricalFeaturizer
from nlpmon.drift.signal import SignalUpdate
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.history import ScoreHistory
from nlpmon.monitor.model_monitor import Alarm, ModelMonitor
from nlpmon.monitor.monitor_set import MonitorSet

CONFIG = MonitorConfig(calibration_splits=3, auto_baseline_events=600, min_reference_events=200)


@pytest.fixture(scope="module")
def monitor() -> ModelMonitor:
    ms = MonitorSet(CONFIG)
    s = SyntheticStream(seed=3)
    ms.process_lines([json.dumps(e).encode() for e in s.events(600, "reference")])
    ms.process_lines([json.dumps(e).encode() for e in s.events(1)])
    mon = ms.monitors[("demo-ner", "1")]
    assert mon.profile is not None
    return mon


class _Event:
    def __init__(self, event_id: str) -> None:
        self.event_id = event_id


def random_updates(mon: ModelMonitor, n: int, rng: np.random.Generator) -> list[tuple[str, Any, Any, SignalUpdate]]:
    """Per-event results of every signal with drift in bursts (flags rise, hold, clear) and labels behind them."""
    out = []
    for name, win in mon.windows.items():
        start = rng.integers(-40, n + 40)
        drift = (np.arange(n) >= start) & (np.arange(n) < start + rng.integers(0, 30)) & (rng.random(n) < 0.7)
        windows = np.asarray(win.model.windows)[rng.integers(0, len(win.model.windows), n)]
        upd = SignalUpdate(drift, np.where(drift, 1.5, 0.5) + rng.random(n), windows.astype(np.int64),
                           rng.integers(0, win.model.thresholds.shape[1], n).astype(np.int64), rng.random(n),
                           rng.integers(-1, 3, n).astype(np.int64) if win._detail is not None else None)
        out.append((name, win, win.model.featurizer, upd))
    return out


def per_signal_judge(mon: ModelMonitor, updates: list[tuple[str, Any, Any, SignalUpdate]], events: list[Any],
                     offset: int, n: int) -> tuple[list[Alarm], dict[str, np.ndarray]]:
    """The hysteresis and alarms as ``ModelMonitor._monitor`` ran them before: one signal after the other."""
    alarms: list[Alarm] = []
    flags: dict[str, np.ndarray] = {}
    for name, win, feat, upd in updates:
        idx = np.arange(mon.monitored_events - n, mon.monitored_events)
        last = np.maximum.accumulate(np.where(upd.drift, idx, mon._last_drift.get(name, -(10**12))))
        flag = idx - last < mon.config.clear_after_events
        was = mon.flags[name]
        flips = np.nonzero(flag & ~np.concatenate([[was], flag[:-1]]))[0]
        mon._last_drift[name] = int(last[-1])
        for i in flips:
            j = win.model.windows.index(int(upd.window[i]))
            k = int(upd.stat[i])
            label = None
            if upd.detail is not None and upd.detail[i] >= 0 and isinstance(feat, CategoricalFeaturizer):
                label = feat.labels[int(upd.detail[i])]
            alarms.append(Alarm(mon.model, mon.model_version, name, offset + int(i),
                                events[i].event_id, float(upd.ratio[i]), 1.0,
                                win.model.stat_names[k], int(upd.window[i]), float(upd.value[i]),
                                float(win.model.thresholds[j, k]), label))
        mon.alarm_counts[name] = mon.alarm_counts.get(name, 0) + len(flips)
        mon.flags[name] = bool(flag[-1])
        flags[name] = flag
        mon.scores[name] = {"score": float(upd.ratio[-1]), "window": int(upd.window[-1]),
                            "statistic": win.model.stat_names[int(upd.stat[-1])]}
    alarms.sort(key=lambda a: a.position)
    return alarms, flags


JUDGED = ("_last_drift", "flags", "alarm_counts", "scores", "monitored_events")


def test_signals_judged_together_raise_the_alarms_and_keep_the_state_of_one_by_one(monitor: ModelMonitor) -> None:
    rng = np.random.default_rng(3)
    saved = {k: copy.deepcopy(getattr(monitor, k)) for k in JUDGED}
    together = {k: copy.deepcopy(v) for k, v in saved.items()}
    alone = {k: copy.deepcopy(v) for k, v in saved.items()}
    raised = 0
    try:
        for b in range(60):
            n = int(rng.integers(1, 90))
            updates = random_updates(monitor, n, rng)
            events = [_Event(f"e{b}-{i}") for i in range(n)]
            for k, v in together.items():
                setattr(monitor, k, v)
            monitor.monitored_events += n
            got, rows = monitor._judge(updates, events, 7, n)
            together = {k: getattr(monitor, k) for k in JUDGED}
            for k, v in alone.items():
                setattr(monitor, k, v)
            monitor.monitored_events += n
            want, flags = per_signal_judge(monitor, updates, events, 7, n)
            alone = {k: getattr(monitor, k) for k in JUDGED}
            got.sort(key=lambda a: a.position)  # as ``_monitor`` sorts them
            assert got == want
            assert [type(a.position) for a in got] == [int] * len(got)
            assert together == alone
            assert all(np.array_equal(r, flags[u[0]]) for r, u in zip(rows, updates, strict=True))
            raised += len(got)
        assert raised > 20  # flags rose and cleared many times
    finally:
        for k, v in saved.items():
            setattr(monitor, k, v)


def per_signal_history_add(self: ScoreHistory, first_event: int, times: Any, ratios: Any, flags: Any) -> None:
    """``ScoreHistory.add`` as it was: one ``reduceat`` per signal."""
    n = int(times.shape[0])
    if self.points == 0 or n == 0:
        return
    idx = first_event + np.arange(n, dtype=np.int64)
    b = idx // self.events_per_point
    starts = np.flatnonzero(np.concatenate([[True], b[1:] != b[:-1]]))
    ends = np.concatenate([starts[1:], [n]]) - 1
    buckets = b[starts].tolist()
    last = idx[ends].tolist()
    t = np.fmax.reduceat(np.asarray(times, np.float64), starts).tolist()
    per_signal = {}
    for s in self.signals:
        r = ratios.get(s)
        f = flags.get(s)
        if r is None or f is None:
            per_signal[s] = ([math.nan] * len(starts), [False] * len(starts))
        else:
            per_signal[s] = (np.maximum.reduceat(r, starts).tolist(),
                             np.logical_or.reduceat(f, starts).tolist())
    first = 0
    if self.bucket and self.bucket[-1] == buckets[0]:  # the previous batch ended inside this bucket
        self.event[-1] = last[0]
        if not math.isnan(t[0]):
            self.time[-1] = t[0] if math.isnan(self.time[-1]) else max(self.time[-1], t[0])
        for s, (sc, fl) in per_signal.items():
            old = self.score[s][-1]
            self.score[s][-1] = sc[0] if math.isnan(old) else (old if math.isnan(sc[0]) else max(old, sc[0]))
            self.drift[s][-1] = self.drift[s][-1] or fl[0]
        first = 1
    keep = slice(max(first, len(buckets) - self.points), None)  # older ones would fall off at once
    self.bucket.extend(buckets[keep])
    self.event.extend(last[keep])
    self.time.extend(t[keep])
    for s, (sc, fl) in per_signal.items():
        self.score[s].extend(sc[keep])
        self.drift[s].extend(fl[keep])


def test_score_history_of_all_signals_at_once_equals_one_signal_after_the_other() -> None:
    rng = np.random.default_rng(5)
    signals = ("a", "b", "c", "d")
    together, alone = ScoreHistory(signals, 30, 7), ScoreHistory(signals, 30, 7)
    first = 0
    for _ in range(80):
        n = int(rng.integers(1, 40))
        times = 1.7e9 + first + np.arange(n, dtype=np.float64)
        times[rng.random(n) < 0.1] = np.nan
        present = [s for s in signals if rng.random() < 0.8]  # a signal may be missing from a batch
        ratios = {s: np.where(rng.random(n) < 0.1, np.nan, rng.random(n) * 2) for s in present}
        flags = {s: rng.random(n) < 0.2 for s in present}
        together.add(first, times, ratios, flags)
        per_signal_history_add(alone, first, times, ratios, flags)
        first += n
    for s in signals:
        assert len(together.score[s]) == len(alone.score[s])
        assert all(x == y or (math.isnan(x) and math.isnan(y))
                   for x, y in zip(together.score[s], alone.score[s], strict=True))
        assert list(together.drift[s]) == list(alone.drift[s])
    assert list(together.bucket) == list(alone.bucket) and list(together.event) == list(alone.event)
