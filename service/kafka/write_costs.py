"""What writing each partition's snapshot cost last time, to predict what the next write will cost.

The checkpointer starts another snapshot in a loop iteration only if its prediction fits in what is left of
that iteration's write budget (:class:`~nlpmon.kafka.checkpoints.Checkpointer`). The prediction is the
partition's last measured write (``snapshot_parts`` and ``StateStore.write``, seconds): the bytes of its new
parts, which a per-byte cost could scale, are known only once ``snapshot_parts`` has run, and that is most of
the cost (issue 14: 0.43 s of 0.55 s). Plain bookkeeping, no clock of its own.
"""

from __future__ import annotations

from collections.abc import Collection

from .runner_metrics import TopicPartitionKey


class SnapshotWriteCosts:
    """The last measured write, in seconds, of each partition's snapshot.

    >>> costs = SnapshotWriteCosts()
    >>> costs.predict(("in", 0)) is None  # nothing measured: written alone
    True
    >>> costs.observe(("in", 0), 0.2); costs.observe(("in", 1), 0.05)
    >>> costs.predict(("in", 1)), costs.predict(("in", 2))  # no history: the largest known cost
    (0.05, 0.2)
    >>> costs.keep_only([("in", 1)]); costs.predict(("in", 0))
    0.05
    """

    def __init__(self) -> None:
        self._last: dict[TopicPartitionKey, float] = {}

    def observe(self, key: TopicPartitionKey, seconds: float) -> None:
        """``key``'s snapshot was just written in ``seconds``."""
        self._last[key] = seconds

    def predict(self, key: TopicPartitionKey) -> float | None:
        """The seconds the next write of ``key``'s snapshot should take: its last write; for a partition not
        written yet, the largest known cost; None when nothing is known (the caller writes it alone)."""
        last = self._last.get(key)
        if last is not None:
            return last
        return max(self._last.values(), default=None)

    def keep_only(self, keys: Collection[TopicPartitionKey]) -> None:
        """Forget the partitions not in ``keys`` (revoked or lost: their next owner measures its own)."""
        for key in [k for k in self._last if k not in keys]:
            del self._last[key]


__all__ = ["SnapshotWriteCosts"]
