"""Real NER prediction data from ../shared/data (see its README): present in CI, absent on a fresh checkout.

Without it these tests skip with the reason; with ``CI`` set, its absence is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(os.environ.get("NLPMON_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (DATA / "make_stream.py").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the real data is missing at {DATA} (set NLPMON_SHARED_DATA)")
        pytest.skip(f"real NER data not found at {DATA}; set NLPMON_SHARED_DATA to run these tests")
    return DATA


class Streams:
    def __init__(self, data: Path, root: Path) -> None:
        self.data, self.root = data, root

    def build(self, name: str, segments: str, seed: int, exclude: Path | None = None) -> Path:
        out = self.root / f"{name}.jsonl"
        if not out.exists():
            cmd = [sys.executable, str(self.data / "make_stream.py"), "--out", str(out), "--segments", segments,
                   "--seed", str(seed), "--embedding-format", "base64"]
            if exclude is not None:
                cmd += ["--exclude", str(exclude)]
            subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        return out


@pytest.fixture(scope="session")
def streams(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Streams:
    return Streams(shared_data, tmp_path_factory.mktemp("realdata"))
