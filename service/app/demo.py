"""``nlpmon demo``: publish synthetic NER traffic that drifts, so a newcomer sees nlpmon work.

Two models: ``ner-news`` switches to another text domain after ``drift_after`` production events;
``ner-support`` stays stationary. Each first sends ``reference`` events (``"split": "reference"``), then
production events at ``rate`` events/s per model. Bounded by ``max_events`` and the stop event.

With ``labels_topic``, a ``label_fraction`` of the events also get a ground-truth event there, about
``label_delay_s`` later (late labels, as from human review). Gold spans are the predicted ones except that
each entity is wrong (same span, another label) with probability ``1 - score`` before the drift, so the
confidences are calibrated, and ``1 - score**4`` after it: ``ner-news`` then loses F1 while its
confidences stay the same (a calibration gap).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import Producer

from ..demo import SyntheticStream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoPlan:
    reference_events: int = 1500
    rate: float = 200.0
    drift_after: int = 4000
    max_events: int = 200_000
    label_fraction: float = 0.3
    label_delay_s: float = 2.0


def gold_label(event: dict[str, Any], rng: np.random.Generator, drifted: bool) -> dict[str, Any]:
    """The ground-truth event of a demo prediction (see the module docstring)."""
    gold = []
    for x in event["entities"]:
        p_right = x["score"] ** 4 if drifted else x["score"]
        label = x["label"] if rng.random() < p_right else "MISC"
        gold.append({"label": label, "start": x["start"], "end": x["end"]})
    return {"event_id": event["event_id"], "model": event["model"], "model_version": event["model_version"],
            "timestamp": event["timestamp"] + 2.0, "entities": gold}


def publish_demo(bootstrap: str, topic: str, stop: threading.Event, plan: DemoPlan = DemoPlan(), *,
                 labels_topic: str | None = None, clock: Callable[[], float] = time.monotonic,
                 progress: Callable[[int], None] | None = None,
                 client_options: dict[str, Any] | None = None) -> int:
    """Publish until ``stop`` is set or ``plan.max_events`` production events per model are sent.
    ``client_options``: librdkafka options of the producer (security.protocol, sasl.*, ssl.*).

    Returns the number of events (and labels) acknowledged. Blocks; paces itself with ``clock``.
    """
    producer = Producer({"linger.ms": 20, **(client_options or {}), "bootstrap.servers": bootstrap,
                         "enable.idempotence": True})
    acked = [0]
    label_rng = np.random.default_rng(99)
    due_labels: deque[tuple[float, str, bytes]] = deque()

    def delivered(err: object, _msg: object) -> None:
        if err is None:
            acked[0] += 1
        else:
            log.warning("demo event not delivered: %s", err)

    def send(event: dict[str, Any], drifted: bool = False) -> None:
        model = event["model"]
        producer.produce(topic, json.dumps(event).encode(), key=model.encode(), on_delivery=delivered)
        if labels_topic is not None and label_rng.random() < plan.label_fraction:
            label = json.dumps(gold_label(event, label_rng, drifted)).encode()
            due_labels.append((clock() + plan.label_delay_s, model, label))

    def release_labels(everything: bool = False) -> None:
        while labels_topic is not None and due_labels and (everything or due_labels[0][0] <= clock()):
            _, model, label = due_labels.popleft()
            producer.produce(labels_topic, label, key=model.encode(), on_delivery=delivered)

    now = time.time()

    def stream(seed: int, model: str, drift_at: int | None = None) -> SyntheticStream:
        return SyntheticStream(seed=seed, model=model, drift_at=drift_at, t0=now, events_per_second=plan.rate)

    streams = {"ner-news": (stream(7, "ner-news", plan.drift_after), stream(7, "ner-news")),
               "ner-support": (stream(8, "ner-support"), stream(8, "ner-support"))}
    for model, (_, ref) in streams.items():
        ref.rng = np.random.default_rng(1000 + len(model))  # the same domains, other draws
        for e in ref.events(plan.reference_events, "reference"):
            e["event_id"] = f"ref-{e['event_id']}"  # ids differ from the production stream's
            send(e)
            producer.poll(0)
    release_labels(everything=True)
    producer.flush(30)
    start = clock()
    sent = 0
    while not stop.is_set() and sent < plan.max_events:
        due = int((clock() - start) * plan.rate) + 1
        while sent < min(due, plan.max_events):
            for prod, _ in streams.values():
                send(prod.event(), drifted=prod.drift_at is not None and sent >= prod.drift_at)
            sent += 1
        release_labels()
        producer.poll(0)
        if progress is not None:
            progress(sent)
        stop.wait(0.05)
    release_labels(everything=True)
    producer.flush(30)
    return acked[0]
