"""Tag sequences (IOB1, IOB2/BIO, BIOES/BILUO, IO) to entity spans over token positions. Pure, no library.

    >>> [(s.label, s.first, s.last) for s in spans_from_tags(["B-PER", "I-PER", "O", "S-LOC", "I-ORG"])]
    [('PER', 0, 1), ('LOC', 3, 3), ('ORG', 4, 4)]

Rules, one token at a time (lenient, as seqeval's default mode and the Hugging Face ``simple``
aggregation decode them):

- ``O`` ends the open span.
- ``B-X`` ends the open span and opens one of label ``X``.
- ``I-X`` (or a bare ``X``, the IO scheme) continues an open span of label ``X``; otherwise (after
  ``O``, another label, or a closed ``E-``/``S-`` span) it opens a new one (IOB1 semantics).
- ``E-X``/``L-X`` continues and closes an open span of label ``X``, else is a one-token span.
- ``S-X``/``U-X`` is a one-token span.
- ``breaks[i]`` true means token ``i`` does not follow token ``i - 1`` (for example the tokens between
  them were dropped as ``O`` by the pipeline): it ends the open span first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

OUTSIDE = "O"
_PREFIXES = {"B": "begin", "I": "inside", "E": "end", "L": "end", "S": "single", "U": "single"}


@dataclass(frozen=True, slots=True)
class TagSpan:
    """An entity over tokens ``first`` to ``last`` (both inclusive) with its label (no prefix)."""

    label: str
    first: int
    last: int


def split_tag(tag: str) -> tuple[str, str]:
    """``(role, label)``: role is ``outside``, ``begin``, ``inside``, ``end`` or ``single``.

    ``"O"`` -> ``("outside", "")``; ``"B-PER"`` -> ``("begin", "PER")``; a bare ``"PER"`` -> ``("inside",
    "PER")``. Raises ValueError on an empty tag or a prefix with no label (``"B-"``).
    """
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"tag {tag!r} is not a non-empty string: pass tags such as 'B-PER', 'I-PER' or 'O'")
    if tag == OUTSIDE:
        return "outside", ""
    if len(tag) >= 2 and tag[1] == "-" and tag[0] in _PREFIXES:
        label = tag[2:]
        if not label:
            raise ValueError(f"tag {tag!r} has a prefix but no label: expected e.g. '{tag[0]}-PER'")
        return _PREFIXES[tag[0]], label
    return "inside", tag


def spans_from_tags(tags: Sequence[str], breaks: Sequence[bool] | None = None) -> list[TagSpan]:
    """The entity spans of a tag sequence (see the module docstring for the rules), in order."""
    if breaks is not None and len(breaks) != len(tags):
        raise ValueError(f"{len(breaks)} breaks for {len(tags)} tags: give one per tag")
    spans: list[TagSpan] = []
    label: str | None = None  # label of the open span
    first = 0
    for i, tag in enumerate(tags):
        role, tag_label = split_tag(tag)
        if label is not None and breaks is not None and breaks[i]:
            spans.append(TagSpan(label, first, i - 1))
            label = None
        if role == "outside":
            if label is not None:
                spans.append(TagSpan(label, first, i - 1))
            label = None
            continue
        continues = label == tag_label and role in ("inside", "end")
        if not continues:
            if label is not None:
                spans.append(TagSpan(label, first, i - 1))
            label, first = tag_label, i
        if role in ("end", "single"):
            spans.append(TagSpan(tag_label, first, i))
            label = None
    if label is not None:
        spans.append(TagSpan(label, first, len(tags) - 1))
    return spans
