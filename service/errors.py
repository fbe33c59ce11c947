"""The one base class of the errors a user can cause and fix.

Every error that a bad setting, a bad input file, a missing topic, an unreachable or refusing broker, or a
port in use can raise subclasses :class:`UserError`; its message is one line saying what was wrong and what
to do. ``nlpmon`` (service/cli.py) prints such an error as that one line and exits 2; any other exception is
a bug and ends in a traceback (exit 1).
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user caused and can fix; ``str(error)`` is one line: what was wrong, what to do."""


__all__ = ["UserError"]
