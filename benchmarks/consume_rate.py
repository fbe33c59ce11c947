"""How fast can we read? Raw confluent-kafka ``Consumer.consume(num_messages=5000)`` against the full
ConsumerRunner loop (batching per partition, Record objects, a no-op processor, checkpoints).

    .venv/bin/python benchmarks/consume_rate.py [--events 100000] [--partitions 1] [--bootstrap HOST:PORT]

Without --bootstrap it starts the embedded Tansu broker on loopback. Prints a markdown table.
``raw_consume_rate`` is reusable by the end-to-end benchmark.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nlpmon.kafka.broker import EmbeddedBroker
from nlpmon.kafka.processor import Record, Rejected
from nlpmon.kafka.runner import ConsumerRunner
from nlpmon.kafka.settings import KafkaSettings
from nlpmon.kafka.topics import create_topic


def make_event(i: int, rng: random.Random, dims: int = 300) -> bytes:
    """A ~3 KB prediction event: model, ids, text, label, confidence and a 6-digit float embedding."""
    return json.dumps(
        {
            "model": f"model-{i % 8}",
            "event_id": i,
            "task": "classification",
            "text": "the quick brown fox jumps over the lazy dog " * 2,
            "label": "positive",
            "confidence": round(rng.random(), 6),
            "embedding": [round(rng.uniform(-1, 1), 6) for _ in range(dims)],
        },
        separators=(",", ":"),
    ).encode()


def produce_events(bootstrap: str, topic: str, n: int, partitions: int, *, seed: int = 0) -> int:
    """Produce ``n`` events (keyed by model) to a new topic; returns the bytes sent. Blocks until acked."""
    create_topic(bootstrap, topic, partitions)
    rng = random.Random(seed)
    templates = [make_event(i, rng) for i in range(256)]  # distinct payloads, cheap to produce
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "enable.idempotence": True,
        }
    )
    errors: list[str] = []
    sent = 0
    for i in range(n):
        value = templates[i % len(templates)]
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=f"model-{i % 8}".encode(),
                    on_delivery=lambda err, _msg: errors.append(err.str()) if err else None,
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        sent += len(value)
    if producer.flush(120) or errors:
        raise RuntimeError(f"producing the benchmark events failed: {errors[:3]}")
    return sent


def raw_consume_rate(
    bootstrap: str, topic: str, n: int, *, batch: int = 5000, timeout_s: float = 300.0
) -> tuple[float, float]:
    """Read ``n`` messages of ``topic`` from the start with ``Consumer.consume(num_messages=batch)``.

    Assign-only (no group join, nothing committed); the clock starts at the first message. Returns
    (messages per second, seconds). Raises TimeoutError after ``timeout_s``.
    """
    metadata = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-meta"})
    try:
        partitions = list(metadata.list_topics(topic, timeout=10).topics[topic].partitions)
    finally:
        metadata.close()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    deadline = time.monotonic() + timeout_s
    received = 0
    started: float | None = None
    try:
        while received < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {received} of {n} messages in {timeout_s:.0f} s")
            messages = consumer.consume(num_messages=batch, timeout=1.0)
            if messages and started is None:
                started = time.perf_counter()
            for message in messages:
                error = message.error()
                if error is None:
                    received += 1
                elif error.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(error.str())
        elapsed = time.perf_counter() - (started or time.perf_counter())
    finally:
        consumer.close()
    return n / elapsed, elapsed


class NullProcessor:
    """Accepts everything and keeps nothing: isolates the runner's own cost."""

    def __init__(self) -> None:
        self.events = 0

    def process(self, records: Sequence[Record]) -> list[Rejected]:
        self.events += len(records)
        return []

    def snapshot(self) -> bytes:
        return json.dumps({"version": 1, "events": self.events}).encode()

    def restore(self, data: bytes) -> None:
        self.events = int(json.loads(data)["events"])


def runner_consume_rate(
    bootstrap: str, topic: str, n: int, *, timeout_s: float = 300.0
) -> tuple[float, float]:
    """Read ``n`` messages through ``ConsumerRunner`` (batch 5000, a no-op processor, default
    checkpoints). The clock starts at the first processed batch, so the group join is not counted.
    Returns (messages per second, seconds)."""
    suffix = uuid.uuid4().hex[:8]
    settings = KafkaSettings(
        bootstrap_servers=bootstrap,
        topic=topic,
        group_id=f"bench-{suffix}",
        state_topic=f"bench-state-{suffix}",
        dead_letter_topic=f"bench-dlq-{suffix}",
        session_timeout_ms=2000,
    )
    done = threading.Event()
    first: list[float] = []
    last: list[float] = []

    def on_batch(report: object) -> None:
        now = time.perf_counter()
        if not first:
            first.append(now)
        total = sum(runner.metrics().events_processed.values())
        if total >= n:
            last.append(now)
            done.set()

    runner = ConsumerRunner(settings, lambda _t, _p: NullProcessor(), on_batch=on_batch)
    thread = threading.Thread(target=runner.run, args=(done,), daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not last:
        done.set()
        thread.join(30)
        raise TimeoutError(f"the runner did not read {n} messages in {timeout_s:.0f} s")
    thread.join(30)
    # The first batch's own messages arrived before the clock started: count from the second on.
    first_batch = min(n, 5000)
    elapsed = last[0] - first[0]
    return (n - first_batch) / elapsed, elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Kafka consume rate on loopback (markdown table).")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--bootstrap", help="an existing broker; default: start the embedded Tansu broker")
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each reader (best is shown)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    def measure(bootstrap: str) -> None:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        t0 = time.perf_counter()
        size = produce_events(bootstrap, topic, args.events, args.partitions)
        produce_s = time.perf_counter() - t0
        mean_kb = size / args.events / 1024
        rows = [("produce (linger 20 ms, idempotent)", args.events / produce_s, produce_s)]
        raw = [raw_consume_rate(bootstrap, topic, args.events) for _ in range(args.repeat)]
        rows.append(("confluent-kafka `consume(num_messages=5000)`", *max(raw)))
        loop = [runner_consume_rate(bootstrap, topic, args.events) for _ in range(args.repeat)]
        rows.append(("`ConsumerRunner`, no-op processor", *max(loop)))
        print(
            f"\n{args.events:,} events of {mean_kb:.1f} KB, {args.partitions} partition(s), loopback Tansu\n"
        )
        print("| reader | messages/s | MB/s | seconds |")
        print("|---|---:|---:|---:|")
        for name, rate, seconds in rows:
            print(f"| {name} | {rate:,.0f} | {rate * mean_kb / 1024:,.0f} | {seconds:.2f} |")

    if args.bootstrap:
        measure(args.bootstrap)
    else:
        with EmbeddedBroker() as broker:
            measure(broker.bootstrap_servers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
