"""Text from events (model names, labels, versions) made safe for one-line output: logs, progress lines.

A model name is producer-controlled: one with a newline would otherwise write a fake line into the log or
the progress output. ``one_line`` escapes control characters (C0, DEL, C1, and the Unicode line and
paragraph separators) the way ``repr`` does and leaves every other character as it is.
"""

from __future__ import annotations

import logging
import re
from typing import Final

__all__ = ["OneLineFormatter", "one_line"]

_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u0085]")


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


def one_line(text: object, max_chars: int | None = None) -> str:
    """``str(text)`` with control characters escaped (``\\n``, ``\\x1b``...), cut at ``max_chars``.

    >>> one_line("ner\\nnlpmon: fake line\\x1b[2J")
    'ner\\\\nnlpmon: fake line\\\\x1b[2J'
    """
    s = _CONTROL.sub(_escape, str(text))
    if max_chars is not None and len(s) > max_chars:
        s = s[:max_chars] + f"… (+{len(s) - max_chars:,} characters)"
    return s


class OneLineFormatter(logging.Formatter):
    """A logging formatter whose message part is always one line (tracebacks still follow on their own)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        escaped = one_line(message)
        if escaped != message:
            record = logging.makeLogRecord({**record.__dict__, "msg": escaped, "args": None})
        return super().format(record)
