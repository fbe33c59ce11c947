"""Reference profiles: a bounded uniform sample of reference events, and the calibrated signals fitted on it.

``ReferenceSample`` keeps the flattened columns of at most ``capacity`` reference events, chosen
uniformly from all events offered (bottom-k sampling on seeded random keys), plus exact label counts
over every reference event. ``ReferenceProfile.calibrate`` fits and calibrates every signal the sample
has enough data for, and records loudly why each other signal is unavailable.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..drift.embedding import EmbeddingFeaturizer
from ..drift.items import ItemColumn
from ..drift.shares import EventShareFeaturizer, TagValidityFeaturizer
from ..drift.signal import (
    SignalModel,
    calibrate_cluster_signal,
    calibrate_event_share_signal,
    calibrate_outlier_signal,
    calibrate_signal,
)
from ..drift.tagging import Scheme, detect_scheme
from ..errors import UserError
from ..state import decode_state, encode_state, malformed_state
from ..state.codec import SnapshotError
from .config import MonitorConfig
from .signals import SIGNALS

PROFILE_KIND = "nlpmon.reference_profile"


class ReferenceTooSmall(UserError, ValueError):
    """The reference has fewer events than ``min_reference_events``: thresholds cannot be calibrated."""


def check_reference_size(n: int, config: MonitorConfig) -> None:
    """Raises ReferenceTooSmall when a reference of ``n`` events is too small to calibrate (the one reason
    ``ReferenceProfile.calibrate`` refuses a reference: checked before a calibration is handed over)."""
    if n < config.min_reference_events:
        raise ReferenceTooSmall(
            f"reference has {n} events, fewer than min_reference_events={config.min_reference_events}; "
            "thresholds cannot be calibrated: send more reference events")


def _column_state(c: ItemColumn) -> dict[str, Any]:
    # string items as a list, as the state has always held them (``ReferenceSample`` keeps a tuple)
    return {"event": c.event, "values": list(c.values) if isinstance(c.values, tuple) else c.values}


def _column_from_state(s: dict[str, Any]) -> ItemColumn:
    vals = s["values"]
    return ItemColumn(np.asarray(s["event"], np.int64), vals if isinstance(vals, list) else np.asarray(vals))


#: Events of one segment of a sample: once full, a segment never changes while the sample keeps every event
#: offered (``ReferenceSample.fixed_segments``), so a snapshot writes it once, as a part of its own.
SEGMENT_EVENTS = 200
SHARED_STRINGS = 10_000  # distinct string items a sample shares (``ReferenceSample._shared``)


class ReferenceSample:
    """A bounded uniform sample of reference events, kept as per-signal columns."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        self.seen = 0
        self.label_counts: Counter[str] = Counter()
        self._keys = np.zeros(0)
        self._columns: dict[str, ItemColumn] | None = None
        self._texts: list[str | None] = []
        self._strings: dict[str, str] = {}  # the shared string items (``_shared``)

    @property
    def size(self) -> int:
        return int(self._keys.shape[0])

    def add(self, columns: dict[str, ItemColumn], n_events: int, texts: list[str | None]) -> None:
        """Offer ``n_events`` reference events (their flattened columns). String items (tags, labels) are kept
        as one object per distinct value (``_shared``)."""
        if n_events == 0:
            return
        columns = {k: self._shared(c) for k, c in columns.items()}
        self.seen += n_events
        self.label_counts.update(columns["entity_label"].values)
        keys = self.rng.random(n_events)
        if self._columns is None:
            merged, all_keys, all_texts = columns, keys, list(texts)
        else:
            merged = {k: ItemColumn.concat([self._columns[k], columns[k]], [self.size, n_events])
                      for k in columns}
            all_keys = np.concatenate([self._keys, keys])
            all_texts = self._texts + list(texts)
        if all_keys.shape[0] > self.capacity:
            keep = np.sort(np.argsort(all_keys, kind="stable")[: self.capacity])
            merged = {k: c.select_events(keep, all_keys.shape[0]) for k, c in merged.items()}
            all_texts = [all_texts[i] for i in keep]
            all_keys = all_keys[keep]
        self._columns, self._keys, self._texts = merged, all_keys, all_texts

    def _shared(self, column: ItemColumn) -> ItemColumn:
        """``column`` with its string items replaced by one shared object per distinct value: decoded events
        carry a new string for every token's tag, 60 bytes each where a reference to a shared one costs 8 (a
        2,000-event NER sample: 3.7 KB an event before, 2.3 after). Equal values, so every result is the same.
        At most ``SHARED_STRINGS`` distinct values are shared; the rest are kept as they come.

        The items are kept as a tuple: the garbage collector stops tracking a tuple of strings, where it
        walks every item of a list at each full collection, holding the interpreter lock (200 models
        collecting 2,000-event baselines hold ~9 million token tags: full collections of 0.1-0.4 s, which
        stalled the loop and every scrape). Concatenations and selections keep it a tuple (``ItemColumn``)."""
        if not isinstance(column.values, (list, tuple)) or not column.values:
            return column
        pool = self._strings
        full = len(pool) >= SHARED_STRINGS
        values = tuple([pool.get(v, v) if full else pool.setdefault(v, v) for v in column.values])
        return ItemColumn(column.event, values)

    @property
    def nbytes(self) -> int:
        """About the memory of the kept events: their arrays, 8 bytes per string reference (the strings are
        shared, ``_shared``) and the texts."""
        n = self._keys.nbytes + sum(len(t) + 49 for t in self._texts if t is not None)
        for c in (self._columns or {}).values():
            n += c.event.nbytes + (8 * len(c.values) if isinstance(c.values, (list, tuple)) else c.values.nbytes)
        return n

    def thinned(self, capacity: int) -> ReferenceSample:
        """A uniform sub-sample of at most ``capacity`` events (for display and similar-sample lookup)."""
        out = ReferenceSample(capacity, 0)
        out.seen, out.label_counts, out.rng = self.seen, Counter(self.label_counts), self.rng
        if self._columns is None or self.size <= capacity:
            out._columns, out._keys, out._texts = self._columns, self._keys, list(self._texts)
            return out
        keep = np.sort(np.argsort(self._keys, kind="stable")[:capacity])
        out._columns = {k: c.select_events(keep, self.size) for k, c in self._columns.items()}
        out._keys = self._keys[keep]
        out._texts = [self._texts[i] for i in keep]
        return out

    def columns(self) -> dict[str, ItemColumn]:
        if self._columns is None:
            raise ReferenceTooSmall("no reference events yet")
        return self._columns

    def texts(self) -> list[str | None]:
        return self._texts

    def map_texts(self, keep: Callable[[str | None], str | None]) -> ReferenceSample:
        """Replace every kept text by ``keep(text)`` (in place; returns self). ``keep`` is a text policy, so
        applying it twice changes nothing more."""
        self._texts = [keep(t) for t in self._texts]
        return self

    def state(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "seen": self.seen, "keys": self._keys,
                "label_counts": dict(self.label_counts), "texts": self._texts,
                "rng": self.rng.bit_generator.state,
                "columns": None if self._columns is None else
                {k: _column_state(c) for k, c in self._columns.items()}}

    def fixed_segments(self) -> int:
        """How many segments of ``SEGMENT_EVENTS`` events no later ``add`` changes: every full one while the
        sample has kept every event offered (``add`` only appends until ``capacity``), none once it evicted."""
        return self.size // SEGMENT_EVENTS if self.seen == self.size else 0

    def head_state(self) -> dict[str, Any]:
        """The state without its events (``segment_state``): what changes at every ``add``."""
        return {"capacity": self.capacity, "seen": self.seen, "label_counts": dict(self.label_counts),
                "rng": self.rng.bit_generator.state}

    def segment_state(self, start: int, stop: int) -> dict[str, Any]:
        """The events ``start`` to ``stop`` (keys, texts, columns renumbered from 0). ``from_segments`` of the
        ``head_state`` and consecutive segments covering ``0..size`` gives this sample back."""
        cols = None
        if self._columns is not None:
            cols = {}
            for k, c in self._columns.items():
                lo, hi = np.searchsorted(c.event, [start, stop], side="left")
                cols[k] = _column_state(ItemColumn(c.event[lo:hi] - start, c.values[lo:hi]))
        return {"keys": self._keys[start:stop], "texts": self._texts[start:stop], "columns": cols}

    @classmethod
    def from_segments(cls, head: dict[str, Any], segments: list[dict[str, Any]]) -> ReferenceSample:
        """The sample of a ``head_state`` and its ``segment_state``s, in order."""
        keys = [np.asarray(g["keys"], np.float64) for g in segments]
        sizes = [k.shape[0] for k in keys]
        cols = [g["columns"] for g in segments if g["columns"] is not None]
        columns = None
        if cols:
            if len(cols) != len(segments):
                raise ValueError("a sample segment without columns")
            columns = {k: _column_state(ItemColumn.concat([_column_from_state(c[k]) for c in cols], sizes))
                       for k in cols[0]}
        return cls.from_state({**head, "keys": np.concatenate(keys) if keys else np.zeros(0),
                               "texts": [t for g in segments for t in g["texts"]], "columns": columns})

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> ReferenceSample:
        out = cls(int(s["capacity"]), 0)
        out.seen = int(s["seen"])
        out._keys = np.asarray(s["keys"], np.float64)
        out.label_counts = Counter(s["label_counts"])
        out._texts = list(s["texts"])
        out.rng.bit_generator.state = _rng_state(s["rng"])
        cols = s["columns"]
        out._columns = None if cols is None else {k: out._shared(_column_from_state(v)) for k, v in cols.items()}
        return out


