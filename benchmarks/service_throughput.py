"""End-to-end events/s of the nlpmon consumer loop with the real monitor, beside the raw consume rate of
the same topic measured in the same run (prints a markdown table).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/service_throughput.py [--events 30000]

Synthetic NER events (``nlpmon.demo``: 384-dim embeddings, entities, ~30 tokens) on the embedded Tansu
broker. The reference profile is calibrated before the clock starts, so the rate is steady-state
monitoring: decode, validate, per-model update, dead letters, snapshots and commits.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from consume_rate import raw_consume_rate

from nlpmon.app.processor import MonitorPartitionProcessor, References
from nlpmon.demo import SyntheticStream
from nlpmon.kafka.broker import EmbeddedBroker
from nlpmon.kafka.runner import ConsumerRunner
from nlpmon.kafka.settings import KafkaSettings
from nlpmon.kafka.topics import create_topic
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.quality import QualityConfig


def produce(bootstrap: str, topic: str, lines: list[bytes]) -> None:
    create_topic(bootstrap, topic, 1)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000})
    for line in lines:
        while True:
            try:
                p.produce(topic, line, key=b"demo-ner")
                break
            except BufferError:
                p.poll(0.1)
    p.flush(120)


def monitor_rate(bootstrap: str, topic: str, n: int, references: References, config: MonitorConfig,
                 ground_truth: bool = False) -> float:
    s = uuid.uuid4().hex[:8]
    settings = KafkaSettings(bootstrap_servers=bootstrap, topic=topic, group_id=f"b-{s}", state_topic=f"bs-{s}",
                             dead_letter_topic=f"bd-{s}", session_timeout_ms=2000, batch_size=5000,
                             ground_truth_topic=f"bg-{s}" if ground_truth else None)
    quality = QualityConfig() if ground_truth else None
    done = threading.Event()
    marks: list[float] = []
    firsts: list[int] = []

    def on_batch(_report: object) -> None:
        total = sum(runner.metrics().events_processed.values())
        if not marks:
            firsts.append(total)
        marks.append(time.perf_counter())
        if total >= n:
            done.set()

    runner = ConsumerRunner(settings, lambda t, p: MonitorPartitionProcessor(t, p, config, references,
                                                                             quality=quality),
                            on_batch=on_batch)
    th = threading.Thread(target=runner.run, args=(done,), daemon=True)
    th.start()
    th.join(600)
    done.set()
    th.join(30)
    return (n - firsts[0]) / (marks[-1] - marks[0])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=30000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = MonitorConfig()
    print("ground-truth join: predictions enter the join (no labels published); the rest as without\n")
    print("| events | raw consume (msg/s) | nlpmon loop (events/s) | ratio |")
    print("|---|---|---|---|")
    with EmbeddedBroker() as broker:
        for b64, tokens in ((False, True), (True, True), (True, False)):
            def encode(e: dict, tokens: bool = tokens) -> bytes:
                return json.dumps(e if tokens else {k: v for k, v in e.items() if k != "tokens"}).encode()

            ref = SyntheticStream(seed=3, base64_embeddings=b64)
            ms = MonitorSet(config)
            ms.process_lines([encode(e) for e in ref.events(3000, "reference")])
            prod = SyntheticStream(seed=4, base64_embeddings=b64)
            lines = [encode(e) for e in prod.events(args.events)]
            ms.process_lines(lines[:1])  # calibrates
            mon = ms.monitors[("demo-ner", "1")]
            assert mon.profile is not None
            references = References(profiles={("demo-ner", "1"): mon.profile})
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            produce(broker.bootstrap_servers, topic, lines)
            raw, _ = raw_consume_rate(broker.bootstrap_servers, topic, args.events)
            kind = ("base64 float32" if b64 else "JSON list") + ("" if tokens else ", no tokens")
            size = sum(map(len, lines)) / len(lines)
            for ground_truth in (False, True) if b64 and tokens else (False,):
                loop = monitor_rate(broker.bootstrap_servers, topic, args.events, references, config, ground_truth)
                label = kind + (" + ground-truth join" if ground_truth else "")
                print(f"| {label} ({size / 1024:.1f} KB/event) | {raw:,.0f} | {loop:,.0f} | {loop / raw:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
