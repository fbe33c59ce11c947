"""Shared helpers of the Kafka tests: producing test events, reading results back, bounded waiting."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, TypeVar

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from counting_processor import CountingProcessor

from nlpmon.kafka.processor import Record
from nlpmon.kafka.runner import ConsumerRunner
from nlpmon.kafka.settings import KafkaSettings
from nlpmon.kafka.state_store import StateStore
from nlpmon.kafka.topics import create_topic

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
RUNNER_MAIN = HERE / "counting_runner_main.py"


@dataclass(frozen=True)
class Names:
    """Fresh topic and group names for one test."""

    topic: str
    group: str
    state_topic: str
    dead_letter_topic: str


def wait_until(condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def settings_for_test(bootstrap: str, names: Names, **overrides: Any) -> KafkaSettings:
    """Settings sized for tests: 2 s sessions, small batches, frequent checkpoints, short timeouts."""
    values: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "topic": names.topic,
        "group_id": names.group,
        "state_topic": names.state_topic,
        "dead_letter_topic": names.dead_letter_topic,
        "batch_size": 200,
        "poll_timeout_s": 0.2,
        "session_timeout_ms": 2000,
        "statistics_interval_ms": 300,
        "checkpoint_interval_events": 500,
        "checkpoint_interval_s": 1.0,
        "delivery_timeout_s": 10.0,
        "restore_timeout_s": 10.0,
        "shutdown_grace_s": 5.0,
        "circuit_max_consecutive_invalid": 10_000,
        "circuit_max_invalid_ratio": 1.0,
    }
    values.update(overrides)
    return KafkaSettings(**values)


def event(model: str, event_id: int, pad: int = 0) -> bytes:
    return json.dumps({"model": model, "event_id": event_id, "text": "x" * pad}).encode()


def produce(
    bootstrap: str, topic: str, messages: Iterable[tuple[int, bytes | None, bytes | None]]
) -> dict[int, int]:
    """Produce ``(partition, key, value)`` messages, wait for every ack; returns partition -> end offset
    (last acknowledged offset + 1), taken from the delivery reports (not from watermarks)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    ends: dict[int, int] = {}
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            errors.append(err.str())
        else:
            ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    for partition, key, value in messages:
        producer.produce(topic, value=value, key=key, partition=partition, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(15) == 0, "producer did not drain"
    assert not errors, errors
    return ends


def model_events(
    n: int, partitions: int, models: int = 6, start_id: int = 0
) -> list[tuple[int, bytes, bytes]]:
    """``n`` valid events round-robin over ``models`` models; model i goes to partition i % partitions."""
    out = []
    for i in range(start_id, start_id + n):
        m = i % models
        out.append((m % partitions, f"m{m}".encode(), event(f"m{m}", i)))
    return out


def make_topic(bootstrap: str, name: str, partitions: int) -> None:
    assert create_topic(bootstrap, name, partitions)


def read_partition(bootstrap: str, topic: str, partition: int, timeout_s: float = 15.0) -> list[Any]:
    """Every message of ``topic[partition]`` up to its end (partition EOF)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "nlpmon-test-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 20,
        }
    )
    consumer.assign([TopicPartition(topic, partition, 0)])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            assert time.monotonic() < deadline, f"reading {topic}[{partition}] took over {timeout_s} s"
            msgs = consumer.consume(1000, 0.1)
            eof = False
            for m in msgs:
                error = m.error()
                if error is None:
                    out.append(m)
                elif error.code() == KafkaError._PARTITION_EOF:
                    eof = True
                else:
                    raise AssertionError(error.str())
            if eof:
                return out
    finally:
        consumer.close()


def reference_states(
    bootstrap: str, topic: str, partitions: int, batch: int = 97
) -> dict[int, dict[str, Any]]:
    """The state of an uninterrupted run: each partition read once, in order, through CountingProcessor."""
    states = {}
    for p in range(partitions):
        processor = CountingProcessor(topic, p)
        records = [
            Record(m.offset(), m.value(), m.key(), m.timestamp()[1])
            for m in read_partition(bootstrap, topic, p)
        ]
        for i in range(0, len(records), batch):
            processor.process(records[i : i + batch])
        states[p] = processor.state()
    return states


def final_states(bootstrap: str, names: Names, partitions: int) -> dict[int, dict[str, Any]]:
    """The latest snapshot of each partition in the state topic, restored into a CountingProcessor."""
    producer = Producer({"bootstrap.servers": bootstrap})
    store = StateStore(
        bootstrap_servers=bootstrap, state_topic=names.state_topic, group_id=names.group, producer=producer
    )
    snapshots = store.read_latest(names.topic, range(partitions))
    out = {}
    for p, snap in snapshots.items():
        processor = CountingProcessor(names.topic, p)
        processor.restore(snap.payload)
        out[p] = {**processor.state(), "next_offset": snap.next_offset}
    return out


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        result = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in result}


class RecordingConsumer(Consumer):
    """A real consumer that records every commit (and can make commits fail)."""

    timeline: list[tuple[str, Any]]
    fail_commits_from: int | None = None  # the n-th commit call (0-based) and all later ones fail

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        calls = sum(1 for kind, _ in self.timeline if kind in ("commit", "commit-failed"))
        offsets = [(tp.topic, tp.partition, tp.offset) for tp in kwargs.get("offsets") or []]
        if self.fail_commits_from is not None and calls >= self.fail_commits_from:
            self.timeline.append(("commit-failed", offsets))
            from confluent_kafka import KafkaException

            raise KafkaException(KafkaError(KafkaError.REQUEST_TIMED_OUT, "injected commit failure"))
        result = super().commit(*args, **kwargs)
        self.timeline.append(("commit", offsets))
        return result


class RecordingProducer(Producer):
    """A real producer that records every acknowledgement (and can fail the dead-letter deliveries)."""

    timeline: list[tuple[str, Any]]
    fail_topic: str | None = None

    def produce(self, *args: Any, **kwargs: Any) -> Any:
        topic = kwargs["topic"]
        callback = kwargs.get("on_delivery")
        headers = dict(kwargs.get("headers") or [])
        timeline, fail = self.timeline, topic == self.fail_topic

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if fail and err is None:
                err = KafkaError(KafkaError._MSG_TIMED_OUT, "injected delivery failure")
            timeline.append(("ack" if err is None else "nack", (topic, headers)))
            if callback is not None:
                callback(err, msg)

        kwargs["on_delivery"] = on_delivery
        return super().produce(*args, **kwargs)


class Factories(TypedDict):
    consumer_factory: Callable[[dict[str, Any]], Consumer]
    producer_factory: Callable[[dict[str, Any]], Producer]


def recording_factories(
    timeline: list[tuple[str, Any]], *, fail_commits_from: int | None = None, fail_topic: str | None = None
) -> Factories:
    def consumer_factory(config: dict[str, Any]) -> Consumer:
        consumer = RecordingConsumer(config)
        consumer.timeline = timeline
        consumer.fail_commits_from = fail_commits_from
        return consumer

    def producer_factory(config: dict[str, Any]) -> Producer:
        producer = RecordingProducer(config)
        producer.timeline = timeline
        producer.fail_topic = fail_topic
        return producer

    return {"consumer_factory": consumer_factory, "producer_factory": producer_factory}


@dataclass
class RunnerThread:
    """A ConsumerRunner on a thread, with its stop event and the exception it ended with."""

    runner: ConsumerRunner
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> RunnerThread:
        def target() -> None:
            try:
                self.runner.run(self.stop)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=target, name="consumer-runner", daemon=True)
        self.thread.start()
        return self

    def finish(self, timeout_s: float = 15.0) -> None:
        """Ask it to stop and wait (bounded) for it to end."""
        self.stop.set()
        assert self.thread is not None
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), f"runner did not stop within {timeout_s} s"

    @property
    def done(self) -> bool:
        return self.thread is not None and not self.thread.is_alive()


def reached(runners: Sequence[ConsumerRunner], topic: str, ends: dict[int, int]) -> bool:
    """True when, across ``runners``, every partition with data is owned and processed to its end."""
    next_offsets: dict[int, int] = {}
    for runner in runners:
        for (t, p), offset in runner.metrics().next_offsets.items():
            if t == topic:
                next_offsets[p] = offset
    return all(next_offsets.get(p) == end for p, end in ends.items())


class RunnerProcess:
    """The counting runner in a subprocess (counting_runner_main.py); its JSON lines go to a queue."""

    def __init__(self, bootstrap: str, names: Names, *extra: str) -> None:
        args = [
            sys.executable,
            str(RUNNER_MAIN),
            "--bootstrap",
            bootstrap,
            "--topic",
            names.topic,
            "--group",
            names.group,
            "--state-topic",
            names.state_topic,
            "--dead-letter-topic",
            names.dead_letter_topic,
            *extra,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    def next_line(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float, what: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out waiting for {what}; stderr tail: {''.join(self.stderr[-15:])}"
                )
            try:
                line = self.lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    raise AssertionError(
                        f"runner exited ({self.process.returncode}) before {what}: "
                        + "".join(self.stderr[-15:])
                    ) from None
                continue
            if predicate(line):
                return line

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def compacted_view(bootstrap: str, topic: str, partition: int) -> dict[bytes, bytes]:
    """What compaction would keep of ``topic[partition]``: the last value of each key, tombstoned keys
    dropped (keyless messages are ignored)."""
    view: dict[bytes, bytes] = {}
    for message in read_partition(bootstrap, topic, partition):
        key = message.key()
        if key is None:
            continue
        if message.value() is None:
            view.pop(key, None)
        else:
            view[key] = message.value()
    return view


def assert_commits_never_backwards(timeline: list[tuple[str, Any]]) -> dict[tuple[str, int], int]:
    """No successful commit in a recording timeline moves a partition's offset backwards; returns the
    last committed offset of each partition."""
    last: dict[tuple[str, int], int] = {}
    for kind, offsets in timeline:
        if kind != "commit":
            continue
        for topic, partition, offset in offsets:
            assert offset >= last.get((topic, partition), -1), f"commit went backwards: {offsets} after {last}"
            last[(topic, partition)] = offset
    return last