def _rng_state(s: dict[str, Any]) -> dict[str, Any]:
    """numpy's PCG64 state with its integers restored from JSON."""
    return {**s, "state": {k: int(v) for k, v in s["state"].items()}}


@dataclass
class ReferenceProfile:
    """The calibrated reference of one (model, version)."""

    source: str
    events: int
    signals: dict[str, SignalModel]
    unavailable: dict[str, str]
    label_counts: dict[str, int]
    calibration_seconds: float
    sample: ReferenceSample | None = field(default=None, repr=False)
    model: str = ""
    model_version: str = ""
    # out-of-sample quantiles of the embedding outlier score (for the page's projection); None in profiles
    # saved before they existed
    outlier_quantiles: np.ndarray | None = field(default=None, repr=False)

    @property
    def model_key(self) -> tuple[str, str]:
        return self.model, self.model_version

    @classmethod
    def calibrate(cls, sample: ReferenceSample, config: MonitorConfig, source: str,
                  model: str = "", model_version: str = "") -> ReferenceProfile:
        """Fit and calibrate every signal with enough reference data.

        Raises ReferenceTooSmall when the sample has fewer than ``min_reference_events`` events.
        CPU-bound: a few seconds for a few thousand events.
        """
        n = sample.size
        check_reference_size(n, config)
        t0 = time.perf_counter()
        cols = sample.columns()
        rng = np.random.default_rng(config.seed)
        signals: dict[str, SignalModel] = {}
        unavailable: dict[str, str] = {}
        for spec in SIGNALS:
            if spec.name in config.disabled_signals:
                unavailable[spec.name] = "disabled by configuration (disabled_signals)"
                continue
            col = cols.get(spec.column)
            if col is None:  # a sample saved by an earlier build
                unavailable[spec.name] = f"the reference sample has no {spec.column} column: send the reference again"
                continue
            have_events = int(np.unique(col.event).shape[0]) if len(col) else 0
            if len(col) < spec.min_reference_items or have_events < config.min_reference_events // 2:
                unavailable[spec.name] = (f"reference has {len(col)} {spec.column} items in {have_events} events; "
                                          f"needs {spec.min_reference_items} items in "
                                          f"{config.min_reference_events // 2} events")
                continue
            windows = {"embedding": config.embedding_windows, "distribution": config.distribution_windows,
                       "count": config.outlier_windows}[spec.windows]
            try:
                if spec.kind in ("tag_validity", "event_share"):
                    probe: EventShareFeaturizer
                    extra: dict[str, Any] = {}
                    if spec.kind == "tag_validity":
                        scheme: Scheme | None = config.tag_schemes.get(model)
                        why = "set in tag_schemes"
                        if scheme is None:
                            scheme, why = detect_scheme(col.values, col.event)
                        if scheme is None:
                            unavailable[spec.name] = why
                            continue
                        probe = TagValidityFeaturizer(0, 0, np.ones(1), 0.0, scheme=scheme)
                        extra = {"scheme": scheme, "scheme_source": why}
                    else:
                        probe = EventShareFeaturizer(0, 0, np.ones(1), 0.0)
                    signals[spec.name] = calibrate_event_share_signal(
                        spec.name, probe, col, n, windows=windows, false_alarm_rate=config.false_alarm_rate,
                        extra=extra)
                    continue
                if spec.kind == "clusters":
                    base = signals.get(spec.source)
                    if base is None or not isinstance(base.featurizer, EmbeddingFeaturizer):
                        unavailable[spec.name] = f"needs the {spec.source} signal, which is unavailable"
                        continue
                    # its own generator: the other signals' calibration draws stay as they were
                    signals[spec.name] = calibrate_cluster_signal(
                        spec.name, base.featurizer, col, n, windows=config.outlier_windows,
                        false_alarm_rate=config.false_alarm_rate, levels=config.cluster_levels,
                        splits=config.calibration_splits, rng=np.random.default_rng(config.seed + 4))
                    continue
                if spec.kind == "outliers":
                    base = signals.get(spec.source)
                    if base is None or not isinstance(base.featurizer, EmbeddingFeaturizer):
                        unavailable[spec.name] = f"needs the {spec.source} signal, which is unavailable"
                        continue
                    # its own generator: the other signals' calibration draws stay as they were
                    signals[spec.name] = calibrate_outlier_signal(
                        spec.name, base.featurizer, col, n, windows=config.outlier_windows,
                        false_alarm_rate=config.false_alarm_rate, level=config.outlier_level,
                        rng=np.random.default_rng(config.seed + 3))
                    continue
                signals[spec.name] = calibrate_signal(
                    spec.name, spec.kind, col, n, windows=windows, false_alarm_rate=config.false_alarm_rate,
                    splits=config.calibration_splits, n_components=config.pca_components,
                    n_random_features=config.random_features, max_labels=config.max_labels, rng=rng)
            except ValueError as exc:
                unavailable[spec.name] = f"cannot calibrate: {exc}"
        quantiles = None
        emb = signals.get("embedding")
        if emb is not None and isinstance(emb.featurizer, EmbeddingFeaturizer):
            from .projection import out_of_sample_quantiles

            quantiles = out_of_sample_quantiles(emb.featurizer, cols["embedding"].values, config.seed + 2)
        # keep a small uniform sample for display and similar-sample lookup, not the whole reference
        return cls(source, n, signals, unavailable, dict(sample.label_counts),
                   time.perf_counter() - t0, sample.thinned(config.display_sample), model, model_version,
                   quantiles)

    def state(self) -> dict[str, Any]:
        return {"kind": PROFILE_KIND, "model": self.model, "model_version": self.model_version,
                "source": self.source, "events": self.events,
                "signals": {k: v.state() for k, v in self.signals.items()},
                "unavailable": self.unavailable, "label_counts": self.label_counts,
                "calibration_seconds": self.calibration_seconds,
                "sample": None if self.sample is None else self.sample.state(),
                "outlier_quantiles": self.outlier_quantiles}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> ReferenceProfile:
        if s.get("kind") != PROFILE_KIND:
            raise ValueError("not an nlpmon reference profile")
        return cls(s["source"], int(s["events"]),
                   {k: SignalModel.from_state(v) for k, v in s["signals"].items()},
                   dict(s["unavailable"]), dict(s["label_counts"]), float(s["calibration_seconds"]),
                   None if s["sample"] is None else ReferenceSample.from_state(s["sample"]),
                   s["model"], s["model_version"],
                   None if s.get("outlier_quantiles") is None else np.asarray(s["outlier_quantiles"], np.float64))

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(encode_state(self.state()))

    @classmethod
    def load(cls, path: str | Path) -> ReferenceProfile:
        """Read a saved profile. Raises SnapshotError (a ValueError) on a file that is not a valid one."""
        try:
            state = decode_state(Path(path).read_bytes())
        except SnapshotError as exc:
            raise SnapshotError(f"reference profile {path} is unreadable ({exc}); calibrate it again with "
                                "nlpmon calibrate") from None
        with malformed_state(f"reference profile {path}"):
            if not isinstance(state, dict):
                raise ValueError("not an nlpmon reference profile")
            return cls.from_state(state)


__all__ = ["ReferenceProfile", "ReferenceSample", "ReferenceTooSmall", "check_reference_size"]
