"""Shared pytest fixtures. Kafka: one embedded Tansu broker per session (started only when a test asks).

Set NLPMON_TEST_BOOTSTRAP=host:port to run the broker tests against another Kafka instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a Kafka-protocol broker: $NLPMON_TEST_BOOTSTRAP, or an embedded Tansu broker
    started for the session on a free loopback port (its log is in the session's temporary folder)."""
    configured = os.environ.get("NLPMON_TEST_BOOTSTRAP")
    if configured:
        yield configured
        return
    from nlpmon.kafka.broker import EmbeddedBroker

    log_path: Path = tmp_path_factory.mktemp("tansu") / "broker.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        yield broker.bootstrap_servers
