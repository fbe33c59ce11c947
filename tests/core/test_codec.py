"""The state codec: round trips, and refuses foreign, truncated or newer data."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nlpmon.state import SnapshotError, decode_state, encode_state
from nlpmon.state.codec import MAGIC

leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**60), 2**60), st.floats(allow_nan=False),
                 st.text(max_size=20),
                 hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64]), hnp.array_shapes(max_dims=2)))
tree = st.recursive(leaf, lambda c: st.one_of(st.lists(c, max_size=4),
                                              st.dictionaries(st.text(max_size=8), c, max_size=4)), max_leaves=12)


def same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@settings(max_examples=150, deadline=None)
@given(tree)
def test_round_trip(t: object) -> None:
    assert same(t, decode_state(encode_state(t)))


def test_rejects_foreign_truncated_and_newer_data() -> None:
    data = encode_state({"a": np.arange(10.0)})
    with pytest.raises(SnapshotError, match="magic"):
        decode_state(b"\x80\x04pickle" + data)
    with pytest.raises(SnapshotError, match="truncated"):
        decode_state(data[:-8])
    newer = MAGIC + struct.pack("<H", 99) + data[len(MAGIC) + 2:]
    with pytest.raises(SnapshotError, match="newer"):
        decode_state(newer)


def test_refuses_objects() -> None:
    with pytest.raises(TypeError, match="cannot store object in a state"):
        encode_state({"x": object()})
    with pytest.raises(TypeError, match=r"cannot store arrays of dtype \|O"):
        encode_state({"x": np.array(["a"], dtype=object)})


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=30))
def test_lists_of_strings_are_kept_as_they_are(xs: list[str]) -> None:
    """A list (or tuple) of strings goes into the header as it is, not walked: the same JSON as walked."""
    import json

    data = encode_state({"l": xs, "t": tuple(xs), "mixed": [*xs, None]})
    (hlen,) = struct.unpack_from("<I", data, len(MAGIC) + 2)
    header = data[len(MAGIC) + 6:len(MAGIC) + 6 + hlen]
    assert header == json.dumps({"l": xs, "t": xs, "mixed": [*xs, None]}, separators=(",", ":")).encode()
    assert decode_state(data) == {"l": xs, "t": xs, "mixed": [*xs, None]}
