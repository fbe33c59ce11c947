"""Issue 10 items 2 and 3 without a broker: honest /readyz, its notes, rate-limited client errors, metrics,
and a one-line error at start-up when no broker answers."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any

import pytest
from confluent_kafka import KafkaError
from prometheus_client import CollectorRegistry

from nlpmon.app.service import NlpmonService
from nlpmon.app.settings import ServiceSettings
from nlpmon.kafka.broker import free_loopback_port
from nlpmon.kafka.client_log import ClientErrorGate
from nlpmon.kafka.runner_metrics import RunnerMetrics
from nlpmon.observability.exporter import NlpmonMetrics
from nlpmon.observability.http import ObservabilityServer


def runner_metrics(**kw: Any) -> RunnerMetrics:
    base: dict[str, Any] = dict(
        events_processed={}, invalid_events={}, dead_letters_sent=0, batches=0, checkpoints=0,
        checkpoints_skipped=0, snapshots_written=0, commit_failures=0, rebalances=0, lost_assignments=0,
        offset_gaps=0, last_poll_monotonic=100.0, assigned=(("t", 0),), paused=False, next_offsets={},
        committed_offsets={}, lag={}, circuit_state="closed", circuit_trips=0, circuit_reason="",
        last_client_error="", broker_reachable=True, group_member=True)
    return RunnerMetrics(**{**base, **kw})


class StubRunner:
    def __init__(self, metrics: RunnerMetrics) -> None:
        self.m = metrics

    def metrics(self) -> RunnerMetrics:
        return self.m


def service_at(now: float, metrics: RunnerMetrics) -> NlpmonService:
    svc = NlpmonService(ServiceSettings(bootstrap_servers="127.0.0.1:9", kafka={"max_poll_interval_ms": 30_000}),
                        registry=CollectorRegistry(), clock=lambda: now)
    svc.runner = StubRunner(metrics)  # type: ignore[assignment]
    return svc


def test_readiness_is_false_once_the_member_left_the_group_or_holds_nothing() -> None:
    assert all(service_at(110.0, runner_metrics()).readiness().values())
    # left the group: no member id at the last poll, although the partitions are still listed
    left = service_at(110.0, runner_metrics(group_member=False)).readiness()
    assert not left["group_member"] and not left["partitions_assigned"]
    # the loop has not polled for longer than max.poll.interval.ms (30 s): the member has left by now
    stale = service_at(131.0, runner_metrics()).readiness()
    assert not stale["group_member"] and not stale["partitions_assigned"]
    assert not service_at(110.0, runner_metrics(assigned=())).readiness()["partitions_assigned"]
    waiting = service_at(110.0, runner_metrics(checkpoint_waiting_since=105.0)).readiness()
    assert not waiting["checkpoints_acknowledged"] and waiting["group_member"]


def test_readyz_shows_state_loss_notes_without_failing() -> None:
    note = "t[0]: Kafka lost state or offsets (committed offset none after 150); starting with empty state"
    svc = service_at(110.0, runner_metrics(state_losses=1, state_loss_notes=(note,)))
    server = ObservabilityServer(CollectorRegistry(), reports=dict, readiness=svc.readiness, last_poll=lambda: 110.0,
                                 readiness_notes=svc.readiness_notes, clock=lambda: 110.0)
    status, body = server.ready()
    assert status == 200 and body["notes"] == [note]
    status, body = ObservabilityServer(CollectorRegistry(), reports=dict, readiness=svc.readiness,
                                       last_poll=lambda: 110.0).ready()
    assert status == 200 and "notes" not in body


def test_runner_state_reaches_the_metrics() -> None:
    registry = CollectorRegistry()
    metrics = NlpmonMetrics(registry)
    metrics.observe_runner(runner_metrics(group_member=False, checkpoint_waiting_since=3.0, checkpoint_stalls=2,
                                          client_errors=240, batches_cut=5, state_losses=2))
    value = registry.get_sample_value
    assert value("nlpmon_group_member") == 0 and value("nlpmon_checkpoint_waiting") == 1
    assert value("nlpmon_checkpoint_stalls_total") == 2 and value("nlpmon_kafka_client_errors_total") == 240
    assert value("nlpmon_batches_cut_total") == 5 and value("nlpmon_state_losses_total") == 2
    metrics.observe_runner(runner_metrics(checkpoint_stalls=2, client_errors=250, batches_cut=5, state_losses=2))
    assert value("nlpmon_group_member") == 1 and value("nlpmon_checkpoint_waiting") == 0
    assert value("nlpmon_kafka_client_errors_total") == 250


def test_client_errors_are_logged_once_per_outage_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    ticks = iter(float(t) for t in range(1000))
    gate = ClientErrorGate(logging.getLogger("gate-test"), where="Kafka at x:1", clock=lambda: next(ticks))
    refused = KafkaError(KafkaError._TRANSPORT, "Connect to ipv4#127.0.0.1:1 failed: Connection refused")
    with caplog.at_level(logging.INFO, logger="gate-test"):
        for _outage in range(2):
            for _ in range(242):
                gate.error(refused)
            gate.reachable()
            gate.reachable()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and gate.errors_total == 484 and gate.outages == 2, lines
    assert "unreachable" in lines[0] and "reachable again" in lines[1] and "241 client errors" in lines[1]


def test_start_without_a_broker_is_one_line_naming_the_address_and_setting(tmp_path: Any) -> None:
    address = f"127.0.0.1:{free_loopback_port()}"  # nothing listens there
    proc = subprocess.run([sys.executable, "-m", "nlpmon.cli", "run", "--bootstrap-servers", address, "--port", "0"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("nlpmon:")]
    assert len(errors) == 1 and address in errors[0] and "bootstrap_servers" in errors[0], proc.stderr
    print(json.dumps({"stderr_lines": len(proc.stderr.splitlines())}))


def test_slice_sizes_follow_the_per_record_cost_not_the_per_call_cost() -> None:
    """Slices aim at half of the loop's budget (here 0.5 s) by a fit over recent slices: with a cost per record
    they shrink to fit; with a cost per call (a vectorised processor under load) they do not shrink to nothing;
    and they end by the time left before the next poll."""
    from nlpmon.kafka.slicing import SliceSizer

    def sizer(*timings: tuple[int, float]) -> SliceSizer:
        s = SliceSizer(target_s=4.0 / 8)
        for records, seconds in timings:
            s.observe(records, seconds)
        return s

    assert sizer().next_size(5000) == 8  # nothing measured yet
    assert sizer((8, 0.8), (16, 1.6)).next_size(5000) == 5  # 0.1 s a record, nothing per call
    assert sizer((8, 1.0), (100, 1.0), (1000, 1.0)).next_size(5000) == 5000  # 1 s a call whatever its size
    # 0.29 s a call + 1 ms a record: (0.58 - 0.29) / 0.001
    assert sizer((10, 0.3), (110, 0.4)).next_size(5000) == pytest.approx(290, abs=2)
    # sized to the time left before the next poll: 0.35 s leaves (0.35 - 0.29) / 0.001 records; 0.2 s not one
    assert sizer((10, 0.3), (110, 0.4)).next_size(5000, within_s=0.35) == pytest.approx(60, abs=2)
    assert sizer((10, 0.3), (110, 0.4)).next_size(5000, within_s=0.2) == 0
    assert sizer((8, 0.8), (16, 1.6)).next_size(5000, within_s=0.25) == 2
    assert sizer((8, 0.8), (16, 1.6)).next_size(5000, within_s=10.0) == 5  # never past the slice target
    assert sizer().next_size(5000, within_s=0.0) == 8  # nothing measured: measure first
    cost = sizer((10, 0.3), (110, 0.4)).cost()
    assert cost is not None and cost.records_within(1.29) == pytest.approx(1000, abs=2)
    assert sizer().cost() is None


def test_undecodable_statistics_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """They were dropped silently, and the lag froze at its last value without a trace."""
    import logging

    from nlpmon.kafka.runner import ConsumerRunner
    from nlpmon.kafka.settings import KafkaSettings

    log = logging.getLogger("test-statistics")
    runner = ConsumerRunner(KafkaSettings(bootstrap_servers="127.0.0.1:9"), lambda t, p: None,  # type: ignore[arg-type,return-value]
                            logger=log)
    with caplog.at_level(logging.WARNING, logger="test-statistics"):
        runner._on_stats('{"brokers": {"b": {"state": "UP"}}}')
        runner._on_stats("{not json")
        runner._on_stats('{"topics": []}')
    m = runner.metrics()
    assert m.statistics_undecodable == 2 and m.broker_reachable is True
    warnings = [r for r in caplog.records if "statistics could not be read" in r.getMessage()]
    assert len(warnings) == 1
