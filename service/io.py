"""Reading event files: JSONL, optionally gzipped, line by line in bounded batches."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast


def open_lines(path: str | Path) -> IO[bytes]:
    """Open a .jsonl or .jsonl.gz file for binary line reading. Raises FileNotFoundError with the path."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such events file: {p}")
    with p.open("rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return cast(IO[bytes], gzip.open(p, "rb"))
    return p.open("rb")


def iter_batches(path: str | Path, batch_size: int) -> Iterator[list[bytes]]:
    """Non-empty lines of ``path`` in lists of at most ``batch_size`` (blank lines are skipped)."""
    batch: list[bytes] = []
    with open_lines(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            batch.append(line)
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch
