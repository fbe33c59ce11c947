"""Recent examples kept for the model pages: lowest scores, recent embeddings, recent confidences.

All bounded, all updated once per batch with numpy, none part of the snapshot (after a restore they
refill from new events):

- ``LowestScores``: the ``k`` events with the smallest per-event score (lowest confidence, or smallest
  margin between the top two class probabilities) among the last ``horizon`` monitored events.
- ``RecentEmbeddings``: the document embeddings of the last ``capacity`` monitored events with their
  out-of-reference score, for the 2-D projection and the similar-sample lookup.
- ``RecentConfidences``: the labels and confidences of the last ``capacity`` scored predictions, for
  per-label confidence quantiles.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .page_view import Entity, Example, Neighbour, Prediction, TopClass

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def per_event_min(values: F64, event_of_item: I64, n_events: int) -> tuple[F64, I64]:
    """Per event: the smallest item value (inf when the event has none) and that item's index (-1)."""
    best = np.full(n_events, np.inf)
    which = np.full(n_events, -1, dtype=np.int64)
    if values.size == 0:
        return best, which
    order = np.lexsort((values, event_of_item))  # by event, then value: the first of each event is its min
    ev = event_of_item[order]
    first = np.flatnonzero(np.concatenate([[True], ev[1:] != ev[:-1]]))
    best[ev[first]] = values[order[first]]
    which[ev[first]] = order[first]
    return best, which


#: Default of ``MonitorConfig.max_text_chars``: characters of an event's text kept for pages and snapshots.
MAX_TEXT_CHARS = 1000


def cut_text(text: str | None, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    """``text`` cut to ``max_chars`` characters, the cut marked at its end (None stays None).

    >>> cut_text("abcdefgh", 3)
    'abc… [cut: 5 more characters]'
    """
    if text is None or len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}… [cut: {len(text) - max_chars:,} more characters]"


#: What a kept example holds of an event's text: ``cut_text`` by default, the monitor's text policy in a monitor.
KeepText = Callable[[str | None], str | None]


#: What a kept example shows beside the event: its prediction (None: absent) and top two classes (None: absent).
Detail = tuple[Prediction | None, tuple[TopClass, ...] | None]


@dataclass(order=True)
class KeptExample:
    """One kept event: its score and monitored-event index, what the page shows of it, and its embedding
    (for the nearest reference points, looked up when a page is built)."""

    score: float
    index: int
    event_id: str = field(compare=False)
    text: str | None = field(compare=False)
    entities: list[Any] = field(compare=False)  # the decoded EntityOut objects
    detail: Detail = field(compare=False, default=(None, None))
    embedding: npt.NDArray[Any] | None = field(compare=False, default=None, repr=False)

    def view(self, nearest: tuple[Neighbour, ...] = ()) -> Example:
        """The page view's example, with its ``nearest`` reference points."""
        return Example(self.score, self.index, self.event_id, self.text,
                       tuple(Entity(x.label, x.start, x.end, x.score) for x in self.entities), nearest, *self.detail)


class LowestScores:
    """The ``k`` events with the smallest score among the recent ones; ties go to the older event.

    Exact over a window of whole buckets: events are grouped in buckets of ``bucket`` monitored events,
    each bucket keeps its own ``k`` lowest, and the answer is the ``k`` lowest over the newest
    ``ceil(horizon / bucket)`` buckets (the one being filled included). At most that many times ``k``
    examples are kept.
    """

    def __init__(self, k: int, horizon: int, bucket: int, keep_text: KeepText = cut_text) -> None:
        self.keep_text = keep_text
        self.k, self.bucket = k, bucket
        self.n_buckets = max(1, -(-horizon // bucket))
        self.buckets: dict[int, list[KeptExample]] = {}

    def offer(self, per_event: F64, base: int, events: list[Any],
              detail: Callable[[Any, int], Detail] | None = None) -> None:
        """Offer a batch: ``per_event[i]`` is event ``i``'s score (inf: none), ``base`` the monitored index of
        ``events[0]``. ``detail(event, i)`` adds fields to a kept example (called for at most ``k`` events per
        bucket)."""
        n = len(events)
        if self.k == 0 or n == 0:
            return
        oldest = (base + n - 1) // self.bucket - self.n_buckets + 1
        pos = np.flatnonzero(np.isfinite(per_event) & ((base + np.arange(n)) // self.bucket >= oldest))
        if pos.size:
            b = (base + pos) // self.bucket
            order = np.lexsort((pos, per_event[pos], b))  # by bucket, then score, then position
            fb = b[order]
            first = np.flatnonzero(np.concatenate([[True], fb[1:] != fb[:-1]]))
            rank = np.arange(order.size) - np.repeat(first, np.diff(np.concatenate([first, [order.size]])))
            touched: set[int] = set()
            # a full bucket only takes candidates below its k-th (kept lists are sorted): build no Example
            # for the others
            bar = {key: (xs[-1].score, xs[-1].index) for key, xs in self.buckets.items() if len(xs) >= self.k}
            for j in order[rank < self.k].tolist():
                i = int(pos[j])
                key = (base + i) // self.bucket
                if key in bar and (float(per_event[i]), base + i) >= bar[key]:
                    continue
                e = events[i]
                self.buckets.setdefault(key, []).append(
                    KeptExample(float(per_event[i]), base + i, e.event_id, self.keep_text(e.text),
                                e.entities, detail(e, i) if detail is not None else (None, None), e.embedding))
                touched.add(key)
            for key in touched:
                self.buckets[key] = heapq.nsmallest(self.k, self.buckets[key])
        for key in [key for key in self.buckets if key < oldest]:
            del self.buckets[key]

    @property
    def items(self) -> list[KeptExample]:
        return heapq.nsmallest(self.k, (x for xs in self.buckets.values() for x in xs))


class RecentPoints(NamedTuple):
    """The events ``RecentEmbeddings`` keeps, columnar, oldest first (the projection's current points)."""

    indices: list[int]  # monitored-event indices
    event_ids: list[str]
    texts: list[str | None]
    embeddings: npt.NDArray[np.float32]  # (m, d)
    scores: F64  # out-of-reference scores


class RecentEmbeddings:
    """Document embeddings of the last ``capacity`` monitored events, with their out-of-reference score."""

    def __init__(self, capacity: int, keep_text: KeepText = cut_text) -> None:
        self.keep_text = keep_text
        self.capacity = capacity
        self.items: deque[tuple[int, str, str | None, npt.NDArray[Any], float]] = deque(maxlen=max(capacity, 1))

    def __len__(self) -> int:
        return len(self.items) if self.capacity else 0

    def add(self, base: int, event_pos: I64, scores: F64, events: list[Any]) -> None:
        """Add the embeddings of ``events[event_pos]`` (``scores`` aligned with ``event_pos``); only the last
        ``capacity`` are looked at."""
        if self.capacity == 0 or event_pos.size == 0:
            return
        tail = slice(max(0, event_pos.size - self.capacity), None)
        for p, s in zip(event_pos[tail].tolist(), scores[tail].tolist(), strict=True):
            e = events[p]
            self.items.append((base + p, e.event_id, self.keep_text(e.text), e.embedding, s))

    def arrays(self) -> RecentPoints:
        """Indices, event ids, texts, embeddings (m, d) and scores of the kept events, oldest first."""
        if not len(self):
            return RecentPoints([], [], [], np.zeros((0, 0), np.float32), np.zeros(0))
        idx, ids, texts, embs, scores = zip(*self.items, strict=True)
        return RecentPoints(list(idx), list(ids), list(texts), np.vstack(embs).astype(np.float32),
                            np.asarray(scores))


class LabelCodes(dict[str, int]):
    """Label -> small integer, assigned on first sight; beyond ``cap`` labels every new one is ``__other__``."""

    def __init__(self, cap: int = 256) -> None:
        super().__init__()
        self.cap = cap
        self.names: list[str] = []

    def __missing__(self, label: str) -> int:
        if len(self.names) >= self.cap - 1:
            label = "__other__"
            if label in self:
                return dict.__getitem__(self, label)
        code = len(self.names)
        self.names.append(label)
        self[label] = code
        return code

    def encode(self, labels: list[str]) -> I64:
        return np.fromiter(map(self.__getitem__, labels), np.int64, count=len(labels))


class RecentConfidences:
    """Labels (as ``LabelCodes``) and confidences of the last ``capacity`` scored predictions."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.codes = LabelCodes()
        self.labels = np.zeros(0, dtype=np.int64)
        self.scores = np.zeros(0)

    def add(self, labels: list[str], scores: F64) -> None:
        if self.capacity == 0 or not len(labels):
            return
        lab = self.codes.encode(labels[-self.capacity:])
        sc = np.asarray(scores, np.float64)[-self.capacity:]
        self.labels = np.concatenate([self.labels, lab])[-self.capacity:]
        self.scores = np.concatenate([self.scores, sc])[-self.capacity:]

    def quantiles(self) -> dict[str, tuple[int, list[float]]]:
        return quantiles_by_label(self.labels, self.scores, self.codes.names)

    def state(self) -> dict[str, Any]:
        return {"names": list(self.codes.names), "labels": self.labels, "scores": self.scores}

    def load_state(self, s: dict[str, Any]) -> None:
        self.codes = LabelCodes(self.codes.cap)
        self.codes.encode(list(s["names"]))
        self.labels = np.asarray(s["labels"], np.int64)[-self.capacity:] if self.capacity else np.zeros(0, np.int64)
        self.scores = np.asarray(s["scores"], np.float64)[-self.capacity:] if self.capacity else np.zeros(0)


QUANTILE_LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)


def quantiles_by_label(labels: I64, scores: F64, names: list[str]) -> dict[str, tuple[int, list[float]]]:
    """Per label (``names[code]``): how many scores and their quantiles at ``QUANTILE_LEVELS`` (numpy's
    default linear method, from one sort of all scores by label then value)."""
    out: dict[str, tuple[int, list[float]]] = {}
    if scores.size == 0:
        return out
    lab = np.asarray(labels, np.int64)
    order = np.lexsort((scores, lab))
    lab_sorted, s_sorted = lab[order], scores[order]
    starts = np.flatnonzero(np.concatenate([[True], lab_sorted[1:] != lab_sorted[:-1]]))
    ends = np.concatenate([starts[1:], [lab_sorted.size]])
    levels = np.asarray(QUANTILE_LEVELS)
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        group = s_sorted[a:b]
        pos = levels * (group.size - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, group.size - 1)
        q = group[lo] + (group[hi] - group[lo]) * (pos - lo)
        out[names[int(lab_sorted[a])]] = (int(group.size), [float(v) for v in q])
    return out


def top_two_margins(events: list[Any], with_prediction: I64) -> tuple[I64, F64]:
    """Event positions and margins (top probability - second) of the events among ``with_prediction``
    whose prediction carries ``probabilities`` for at least two classes. Visits only those events."""
    pos: list[int] = []
    margins: list[float] = []
    for i in with_prediction.tolist():
        probs = events[i].prediction.probabilities
        if probs is not None and len(probs) >= 2:
            a, b = heapq.nlargest(2, probs.values())
            pos.append(i)
            margins.append(a - b)
    return np.asarray(pos, np.int64), np.asarray(margins, np.float64)


def top_two(probabilities: dict[str, float] | None) -> tuple[TopClass, ...]:
    """The two most probable classes with their probabilities (for display)."""
    if not probabilities:
        return ()
    return tuple(TopClass(k, v) for k, v in heapq.nlargest(2, probabilities.items(), key=lambda kv: kv[1]))
