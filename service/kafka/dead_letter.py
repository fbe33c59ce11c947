"""Dead letters: rejected records go to their own topic with the original value and their origin.

Headers (all UTF-8): ``nlpmon-reason`` (short code), ``nlpmon-detail`` (one line), ``nlpmon-source-topic``,
``nlpmon-source-partition``, ``nlpmon-source-offset``. The key is the original key, so one model's dead
letters stay in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Producer

from .processor import Record, Rejected
from .publish import DeliveryTracker, produce_with_backpressure

REASON_HEADER = "nlpmon-reason"
DETAIL_HEADER = "nlpmon-detail"
SOURCE_TOPIC_HEADER = "nlpmon-source-topic"
SOURCE_PARTITION_HEADER = "nlpmon-source-partition"
SOURCE_OFFSET_HEADER = "nlpmon-source-offset"
TRUNCATED_HEADER = "nlpmon-truncated-from-bytes"  # set when the original value was cut to fit
MAX_VALUE_BYTES = 900_000  # below librdkafka's default message.max.bytes (1,000,000) with room for headers

_MAX_DETAIL_CHARS = 1000


class DeadLetterWriter:
    """Produces rejected records asynchronously; :meth:`wait_all_acked` proves they all arrived.

    The runner calls :meth:`wait_all_acked` before it writes a snapshot or commits the offsets that cover
    the rejected records, so a dead letter is never lost behind a commit.
    """

    def __init__(
        self,
        producer: Producer,
        topic: str,
        *,
        queue_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        max_value_bytes: int = MAX_VALUE_BYTES,
    ) -> None:
        self._producer = producer
        self._max_value_bytes = max_value_bytes
        self._topic = topic
        self._queue_timeout_s = queue_timeout_s
        self._clock = clock
        self._tracker = DeliveryTracker(name=f"dead letters to {topic}")
        self.sent_total = 0

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def pending(self) -> int:
        """Dead letters produced and not yet acknowledged."""
        return self._tracker.pending

    def send(
        self, source_topic: str, partition: int, records: Sequence[Record], rejected: Sequence[Rejected]
    ) -> None:
        """Produce one dead letter per rejected record of a partition batch.

        Blocks only while the producer's local queue is full (then at most ``queue_timeout_s``). Raises
        ValueError if a rejection names an offset that is not in ``records`` (a processor bug), and
        DeliveryError if the queue stays full.
        """
        if not rejected:
            return
        by_offset = {record.offset: record for record in records}
        source = [
            (SOURCE_TOPIC_HEADER, source_topic.encode()),
            (SOURCE_PARTITION_HEADER, str(partition).encode()),
        ]
        for rejection in rejected:
            record = by_offset.get(rejection.offset)
            if record is None:
                raise ValueError(
                    f"processor of {source_topic}[{partition}] rejected offset {rejection.offset}, "
                    "which is not in the batch it was given"
                )
            headers = [
                (REASON_HEADER, rejection.reason.encode()),
                (DETAIL_HEADER, rejection.detail[:_MAX_DETAIL_CHARS].encode("utf-8", "replace")),
                *source,
                (SOURCE_OFFSET_HEADER, str(record.offset).encode()),
            ]
            value = record.value
            if value is not None and len(value) > self._max_value_bytes:
                # a dead letter must always be writable, or the partition could never move past it
                headers.append((TRUNCATED_HEADER, str(len(value)).encode()))
                value = value[: self._max_value_bytes]
            kwargs: dict[str, Any] = {
                "topic": self._topic,
                "value": value,
                "key": record.key,
                "headers": headers,
                "on_delivery": self._tracker.on_delivery,
            }
            if record.timestamp_ms is not None:
                kwargs["timestamp"] = record.timestamp_ms
            produce_with_backpressure(self._producer, self._queue_timeout_s, self._clock, **kwargs)
            self._tracker.produced += 1
            self.sent_total += 1
        self._producer.poll(0)

    def acked_within(self, timeout_s: float) -> bool:
        """Like :meth:`wait_all_acked`, but returns False instead of raising while some are still pending
        (DeliveryError only for a failed delivery)."""
        return self._tracker.acked_within(self._producer, timeout_s)

    def wait_all_acked(self, timeout_s: float) -> None:
        """Block until every dead letter sent so far is acknowledged (flushes the shared producer).

        Raises DeliveryError if one failed or is still unacknowledged after ``timeout_s``.
        """
        self._tracker.wait_all_acked(self._producer, timeout_s)
