"""Producing to Kafka: the file publisher and delivery-acknowledgement tracking.

``publish_file`` feeds a JSONL(.gz) file of events into the input topic, keyed by model (topics are
created in ``nlpmon.kafka.topics``). ``DeliveryTracker`` counts acknowledgements so that a caller can
prove every message it produced was acknowledged.
"""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import msgspec
from confluent_kafka import KafkaError, Message, Producer

from ..errors import UserError

_log = logging.getLogger(__name__)

ClientOptions = Mapping[str, Any]


_DELIVERY_REMEDY = ("check that the broker is up, the topic exists and the client may write to it (ACLs, "
                    "message.max.bytes); nothing is committed past the last complete checkpoint")


class DeliveryError(UserError, RuntimeError):
    """Some produced messages were not acknowledged (failed or timed out); nothing may be committed."""


@dataclass
class DeliveryTracker:
    """Counts what was produced and what the broker acknowledged. Pass :meth:`on_delivery` to produce().

    Callbacks run inside ``Producer.poll``/``flush`` on the calling thread.
    """

    name: str
    produced: int = 0
    acked: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """librdkafka delivery report callback."""
        if err is None:
            self.acked += 1
            return
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    @property
    def pending(self) -> int:
        """Produced, neither acknowledged nor failed yet."""
        return self.produced - self.acked - self.failed

    def reset(self) -> None:
        """Forget everything (after a successful :meth:`wait_all_acked` or a dropped producer)."""
        self.produced = self.acked = self.failed = 0
        self.errors.clear()

    def acked_within(self, producer: Producer, timeout_s: float) -> bool:
        """Flush ``producer`` for up to ``timeout_s``; True when every message counted here is acknowledged
        (the counters are then reset), False while some are still pending (the client keeps retrying them).

        Raises DeliveryError when a delivery failed (counters left as they are: the caller must not commit).
        """
        if self.produced and self.pending:
            producer.flush(timeout_s)
        elif self.produced:
            producer.poll(0)
        if self.failed:
            raise DeliveryError(
                f"{self.name}: {self.failed} of {self.produced} messages failed ({'; '.join(self.errors)}); "
                f"{_DELIVERY_REMEDY}"
            )
        if self.pending:
            return False
        self.reset()
        return True

    def wait_all_acked(self, producer: Producer, timeout_s: float) -> None:
        """Flush ``producer`` and check that every message counted here was acknowledged.

        Blocks up to ``timeout_s``. Raises DeliveryError when a delivery failed or is still pending; the
        counters are then left as they are (the caller must not commit). Resets the counters on success.
        """
        if self.produced:
            producer.flush(timeout_s)
        if self.failed or self.pending:
            raise DeliveryError(
                f"{self.name}: {self.failed} of {self.produced} messages failed and {self.pending} are "
                f"unacknowledged after {timeout_s:.0f} s ({'; '.join(self.errors) or 'timeout'}); {_DELIVERY_REMEDY}"
            )
        self.reset()


def produce_with_backpressure(
    producer: Producer, timeout_s: float, clock: Callable[[], float] = time.monotonic, **kwargs: Any
) -> None:
    """``producer.produce(**kwargs)``, serving delivery reports while the local queue is full.

    Blocks at most ``timeout_s`` on a full queue, then raises DeliveryError. Raises KafkaException for a
    message the client refuses outright (too large, unknown partition).
    """
    deadline = clock() + timeout_s
    while True:
        try:
            producer.produce(**kwargs)
            return
        except BufferError:
            if clock() >= deadline:
                raise DeliveryError(f"producer queue stayed full for {timeout_s:.0f} s; {_DELIVERY_REMEDY}") from None
            producer.poll(0.05)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Lines sent (handed to the producer), acknowledged by the broker, and failed or unacknowledged."""

    sent: int
    acked: int
    failed: int


class _ModelOnly(msgspec.Struct):
    model: str | None = None


_model_decoder = msgspec.json.Decoder(_ModelOnly)


def event_key(line: bytes) -> bytes | None:
    """The Kafka key of one JSON event: its "model" field, UTF-8. None when the line is not a JSON object
    or has no string "model" (the service dead-letters such events; the publisher still sends them).

    >>> event_key(b'{"model": "ner-v2", "text": "x"}'), event_key(b'not json'), event_key(b'[1]')
    (b'ner-v2', None, None)
    """
    try:
        model = _model_decoder.decode(line).model
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return model.encode() if model is not None else None


def _lines(path: Path) -> Iterator[bytes]:
    handle = cast(IO[bytes], gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb"))  # noqa: SIM115
    with handle:
        for line in handle:
            stripped = line.strip()
            if stripped:
                yield stripped


def publish_file(
    path: str | Path,
    bootstrap_servers: str,
    topic: str,
    *,
    progress: Callable[[PublishResult], None] | None = None,
    progress_every: int = 10_000,
    flush_timeout_s: float = 30.0,
    client_options: ClientOptions | None = None,
) -> PublishResult:
    """Send every non-blank line of a JSONL or JSONL.gz file to ``topic``, keyed by the event's "model".

    Lines that are not JSON are sent too (keyless). Calls ``progress`` every ``progress_every`` lines and
    once at the end. Blocks until all are acknowledged or ``flush_timeout_s`` passes after the last line;
    unacknowledged ones count as failed. Raises OSError for an unreadable file, KafkaException if the
    client cannot be built.
    """
    producer = Producer(
        {
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "compression.type": "lz4",
            **(client_options or {}),
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
        }
    )
    tracker = DeliveryTracker(name=f"publish {path}")
    for line in _lines(Path(path)):
        produce_with_backpressure(
            producer,
            flush_timeout_s,
            topic=topic,
            value=line,
            key=event_key(line),
            on_delivery=tracker.on_delivery,
        )
        tracker.produced += 1
        producer.poll(0)
        if progress is not None and tracker.produced % progress_every == 0:
            progress(PublishResult(tracker.produced, tracker.acked, tracker.failed))
    producer.flush(flush_timeout_s)
    result = PublishResult(tracker.produced, tracker.acked, tracker.failed + tracker.pending)
    if progress is not None:
        progress(result)
    if result.failed:
        _log.warning(
            "publish %s: %d of %d events not acknowledged (%s)",
            path,
            result.failed,
            result.sent,
            "; ".join(tracker.errors) or "timeout",
        )
    return result
