"""Fixtures of the Kafka tests (the session broker itself is in tests/conftest.py)."""

from __future__ import annotations

import uuid

import pytest
from kafka_test_helpers import Names


@pytest.fixture
def kafka_names(request: pytest.FixtureRequest) -> Names:
    """Fresh, unique topic and group names for one test."""
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    suffix = uuid.uuid4().hex[:8]
    return Names(
        topic=f"t-{stem}-{suffix}",
        group=f"g-{stem}-{suffix}",
        state_topic=f"state-{stem}-{suffix}",
        dead_letter_topic=f"dlq-{stem}-{suffix}",
    )
