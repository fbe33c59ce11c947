"""A small, safe container for nested state: JSON for structure, raw little-endian bytes for arrays.

Layout: ``b"NLPMON"`` | format version (uint16 LE) | header length (uint32 LE) | JSON header | array
bytes. The header is the state tree with every numpy array replaced by
``{"__nd__": [offset, dtype, shape]}``. Since format version 2, a list of at least ``STRING_RUN`` items
that are all strings or None (the texts and the tags of a reference sample's segment) is in the array bytes
too, msgpack-encoded, as ``{"__st__": [offset, length]}``: one C call instead of a Python check of each item
and the JSON of each. Version 1 states (no ``__st__``) are still read; builds before version 2 refuse
version 2 states ("newer than this nlpmon"). A dict of the state with one key that is a marker (a label named
``__nd__``) is written as ``{"__esc__": {...}}`` (version 2). Decoding builds only dicts, lists, strings,
numbers and numpy arrays of plain numeric dtypes, so a file or topic that others can write cannot run code
(unlike pickle); whatever the bytes, it raises nothing but :class:`SnapshotError` (a header nested deeper than
``MAX_STATE_DEPTH`` is refused before it is parsed). Readers of the decoded tree wrap themselves in
:func:`malformed_state`, so that a well-formed tree of the wrong shape is a SnapshotError too.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

import msgspec
import numpy as np

from ..errors import UserError
from ..events.depth import exceeds_depth

MAGIC = b"NLPMON"
FORMAT_VERSION = 2  # 2: long string lists as msgpack in the array bytes (``__st__``); 1 is still read
#: Shortest list of strings (or None) stored as msgpack bytes rather than in the JSON header.
STRING_RUN: Final = 16
_PLAIN = frozenset({str, int, float, bool, type(None)})  # what ``walk`` returns as it is
_TEXTS = frozenset({str, type(None)})
#: One-key dicts that mean something to the decoder; a state's own dict of that shape is wrapped in ``__esc__``.
_MARKERS = frozenset({"__nd__", "__st__", "__esc__"})
_STRINGS_DECODER = msgspec.msgpack.Decoder(list[str | None])
_ALLOWED_DTYPES = {"<f2", "<f4", "<f8", "<i8", "<i4", "|b1", "|u1", "<u8"}
#: Deepest header nesting read back; the states nlpmon writes nest about 10 levels.
MAX_STATE_DEPTH: Final = 64


class SnapshotError(UserError, ValueError):
    """Raised when bytes are not a valid nlpmon state of a supported version."""


@contextmanager
def malformed_state(what: str) -> Iterator[None]:
    """Report the errors that reading a decoded state tree of the wrong shape raises as one SnapshotError.

    For code that turns a tree from :func:`decode_state` into objects (``from_state``): a missing key, a
    list where a dict was expected, an array of the wrong shape... become ``SnapshotError("<what> is
    malformed: ...")`` instead of escaping as KeyError, TypeError or ValueError.
    """
    try:
        yield
    except SnapshotError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, OverflowError, RecursionError) as exc:
        raise SnapshotError(f"{what} is malformed ({type(exc).__name__}: {exc})") from None


def encode_state(tree: Any) -> bytes:
    """Serialise a tree of dict/list/str/int/float/bool/None/numpy arrays. Raises TypeError on other types."""
    chunks: list[bytes | memoryview] = []
    offset = 0

    def walk(x: Any) -> Any:
        nonlocal offset
        if type(x) in _PLAIN:  # a plain number or string: as the last branch returns it
            return x
        if isinstance(x, np.ndarray):
            # an ndarray of at least one dimension, C-contiguous, not big-endian (nearly all): as it is, which
            # is what the conversions below return for it (ascontiguousarray makes a 0-d array 1-d)
            if type(x) is np.ndarray and x.ndim and x.flags.c_contiguous and x.dtype.byteorder != ">":
                arr, dt = x, x.dtype
            else:
                arr = np.ascontiguousarray(x)
                dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
                arr = arr.astype(dt, copy=False)
            kind = dt.str
            if kind not in _ALLOWED_DTYPES:
                raise TypeError(f"cannot store arrays of dtype {kind}")
            ref = {"__nd__": [offset, kind, list(arr.shape)]}
            chunks.append(arr.data)  # its buffer: joined below, copied once
            offset += arr.nbytes
            return ref
        if isinstance(x, dict):
            out = {str(k): walk(v) for k, v in x.items()}
            if len(out) == 1 and next(iter(out)) in _MARKERS:  # data that reads like a marker (a label "__nd__")
                return {"__esc__": out}
            return out
        if isinstance(x, list | tuple):
            types = set(map(type, x))
            if len(x) >= STRING_RUN and types <= _TEXTS:  # texts, tags: one msgpack string of them
                try:
                    data = msgspec.msgpack.encode(x)
                except UnicodeEncodeError:  # a lone surrogate (JSON escapes it): in the header as before
                    return x
                ref = {"__st__": [offset, len(data)]}
                chunks.append(data)
                offset += len(data)
                return ref
            if types <= _PLAIN:  # as they are (JSON gives the same)
                return x
            return [walk(v) for v in x]
        if isinstance(x, np.generic):
            return x.item()
        if x is None or isinstance(x, str | int | float | bool):
            return x
        raise TypeError(f"cannot store {type(x).__name__} in a state")

    header = json.dumps(walk(tree), separators=(",", ":")).encode()
    return MAGIC + struct.pack("<HI", FORMAT_VERSION, len(header)) + header + b"".join(chunks)


def content_id(data: bytes) -> str:
    """The id of a piece of encoded state by its content: the sha256 of the bytes, in hex (equal bytes,
    equal id: what lets a checkpoint skip a part that did not change)."""
    return hashlib.sha256(data).hexdigest()


class PartSet(Mapping[str, bytes]):
    """Encoded pieces of a state by content id (:func:`content_id`), for snapshots that write only what
    changed. A piece encoded before, whose id is known, is added without its bytes (:meth:`add_known`):
    they are made again only if asked for (a store that has not written that part yet), so a caller need
    not keep the bytes of what never changes (a reference profile, a calibration's sample) in memory."""

    def __init__(self) -> None:
        self._ready: dict[str, bytes] = {}
        self._later: dict[str, Callable[[], bytes]] = {}

    def add(self, data: bytes) -> str:
        """Add encoded bytes; returns their id."""
        pid = content_id(data)
        self._ready[pid] = data
        self._later.pop(pid, None)
        return pid

    def add_known(self, pid: str, make: Callable[[], bytes]) -> None:
        """Add the piece ``pid`` whose bytes ``make()`` gives again (the same bytes as when ``pid`` was taken)."""
        if pid not in self._ready:
            self._later[pid] = make

    def __getitem__(self, pid: str) -> bytes:
        if pid in self._ready:
            return self._ready[pid]
        data = self._later[pid]()
        if content_id(data) != pid:  # a piece that changed although its id says not: a bug, never a wrong write
            raise RuntimeError(f"state part {pid[:12]} encodes differently than when its id was taken")
        return data

    def __iter__(self) -> Iterator[str]:
        yield from self._ready
        yield from (pid for pid in self._later if pid not in self._ready)

    def __len__(self) -> int:
        return len(self._ready) + sum(1 for pid in self._later if pid not in self._ready)


def decode_state(data: bytes) -> Any:
    """Inverse of ``encode_state``. Raises SnapshotError on foreign, truncated or newer data."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 6:
        raise SnapshotError("not an nlpmon state (bad magic)")
    version, hlen = struct.unpack_from("<HI", data, len(MAGIC))
    if version > FORMAT_VERSION:
        raise SnapshotError(f"state format {version} is newer than this nlpmon ({FORMAT_VERSION}); upgrade")
    start = len(MAGIC) + 6
    raw_header = data[start:start + hlen]
    if exceeds_depth(raw_header, MAX_STATE_DEPTH):
        raise SnapshotError(f"corrupt state header: nested deeper than {MAX_STATE_DEPTH} levels")
    try:
        header = json.loads(raw_header)
    except (ValueError, RecursionError) as exc:  # ValueError: JSON and UTF-8 errors
        raise SnapshotError(f"corrupt state header: {exc}") from None
    body = memoryview(data)[start + hlen:]

    def array(ref: Any) -> np.ndarray:
        if not (isinstance(ref, list) and len(ref) == 3 and type(ref[0]) is int and isinstance(ref[2], list)
                and all(type(d) is int and d >= 0 for d in ref[2])):
            raise SnapshotError(f"corrupt state header: bad array reference {str(ref)[:80]}")
        off, dt, shape = ref
        if not isinstance(dt, str) or dt not in _ALLOWED_DTYPES:
            raise SnapshotError(f"unsupported array dtype {str(dt)[:20]!r}")
        dtype = np.dtype(dt)
        count = math.prod(shape)
        end = off + count * dtype.itemsize
        if off < 0 or end > len(body):
            raise SnapshotError("truncated state")
        return np.frombuffer(body[off:end], dtype=dtype).reshape(shape).copy()

    def strings(ref: Any) -> list[str | None]:
        if not (isinstance(ref, list) and len(ref) == 2 and all(type(d) is int and d >= 0 for d in ref)):
            raise SnapshotError(f"corrupt state header: bad string list reference {str(ref)[:80]}")
        off, length = ref
        if off + length > len(body):
            raise SnapshotError("truncated state")
        try:
            return _STRINGS_DECODER.decode(body[off:off + length])
        except msgspec.DecodeError as exc:  # ValidationError is one: not a list of strings
            raise SnapshotError(f"corrupt state: a string list ({exc})") from None

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            if len(x) == 1:
                if "__nd__" in x:
                    return array(x["__nd__"])
                if version >= 2 and "__st__" in x:
                    return strings(x["__st__"])
                if version >= 2 and "__esc__" in x and isinstance(x["__esc__"], dict):
                    return {k: walk(v) for k, v in x["__esc__"].items()}
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(header)
