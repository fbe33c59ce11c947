"""The runner as a process: SIGKILL mid-stream and restart (exactly-once effect on state), and a graceful
SIGTERM (in-flight batch finished, snapshot and offsets saved, exit within the grace period)."""

from __future__ import annotations

import signal
import time

import pytest
from kafka_test_helpers import (
    Names,
    RunnerProcess,
    committed_offsets,
    final_states,
    make_topic,
    model_events,
    produce,
    reference_states,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def without_offset(states: dict[int, dict[str, object]]) -> dict[int, dict[str, object]]:
    return {p: {k: v for k, v in s.items() if k != "next_offset"} for p, s in states.items()}


def test_sigkill_mid_stream_then_restart_equals_uninterrupted_run(
    kafka_bootstrap: str, kafka_names: Names
) -> None:
    """Scenario 1: kill -9 after some checkpoints and with uncommitted work in memory; the restarted
    process restores the snapshots and ends with exactly the state of an uninterrupted run."""
    make_topic(kafka_bootstrap, kafka_names.topic, 2)
    ends = produce(kafka_bootstrap, kafka_names.topic, model_events(4000, 2))
    # Checkpoints every 500 events; after 1200 the victim blocks before its next batch (whatever the machine's
    # speed), holding about 200 processed events that no checkpoint covers.
    args = ("--batch-size", "50", "--checkpoint-events", "500")
    victim = RunnerProcess(kafka_bootstrap, kafka_names, *args, "--hang-after-events", "1200")
    try:
        line = victim.next_line(lambda m: m["event"] == "batch" and m["processed"] >= 1200, 30, "1200 events")
        victim.next_line(lambda m: m["event"] == "hanging", 30, "the victim to block before its next batch")
    finally:
        victim.kill()  # SIGKILL: no checkpoint, no leave-group
    assert victim.process.returncode == -signal.SIGKILL
    assert 1200 <= line["processed"] < 4000
    assert any(int(o) > line["committed"].get(p, -1) for p, o in line["next_offsets"].items()), line
    committed_at_kill = committed_offsets(kafka_bootstrap, kafka_names.group, kafka_names.topic, 2)
    assert sum(max(o, 0) for o in committed_at_kill.values()) < line["processed"]

    survivor = RunnerProcess(kafka_bootstrap, kafka_names, *args)
    try:
        survivor.next_line(
            lambda m: (
                m["event"] == "batch" and all(m["next_offsets"].get(str(p)) == e for p, e in ends.items())
            ),
            60,  # includes the killed member's session timeout (2 s) before the group rebalances
            "the restarted runner to reach the end",
        )
        survivor.process.send_signal(signal.SIGTERM)
        exit_line = survivor.next_line(lambda m: m["event"] == "exit", 15, "a clean exit")
        assert exit_line["code"] == 0
        survivor.process.wait(10)
    finally:
        survivor.kill()

    assert committed_offsets(kafka_bootstrap, kafka_names.group, kafka_names.topic, 2) == ends
    finals = final_states(kafka_bootstrap, kafka_names, 2)
    assert {p: s["next_offset"] for p, s in finals.items()} == ends
    assert without_offset(finals) == reference_states(kafka_bootstrap, kafka_names.topic, 2)
    assert all(s["duplicates"] == 0 for s in finals.values())
    assert sum(sum(s["counts"].values()) for s in finals.values()) == 4000


def test_sigterm_finishes_in_flight_batch_and_saves_within_grace(
    kafka_bootstrap: str, kafka_names: Names
) -> None:
    """Scenario 8: SIGTERM lands while a (slow) batch is in the processor; that batch completes, its
    snapshot and offsets are saved, and the process exits within the 5 s grace period. The batch waits in
    the processor for the signal (``--hold-until-signal-at``), so the signal is in flight by construction."""
    make_topic(kafka_bootstrap, kafka_names.topic, 1)
    ends = produce(kafka_bootstrap, kafka_names.topic, model_events(3000, 1))
    runner = RunnerProcess(
        kafka_bootstrap,
        kafka_names,
        "--batch-size",
        "100",
        "--checkpoint-events",
        "100000",
        "--delay-s",  # slow batches: the fetch statistics (the lag) arrive long before the end
        "0.4",
        "--grace-s",
        "5",
        "--hold-until-signal-at",
        "299",
    )
    try:
        # Lag comes from the fetch statistics (hi_offset), not from the watermarks Tansu gets wrong.
        with_lag = runner.next_line(lambda m: m["event"] == "batch" and m["lag"].get("0", 0) > 0, 30, "a lag")
        assert with_lag["lag"]["0"] + with_lag["next_offsets"]["0"] == ends[0]
        in_flight = runner.next_line(lambda m: m["event"] == "processing" and m["held"], 30, "a held batch")
        assert in_flight["last_offset"] >= 299
        signalled = time.monotonic()
        runner.process.send_signal(signal.SIGTERM)
        exit_line = runner.next_line(lambda m: m["event"] == "exit", 10, "the exit line")
        runner.process.wait(10)
        elapsed = time.monotonic() - signalled
    finally:
        runner.kill()
    assert runner.process.returncode == 0 and exit_line["code"] == 0
    assert elapsed < 5.0, f"took {elapsed:.1f} s to stop"
    assert exit_line["shutdown_s"] < 5.0
    saved = in_flight["last_offset"] + 1
    committed = committed_offsets(kafka_bootstrap, kafka_names.group, kafka_names.topic, 1)[0]
    finals = final_states(kafka_bootstrap, kafka_names, 1)
    assert committed == finals[0]["next_offset"] == exit_line["processed"], (committed, finals[0], exit_line)
    assert committed == saved < ends[0], "the in-flight batch must be finished and saved, nothing after it"
    assert finals[0]["last_offset"] + 1 == committed and finals[0]["records"] == committed
    assert finals[0]["duplicates"] == 0
