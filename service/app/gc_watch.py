"""Long garbage collections, logged: a collection holds the interpreter lock for as long as it runs, so a
full one over a large heap stalls the consumer loop and every HTTP thread (a scrape) at once.

``freeze_startup()`` moves every object alive after start-up (the imported modules, their functions and
classes: about 100,000 objects, about 50 ms of every full collection on this machine) out of the
collector's reach for good (``gc.freeze``): they live as long as the process, and a full collection then
walks only what the service built since. Objects created later are collected as before.

``watch_collections(log, over_s)`` installs a ``gc.callbacks`` hook that logs each collection longer than
``over_s`` (its generation, seconds, and the objects it found unreachable) and counts them; the returned
``GcWatch`` has the totals and ``close()`` removes the hook. The hook costs two clock reads per collection.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GcWatch", "freeze_startup", "watch_collections"]


@dataclass
class GcWatch:
    over_s: float
    log: logging.Logger
    clock: Any = time.perf_counter
    long_collections: int = 0
    longest_s: float = 0.0
    _started: float | None = field(default=None, repr=False)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = self.clock()
            return
        if self._started is None:
            return
        took, self._started = self.clock() - self._started, None
        self.longest_s = max(self.longest_s, took)
        if took > self.over_s:
            self.long_collections += 1
            self.log.info("garbage collection of generation %d took %.3f s (%d objects unreachable): the loop "
                          "and the HTTP threads waited meanwhile", info.get("generation", -1), took,
                          info.get("collected", 0) + info.get("uncollectable", 0))

    def close(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


_frozen = False


def freeze_startup() -> int:
    """Collect once, then freeze what survives (see the module docstring), once per process (a process that
    runs services one after the other, as the tests do, keeps the rest collectable); returns how many
    objects are frozen."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
    return gc.get_freeze_count()


def watch_collections(log: logging.Logger, over_s: float = 0.1) -> GcWatch:
    watch = GcWatch(over_s, log)
    gc.callbacks.append(watch)
    return watch
