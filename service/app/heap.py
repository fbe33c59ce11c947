"""Give the heap's free memory back to the operating system (glibc only).

After a model's calibration is applied and the events it held are processed, what held them (packed
batches, the auto-baseline's columns) is freed, but glibc keeps most of it in its arenas: the process's RSS
stays where it was. ``malloc_trim(0)`` returns the free pages (measured: 10 models of 384-dim events that
held 1,000 events each: RSS 240 MiB after processing them, 178 MiB after the trim, which took 7 ms;
benchmarks/held_memory.py --trim). Elsewhere (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def trim_heap() -> bool:
    """``malloc_trim(0)`` where glibc has it: True when it ran (whether or not it released pages)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


__all__ = ["trim_heap"]
