"""The README's run command: `nlpmon run --demo` with no Kafka configured (embedded broker, demo traffic).

A newcomer must see the drifting demo model flagged in /metrics, the stable one not, the demo's late labels
joined into quality figures, and a clean stop on Ctrl-C (SIGINT to the whole foreground process group, as a
terminal sends it: the embedded broker must outlive nlpmon's final checkpoint).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_run_demo_on_the_embedded_broker_shows_drift(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NLPMON_")}
    log = tmp_path / "run.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "nlpmon.cli", "run", "--demo", "--port", "0"], cwd=ROOT,
                                env={**env, "NLPMON_PROGRESS_INTERVAL_S": "2"}, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group, like a terminal's job
        try:
            deadline = time.monotonic() + 150
            port = None
            flagged = stable = quality = None
            while time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()[-3000:]
                text = log.read_text()
                if port is None and (m := re.search(r"models at http://127\.0\.0\.1:(\d+)/", text)):
                    port = int(m.group(1))
                if port is not None:
                    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                    flagged = re.search(r'nlpmon_drift_detected\{model="ner-news",model_version="1",'
                                        r'signal="embedding"\} 1\.0', metrics)
                    stable = re.search(r'nlpmon_drift_detected\{model="ner-support",model_version="1",'
                                       r'signal="embedding"\} 0\.0', metrics)
                    quality = re.search(r'nlpmon_quality\{label="__micro__",metric="f1",model="ner-support",'
                                        r'model_version="1"\} 0\.\d+', metrics)
                    if flagged and stable and quality:
                        break
                time.sleep(1)
            assert flagged and stable, f"no drift flag on the demo model in time:\n{log.read_text()[-3000:]}"
            assert quality, "the demo's labels gave no quality figures"
            assert "starting the embedded Tansu broker" in log.read_text()
            assert re.search(r"nlpmon: [\d,]+ events \([\d,]+/s\)", log.read_text()), "no progress line"
        finally:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
            code = proc.wait(30)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "embedded broker stopped" in text and "DeliveryError" not in text
