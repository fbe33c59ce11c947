"""A small PartitionProcessor for the Kafka tests: counts events per model and makes double counts and gaps
visible.

Per partition it keeps, for each model, the count and the set of event ids, the number of duplicate event
ids, and a running sha256 chained over every record (offset and value, valid or not) in the order applied.
Two processors that saw the same offsets exactly once, in order, have equal ``state()``; a lost, repeated
or reordered record changes the digest.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

from nlpmon.kafka.processor import Record, Rejected

SNAPSHOT_VERSION = 1


class CountingProcessor:
    """Counts ``{"model": str, "event_id": int}`` events; rejects anything else.

    ``delay_s`` makes each ``process`` call sleep (tests use it to land a signal inside a batch).
    """

    def __init__(self, topic: str, partition: int, *, delay_s: float = 0.0) -> None:
        self.topic = topic
        self.partition = partition
        self.delay_s = delay_s
        self.counts: dict[str, int] = {}
        self.event_ids: dict[str, set[int]] = {}
        self.duplicates = 0
        self.records = 0
        self.rejected = 0
        self.last_offset = -1
        self.digest = hashlib.sha256(f"{topic}/{partition}".encode()).hexdigest()

    def process(self, records: Sequence[Record]) -> list[Rejected]:
        if self.delay_s:
            time.sleep(self.delay_s)
        rejected: list[Rejected] = []
        digest = bytes.fromhex(self.digest)
        for record in records:
            digest = hashlib.sha256(
                digest + record.offset.to_bytes(8, "big") + (record.value or b"")
            ).digest()
            self.records += 1
            self.last_offset = record.offset
            reason = _validate(record.value)
            if reason is not None:
                rejected.append(Rejected(record.offset, *reason))
                self.rejected += 1
                continue
            event = json.loads(record.value or b"")
            model, event_id = event["model"], event["event_id"]
            self.counts[model] = self.counts.get(model, 0) + 1
            ids = self.event_ids.setdefault(model, set())
            if event_id in ids:
                self.duplicates += 1
            ids.add(event_id)
        self.digest = digest.hex()
        return rejected

    def state(self) -> dict[str, Any]:
        """Everything that defines the state, JSON-ready (sorted)."""
        return {
            "version": SNAPSHOT_VERSION,
            "topic": self.topic,
            "partition": self.partition,
            "counts": dict(sorted(self.counts.items())),
            "event_ids": {m: sorted(ids) for m, ids in sorted(self.event_ids.items())},
            "duplicates": self.duplicates,
            "records": self.records,
            "rejected": self.rejected,
            "last_offset": self.last_offset,
            "digest": self.digest,
        }

    def snapshot(self) -> bytes:
        return json.dumps(self.state(), separators=(",", ":")).encode()

    def restore(self, data: bytes) -> None:
        try:
            state = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"counting snapshot is not JSON: {exc}") from None
        if not isinstance(state, dict) or state.get("version") != SNAPSHOT_VERSION:
            raise ValueError(
                f"counting snapshot version {state.get('version') if isinstance(state, dict) else '?'}"
            )
        if (state["topic"], state["partition"]) != (self.topic, self.partition):
            raise ValueError("counting snapshot of another partition")
        self.counts = dict(state["counts"])
        self.event_ids = {m: set(ids) for m, ids in state["event_ids"].items()}
        self.duplicates = state["duplicates"]
        self.records = state["records"]
        self.rejected = state["rejected"]
        self.last_offset = state["last_offset"]
        self.digest = state["digest"]


def _validate(value: bytes | None) -> tuple[str, str] | None:
    if value is None:
        return "malformed_json", "empty message (null value)"
    try:
        event = json.loads(value)
    except ValueError as exc:
        return "malformed_json", f"not JSON: {exc}"
    if not isinstance(event, dict):
        return "malformed_json", f"JSON {type(event).__name__}, expected an object"
    if not isinstance(event.get("model"), str) or type(event.get("event_id")) is not int:
        return "missing_field", 'needs a string "model" and an integer "event_id"'
    return None
