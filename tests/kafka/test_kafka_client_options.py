"""Every Kafka client nlpmon creates takes ``kafka.librdkafka_options`` (security.protocol, sasl.*, ssl.*).

The embedded Tansu broker offers SASL only with SCRAM users that cannot be created without a SASL
connection, so the proof is an option every librdkafka client refuses at construction time: SSL with a CA
file that does not exist. A client built with the options fails with ``ssl.ca.location failed``; a client
built without them would connect to the plain broker and go on. Each construction site is checked: the
service's topic creation, the runner's admin, consumer and producer, the state store's restore consumer,
the demo publisher and ``nlpmon publish``; and ``nlpmon run`` stops with one line, not a traceback.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException

from nlpmon.app.demo import DemoPlan, publish_demo
from nlpmon.app.service import NlpmonService
from nlpmon.app.settings import load_settings
from nlpmon.cli import main
from nlpmon.kafka.publish import publish_file
from nlpmon.kafka.runner import ConsumerRunner
from nlpmon.kafka.settings import KafkaSettings
from nlpmon.kafka.state_store import StateStore
from nlpmon.kafka.topics import create_topic

pytestmark = pytest.mark.broker
REFUSED = {"security.protocol": "SSL", "ssl.ca.location": "/nonexistent/nlpmon-test-ca.pem"}
REFUSED_ENV = '{"security.protocol": "SSL", "ssl.ca.location": "/nonexistent/nlpmon-test-ca.pem"}'


def refused(exc: BaseException) -> bool:
    return isinstance(exc, KafkaException) and "ssl.ca.location" in exc.args[0].str()


@pytest.fixture
def names() -> dict[str, str]:
    s = uuid.uuid4().hex[:8]
    return {"NLPMON_TOPIC": f"opts-{s}", "NLPMON_GROUP_ID": f"g-{s}", "NLPMON_STATE_TOPIC": f"state-{s}",
            "NLPMON_DEAD_LETTER_TOPIC": f"dlq-{s}", "NLPMON_GROUND_TRUTH_TOPIC": ""}


def test_service_topic_creation_uses_the_client_options(kafka_bootstrap: str, names: dict[str, str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {**names, "NLPMON_BOOTSTRAP_SERVERS": kafka_bootstrap, "NLPMON_PORT": "0",
                 "NLPMON_KAFKA__LIBRDKAFKA_OPTIONS": REFUSED_ENV}.items():
        monkeypatch.setenv(k, v)
    settings = load_settings()
    assert settings.kafka_settings().client_options()["ssl.ca.location"] == REFUSED["ssl.ca.location"]
    with pytest.raises(KafkaException) as err:
        NlpmonService(settings).run(threading.Event())
    assert refused(err.value), err.value  # raised by the first client: the topic creation's admin


def test_nlpmon_run_stops_with_one_line(kafka_bootstrap: str, names: dict[str, str],
                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for k, v in {**names, "NLPMON_BOOTSTRAP_SERVERS": kafka_bootstrap, "NLPMON_PORT": "0",
                 "NLPMON_KAFKA__LIBRDKAFKA_OPTIONS": REFUSED_ENV}.items():
        monkeypatch.setenv(k, v)
    assert main(["run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    line = [x for x in err if x.startswith("nlpmon: ")]
    assert len(line) == 1 and "ssl.ca.location" in line[0] and "kafka.librdkafka_options" in line[0], err
    assert not any("Traceback" in x for x in err)


def test_runner_clients_and_restore_consumer_take_the_options(kafka_bootstrap: str) -> None:
    s = uuid.uuid4().hex[:8]
    assert create_topic(kafka_bootstrap, f"in-{s}", 1)
    ks = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic=f"in-{s}", group_id=f"g-{s}",
                       dead_letter_topic=f"dlq-{s}", state_topic=f"state-{s}", ground_truth_topic=None,
                       librdkafka_options=REFUSED)
    with pytest.raises(Exception) as err:  # the runner's topic checks come first: their admin refuses
        ConsumerRunner(ks, lambda t, p: None).run(threading.Event())  # type: ignore[arg-type,return-value]
    assert "ssl.ca.location" in str(err.value)

    built: list[dict[str, Any]] = []

    def factory(config: dict[str, Any]) -> Any:
        built.append(config)
        raise KafkaException("stop here")

    ok = ks.model_copy(update={"librdkafka_options": {"client.rack": "nlpmon-test-rack"}})
    with pytest.raises(KafkaException, match="stop here"):
        ConsumerRunner(ok, lambda t, p: None, consumer_factory=factory,  # type: ignore[arg-type,return-value]
                       producer_factory=factory).run(threading.Event())
    assert built and all(c["client.rack"] == "nlpmon-test-rack" for c in built)

    store = StateStore(bootstrap_servers=kafka_bootstrap, state_topic=f"state-{s}", group_id=f"g-{s}",
                       producer=None, client_options=ks.client_options())  # type: ignore[arg-type]
    with pytest.raises(KafkaException) as err2:
        store.read_latest(f"in-{s}", [0])
    assert refused(err2.value)


def test_publishers_take_the_options(kafka_bootstrap: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(KafkaException) as err:
        publish_demo(kafka_bootstrap, "demo-opts", threading.Event(), DemoPlan(max_events=1), client_options=REFUSED)
    assert refused(err.value)
    events = tmp_path / "e.jsonl"
    events.write_text('{"model": "m"}\n')
    with pytest.raises(KafkaException) as err:
        publish_file(events, kafka_bootstrap, "publish-opts", client_options=REFUSED)
    assert refused(err.value)
    for cmd in (["publish", str(events)], ["demo", "--events", "1"]):
        capsys.readouterr()
        assert main([*cmd, "--bootstrap-servers", kafka_bootstrap, "-X", "security.protocol=SSL",
                     "-X", "ssl.ca.location=/nonexistent/nlpmon-test-ca.pem"]) == 2
        err = capsys.readouterr().err
        assert "nlpmon: Kafka: " in err and "ssl.ca.location" in err and "Traceback" not in err, err
    assert main(["publish", str(events), "--bootstrap-servers", kafka_bootstrap, "-X", "novalue"]) == 2
