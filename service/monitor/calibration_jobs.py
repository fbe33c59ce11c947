"""Calibration as a job handed to an injected executor, so that it can run beside the consumer loop.

A ``CalibrationJob`` is everything ``ReferenceProfile.calibrate`` needs, frozen: the reference sample (no
longer touched by the monitor once handed over), the configuration (its seed) and the source. Running it
is pure and CPU-bound. A ``CalibrationExecutor`` turns a job into a ``concurrent.futures.Future`` of the
profile:

* ``InlineExecutor`` runs it at once, on the caller's thread (``nlpmon replay``, ``nlpmon calibrate``,
  tests): the future is done when ``submit`` returns, so the monitor goes on exactly as if it had called
  ``calibrate`` itself.
* ``nlpmon.app.calibration_process.ProcessCalibrationExecutor`` runs it in a worker process (``nlpmon run``,
  by default): the job is pickled to it and the profile pickled back, so a job and its profile stay
  picklable.
* ``nlpmon.app.calibration_worker.ThreadCalibrationExecutor`` runs it on a worker thread (``nlpmon run``
  with ``calibration_worker: thread``).
* Tests use a manual executor that completes jobs at chosen points.

While a job is pending, the monitor holds that model's later events (``ModelMonitor``: the "deferred"
queue, part of the snapshot) and processes them, in their original batches, once the profile is applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import numpy as np

from ..events import Event
from ..events.decode import EntityOut, PredictionOut, TokenOut
from .config import MonitorConfig, TextPolicy
from .reference import ReferenceProfile, ReferenceSample


@dataclass(frozen=True)
class CalibrationJob:
    """The calibration of one (model, version) reference: ``run()`` returns its profile."""

    model: str
    model_version: str
    source: str  # "reference" or "auto-baseline"
    sample: ReferenceSample
    config: MonitorConfig

    def run(self) -> ReferenceProfile:
        """``ReferenceProfile.calibrate`` of the sample. CPU-bound (seconds); reads the sample, never writes it."""
        return ReferenceProfile.calibrate(self.sample, self.config, self.source, self.model, self.model_version)


class CalibrationExecutor(Protocol):
    """Runs calibration jobs. ``submit`` never blocks for long unless the executor is inline."""

    def submit(self, job: CalibrationJob) -> Future[ReferenceProfile]: ...


class InlineExecutor:
    """Runs every job at once on the caller's thread: ``submit`` returns a finished future (its result, or
    the exception the job raised)."""

    def submit(self, job: CalibrationJob) -> Future[ReferenceProfile]:
        fut: Future[ReferenceProfile] = Future()
        try:
            fut.set_result(job.run())
        except Exception as exc:  # handed to whoever reads the result, as a blocking call would raise it
            fut.set_exception(exc)
        return fut


INLINE = InlineExecutor()



# -- events held while a calibration is pending: part of the monitor's snapshot ---------------------------
def event_state(e: Event, texts: TextPolicy | None = None) -> dict[str, Any]:
    """A decoded event as a state tree (``nlpmon.state``); ``event_from_state`` gives it back, field for field.

    ``texts``: the monitor's text policy, applied to the event's, its entities' and its tokens' texts (an event
    held in a snapshot keeps no more text than the pages may: with ``keep_texts: false`` none, so after a
    restore its ``text_length`` items are missing, and so are the span items of an event whose tokens carry no
    offsets (they cannot be aligned); redaction keeps lengths and offsets, the tokens' included)."""
    keep = (lambda t: t) if texts is None or (texts.keep and not texts.redact) else texts.restrict
    p = e.prediction
    return {
        "event_id": e.event_id, "model": e.model, "model_version": e.model_version, "timestamp": e.timestamp,
        "task": e.task, "split": e.split, "text": keep(e.text), "embedding": e.embedding,
        "entities": [{"label": x.label, "score": x.score, "start": x.start, "end": x.end, "text": keep(x.text),
                      "embedding": x.embedding} for x in e.entities],
        "tokens": {"text": [keep(t.text) for t in e.tokens], "tag": [t.tag for t in e.tokens],
                   "score": [t.score for t in e.tokens], "start": [t.start for t in e.tokens],
                   "end": [t.end for t in e.tokens]},
        "prediction": None if p is None else {"label": p.label, "score": p.score, "probabilities": p.probabilities},
        "metadata": e.metadata,
    }


def _trees(events: Sequence[Event], texts: TextPolicy | None) -> list[dict[str, Any]]:
    trees = []
    for e in events:
        t = event_state(e, texts)
        t["embedding"] = _bytes(t["embedding"])
        for x in t["entities"]:
            x["embedding"] = _bytes(x["embedding"])
        trees.append(t)
    return trees


def _keeps_all(texts: TextPolicy | None) -> bool:
    return texts is None or (texts.keep and not texts.redact)


def events_state(events: Sequence[Event], texts: TextPolicy | None = None) -> dict[str, Any]:
    """Events as one compact state tree: each ``event_state``, its embeddings as little-endian float32 bytes,
    all msgpack-encoded (msgspec: C speed, basic types only) into one byte array. ``events_from_state``
    gives them back. A tree of per-token lists walked by ``encode_state`` would cost ~50x more."""
    return {"packed": np.frombuffer(msgspec.msgpack.encode(_trees(events, texts)), dtype=np.uint8)}


def events_from_state(s: Any) -> list[Event]:
    """The events ``events_state`` wrote, or a list of ``event_state`` trees (snapshots of earlier builds).
    Raises KeyError/TypeError/ValueError (msgspec's DecodeError is one) on a malformed tree."""
    if not isinstance(s, dict):
        return [event_from_state(t) for t in s]
    return _unpack(np.asarray(s["packed"], dtype=np.uint8).tobytes())


def _unpack(data: bytes) -> list[Event]:
    trees = msgspec.msgpack.decode(data)
    if not isinstance(trees, list):
        raise ValueError("packed events are not a list")
    for t in trees:
        t["embedding"] = _from_bytes(t["embedding"])
        for x in t["entities"]:
            x["embedding"] = _from_bytes(x["embedding"])
    return [event_from_state(t) for t in trees]


class PackedEvents:
    """A batch of events held compactly: the msgpack bytes of ``events_state`` (every text kept), made once
    when the batch is held, decoded again (``events()``) when it is processed. 0.4 of the memory of the
    decoded ``Event``s (synthetic 384-dim NER events: 2.7 KB an event against 7.0 KB; benchmarks/held_memory.py),
    and the snapshot part of the batch is these bytes (``state``): nothing to encode at a checkpoint unless
    texts are restricted.

    ``events()`` gives the events back field for field (embeddings as float32, as the decoder makes them)."""

    __slots__ = ("count", "data")

    def __init__(self, data: bytes, count: int) -> None:
        self.data = data
        self.count = count

    @classmethod
    def pack(cls, events: Sequence[Event]) -> PackedEvents:
        """Pack ``events``. Raises TypeError/OverflowError for a metadata value msgpack cannot hold (an
        integer beyond 64 bits): the caller then keeps the decoded events."""
        return cls(msgspec.msgpack.encode(_trees(events, None)), len(events))

    @classmethod
    def from_state(cls, s: Any) -> PackedEvents:
        """The batch a snapshot held (``events_state``'s tree, or the trees of earlier builds), checked by
        decoding it. Raises as ``events_from_state``."""
        events = events_from_state(s)
        if isinstance(s, dict):
            return cls(np.asarray(s["packed"], dtype=np.uint8).tobytes(), len(events))
        return cls.pack(events)

    @property
    def nbytes(self) -> int:
        """The memory this batch holds: its packed bytes."""
        return len(self.data)

    def __len__(self) -> int:
        return self.count

    def events(self) -> list[Event]:
        """The events, decoded again."""
        return _unpack(self.data)

    def state(self, texts: TextPolicy | None = None) -> dict[str, Any]:
        """``events_state(self.events(), texts)``: with every text kept, the bytes as they are (no copy)."""
        if _keeps_all(texts):
            return {"packed": np.frombuffer(self.data, dtype=np.uint8)}
        return events_state(self.events(), texts)


def _bytes(x: Any) -> bytes | None:
    return None if x is None else np.asarray(x, dtype="<f4").tobytes()


def _from_bytes(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    if not isinstance(x, bytes | bytearray) or len(x) % 4:
        raise ValueError("a packed embedding is not float32 bytes")
    return np.frombuffer(x, dtype="<f4").astype(np.float32)


def _array(x: Any) -> np.ndarray | None:
    return None if x is None else np.asarray(x, np.float32)


def _number(x: Any) -> float | None:
    return None if x is None else float(x)


def _int(x: Any) -> int | None:
    return None if x is None else int(x)


def event_from_state(s: dict[str, Any]) -> Event:
    """The event ``event_state`` wrote. Raises KeyError/TypeError/ValueError on a malformed tree."""
    toks = s["tokens"]
    none = [None] * len(toks["tag"])  # snapshots written before tokens had offsets
    p = s["prediction"]
    return Event(
        event_id=str(s["event_id"]), model=str(s["model"]), model_version=str(s["model_version"]),
        timestamp=_number(s["timestamp"]), task=str(s["task"]), split=str(s["split"]), text=s["text"],
        embedding=_array(s["embedding"]),
        entities=[EntityOut(label=str(x["label"]), score=_number(x["score"]),
                            start=None if x["start"] is None else int(x["start"]),
                            end=None if x["end"] is None else int(x["end"]), text=x["text"],
                            embedding=_array(x["embedding"])) for x in s["entities"]],
        tokens=[TokenOut(text=t, tag=str(g), score=_number(c), start=_int(a), end=_int(b))
                for t, g, c, a, b in zip(toks["text"], toks["tag"], toks["score"],
                                         toks.get("start", none), toks.get("end", none), strict=True)],
        prediction=None if p is None else PredictionOut(label=str(p["label"]), score=_number(p["score"]),
                                                        probabilities=p["probabilities"]),
        metadata=dict(s["metadata"]),
    )


__all__ = ["INLINE", "CalibrationExecutor", "CalibrationJob", "InlineExecutor", "PackedEvents", "event_from_state",
           "event_state", "events_from_state", "events_state"]
