"""Topic set-up (nlpmon.kafka.topics) on the real broker: ``create_missing_topics`` is respected for every
topic, the input and ground-truth topics included; a missing topic is one error naming it; topics are
created with the settings' partition count, replication factor and client options."""

from __future__ import annotations

import threading
import uuid
from typing import Any, ClassVar

import pytest
from confluent_kafka.admin import NewTopic

import nlpmon.kafka.topics as topics
from nlpmon.app.service import NlpmonService
from nlpmon.app.settings import load_settings
from nlpmon.cli import main
from nlpmon.kafka.runner import ConsumerRunner
from nlpmon.kafka.settings import KafkaSettings
from nlpmon.kafka.topics import TopicSetup, TopicSetupError, create_topic, topic_partition_count

pytestmark = pytest.mark.broker


def _names() -> dict[str, str]:
    s = uuid.uuid4().hex[:8]
    return {"NLPMON_TOPIC": f"in-{s}", "NLPMON_GROUP_ID": f"g-{s}", "NLPMON_STATE_TOPIC": f"state-{s}",
            "NLPMON_DEAD_LETTER_TOPIC": f"dlq-{s}", "NLPMON_GROUND_TRUTH_TOPIC": f"gt-{s}"}


def _env(monkeypatch: pytest.MonkeyPatch, bootstrap: str, names: dict[str, str], **more: str) -> None:
    for k, v in {**names, "NLPMON_BOOTSTRAP_SERVERS": bootstrap, "NLPMON_PORT": "0", **more}.items():
        monkeypatch.setenv(k, v)


def test_missing_input_topic_with_creation_off_is_an_error_naming_it(
        kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """It used to be created regardless (a mistyped --topic silently made an empty topic)."""
    names = _names()
    _env(monkeypatch, kafka_bootstrap, names, NLPMON_KAFKA__CREATE_MISSING_TOPICS="false")
    with pytest.raises(TopicSetupError, match=f"input topic {names['NLPMON_TOPIC']} does not exist"):
        NlpmonService(load_settings()).run(threading.Event())
    assert main(["run"]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("nlpmon: ")]
    assert len(err) == 1 and names["NLPMON_TOPIC"] in err[0] and "create_missing_topics" in err[0], err
    for name in names.values():
        if name.startswith(("in-", "state-", "dlq-", "gt-")):
            assert topic_partition_count(kafka_bootstrap, name) is None, name


def test_missing_ground_truth_topic_with_creation_off_is_an_error_naming_it(kafka_bootstrap: str) -> None:
    s = uuid.uuid4().hex[:8]
    assert create_topic(kafka_bootstrap, f"in-{s}", 2)
    assert create_topic(kafka_bootstrap, f"state-{s}", 2, {"cleanup.policy": "compact"})
    assert create_topic(kafka_bootstrap, f"dlq-{s}", 2)
    ks = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic=f"in-{s}", group_id=f"g-{s}",
                       dead_letter_topic=f"dlq-{s}", state_topic=f"state-{s}", ground_truth_topic=f"gt-{s}",
                       create_missing_topics=False)
    with pytest.raises(TopicSetupError, match=f"ground-truth topic gt-{s} does not exist .*create_missing_topics"):
        ConsumerRunner(ks, lambda t, p: None).run(threading.Event())  # type: ignore[arg-type,return-value]
    assert topic_partition_count(kafka_bootstrap, f"gt-{s}") is None
    # and the state topic, checked first, when it is the one missing
    ks2 = ks.model_copy(update={"state_topic": f"state2-{s}"})
    with pytest.raises(TopicSetupError, match=f"state topic state2-{s} does not exist"):
        TopicSetup(ks2).prepare()


def test_service_creates_every_topic_with_the_input_partition_count(
        kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    names = _names()
    _env(monkeypatch, kafka_bootstrap, names, NLPMON_PARTITIONS="3")
    settings = load_settings()
    ks = settings.kafka_settings()
    setup = TopicSetup(ks)
    assert setup.ensure_input(settings.partitions) == 3
    assert setup.prepare() == 3
    for key in ("NLPMON_TOPIC", "NLPMON_STATE_TOPIC", "NLPMON_DEAD_LETTER_TOPIC", "NLPMON_GROUND_TRUTH_TOPIC"):
        assert topic_partition_count(kafka_bootstrap, names[key]) == 3, key
    assert setup.ensure_input(5) == 3  # an existing topic is left as it is


class _FakeMetadata:
    topics: ClassVar[dict[str, Any]] = {}


class _FakeFuture:
    def result(self, timeout: float) -> None:
        return None


class _FakeAdmin:
    """Records the client config and the NewTopic requests (no broker: what is asked for)."""

    configs: ClassVar[list[dict[str, Any]]] = []
    created: ClassVar[list[NewTopic]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.configs.append(config)

    def list_topics(self, timeout: float) -> _FakeMetadata:
        return _FakeMetadata()

    def create_topics(self, new: list[NewTopic], **_: Any) -> dict[str, _FakeFuture]:
        self.created.extend(new)
        return {t.topic: _FakeFuture() for t in new}


def test_topics_are_created_with_the_replication_factor_and_the_client_options(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_FakeAdmin, "configs", [])
    monkeypatch.setattr(_FakeAdmin, "created", [])
    monkeypatch.setattr(topics, "AdminClient", _FakeAdmin)
    ks = KafkaSettings(bootstrap_servers="127.0.0.1:1", topic="in", group_id="g", dead_letter_topic="dlq",
                       state_topic="state", ground_truth_topic="gt", replication_factor=3,
                       librdkafka_options={"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"})
    setup = TopicSetup(ks)
    with pytest.raises(TopicSetupError, match="input topic in does not exist"):
        setup.prepare()  # the runner never creates the input topic: the service does, with its partition count
    setup.ensure_input(4)
    setup.ensure("state", 4, {"cleanup.policy": "compact"})
    assert [(t.topic, t.num_partitions, t.replication_factor) for t in _FakeAdmin.created] == [
        ("in", 4, 3), ("state", 4, 3)]
    assert _FakeAdmin.created[1].config == {"cleanup.policy": "compact"}
    assert _FakeAdmin.configs and all(c["security.protocol"] == "SASL_SSL" and c["client.id"] == "nlpmon"
                                      for c in _FakeAdmin.configs)


def test_replication_factor_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NLPMON_KAFKA__REPLICATION_FACTOR", "3")
    assert load_settings().kafka_settings("127.0.0.1:1").replication_factor == 3
