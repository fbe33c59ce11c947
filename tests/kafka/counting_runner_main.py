"""Entry point of the Kafka crash and signal tests: the ConsumerRunner with the CountingProcessor.

    python tests/kafka/counting_runner_main.py --bootstrap HOST:PORT --topic T --group G \
        --state-topic S --dead-letter-topic D [--delay-s 0.1] [--checkpoint-events 400] \
        [--hang-after-events N] [--hold-until-signal-at OFFSET]

Prints one JSON object per line on stdout: ``{"event": "processing", ...}`` before each partition batch
reaches the processor, ``{"event": "batch", ...}`` after each batch, ``{"event": "exit", ...}`` at the end.
SIGTERM and SIGINT set the stop event (finish the batch, checkpoint, close). Exit code 0 on a clean stop,
1 when the runner failed.

Two ways for a test to catch the process at a known point instead of racing it:
``--hang-after-events N``: once N records went into the processors, the next batch blocks before it is
processed (``{"event": "hanging", ...}``), so a SIGKILL lands mid-stream whatever the machine's speed;
``--hold-until-signal-at OFFSET``: the first batch reaching OFFSET after a lag was reported waits in the
processor until SIGTERM/SIGINT arrived (its "processing" line says ``"held": true``), so the signal lands
while that batch is in flight. Both give up after HOLD_LIMIT_S (the test has failed by then).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from counting_processor import CountingProcessor

from nlpmon.kafka.processor import PartitionProcessor, Record, Rejected
from nlpmon.kafka.runner import ConsumerRunner
from nlpmon.kafka.runner_metrics import BatchReport
from nlpmon.kafka.settings import KafkaSettings

HOLD_LIMIT_S = 120.0


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


class Gate:
    """Where the processors stop for the test (see the module doc); shared by every partition."""

    def __init__(self, hang_after_events: int | None, hold_at_offset: int | None) -> None:
        self.hang_after_events = hang_after_events
        self.hold_at_offset = hold_at_offset
        self.records = 0
        self.lag_seen = False
        self.held = False
        self.signalled = threading.Event()
        self.never = threading.Event()


class AnnouncingProcessor:
    """Prints a line before each batch goes into the CountingProcessor (so a test can signal mid-batch)."""

    def __init__(self, inner: CountingProcessor, gate: Gate) -> None:
        self.inner = inner
        self.gate = gate

    def process(self, records: Sequence[Record]) -> list[Rejected]:
        gate = self.gate
        if gate.hang_after_events is not None and gate.records >= gate.hang_after_events:
            emit({"event": "hanging", "partition": self.inner.partition, "records": gate.records})
            gate.never.wait(HOLD_LIMIT_S)
        hold = (gate.hold_at_offset is not None and not gate.held and gate.lag_seen
                and records[-1].offset >= gate.hold_at_offset)
        emit({"event": "processing", "partition": self.inner.partition, "last_offset": records[-1].offset,
              "held": hold})
        if hold:
            gate.held = True
            gate.signalled.wait(HOLD_LIMIT_S)
        gate.records += len(records)
        return self.inner.process(records)

    def snapshot(self) -> bytes:
        return self.inner.snapshot()

    def restore(self, data: bytes) -> None:
        self.inner.restore(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-topic", required=True)
    parser.add_argument("--dead-letter-topic", required=True)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--checkpoint-events", type=int, default=400)
    parser.add_argument("--checkpoint-s", type=float, default=30.0)
    parser.add_argument("--delay-s", type=float, default=0.0, help="sleep per processor call")
    parser.add_argument("--grace-s", type=float, default=5.0)
    parser.add_argument("--hang-after-events", type=int, default=None)
    parser.add_argument("--hold-until-signal-at", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")

    settings = KafkaSettings(
        bootstrap_servers=args.bootstrap,
        topic=args.topic,
        group_id=args.group,
        state_topic=args.state_topic,
        dead_letter_topic=args.dead_letter_topic,
        batch_size=args.batch_size,
        poll_timeout_s=0.2,
        session_timeout_ms=2000,
        statistics_interval_ms=500,
        checkpoint_interval_events=args.checkpoint_events,
        checkpoint_interval_s=args.checkpoint_s,
        delivery_timeout_s=5.0,
        restore_timeout_s=10.0,
        shutdown_grace_s=args.grace_s,
    )

    gate = Gate(args.hang_after_events, args.hold_until_signal_at)

    def factory(topic: str, partition: int) -> PartitionProcessor:
        return AnnouncingProcessor(CountingProcessor(topic, partition, delay_s=args.delay_s), gate)

    runner: ConsumerRunner

    def on_batch(report: BatchReport) -> None:
        metrics = runner.metrics()
        gate.lag_seen = gate.lag_seen or any(v > 0 for v in metrics.lag.values())
        emit(
            {
                "event": "batch",
                "processed": sum(metrics.events_processed.values()),
                "next_offsets": {str(p): o for (_, p), o in metrics.next_offsets.items()},
                "committed": {str(p): o for (_, p), o in metrics.committed_offsets.items()},
                "lag": {str(p): o for (_, p), o in metrics.lag.items()},
                "batch": [[b.partition, b.first_offset, b.next_offset] for b in report.partitions],
            }
        )

    runner = ConsumerRunner(settings, factory, on_batch=on_batch)
    stop = threading.Event()
    signalled_at: list[float] = []

    def on_signal(signum: int, frame: object) -> None:
        signalled_at.append(time.monotonic())
        stop.set()
        gate.signalled.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    emit({"event": "started"})
    try:
        runner.run(stop)
        code = 0
    except Exception as exc:
        logging.getLogger(__name__).error("runner failed: %s", exc)
        code = 1
    metrics = runner.metrics()
    emit(
        {
            "event": "exit",
            "code": code,
            "processed": sum(metrics.events_processed.values()),
            "snapshots_written": metrics.snapshots_written,
            "shutdown_s": time.monotonic() - signalled_at[0] if signalled_at else None,
        }
    )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
