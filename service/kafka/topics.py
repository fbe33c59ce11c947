"""Topic set-up: every topic nlpmon checks or creates, in one place, with the clients' options.

The input topic, the ground-truth topic, the compacted state topic and the dead-letter topic are created
here and nowhere else, each with ``KafkaSettings.client_options()`` (security.protocol, sasl.*, ssl.*: a
SASL/SSL cluster works) and ``KafkaSettings.replication_factor``, and only when
``KafkaSettings.create_missing_topics`` allows it; otherwise a missing topic is a :class:`TopicSetupError`
naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from ..errors import UserError
from .client_log import CLIENT_LOG_LEVEL
from .settings import KafkaSettings

_log = logging.getLogger(__name__)

ClientOptions = Mapping[str, Any]


class TopicSetupError(UserError, RuntimeError):
    """An input, ground-truth, state or dead-letter topic is missing or has the wrong shape, or the broker
    cannot be reached to check; the message names the topic and what to do."""


def _admin(bootstrap_servers: str, client_options: ClientOptions | None) -> AdminClient:
    return AdminClient({**(client_options or {}), "bootstrap.servers": bootstrap_servers})


def topic_partition_count(
    bootstrap_servers: str, name: str, *, client_options: ClientOptions | None = None, timeout_s: float = 10.0
) -> int | None:
    """Partition count of ``name``, or None if it does not exist.

    Lists all topics on purpose: a metadata request naming the topic makes brokers with automatic topic
    creation (Tansu does) create it. Blocks up to ``timeout_s``; raises KafkaException if unreachable.
    """
    metadata = _admin(bootstrap_servers, client_options).list_topics(timeout=timeout_s)
    topic = metadata.topics.get(name)
    if topic is None or topic.error is not None:
        return None
    return len(topic.partitions)


def create_topic(
    bootstrap_servers: str,
    name: str,
    partitions: int,
    config: Mapping[str, str] | None = None,
    *,
    client_options: ClientOptions | None = None,
    replication_factor: int = 1,
    timeout_s: float = 10.0,
) -> bool:
    """Create ``name`` with ``partitions`` partitions, ``replication_factor`` replicas and topic ``config``;
    True if created, False if it already existed (its partition count and config are left as they are:
    check them with :func:`topic_partition_count`).

    Idempotent. Blocks up to ``timeout_s``; raises KafkaException on any other failure (a replication
    factor above the number of brokers among them).
    """
    if topic_partition_count(bootstrap_servers, name, client_options=client_options, timeout_s=timeout_s):
        return False
    new_topic = NewTopic(name, num_partitions=partitions, replication_factor=replication_factor,
                         config=dict(config or {}))
    admin = _admin(bootstrap_servers, client_options)  # keep it alive until the future completes
    future = admin.create_topics([new_topic], operation_timeout=timeout_s, request_timeout=timeout_s)[name]
    try:
        future.result(timeout=timeout_s)
    except KafkaException as exc:
        if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise
    _log.info("created topic %s (%d partitions, replication factor %d, %s)", name, partitions, replication_factor,
              dict(config or {}) or "default config")
    return True


class TopicSetup:
    """Checks and creates the topics of one :class:`KafkaSettings` (``bootstrap_servers`` must be set).

    Every method blocks on admin requests (up to about 10 s each) and raises TopicSetupError: a topic
    missing while ``create_missing_topics`` is off, a topic of the wrong partition count, a broker that
    cannot be reached, or one that refuses the creation. A client that refuses its own options
    (``_INVALID_ARG``) raises KafkaException, for the command line to name the librdkafka options.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        if settings.bootstrap_servers is None:
            raise ValueError("TopicSetup needs settings.bootstrap_servers; use broker.bootstrap_servers_for")
        self._settings = settings
        self._bootstrap: str = settings.bootstrap_servers
        # the exception says it all: no client log lines for a refused connection here
        self._options = {**settings.client_options(), "log_level": CLIENT_LOG_LEVEL}

    def partition_count(self, name: str) -> int | None:
        """Partitions of ``name`` (None: it does not exist)."""
        try:
            return topic_partition_count(self._bootstrap, name, client_options=self._options)
        except KafkaException as exc:
            raise self._unreachable(exc) from None

    def ensure(self, name: str, partitions: int, config: Mapping[str, str] | None = None, *,
               role: str = "topic", shape_hint: str = "") -> int:
        """The partition count of ``name``, created with ``partitions`` partitions when missing and allowed.
        ``role`` names the topic in errors ("input topic"); ``shape_hint`` says which partition count it needs."""
        existing = self.partition_count(name)
        if existing is not None:
            return existing
        settings = self._settings
        if not settings.create_missing_topics:
            raise TopicSetupError(
                f"{role} {name} does not exist on {self._bootstrap} and create_missing_topics is off; create it"
                f"{shape_hint} or set kafka.create_missing_topics (NLPMON_KAFKA__CREATE_MISSING_TOPICS=true)")
        try:
            create_topic(self._bootstrap, name, partitions, config, client_options=self._options,
                         replication_factor=settings.replication_factor)
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is not None and err.code() == KafkaError._INVALID_ARG:
                raise
            detail = err.str() if err is not None else str(exc)
            raise TopicSetupError(
                f"cannot create {role} {name} ({partitions} partitions, replication factor "
                f"{settings.replication_factor}) on {self._bootstrap}: {detail}; check kafka.replication_factor "
                "and the client's ACLs, or create it yourself") from None
        return partitions

    def ensure_input(self, partitions: int) -> int:
        """The input topic's partition count; created with ``partitions`` partitions when missing and allowed."""
        return self.ensure(self._settings.topic, partitions, role="input topic",
                           shape_hint=f" (its partition count sets the parallelism; {partitions} by the settings)")

    def prepare(self) -> int:
        """Check the input topic (it must exist) and check or create the state, dead-letter and ground-truth
        topics with its partition count; returns that count."""
        settings = self._settings
        partitions = self.partition_count(settings.topic)
        if partitions is None:
            raise TopicSetupError(
                f"input topic {settings.topic} does not exist on {self._bootstrap}; create it first "
                "(its partition count sets the parallelism)")
        same = f" with {partitions} partitions, like {settings.topic}"
        state = self.ensure(settings.state_topic, partitions, {"cleanup.policy": "compact"}, role="state topic",
                            shape_hint=f"{same} (cleanup.policy=compact)")
        if state < partitions:
            raise TopicSetupError(
                f"state topic {settings.state_topic} has {state} partitions but {settings.topic} has "
                f"{partitions}; add partitions to the state topic")
        self.ensure(settings.dead_letter_topic, partitions, role="dead-letter topic")
        if settings.ground_truth_topic:
            labels = self.ensure(settings.ground_truth_topic, partitions, role="ground-truth topic",
                                 shape_hint=same)
            if labels != partitions:
                raise TopicSetupError(
                    f"ground-truth topic {settings.ground_truth_topic} has {labels} partitions but "
                    f"{settings.topic} has {partitions}; they must match (labels of a model must land on its "
                    "predictions' partition)")
        return partitions

    def _unreachable(self, exc: KafkaException) -> Exception:
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if err is not None and err.code() == KafkaError._INVALID_ARG:
            return exc  # the client refused its options: the command line names kafka.librdkafka_options
        detail = err.str() if err is not None else str(exc)
        return TopicSetupError(
            f"cannot reach Kafka at {self._bootstrap} ({detail}); check bootstrap_servers "
            "(NLPMON_BOOTSTRAP_SERVERS, --bootstrap-servers) and that the broker is up")


__all__ = ["TopicSetup", "TopicSetupError", "create_topic", "topic_partition_count"]
