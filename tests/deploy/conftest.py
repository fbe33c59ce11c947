"""Fixtures of the deployment tests: the Prometheus/Alertmanager binaries they need.

Missing binaries skip the tests with the install command, except when CI is set: there they fail
(`make pytest` installs them with scripts/install-monitoring-tools.sh).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "nlpmon.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "rules" / "nlpmon.rules.test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
INSTALL = "scripts/install-monitoring-tools.sh (as root: apt-get install prometheus prometheus-alertmanager)"


def require_tools(*names: str) -> dict[str, str]:
    """Paths of the named executables; skip when one is missing (fail when CI is set)."""
    found = {n: shutil.which(n) for n in names}
    missing = sorted(n for n, p in found.items() if p is None)
    if missing:
        reason = f"{', '.join(missing)} not on PATH; install with {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and {reason}")
        pytest.skip(reason)
    return {n: p for n, p in found.items() if p is not None}


@pytest.fixture
def tools() -> Callable[..., dict[str, str]]:
    """``tools("promtool", "amtool")`` -> their paths, or skip/fail as ``require_tools``."""
    return require_tools
