"""Recently seen event ids of one (model, version): duplicates (a producer's retry) are counted once.

A ring of the last ``capacity`` ids' 64-bit BLAKE2b digests (8 bytes each, so the snapshot stays small
whatever the ids) and a set over it for the look-up. Pure and deterministic: the digest is keyed by
nothing that varies between processes (unlike Python's ``hash``), so a restored window answers like the
uninterrupted one. A collision of two different ids in a window of ``capacity`` ids has a probability of
about ``capacity**2 / 2**65`` (1e-12 for 10,000).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


def _digest(event_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "little")


class RecentIds:
    """The last ``capacity`` distinct event ids admitted (``capacity == 0``: no duplicate detection)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ring = [0] * capacity  # Python ints: no numpy scalar per admitted id (an array in ``state``)
        self._next = 0  # ids admitted so far; ring slot of the next one is _next % capacity
        self._seen: set[int] = set()

    def admit(self, event_id: str) -> bool:
        """True (and remembered) when ``event_id`` is not among the recent ids; False for a duplicate."""
        if self.capacity == 0:
            return True
        d = _digest(event_id)
        if d in self._seen:
            return False
        slot = self._next % self.capacity
        if self._next >= self.capacity:
            self._seen.discard(self._ring[slot])
        self._ring[slot] = d
        self._seen.add(d)
        self._next += 1
        return True

    @property
    def admitted(self) -> int:
        """Ids admitted so far (``state()["next"]``, without copying the ring)."""
        return self._next

    def state(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "ring": np.array(self._ring, dtype=np.uint64), "next": self._next}

    @classmethod
    def from_state(cls, s: dict[str, Any], capacity: int) -> RecentIds:
        """The window of a snapshot, resized to ``capacity`` (the newest ids are kept)."""
        ring, n = np.asarray(s["ring"], dtype=np.uint64), int(s["next"])
        old = int(s["capacity"])
        ordered = (ring[: n] if n <= old else np.roll(ring, -(n % old))) if old else ring[:0]
        out = cls(capacity)
        for d in (ordered[-capacity:] if capacity else ordered[:0]).tolist():
            out._ring[out._next % capacity] = d
            out._seen.add(d)
            out._next += 1
        return out
