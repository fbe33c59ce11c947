"""The librdkafka configurations of the runner's producer, consumer and snapshot reader, from ``KafkaSettings``.

All start from ``KafkaSettings.client_options()`` (security.protocol, sasl.*, ssl.*, client.id) like every
other client nlpmon builds (topic set-up); ``producer_options``/``consumer_options`` may
override the defaults, never the settings the checkpoint order relies on (listed last).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError

from .client_log import CLIENT_LOG_LEVEL
from .settings import KafkaSettings


def _common(settings: KafkaSettings, bootstrap_servers: str) -> dict[str, Any]:
    return {
        "log_level": CLIENT_LOG_LEVEL,  # each refused connection is an error_cb error too: see client_log
        **settings.client_options(),
        "bootstrap.servers": bootstrap_servers,
    }


def producer_config(settings: KafkaSettings, bootstrap_servers: str,
                    on_error: Callable[[KafkaError], None]) -> dict[str, Any]:
    """The producer of dead letters and snapshots."""
    return {
        "linger.ms": 5,
        **_common(settings, bootstrap_servers),
        **settings.producer_options,
        # Retry every delivery for as long as the broker is away (message.timeout.ms=0: no timeout;
        # the client backs off between attempts, retry.backoff*.ms, reconnect.backoff*.ms). Not
        # idempotent: an idempotent producer never recovers from a broker that restarted empty
        # (UNKNOWN_PRODUCER_ID forever); one request in flight keeps each partition in order, and a
        # duplicate after a lost acknowledgement is harmless (same chunk key and value; dead letters
        # are at-least-once anyway).
        "enable.idempotence": False,
        "max.in.flight.requests.per.connection": 1,
        "acks": "all",
        "message.timeout.ms": 0,
        "error_cb": on_error,
    }


def consumer_config(settings: KafkaSettings, bootstrap_servers: str, on_statistics: Callable[[str], None],
                    on_error: Callable[[KafkaError], None]) -> dict[str, Any]:
    """The group member: manual commits only, statistics for the lag, range assignment with ground truth."""
    return {
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": settings.effective_heartbeat_ms(),
        "max.poll.interval.ms": settings.max_poll_interval_ms,
        "statistics.interval.ms": settings.statistics_interval_ms,
        # notice a subscribed topic that (re)appears, after a broker that came back empty, within
        # seconds rather than librdkafka's default 5 minutes (consumer_options may override it)
        "topic.metadata.refresh.interval.ms": 10_000,
        **_common(settings, bootstrap_servers),
        **settings.consumer_options,
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "stats_cb": on_statistics,
        "error_cb": on_error,
        **({"partition.assignment.strategy": "range"} if settings.ground_truth_topic else {}),
    }


def restore_consumer_config(client_options: Mapping[str, Any], bootstrap_servers: str,
                            group_id: str) -> dict[str, Any]:
    """The state store's reader of snapshots on assignment: ``client_options`` (those of every client,
    ``KafkaSettings.client_options()``), manual assignment to partition ends, no commits."""
    return {
        **client_options,
        "bootstrap.servers": bootstrap_servers,
        "group.id": f"{group_id}.state-reader",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 20,
    }


__all__ = ["consumer_config", "producer_config", "restore_consumer_config"]
