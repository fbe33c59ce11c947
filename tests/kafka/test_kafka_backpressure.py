"""Back-pressure on a real broker: while the runner's ``hold()`` says so (the service: events held for
calibrations over ``max_held_mb``), every assigned partition is paused; the loop keeps polling, so the member
stays in its group through a pause longer than its session timeout; once ``hold()`` says no, consumption
resumes where it stopped. Nothing is skipped or applied twice: the final state equals an uninterrupted run."""

from __future__ import annotations

import threading
import time

import pytest
from counting_processor import CountingProcessor
from kafka_test_helpers import (
    Names,
    RunnerThread,
    final_states,
    make_topic,
    model_events,
    produce,
    reached,
    reference_states,
    settings_for_test,
    wait_until,
)

from nlpmon.kafka.runner import ConsumerRunner

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_consumption_pauses_while_hold_says_so_and_resumes_without_loss(kafka_bootstrap: str,
                                                                        kafka_names: Names) -> None:
    make_topic(kafka_bootstrap, kafka_names.topic, 2)
    ends = produce(kafka_bootstrap, kafka_names.topic, model_events(2000, 2))
    processors: list[CountingProcessor] = []
    release = threading.Event()
    asked: list[int] = []

    def factory(topic: str, partition: int) -> CountingProcessor:
        proc = CountingProcessor(topic, partition)
        processors.append(proc)
        return proc

    def applied() -> int:
        return sum(p.records for p in processors)

    def hold() -> bool:  # "too much held" once 300 records are applied, until the test releases it
        asked.append(1)
        return applied() >= 300 and not release.is_set()

    settings = settings_for_test(kafka_bootstrap, kafka_names, batch_size=100, checkpoint_interval_s=1.0)
    runner = ConsumerRunner(settings, factory, hold=hold)
    worker = RunnerThread(runner).start()
    try:
        wait_until(lambda: runner.metrics().held_paused or worker.done, 60, "the pause")
        at_pause = applied()
        assert 300 <= at_pause < 2000
        polls = len(asked)
        time.sleep(3.0)  # longer than the 2 s session timeout: the member must stay in its group
        m = runner.metrics()
        assert applied() == at_pause, (applied(), at_pause)  # paused: nothing fetched from any partition
        assert m.held_paused and m.held_pauses == 1 and m.group_member and m.lost_assignments == 0
        assert len(asked) > polls + 5  # the loop kept polling (poll_timeout_s 0.2 s)
        rebalances = m.rebalances
        release.set()
        wait_until(lambda: reached([runner], kafka_names.topic, ends) or worker.done, 60, "all events applied")
        m = runner.metrics()
        assert not m.held_paused and m.held_pauses == 1 and m.rebalances == rebalances
    finally:
        release.set()
        worker.finish(30)
    assert worker.error is None, worker.error
    states = final_states(kafka_bootstrap, kafka_names, 2)
    reference = reference_states(kafka_bootstrap, kafka_names.topic, 2)
    for p in range(2):
        assert states[p]["counts"] == reference[p]["counts"] and states[p]["digest"] == reference[p]["digest"]
        assert states[p]["duplicates"] == 0 and states[p]["next_offset"] == ends[p]
