"""events/s of ``nlpmon run --processes 1`` against ``--processes 2`` on a 4-partition topic, in one run
(prints a markdown table with the ratio).

    .venv/bin/python benchmarks/processes.py [--models 8] [--events-per-model 8000]

Both runs read the same pre-published events (synthetic NER, 384-dim embeddings, ``--models`` models
keyed by model over 4 partitions) from their own copy of the topic on one embedded Tansu broker, with the
same reference profiles (calibrated once before, loaded at start), each its own consumer group. The clock
runs from the first event counted in the (merged) ``/metrics`` to the last, as the sum of
``nlpmon_events_total`` polled every second through the parent (the members refresh their counters
once a second, so a run must last well over that: ``--events-per-model``): start-up, the group join and loading the
profiles are outside it; the rebalances while the second member joins are inside it. The load average
is printed beside the table: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nlpmon.demo import SyntheticStream  # noqa: E402
from nlpmon.kafka.broker import EmbeddedBroker  # noqa: E402
from nlpmon.kafka.topics import create_topic  # noqa: E402

PARTITIONS = 4
POLL_S = 1.0  # the members refresh their reports (and so the counters) once a second
CONFIG = "monitor:\n  calibration_splits: 2\n"


def events(models: int, per_model: int, split: str, seed0: int) -> list[tuple[str, bytes]]:
    out = []
    for k in range(models):
        for i, e in enumerate(SyntheticStream(seed=seed0 + k, model=f"m{k}", t0=time.time() - 7200)
                              .events(per_model, split)):
            e["event_id"] = f"{split}-{k}-{i}"
            out.append((f"m{k}", json.dumps(e).encode()))
    return out


def produce(bootstrap: str, topic: str, lines: list[tuple[str, bytes]]) -> None:
    create_topic(bootstrap, topic, PARTITIONS)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000})
    for key, line in lines:
        while True:
            try:
                p.produce(topic, line, key=key.encode())
                break
            except BufferError:
                p.poll(0.1)
    if p.flush(120):
        raise SystemExit("the broker did not acknowledge every event")


def counted(port: int, scrapes: list[float]) -> float:
    t = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    scrapes.append(time.perf_counter() - t)
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "nlpmon_events_total")


def run(bootstrap: str, topic: str, processes: int, n: int, config: Path, profiles: list[Path],
        work: Path, timeout_s: float) -> tuple[float, float, float]:
    """(events/s, seconds, median scrape seconds) of one ``nlpmon run --processes N`` over the ``n`` events
    of ``topic``."""
    s = uuid.uuid4().hex[:8]
    env = {**os.environ, "NLPMON_BOOTSTRAP_SERVERS": bootstrap, "NLPMON_TOPIC": topic, "NLPMON_PORT": "0",
           "NLPMON_GROUP_ID": f"bench-{s}", "NLPMON_STATE_TOPIC": f"bench-state-{s}",
           "NLPMON_DEAD_LETTER_TOPIC": f"bench-dlq-{s}", "NLPMON_GROUND_TRUTH_TOPIC": "",
           "NLPMON_KAFKA__SESSION_TIMEOUT_MS": "6000", "NLPMON_PROGRESS_INTERVAL_S": "3600",
           "PYTHONPATH": str(ROOT)}
    log = work / f"run-{processes}.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "nlpmon.cli", "run", "--processes", str(processes),
                                 "--config", str(config), *[a for p in profiles for a in ("--reference", str(p))]],
                                env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            port = None
            while port is None and time.monotonic() < deadline:
                for line in log.read_text().splitlines():
                    if "metrics and models at http://127.0.0.1:" in line and ("members" in line or processes == 1):
                        port = int(line.rsplit(":", 1)[1].strip("/"))
                        break
                if proc.poll() is not None:
                    raise SystemExit(f"nlpmon exited {proc.returncode}: {log.read_text()[-2000:]}")
                time.sleep(0.25)
            first: tuple[float, float] | None = None
            scrapes: list[float] = []
            last = (0.0, 0.0)
            while time.monotonic() < deadline:
                try:
                    c = counted(port, scrapes) if port is not None else 0.0
                except OSError:
                    c = 0.0
                now = time.perf_counter()
                if c > 0 and first is None:
                    first = (now, c)
                if c > last[1]:
                    last = (now, c)
                if c >= n:
                    break
                time.sleep(POLL_S)
            else:
                raise SystemExit(f"--processes {processes}: {last[1]:.0f} of {n} events in {timeout_s:.0f} s")
            assert first is not None
            seconds = last[0] - first[0]
            if seconds <= 0:
                raise SystemExit(f"--processes {processes} counted every event in one refresh: give more events")
            return (n - first[1]) / seconds, seconds, sorted(scrapes)[len(scrapes) // 2]
        finally:
            proc.terminate()
            proc.wait(120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--events-per-model", type=int, default=32000)
    ap.add_argument("--reference-per-model", type=int, default=1000)
    ap.add_argument("--timeout-s", type=float, default=900)
    args = ap.parse_args()
    prod = events(args.models, args.events_per_model, "production", 100)
    n = len(prod)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        work = Path(tmp)
        config = work / "nlpmon.yaml"
        config.write_text(CONFIG)
        ref = work / "reference.jsonl"
        ref.write_bytes(b"\n".join(line for _, line in events(args.models, args.reference_per_model,
                                                               "reference", 100)) + b"\n")
        subprocess.run([sys.executable, "-m", "nlpmon.cli", "calibrate", str(ref), "--out", str(work / "profiles"),
                        "--config", str(config)], cwd=ROOT, check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        profiles = sorted((work / "profiles").glob("*.nlpmon"))
        rows = []
        for processes in (1, 2):
            topic = f"bench-{processes}-{uuid.uuid4().hex[:6]}"
            produce(broker.bootstrap_servers, topic, prod)
            rows.append((processes, *run(broker.bootstrap_servers, topic, processes, n, config, profiles, work,
                                         args.timeout_s)))
    load = os.getloadavg()
    print(f"{n:,} events ({args.models} models x {args.events_per_model:,}, 384-dim), {PARTITIONS} partitions, "
          f"{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} after the runs\n")
    print("| nlpmon run | events/s | seconds | ratio to --processes 1 | median /metrics scrape (ms) |")
    print("|---|---:|---:|---:|---:|")
    for processes, rate, seconds, scrape in rows:
        print(f"| --processes {processes} | {rate:,.0f} | {seconds:.1f} | {rate / rows[0][1]:.2f}x | "
              f"{scrape * 1000:.0f} |")


if __name__ == "__main__":
    main()
