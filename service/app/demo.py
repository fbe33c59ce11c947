"""``nlpmon demo``: publish synthetic NER traffic that drifts, so a newcomer sees nlpmon work.

Two models: ``ner-news`` switches to another text domain after ``drift_after`` production events;
``ner-support`` stays stationary. Each first sends ``reference`` events (``"split": "reference"``), then
production events at ``rate`` events/s per model. Bounded by ``max_events`` and the stop event.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from confluent_kafka import Producer

from service.demo import SyntheticStream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoPlan:
    reference_events: int = 1500
    rate: float = 200.0
    drift_after: int = 4000
    max_events: int = 200_000


def publish_demo(bootstrap: str, topic: str, stop: threading.Event, plan: DemoPlan = DemoPlan(), *,
                 clock: Callable[[], float] = time.monotonic,
                 progress: Callable[[int], None] | None = None) -> int:
    """Publish until ``stop`` is set or ``plan.max_events`` production events per model are sent.

    Returns the number of events acknowledged. Blocks; paces itself with ``clock``.
    """
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    acked = [0]

    def delivered(err: object, _msg: object) -> None:
        if err is None:
            acked[0] += 1
        else:
            log.warning("demo event not delivered: %s", err)

    now = time.time()

    def stream(seed: int, model: str, drift_at: int | None = None) -> SyntheticStream:
        return SyntheticStream(seed=seed, model=model, drift_at=drift_at, t0=now, events_per_second=plan.rate)

    streams = {"ner-news": (stream(7, "ner-news", plan.drift_after), stream(7, "ner-news")),
               "ner-support": (stream(8, "ner-support"), stream(8, "ner-support"))}
    for model, (_, ref) in streams.items():
        ref.rng = np.random.default_rng(1000 + len(model))  # the same domains, other draws
        for e in ref.events(plan.reference_events, "reference"):
            producer.produce(topic, json.dumps(e).encode(), key=model.encode(), on_delivery=delivered)
            producer.poll(0)
    producer.flush(30)
    start = clock()
    sent = 0
    while not stop.is_set() and sent < plan.max_events:
        due = int((clock() - start) * plan.rate) + 1
        while sent < min(due, plan.max_events):
            for model, (prod, _) in streams.items():
                producer.produce(topic, json.dumps(prod.event()).encode(), key=model.encode(), on_delivery=delivered)
            sent += 1
        producer.poll(0)
        if progress is not None:
            progress(sent)
        stop.wait(0.05)
    producer.flush(30)
    return acked[0]
