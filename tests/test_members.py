"""The member slots of ``nlpmon run --processes N`` (service/app/members.py) with stand-in children and an
injected clock: restarts with a doubling, bounded backoff, counted; a member that never got ready stops
the command; counters of a dead member stay in the merged sums."""

from __future__ import annotations

import sys

import pytest
from prometheus_client import CollectorRegistry, Counter

from nlpmon.app import members as mod
from nlpmon.app.members import Member, MemberError, Members

READY_THEN_EXIT = [sys.executable, "-c", "import sys; print('{\"port\": 1}', flush=True); sys.exit(3)"]
EXIT_AT_ONCE = [sys.executable, "-c", "import sys; sys.exit(2)"]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def exited(m: Member) -> None:
    assert m.proc is not None
    m.proc.wait(30)
    if m.reader is not None:
        m.reader.join(30)


def test_a_member_that_was_ready_is_restarted_with_a_doubling_bounded_backoff_and_counted() -> None:
    clock = Clock()
    reg = CollectorRegistry()
    restarts = Counter("nlpmon_member_restarts_total", "h", ["member"], registry=reg)
    ms = Members(1, lambda m: READY_THEN_EXIT, clock=clock, restarts=restarts)
    m = ms.members[0]
    try:
        ms.start(m)
        exited(m)
        assert m.ever_ready
        delays = []
        for n in range(1, 8):
            ms.check(stopping=False)  # notices the exit, schedules the restart
            assert m.restart_at is not None
            delays.append(m.restart_at - clock.t)
            clock.t = m.restart_at - 0.01
            ms.check(stopping=False)
            assert reg.get_sample_value("nlpmon_member_restarts_total", {"member": "0"}) == n - 1  # not yet due
            clock.t = m.restart_at
            ms.check(stopping=False)
            assert reg.get_sample_value("nlpmon_member_restarts_total", {"member": "0"}) == n
            exited(m)
        assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
        clock.t += mod.STABLE_S  # an incarnation that ran long enough starts the backoff again
        ms.check(stopping=False)
        assert m.restart_at is not None and m.restart_at - clock.t == 1.0
    finally:
        ms.stop(timeout_s=10)


def test_a_member_that_exits_before_it_was_ever_ready_stops_the_command() -> None:
    ms = Members(2, lambda m: EXIT_AT_ONCE, clock=Clock())
    try:
        ms.start(ms.members[0])
        exited(ms.members[0])
        with pytest.raises(MemberError, match="member 0 exited with code 2 before it was ready"):
            ms.check(stopping=False)
    finally:
        ms.stop(timeout_s=10)


def test_counters_a_dead_member_showed_stay_in_the_merged_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = {"0": b"# TYPE nlpmon_events_total counter\nnlpmon_events_total{model=\"a\"} 5.0\n"
                  b"# TYPE nlpmon_group_member gauge\nnlpmon_group_member 1.0\n",
             "1": b"# TYPE nlpmon_events_total counter\nnlpmon_events_total{model=\"a\"} 7.0\n"
                  b"# TYPE nlpmon_group_member gauge\nnlpmon_group_member 1.0\n"}
    ms = Members(2, lambda m: READY_THEN_EXIT, clock=Clock())
    for m in ms.members:
        m.port, m.ever_ready, m.incarnation = 1000 + m.index, True, 1

    def fake_get(port: int, path: str, timeout_s: float = 0.0) -> tuple[int, bytes] | None:
        return (200, shown[str(port - 1000)]) if str(port - 1000) in shown else None

    monkeypatch.setattr(mod, "get", fake_get)
    try:
        def total(fams: list) -> float:
            return sum(s.value for f in fams if f.name == "nlpmon_events" for s in f.samples
                       if s.name == "nlpmon_events_total")

        assert total(ms.metric_families()) == 12
        del shown["1"]  # member 1 stops answering (slow): its counters as last seen
        assert total(ms.metric_families()) == 12
        assert not any(f.name == "nlpmon_group_member" and any(s.labels.get("member") == "1" for s in f.samples)
                       for f in ms.metric_families())
        ms._exited(ms.members[1])  # it died; its next incarnation counts from 0
        ms.members[1].incarnation, ms.members[1].port = 2, 1001
        shown["1"] = b"# TYPE nlpmon_events_total counter\nnlpmon_events_total{model=\"a\"} 2.0\n"
        assert total(ms.metric_families()) == 14
    finally:
        ms.stop(timeout_s=1)
