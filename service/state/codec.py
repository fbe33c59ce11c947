"""A small, safe container for nested state: JSON for structure, raw little-endian bytes for arrays.

Layout: ``b"NLPMON"`` | format version (uint16 LE) | header length (uint32 LE) | JSON header | array
bytes. The header is the state tree with every numpy array replaced by
``{"__nd__": [offset, dtype, shape]}``. Decoding builds only dicts, lists, strings, numbers and numpy
arrays of plain numeric dtypes, so a file or topic that others can write cannot run code (unlike pickle).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

MAGIC = b"NLPMON"
FORMAT_VERSION = 1
_ALLOWED_DTYPES = {"<f2", "<f4", "<f8", "<i8", "<i4", "|b1", "|u1", "<u8"}


class SnapshotError(ValueError):
    """Raised when bytes are not a valid nlpmon state of a supported version."""


def encode_state(tree: Any) -> bytes:
    """Serialise a tree of dict/list/str/int/float/bool/None/numpy arrays. Raises TypeError on other types."""
    chunks: list[bytes] = []
    offset = 0

    def walk(x: Any) -> Any:
        nonlocal offset
        if isinstance(x, np.ndarray):
            arr = np.ascontiguousarray(x)
            dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
            arr = arr.astype(dt, copy=False)
            if dt.str not in _ALLOWED_DTYPES:
                raise TypeError(f"cannot store arrays of dtype {dt.str}")
            data = arr.tobytes()
            ref = {"__nd__": [offset, dt.str, list(arr.shape)]}
            chunks.append(data)
            offset += len(data)
            return ref
        if isinstance(x, dict):
            return {str(k): walk(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [walk(v) for v in x]
        if isinstance(x, np.generic):
            return x.item()
        if x is None or isinstance(x, str | int | float | bool):
            return x
        raise TypeError(f"cannot store {type(x).__name__} in a state")

    header = json.dumps(walk(tree), separators=(",", ":")).encode()
    return MAGIC + struct.pack("<HI", FORMAT_VERSION, len(header)) + header + b"".join(chunks)


def decode_state(data: bytes) -> Any:
    """Inverse of ``encode_state``. Raises SnapshotError on foreign, truncated or newer data."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 6:
        raise SnapshotError("not an nlpmon state (bad magic)")
    version, hlen = struct.unpack_from("<HI", data, len(MAGIC))
    if version > FORMAT_VERSION:
        raise SnapshotError(f"state format {version} is newer than this nlpmon ({FORMAT_VERSION}); upgrade")
    start = len(MAGIC) + 6
    try:
        header = json.loads(data[start:start + hlen])
    except ValueError as exc:
        raise SnapshotError(f"corrupt state header: {exc}") from None
    body = memoryview(data)[start + hlen:]

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            if "__nd__" in x and len(x) == 1:
                off, dt, shape = x["__nd__"]
                if dt not in _ALLOWED_DTYPES:
                    raise SnapshotError(f"unsupported array dtype {dt!r}")
                dtype = np.dtype(dt)
                count = int(np.prod(shape)) if shape else 1
                end = off + count * dtype.itemsize
                if off < 0 or end > len(body):
                    raise SnapshotError("truncated state")
                return np.frombuffer(body[off:end], dtype=dtype).reshape(shape).copy()
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(header)
