"""Tag-sequence validity: tagging schemes, their detection from tags seen, and vectorised validity checks.

A tag is ``O`` or ``<P>-<TYPE>`` (also ``<P>_<TYPE>``) with a one-letter prefix ``P``. The schemes and
which tag may follow which (``START`` before the first token of an event counts as ``O``):

* ``iob2`` (BIO): ``I-X`` only after ``B-X`` or ``I-X``; ``B-X`` and ``O`` anywhere.
* ``iob1``: chunks open with ``I-X``; ``B-X`` only after ``B-X`` or ``I-X`` (it separates two adjacent
  chunks of the same type); ``I-X`` and ``O`` anywhere.
* ``bioes``: after ``B-X`` or ``I-X`` only ``I-X`` or ``E-X``; anywhere else only ``O``, ``B-*``, ``S-*``;
  an event may not end inside a chunk (its last token then counts as invalid).
* ``biluo``: ``bioes`` with ``L`` for ``E`` and ``U`` for ``S``.

A tag with a prefix outside its scheme (``E-X`` under ``iob2``) or that is no scheme tag at all is
invalid wherever it appears. Everything here is pure and vectorised over a flat batch of tags.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]
Scheme = Literal["iob1", "iob2", "bioes", "biluo"]
SCHEMES: tuple[Scheme, ...] = ("iob1", "iob2", "bioes", "biluo")

# prefix codes (code = type * 8 + prefix)
P_O, P_B, P_I, P_E, P_S, P_BAD = 0, 1, 2, 3, 4, 5
_LETTERS: dict[Scheme, dict[str, int]] = {
    "iob1": {"B": P_B, "I": P_I},
    "iob2": {"B": P_B, "I": P_I},
    "bioes": {"B": P_B, "I": P_I, "E": P_E, "S": P_S},
    "biluo": {"B": P_B, "I": P_I, "L": P_E, "U": P_S},
}
#: a scheme is detected only when at least this share of the reference's tokens are scheme tags
MIN_SCHEME_SHARE = 0.99
MAX_CACHED_TAGS = 10_000


def split_tag(tag: str) -> tuple[str, str] | None:
    """``("O", "")`` for ``O``; ``(letter, type)`` for ``B-PER`` / ``B_PER``; None for anything else."""
    if tag == "O":
        return "O", ""
    if len(tag) >= 3 and tag[1] in "-_" and tag[0].isalpha() and tag[0].isupper():
        return tag[0], tag[2:]
    return None


class TagCodes:
    """Tag -> integer code ``type * 8 + prefix`` under one scheme; types numbered as first seen.

    The cache is bounded (``MAX_CACHED_TAGS``): beyond it new tags are coded without being remembered.
    """

    def __init__(self, scheme: Scheme) -> None:
        self.scheme = scheme
        self._letters = _LETTERS[scheme]
        self._types: dict[str, int] = {"": 0}
        self._codes: dict[str, int] = _Codes(self)

    def code(self, tag: str) -> int:
        c = self._codes.get(tag)
        if c is not None:
            return c
        parts = split_tag(tag)
        if parts is None:
            c = P_BAD
        elif parts[0] == "O":
            c = P_O
        else:
            p = self._letters.get(parts[0], P_BAD)
            t = self._types.get(parts[1])
            if t is None:
                t = len(self._types) if len(self._types) < MAX_CACHED_TAGS else 1
                if len(self._types) < MAX_CACHED_TAGS:
                    self._types[parts[1]] = t
            c = t * 8 + p
        if len(self._codes) < MAX_CACHED_TAGS:
            self._codes[tag] = c
        return c

    def codes(self, tags: list[str]) -> I64:
        """Codes of a flat list of tags (one C-level dict lookup per tag; new tags parsed once)."""
        return np.fromiter(map(self._codes.__getitem__, tags), np.int64, count=len(tags))


class _Codes(dict[str, int]):
    """Tag -> code, parsing (and, within the cap, remembering) a tag on first sight."""

    def __init__(self, owner: TagCodes) -> None:
        super().__init__()
        self.owner = owner

    def __missing__(self, tag: str) -> int:
        return self.owner.code(tag)


def invalid_tokens(scheme: Scheme, codes: I64, event: I64) -> B:
    """(n_tokens,) True where a token's tag is invalid after the previous tag of its event (``START`` before
    the first), or, under ``bioes``/``biluo``, where an event's last token leaves a chunk open.

    ``codes`` from ``TagCodes(scheme)``; ``event`` non-decreasing (tokens of an event contiguous, in order).
    """
    n = codes.shape[0]
    if n == 0:
        return np.zeros(0, bool)
    p, t = codes % 8, codes // 8
    first = np.ones(n, bool)
    first[1:] = event[1:] != event[:-1]
    pp = np.empty(n, np.int64)
    pt = np.empty(n, np.int64)
    pp[0], pt[0] = P_O, 0
    pp[1:], pt[1:] = p[:-1], t[:-1]
    pp[first], pt[first] = P_O, 0
    inside = (pp == P_B) | (pp == P_I)  # the previous tag leaves a chunk open (for iob: of type pt)
    same = inside & (pt == t)
    bad = p == P_BAD
    if scheme == "iob2":
        bad |= (p == P_I) & ~same
    elif scheme == "iob1":
        bad |= (p == P_B) & ~same
    else:
        cont = (p == P_I) | (p == P_E)
        bad |= np.where(inside, ~(cont & same), cont)
        last = np.ones(n, bool)
        last[:-1] = event[1:] != event[:-1]
        bad |= last & ((p == P_B) | (p == P_I))
    return bad


def invalid_tokens_reference(scheme: Scheme, tags: list[list[str]]) -> list[list[bool]]:
    """The same rules, one token at a time: the readable oracle the tests compare ``invalid_tokens`` with."""
    letters = _LETTERS[scheme]
    out: list[list[bool]] = []
    for seq in tags:
        row: list[bool] = []
        prev: tuple[str, str] = ("O", "")
        for i, tag in enumerate(seq):
            parts = split_tag(tag)
            if parts is None or (parts[0] != "O" and parts[0] not in letters):
                row.append(True)
                prev = ("BAD", "")
                continue
            kind = "O" if parts[0] == "O" else {P_B: "B", P_I: "I", P_E: "E", P_S: "S"}[letters[parts[0]]]
            open_ = prev[0] in ("B", "I")
            if scheme == "iob2":
                ok = kind != "I" or (open_ and prev[1] == parts[1])
            elif scheme == "iob1":
                ok = kind != "B" or (open_ and prev[1] == parts[1])
            else:
                ok = (kind in ("I", "E") and prev[1] == parts[1]) if open_ else kind in ("O", "B", "S")
                if i == len(seq) - 1 and kind in ("B", "I"):
                    ok = False
            row.append(not ok)
            prev = (kind, parts[1])
        out.append(row)
    return out


def detect_scheme(tags: list[str], event: I64) -> tuple[Scheme | None, str]:
    """The tagging scheme of a reference's token tags, and why (a one-line reason, also when None).

    None when fewer than ``MIN_SCHEME_SHARE`` of the tokens are scheme tags (e.g. POS tags), when no tag
    marks an entity, or when both E/S and L/U prefixes appear. Among B/I-only tags: ``iob1`` when chunks
    opening with ``I-`` (after ``O``, the start, or another type) outnumber ``B-`` tags, else ``iob2``.
    """
    if not tags:
        return None, "no token tags in the reference"
    uniq, inv = np.unique(np.asarray(tags, dtype=object), return_inverse=True)
    counts = np.bincount(inv.ravel(), minlength=len(uniq))
    letters: set[str] = set()
    ok = 0
    for tag, c in zip(uniq.tolist(), counts.tolist(), strict=True):
        parts = split_tag(str(tag))
        if parts is not None and (parts[0] == "O" or parts[0] in "BIESLU"):
            ok += c
            if parts[0] != "O":
                letters.add(parts[0])
    share = ok / len(tags)
    if share < MIN_SCHEME_SHARE:
        return None, (f"only {share:.1%} of the reference's token tags are O or B-/I-/E-/S-/L-/U- tags "
                      "(need 99%): the tags follow no tagging scheme (set tag_schemes for this model if they do)")
    if not letters:
        return None, "the reference's token tags are all O: no entity tag to detect a scheme from"
    es, lu = bool(letters & {"E", "S"}), bool(letters & {"L", "U"})
    if es and lu:
        return None, "the reference's token tags mix E-/S- and L-/U- prefixes: set tag_schemes for this model"
    if es:
        return "bioes", "E-/S- prefixes seen"
    if lu:
        return "biluo", "L-/U- prefixes seen"
    codes = TagCodes("iob2").codes(tags)
    p = codes % 8
    opening_i = int(np.count_nonzero((p == P_I) & invalid_tokens("iob2", codes, event)))
    n_b = int(np.count_nonzero(p == P_B))
    if opening_i > n_b:
        return "iob1", f"{opening_i} chunks open with I- against {n_b} B- tags"
    return "iob2", f"{n_b} B- tags against {opening_i} chunks opening with I-"
