"""A broker outage under `nlpmon run`, against an uninterrupted run over the same events (issue 10 item 2).

Each run: an embedded Tansu broker (memory storage) on a fixed port, `nlpmon run` as a subprocess, the
first half of the events published and consumed; then, in the outage run only, the broker is SIGKILLed
for ``--outage-s`` seconds and restarted EMPTY on the same port; the second half is published; the
service is stopped with SIGTERM. Prints, per run: log lines (all, and during the outage), client errors
counted, checkpoint stalls, state losses reported, events in the final model reports, /readyz notes,
the exit code and how long SIGTERM took. The counts differ by design when the broker loses the state:
the point is that the loss is reported, not silent.

    PYTHONPATH=$PWD python benchmarks/broker_outage.py [--events 2000] [--outage-s 30]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from nlpmon.demo.generator import SyntheticStream
from nlpmon.kafka.broker import EmbeddedBroker, free_loopback_port
from nlpmon.kafka.publish import publish_file

ROOT = Path(__file__).resolve().parents[1]


def wait(condition: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what} ({condition()!r})")


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def metric(port: int, name: str) -> float:
    text = get(port, "/metrics")[1].decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def events_reported(port: int) -> int:
    status, body = get(port, "/api/models")
    if status != 200:
        return -1
    return sum(sum(int(v) for v in (m.get("events") or {}).values()) for m in json.loads(body)["models"])


def run(lines: list[str], outage_s: float | None, tmp: Path) -> dict[str, Any]:
    port = free_loopback_port()
    broker = EmbeddedBroker(port=port, log_path=tmp / f"tansu-{port}.log")
    bootstrap = broker.start()
    half = len(lines) // 2
    for name, part in (("first", lines[:half]), ("second", lines[half:])):
        (tmp / f"{name}.jsonl").write_text("\n".join(part) + "\n")
    topic = f"pred-{port}"
    env = {**os.environ, "NLPMON_BOOTSTRAP_SERVERS": bootstrap, "NLPMON_PORT": "0", "NLPMON_TOPIC": topic,
           "NLPMON_GROUP_ID": f"g-{port}", "NLPMON_STATE_TOPIC": f"state-{port}",
           "NLPMON_DEAD_LETTER_TOPIC": f"dlq-{port}", "NLPMON_GROUND_TRUTH_TOPIC": "",
           "NLPMON_KAFKA__SESSION_TIMEOUT_MS": "2000", "NLPMON_KAFKA__CHECKPOINT_INTERVAL_S": "1",
           "NLPMON_KAFKA__STATISTICS_INTERVAL_MS": "500", "NLPMON_MONITOR__CALIBRATION_SPLITS": "2"}
    log = tmp / f"nlpmon-{port}.log"
    restarted: EmbeddedBroker | None = None
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "nlpmon.cli", "run"], cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT)
        try:
            m = wait(lambda: re.search(r"models at http://127\.0\.0\.1:(\d+)/", log.read_text()), 60, "start-up")
            http = int(m.group(1))
            publish_file(tmp / "first.jsonl", bootstrap, topic)
            wait(lambda: events_reported(http) >= half, 120, "the first half")
            lines_before = len(log.read_text().splitlines())
            during = 0
            if outage_s is not None:
                assert broker.pid is not None
                os.kill(broker.pid, signal.SIGKILL)
                broker.stop()
                time.sleep(outage_s)  # the outage itself
                during = len(log.read_text().splitlines()) - lines_before
                restarted = EmbeddedBroker(port=port, log_path=tmp / f"tansu-{port}-2.log")
                restarted.start()
            publish_file(tmp / "second.jsonl", bootstrap, topic)
            expected = len(lines) if outage_s is None else len(lines) - half
            wait(lambda: events_reported(http) >= expected, 120, "the second half")
            time.sleep(2)  # a last report refresh
            result = {
                "events": events_reported(http), "client_errors": metric(http, "nlpmon_kafka_client_errors_total"),
                "stalls": metric(http, "nlpmon_checkpoint_stalls_total"),
                "state_losses": metric(http, "nlpmon_state_losses_total"),
                "notes": len(json.loads(get(http, "/readyz")[1]).get("notes", [])),
                "lines_during_outage": during,
            }
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            result["exit_code"] = proc.wait(60)
            result["sigterm_s"] = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
            broker.stop()
            if restarted is not None:
                restarted.stop()
    text = log.read_text()
    result["log_lines"] = len(text.splitlines())
    result["traceback"] = "Traceback" in text
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--outage-s", type=float, default=30.0)
    args = parser.parse_args()
    stream = SyntheticStream(seed=5, t0=time.time() - 3600)  # within the service's clock-skew range
    lines = [json.dumps(e) for e in stream.events(400, "reference")]
    lines += [json.dumps(e) for e in stream.events(args.events - 400)]
    with tempfile.TemporaryDirectory(prefix="nlpmon-outage-") as tmp:
        rows = {"uninterrupted": run(lines, None, Path(tmp)), f"outage {args.outage_s:.0f} s": run(lines, args.outage_s,
                                                                                               Path(tmp))}
    keys = ["events", "log_lines", "lines_during_outage", "client_errors", "stalls", "state_losses", "notes",
            "exit_code", "sigterm_s", "traceback"]
    print(f"| run | {' | '.join(keys)} |")
    print(f"|---|{'---|' * len(keys)}")
    for name, row in rows.items():
        cells = [f"{row[k]:.1f}" if isinstance(row[k], float) else str(row[k]) for k in keys]
        print(f"| {name} | {' | '.join(cells)} |")
    base = rows["uninterrupted"]["events"]
    for name, row in rows.items():
        print(f"{name}: events / uninterrupted = {row['events'] / base:.3f}")


if __name__ == "__main__":
    main()
