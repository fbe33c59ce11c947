"""Ground truth through a real broker: labels on their own topic, early, late and out of order, joined to
their predictions across a restart with pending joins; the span figures equal an offline oracle."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import numpy as np
import pytest
from kafka_test_helpers import Names, RunnerThread, make_topic, produce, read_partition, settings_for_test, wait_until

from nlpmon.app.processor import MonitorPartitionProcessor, References
from nlpmon.kafka.runner import ConsumerRunner
from nlpmon.monitor.config import MonitorConfig
from nlpmon.quality import QualityConfig
from nlpmon.quality.spans import LabelVocab
from nlpmon.quality.window import scores_from_counts
from tests.quality.test_spans import oracle

pytestmark = pytest.mark.broker

PARTITIONS = 2
MODELS = ["m0", "m1", "m2", "m3"]  # model i lives on partition i % 2 in both topics
LABELS = ["PER", "LOC", "ORG"]
Span = tuple[int, int, str]


def spans(rng: random.Random) -> list[Span]:
    out = []
    for _ in range(rng.randint(0, 4)):
        s = rng.randint(0, 10)
        out.append((s, s + rng.randint(1, 3), rng.choice(LABELS)))
    return out


def prediction(eid: str, model: str, pred: list[Span], rng: random.Random) -> bytes:
    return json.dumps({"event_id": eid, "model": model, "model_version": "1", "text": "x" * 20,
                       "entities": [{"label": lab, "start": s, "end": e, "score": round(rng.random(), 3)}
                                    for s, e, lab in pred]}).encode()


def label(eid: str, model: str, gold: list[Span]) -> bytes:
    return json.dumps({"event_id": eid, "model": model,
                       "entities": [{"label": lab, "start": s, "end": e} for s, e, lab in gold]}).encode()


def message(model: str, value: bytes) -> tuple[int, bytes, bytes]:
    return MODELS.index(model) % PARTITIONS, model.encode(), value


class Runners:
    """Consumer runners over the real partition processor; the processors of the latest one are kept."""

    def __init__(self, bootstrap: str, names: Names, labels_topic: str) -> None:
        self.settings = settings_for_test(bootstrap, names, ground_truth_topic=labels_topic,
                                          checkpoint_interval_events=300)
        self.processors: dict[int, MonitorPartitionProcessor] = {}

    def factory(self, topic: str, partition: int) -> MonitorPartitionProcessor:
        proc = MonitorPartitionProcessor(topic, partition, MonitorConfig(), References(), quality=QualityConfig())
        self.processors[partition] = proc
        return proc

    def start(self) -> RunnerThread:
        self.processors = {}
        return RunnerThread(ConsumerRunner(self.settings, self.factory)).start()

    def quality(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for proc in self.processors.values():
            out.update({k.split("/")[0]: v for k, v in proc.quality.report().items()})
        return out


def at_ends(thread: RunnerThread, ends: dict[tuple[str, int], int]) -> bool:
    assert thread.error is None, thread.error
    got = thread.runner.metrics().next_offsets
    return all(got.get(k) == v for k, v in ends.items())


def test_late_out_of_order_labels_across_a_restart_give_exact_figures(kafka_bootstrap: str,
                                                                       kafka_names: Names) -> None:
    rng = random.Random(11)
    labels_topic = f"{kafka_names.topic}-labels"
    make_topic(kafka_bootstrap, kafka_names.topic, PARTITIONS)
    make_topic(kafka_bootstrap, labels_topic, PARTITIONS)
    events = [(f"e{i}", MODELS[i % len(MODELS)], spans(rng)) for i in range(600)]
    gold = {eid: (spans(rng) if rng.random() < 0.5 else list(pred)) for eid, _, pred in events
            if rng.random() < 0.85}
    model_of = {eid: model for eid, model, _ in events}
    early = {eid for eid in gold if rng.random() < 0.3}  # their labels arrive before their predictions
    duplicates = rng.sample(sorted(gold), 15)  # labelled twice: the second is counted, not joined
    orphans = [(f"orphan{i}", MODELS[i % len(MODELS)]) for i in range(8)]  # never predicted

    def labels_of(ids: list[str]) -> list[tuple[int, bytes, bytes]]:
        rng.shuffle(ids)
        return [message(model_of[eid], label(eid, model_of[eid], gold[eid])) for eid in ids]

    runners = Runners(kafka_bootstrap, kafka_names, labels_topic)
    # phase 1: the early labels, the first 60 % of predictions, an invalid label; then a clean stop
    ends = {(topic, p): 0 for topic in (labels_topic, kafka_names.topic) for p in range(PARTITIONS)}
    invalid = b'{"event_id": "bad", "model": "m1", "entities": [{"label": "PER", "start": 3}]}'
    phase1 = [*labels_of(sorted(early)), message("m1", invalid), *[message(m, label(e, m, [])) for e, m in orphans]]
    for k, v in produce(kafka_bootstrap, labels_topic, phase1).items():
        ends[(labels_topic, k)] = v
    first = events[:360]
    for k, v in produce(kafka_bootstrap, kafka_names.topic,
                        [message(m, prediction(eid, m, pred, rng)) for eid, m, pred in first]).items():
        ends[(kafka_names.topic, k)] = v
    thread = runners.start()
    wait_until(lambda: at_ends(thread, ends), 60, "phase 1 consumed")
    pending = sum(q["join"]["pending_predictions"] for q in runners.quality().values())
    assert pending == sum(1 for eid, _, _ in first if eid not in early)  # they wait across the restart
    thread.finish()
    assert thread.error is None, thread.error
    # phase 2: the rest of the predictions, then every other label (late, shuffled) and the duplicates
    rest_labels = sorted(set(gold) - early)
    for k, v in produce(kafka_bootstrap, kafka_names.topic,
                        [message(m, prediction(eid, m, pred, rng)) for eid, m, pred in events[360:]]).items():
        ends[(kafka_names.topic, k)] = v
    for k, v in produce(kafka_bootstrap, labels_topic, labels_of(rest_labels) + labels_of(list(duplicates))).items():
        ends[(labels_topic, k)] = v
    thread = runners.start()
    try:
        wait_until(lambda: at_ends(thread, ends), 60, "phase 2 consumed after the restart")
        got = runners.quality()
    finally:
        thread.finish()
    assert thread.error is None, thread.error

    vocab = LabelVocab(names=LABELS)
    for model in MODELS:
        sums = np.zeros((len(LABELS), 3), dtype=np.int64)
        labelled = [(eid, pred) for eid, m, pred in events if m == model and eid in gold]
        for eid, pred in labelled:
            for lab, counts in oracle(pred, gold[eid]).items():
                sums[vocab.id(lab)] += counts
        want = scores_from_counts(sums, LABELS)
        q = got[model]
        assert q["labels"] == want["labels"], model
        assert q["micro"] == want["micro"], model
        assert q["documents"] == len(labelled), model
        j = q["join"]
        assert j["matched"] == len(labelled), model
        assert j["duplicate_label"] == sum(1 for eid in duplicates if model_of[eid] == model), model
        assert j["pending_labels"] == sum(1 for _, m in orphans if m == model), model
        assert j["pending_predictions"] == sum(1 for eid, m, _ in events if m == model and eid not in gold)
        assert j["label_for_expired_prediction"] == j["prediction_expired_unlabelled"] == 0
    dead = read_partition(kafka_bootstrap, kafka_names.dead_letter_topic, MODELS.index("m1") % PARTITIONS)
    reasons = Counter(dict(m.headers())["nlpmon-reason"].decode() for m in dead)
    assert reasons == {"missing_field": 1}
    assert {dict(m.headers())["nlpmon-source-topic"].decode() for m in dead} == {labels_topic}
