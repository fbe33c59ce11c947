"""Fixtures of the service end-to-end tests: fresh Kafka names per test, and publishing through the CLI."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
Publish = Callable[..., None]


@pytest.fixture
def names() -> dict[str, str]:
    """Topic, group, state, dead-letter and label topic names no other test uses."""
    s = uuid.uuid4().hex[:8]
    return {"topic": f"pred-{s}", "group": f"nlpmon-{s}", "state": f"state-{s}", "dlq": f"dlq-{s}",
            "labels": f"labels-{s}"}


@pytest.fixture
def publish(kafka_bootstrap: str, names: dict[str, str], tmp_path: Path) -> Iterator[Publish]:
    """``publish(lines, name, topic=None)``: write ``lines`` to ``<name>.jsonl`` and send them with
    ``nlpmon publish`` to ``topic`` (default: ``names["topic"]``); asserts every line was acknowledged."""
    def send(lines: list[str], name: str, topic: str | None = None) -> None:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        proc = subprocess.run([sys.executable, "-m", "nlpmon.cli", "publish", str(path), "--bootstrap-servers",
                               kafka_bootstrap, "--topic", topic or names["topic"]], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert f"{len(lines):,} acknowledged" in proc.stderr
    yield send
