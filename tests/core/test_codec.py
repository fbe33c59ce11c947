"""The state codec: round trips, and refuses foreign, truncated or newer data."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nlpmon.state import SnapshotError, decode_state, encode_state
from nlpmon.state.codec import MAGIC, STRING_RUN

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
@given(st.lists(st.text(max_size=12), max_size=STRING_RUN - 2))
def test_short_lists_of_strings_are_kept_as_they_are(xs: list[str]) -> None:
    """A list (or tuple) of fewer than STRING_RUN strings goes into the header as it is, not walked: the same
    JSON as walked."""
    data = encode_state({"l": xs, "t": tuple(xs), "mixed": [*xs, None]})
    assert _header(data) == json.dumps({"l": xs, "t": xs, "mixed": [*xs, None]}, separators=(",", ":")).encode()
    assert decode_state(data) == {"l": xs, "t": xs, "mixed": [*xs, None]}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=12)), min_size=STRING_RUN, max_size=60))
def test_long_lists_of_strings_round_trip_outside_the_header(xs: list[str | None]) -> None:
    """A list of STRING_RUN or more strings (or None) is msgpack in the array bytes, not JSON in the header;
    decoded it is the same list (a tuple comes back as a list, as through JSON)."""
    data = encode_state({"l": xs, "t": tuple(xs), "n": [np.arange(3.0), xs]})
    assert b"__st__" in _header(data) and not any(x and x in _header(data).decode() for x in xs if len(x or "") > 8)
    back = decode_state(data)
    assert back["l"] == xs and back["t"] == xs and back["n"][1] == xs
    assert np.array_equal(back["n"][0], np.arange(3.0))


def test_a_long_list_msgpack_cannot_hold_stays_in_the_header() -> None:
    xs = ["\ud800 lone surrogate"] * STRING_RUN
    data = encode_state({"l": xs})
    assert b"__st__" not in _header(data) and decode_state(data) == {"l": xs}


def test_reads_format_1() -> None:
    """A state of format 1 (long string lists in the JSON header; a one-key dict ``__st__`` is data there)."""
    tree = {"texts": ["a", None, "b"] * 10, "x": {"__nd__": [0, "<f8", [2]]}, "d": {"__st__": [0, 3]}}
    header = json.dumps(tree, separators=(",", ":")).encode()
    data = MAGIC + struct.pack("<HI", 1, len(header)) + header + np.array([1.5, 2.5]).tobytes()
    back = decode_state(data)
    assert back["texts"] == tree["texts"] and back["d"] == {"__st__": [0, 3]}
    assert np.array_equal(back["x"], [1.5, 2.5])


def test_refuses_a_corrupt_string_list() -> None:
    data = bytearray(encode_state({"l": ["tag"] * STRING_RUN}))
    data[-1] = 0xC1  # a byte msgpack never uses
    with pytest.raises(SnapshotError, match="string list"):
        decode_state(bytes(data))
    with pytest.raises(SnapshotError, match="truncated"):
        decode_state(bytes(data[:-2]))
    not_strings = encode_state({"l": [1.0] * 4})[: len(MAGIC) + 2]  # a header pointing at msgpack floats
    header = json.dumps({"l": {"__st__": [0, 5]}}).encode()
    with pytest.raises(SnapshotError, match="string list"):
        decode_state(not_strings + struct.pack("<I", len(header)) + header + b"\x91\xcb" + b"\0" * 3)


def _header(data: bytes) -> bytes:
    (hlen,) = struct.unpack_from("<I", data, len(MAGIC) + 2)
    return data[len(MAGIC) + 6:len(MAGIC) + 6 + hlen]


def test_a_dict_that_reads_like_a_marker_comes_back_as_it_was() -> None:
    """Label names come from the producers: a model whose only label is ``__nd__`` or ``__st__`` gives a one-key
    dict that the decoder would take for an array or a string list (and refuse the snapshot); it is escaped."""
    tree = {"counts": {"__nd__": 5}, "shares": {"__st__": [0, 3]}, "e": {"__esc__": {"__nd__": 1}},
            "two": {"__nd__": 1, "x": 2}, "arr": np.arange(3.0)}
    back = decode_state(encode_state(tree))
    assert back["counts"] == {"__nd__": 5} and back["shares"] == {"__st__": [0, 3]}
    assert back["e"] == {"__esc__": {"__nd__": 1}} and back["two"] == {"__nd__": 1, "x": 2}
    assert np.array_equal(back["arr"], np.arange(3.0))


def test_arrays_of_every_layout_encode_to_the_bytes_of_format_2_as_first_written() -> None:
    """The encoder's shortcuts (plain values, arrays already C-contiguous and little-endian) write the bytes
    the encoder wrote before them: the sha256 was taken of this tree's encoding at 20b8d24. Parts are
    addressed by the sha256 of their bytes, so a change here would rewrite every unchanged part."""
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    tree = {"zero_d": np.array(2.5), "zero_d_int": np.int64(7), "c": a, "fortran": np.asfortranarray(a),
            "strided": a[:, ::2], "big_endian": np.arange(3, dtype=">f8"), "bool": np.array([True, False]),
            "empty": np.zeros((0, 3), np.uint8), "n": [1, 2.5, True, None, "x"], "texts": ["t"] * 16,
            "nested": [{"k": np.ones(2, np.int32)}, (3, "y")], "marker": {"__nd__": 1}, "f": np.float32(0.5)}
    data = encode_state(tree)
    assert len(data) == 626
    assert hashlib.sha256(data).hexdigest() == "7bbcb71b6a554ef34382d4a47e07df725d7d76bcfc7521ead21c99d3ad93edef"
    back = decode_state(data)
    assert back["zero_d"].shape == (1,) and back["big_endian"].dtype == np.dtype("<f8")  # as format 2 always did
    assert np.array_equal(back["fortran"], a) and np.array_equal(back["strided"], a[:, ::2])
