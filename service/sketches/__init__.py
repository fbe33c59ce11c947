"""Mergeable, serialisable window sketches.

A sketch here is a sum of per-event feature rows plus an item count: sums merge by addition, so a
window of any size is the sum of the blocks (or events) it covers, and expiry is a subtraction.
"""

from .multiscale import MultiScaleWindow, WindowSums

__all__ = ["MultiScaleWindow", "WindowSums"]
