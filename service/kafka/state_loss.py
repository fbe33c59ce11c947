"""Noticing a broker that lost what this process wrote: a committed offset lower than one this process
committed, a snapshot gone after this process wrote one, or a different partition count (a broker that came
back empty, or topics recreated). Plain bookkeeping, no Kafka calls."""

from __future__ import annotations

from .runner_metrics import TopicPartitionKey
from .snapshot_format import PartitionSnapshot


class StateLossDetector:
    """This process's memory of each input partition's committed offset and latest snapshot, and of the
    input topic's partition count. Not thread-safe: the runner thread uses it."""

    def __init__(self, state_topic: str) -> None:
        self._state_topic = state_topic
        self._committed_seen: dict[TopicPartitionKey, int] = {}
        self._snapshot_seen: dict[TopicPartitionKey, int] = {}
        self.input_partitions: int | None = None  # the count last seen (topic set-up, then assignments)

    def committed(self, key: TopicPartitionKey, offset: int) -> None:
        """An offset this process committed."""
        self._committed_seen[key] = max(self._committed_seen.get(key, -1), offset)

    def snapshot_written(self, key: TopicPartitionKey, next_offset: int) -> None:
        """A snapshot this process wrote and the broker acknowledged."""
        self._snapshot_seen[key] = max(self._snapshot_seen.get(key, -1), next_offset)

    def check(self, key: TopicPartitionKey, snapshot: PartitionSnapshot | None, committed: int,
              partition_count: int | None) -> str | None:
        """On assignment: None when the broker still has what this process saw of ``key``; else a one-line
        note saying what was lost and what restore does (and from now on compare with the new log)."""
        topic, partition = key
        seen_commit = self._committed_seen.get(key, -1)
        seen_snapshot = self._snapshot_seen.get(key, -1)
        reasons = []
        if committed < seen_commit:
            reasons.append(f"committed offset {committed if committed >= 0 else 'none'} after {seen_commit}")
        if snapshot is None and seen_snapshot >= 0:
            reasons.append(f"no snapshot in {self._state_topic} after one at {seen_snapshot}")
        if partition_count is not None and self.input_partitions is not None \
                and partition_count != self.input_partitions:
            reasons.append(f"{topic} has at least {partition_count} partitions, not {self.input_partitions}")
        if not reasons:
            self._committed_seen[key] = max(seen_commit, committed)
            return None
        self._committed_seen[key] = committed  # from now on, compare with the new log's offsets
        if snapshot is None:
            self._snapshot_seen.pop(key, None)
        if snapshot is not None and committed < seen_commit:
            how = "restoring the snapshot that arrived after the restart and reading the new log from its start"
        elif snapshot is not None:
            how = f"restoring the snapshot at {snapshot.next_offset}"
        else:
            how = "starting with empty state (drift windows refill, quality restarts)"
        return f"{topic}[{partition}]: Kafka lost state or offsets ({'; '.join(reasons)}); {how}"


__all__ = ["StateLossDetector"]
