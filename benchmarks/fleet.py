"""A fleet of models through one ``nlpmon run`` on a real broker (issue 14, item 4); prints markdown tables.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/fleet.py [--models 200] [--events-per-model 5000]

Every model starts without a reference, so its first ``--baseline`` events (``monitor.auto_baseline_events``)
become its reference and are calibrated (on the calibration worker, beside the loop). The events are
synthetic NER events (384-dim base64 embeddings, ~30 tokens; ``nlpmon.demo.SyntheticStream``, one seed per
model) keyed by model over a ``--partitions``-partition topic of an embedded Tansu broker, published before
the service starts in three stages so that memory can be read against the number of models: the first 10
models, then the next 40, then the rest, each stage interleaving its models 50 events at a time (all of a
stage's models are live at once, as in production). ``max_models`` is the number of models, so every model
has its own series in ``/metrics`` (the largest exposition; the default of 50 would fold the rest into
``other``).

Phases, in one run of ``nlpmon run --processes 1``:

1. **fleet**: the service reads the three stages. ``/metrics`` is scraped every ``--sample-s`` (each scrape
   timed; its size in bytes); the RSS of the process and its children (``/proc/PID/status``; a calibration
   worker process counts) is read at each scrape and recorded when the events of a stage have all been
   counted. The longest gap between polls is the service's own
   ``nlpmon_longest_poll_gap_seconds`` (a poll's return to the next poll's call); rebalances are the
   assignments counted by ``nlpmon_rebalances_total`` after the first event (the member's first assignment
   comes before it and is not a rebalance). Calibrated = models whose
   ``nlpmon_model_status{status="monitoring"}`` is 1.
2. **one model active**: one more event of every model (so that every partition gets a snapshot of its
   calibrated models), then ``--active-events`` more events of one model only (``m000``) while every
   other model idles. The bytes written to the state topic per checkpoint come from the service's
   ``nlpmon_snapshot_bytes_produced_total`` and ``nlpmon_checkpoints_total``; one model's whole state
   (reference profile included) from the state topic itself (the parts and bodies compaction keeps,
   divided by the models). What one active model costs a checkpoint, in models' worth of state, says
   what its idle neighbours cost.

Targets of the issue: no poll gap over 1 s, 0 rebalances, RSS <= 1 GiB at 200 models, a checkpoint of an
idle model writes nothing (or only what changed), a scrape under 250 ms. The table says which are met.
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nlpmon.demo import SyntheticStream  # noqa: E402
from nlpmon.kafka.broker import EmbeddedBroker  # noqa: E402
from nlpmon.kafka.snapshot_format import base_key_of, decode_chunk, select_latest, snapshot_key  # noqa: E402
from nlpmon.kafka.topics import create_topic  # noqa: E402

STAGES = (10, 50)  # cumulative model counts at which the stages end (the last stage ends at --models)
INTERLEAVE = 50  # events of one model in a row within a stage
GiB = 1024 ** 3


def stage_bounds(models: int) -> list[int]:
    return [m for m in STAGES if m < models] + [models]


def fleet_lines(models: int, per_model: int, t0: float) -> Iterator[tuple[int, str, bytes]]:
    """``(stage, model, line)`` in publishing order: each stage's models interleaved ``INTERLEAVE`` at a time."""
    lo = 0
    for stage, hi in enumerate(stage_bounds(models)):
        streams = {f"m{k:03d}": SyntheticStream(seed=1000 + k, model=f"m{k:03d}", t0=t0) for k in range(lo, hi)}
        for start in range(0, per_model, INTERLEAVE):
            for name, stream in streams.items():
                for i, e in enumerate(stream.events(min(INTERLEAVE, per_model - start)), start):
                    e["event_id"] = f"{name}-{i}"
                    yield stage, name, json.dumps(e).encode()
        lo = hi


def later_lines(models: range, n: int, first: int, t0: float) -> Iterator[tuple[int, str, bytes]]:
    """Events ``first .. first + n - 1`` of each model's stream (the stream ``fleet_lines`` began)."""
    for model in models:
        name = f"m{model:03d}"
        stream = SyntheticStream(seed=1000 + model, model=name, t0=t0)
        for i, e in enumerate(stream.events(first + n)):
            if i >= first:
                e["event_id"] = f"{name}-{i}"
                yield 0, name, json.dumps(e).encode()


@dataclass
class Placement:
    """Where the published events went: each model's partition and each partition's next offset."""

    partition_of: dict[str, int] = field(default_factory=dict)
    next_offset: dict[int, int] = field(default_factory=dict)

    def delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            raise SystemExit(f"an event was not delivered: {err}")
        part, offset = msg.partition(), msg.offset()
        assert part is not None and offset is not None
        self.partition_of[(msg.key() or b"").decode()] = part
        self.next_offset[part] = max(self.next_offset.get(part, 0), offset + 1)

    def models_in(self, partition: int) -> int:
        return sum(1 for p in self.partition_of.values() if p == partition)


def publish(bootstrap: str, topic: str, lines: Iterator[tuple[int, str, bytes]], label: str,
            placement: Placement) -> list[int]:
    """Publishes every line (keyed by model); returns the cumulative event count at the end of each stage."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                  "queue.buffering.max.kbytes": 1048576})
    ends: list[int] = []
    started = shown = time.monotonic()
    for n, (stage, key, line) in enumerate(lines, 1):
        while len(ends) <= stage:
            ends.append(n - 1)
        while True:
            try:
                p.produce(topic, line, key=key.encode(), on_delivery=placement.delivered)
                break
            except BufferError:
                p.poll(0.1)
        ends[stage] = n
        if time.monotonic() - shown > 10:
            shown = time.monotonic()
            print(f"  {label}: {n:,} events published ({n / (shown - started):,.0f}/s)", file=sys.stderr, flush=True)
    if p.flush(300):
        raise SystemExit("the broker did not acknowledge every event")
    return ends


@dataclass(frozen=True)
class SnapshotSeen:
    partition: int  # of the input topic
    next_offset: int
    body_bytes: int  # the snapshot's body (all its chunks)


def snapshots_in(bootstrap: str, state_topic: str, timeout_s: float = 120.0) -> dict[str, SnapshotSeen]:
    """Every snapshot in the state topic (superseded ones included until their tombstones), by snapshot
    id, from its chunk keys (``group/topic/partition#id#index``) and headers."""
    out: dict[str, SnapshotSeen] = {}
    for key, value in live_records(bootstrap, state_topic, timeout_s).items():
        base, sid, _ = key.decode().split("#")
        if not sid.startswith("p-"):  # a part (snapshot_format, "Parts"), not a snapshot body
            chunk = decode_chunk(value)
            out[sid] = SnapshotSeen(int(base.rsplit("/", 1)[1]), int(sid.split("-")[0]), chunk.total_length)
    return out


def newest_state_bytes(bootstrap: str, state_topic: str, group: str, topic: str, partitions: int,
                       timeout_s: float = 120.0) -> int:
    """Bytes of the newest complete snapshot of every partition, body and parts: the whole state, what a
    snapshot without parts would write at every checkpoint."""
    live: dict[int, dict[bytes, tuple[int, bytes]]] = {p: {} for p in range(partitions)}
    bases = {snapshot_key(group, topic, p): p for p in range(partitions)}
    for offset, (key, value) in enumerate(topic_records(bootstrap, state_topic, timeout_s)):
        p = bases.get(base_key_of(key))
        if p is None:
            continue
        if value is None:
            live[p].pop(key, None)
        else:
            live[p][key] = (offset, value)
    total = 0
    for p, records in live.items():
        snapshot = select_latest(topic, p, snapshot_key(group, topic, p), records).snapshot
        if snapshot is not None:
            total += len(snapshot.payload) + sum(len(x) for x in snapshot.parts.values())
    return total


def live_records(bootstrap: str, topic: str, timeout_s: float) -> dict[bytes, bytes]:
    """What compaction keeps of ``topic``'s chunk records: the last value of each key, tombstoned keys dropped."""
    live: dict[bytes, bytes] = {}
    for key, value in topic_records(bootstrap, topic, timeout_s):
        if b"#" not in key:
            continue
        if value is None:
            live.pop(key, None)
        else:
            live[key] = value
    return live


def wait_for_snapshots(bootstrap: str, state_topic: str, ends: dict[int, int],
                       deadline: float) -> dict[str, SnapshotSeen]:
    """The state topic's snapshots once every partition of ``ends`` has one that covers its end offset (the
    service checkpoints every ``checkpoint_interval_s`` while events arrive, and at its stop)."""
    while True:
        seen = snapshots_in(bootstrap, state_topic)
        if all(any(x.partition == p and x.next_offset >= end for x in seen.values()) for p, end in ends.items()):
            return seen
        if time.monotonic() > deadline:
            raise SystemExit(f"no snapshot covering {ends} in {state_topic}")
        time.sleep(2.0)


def topic_records(bootstrap: str, topic: str, timeout_s: float) -> list[tuple[bytes, bytes | None]]:
    """(key, value) of every record in every partition of ``topic``, read from the start to the end."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fleet-read-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        parts = sorted(meta.partitions)
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        done: set[int] = set()
        records: list[tuple[bytes, bytes | None]] = []
        deadline = time.monotonic() + timeout_s
        while len(done) < len(parts):
            if time.monotonic() > deadline:
                raise SystemExit(f"reading {topic} took over {timeout_s:.0f} s")
            for m in c.consume(1000, 1.0):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done.add(m.partition() or 0)
                        continue
                    raise SystemExit(f"reading {topic}: {err}")
                records.append((m.key() or b"", m.value()))
        return records
    finally:
        c.close()


def rss_bytes(pid: int) -> int:
    """The resident memory of ``pid`` and of every process below it (a calibration worker process counts
    as the service's memory)."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        children = [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                    for c in (t / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):  # ended meanwhile
        return total
    return total + sum(rss_bytes(c) for c in children)


@dataclass
class Scrape:
    seconds: float
    size: int
    events: float
    monitoring: int
    rebalances: float
    poll_gap: float
    checkpoints: float
    state_bytes: float  # snapshot bytes produced (bodies and parts)


#: A scrape slower than this is printed with its start time.
SLOW_SCRAPE_S = 0.1


def scrape(port: int) -> Scrape:
    t = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        body = r.read()
    seconds = time.perf_counter() - t
    values: dict[str, float] = {"nlpmon_events_total": 0.0, "monitoring": 0.0}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name == "nlpmon_events_total":
                values[s.name] += s.value
            elif s.name == "nlpmon_model_status" and s.labels.get("status") == "monitoring":
                values["monitoring"] += s.value
            elif s.name in ("nlpmon_rebalances_total", "nlpmon_longest_poll_gap_seconds",
                            "nlpmon_checkpoints_total", "nlpmon_snapshot_bytes_produced_total"):
                values[s.name] = s.value
    return Scrape(seconds, len(body), values["nlpmon_events_total"], int(values["monitoring"]),
                  values.get("nlpmon_rebalances_total", 0.0),
                  values.get("nlpmon_longest_poll_gap_seconds", 0.0), values.get("nlpmon_checkpoints_total", 0.0),
                  values.get("nlpmon_snapshot_bytes_produced_total", 0.0))


@dataclass
class Observed:
    scrapes: list[Scrape] = field(default_factory=list)
    rss_at_stage: list[int] = field(default_factory=list)
    first_event_at: float | None = None
    assignments_at_first_event: float = 0.0
    all_counted_at: float | None = None
    all_calibrated_at: float | None = None
    peak_rss: int = 0


def checkpointed(port: int, after: float, deadline: float) -> Scrape:
    """A scrape that counts more than ``after`` checkpoints, once the checkpoint counts and state bytes have
    settled: the same over three scrapes 2 s apart (a checkpoint may still be under way for another partition,
    and the service copies its counters into /metrics about once a second, later on a loaded machine)."""
    while True:
        if time.monotonic() > deadline:
            raise SystemExit(f"no checkpoint after the {after:.0f}th")
        last = scrape(port)
        if last.checkpoints > after:
            break
        time.sleep(0.5)
    same = 0
    while same < 3 and time.monotonic() < deadline:
        time.sleep(2.0)
        now = scrape(port)
        same = same + 1 if (now.checkpoints, now.state_bytes) == (last.checkpoints, last.state_bytes) else 0
        last = now
    return last


def watch(proc: subprocess.Popen[bytes], port: int, until: float, stage_ends: list[int], models: int,
          sample_s: float, deadline: float, obs: Observed) -> Scrape:
    """Scrapes until ``until`` events are counted and every model monitors (or the deadline); returns the
    last scrape."""
    last = None
    shown = time.monotonic()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"nlpmon exited {proc.returncode}")
        started = time.time()
        try:
            last = scrape(port)
        except OSError:
            time.sleep(sample_s)
            continue
        now = time.monotonic()
        obs.scrapes.append(last)
        if last.seconds > SLOW_SCRAPE_S:  # when, to find what the service did meanwhile in its log (--log)
            print(f"  slow scrape: {last.seconds * 1000:.0f} ms from "
                  f"{time.strftime('%H:%M:%S', time.localtime(started))},{int(started % 1 * 1000):03d}",
                  file=sys.stderr, flush=True)
        rss = rss_bytes(proc.pid)
        obs.peak_rss = max(obs.peak_rss, rss)
        if last.events > 0 and obs.first_event_at is None:
            obs.first_event_at = now
            obs.assignments_at_first_event = last.rebalances
        while len(obs.rss_at_stage) < len(stage_ends) and last.events >= stage_ends[len(obs.rss_at_stage)]:
            obs.rss_at_stage.append(rss)
        if last.events >= until and obs.all_counted_at is None:
            obs.all_counted_at = now
        if last.monitoring >= models and obs.all_calibrated_at is None:
            obs.all_calibrated_at = now
        if now - shown > 5:
            shown = now
            print(f"  {last.events:,.0f} of {until:,} events counted, {last.monitoring} of {models} models "
                  f"calibrated, RSS {rss / 2**20:,.0f} MiB, scrape {last.seconds * 1000:.0f} ms, "
                  f"{last.checkpoints:.0f} checkpoints, {last.state_bytes / 2**20:,.1f} MiB of state written",
                  file=sys.stderr, flush=True)
        if last.events >= until and last.monitoring >= models:
            return last
        time.sleep(sample_s)
    raise SystemExit(f"timed out: {last}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--events-per-model", type=int, default=5000)
    ap.add_argument("--baseline", type=int, default=2000, help="monitor.auto_baseline_events")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--active-events", type=int, default=4000, help="events of one model in phase 2")
    ap.add_argument("--sample-s", type=float, default=0.5)
    ap.add_argument("--timeout-s", type=float, default=7200)
    ap.add_argument("--config", type=Path, help="extra nlpmon YAML configuration (default: none)")
    ap.add_argument("--log", type=Path, help="copy the service's log here")
    args = ap.parse_args()
    if args.events_per_model <= args.baseline:
        raise SystemExit("--events-per-model must exceed --baseline (each model must calibrate and monitor)")
    deadline = time.monotonic() + args.timeout_s
    t0 = time.time() - 86400
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        work = Path(tmp)
        bootstrap = broker.bootstrap_servers
        s = uuid.uuid4().hex[:8]
        topic, state_topic = f"fleet-{s}", f"fleet-state-{s}"
        create_topic(bootstrap, topic, args.partitions)
        t = time.monotonic()
        placement = Placement()
        stage_ends = publish(bootstrap, topic, fleet_lines(args.models, args.events_per_model, t0), "fleet",
                             placement)
        n = stage_ends[-1]
        print(f"published {n:,} events in {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)
        env = {**os.environ, "NLPMON_BOOTSTRAP_SERVERS": bootstrap, "NLPMON_TOPIC": topic, "NLPMON_PORT": "0",
               "NLPMON_GROUP_ID": f"fleet-{s}", "NLPMON_STATE_TOPIC": state_topic,
               "NLPMON_DEAD_LETTER_TOPIC": f"fleet-dlq-{s}", "NLPMON_GROUND_TRUTH_TOPIC": "",
               "NLPMON_MAX_MODELS": str(args.models), "NLPMON_PROGRESS_INTERVAL_S": "3600",
               "NLPMON_MONITOR__AUTO_BASELINE_EVENTS": str(args.baseline),
               "NLPMON_KAFKA__SESSION_TIMEOUT_MS": "6000", "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "nlpmon.cli", "run"]
        if args.config:
            cmd += ["--config", str(args.config)]
        log = work / "nlpmon.log"
        obs = Observed()
        with log.open("w") as fh:
            proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
            try:
                port = None
                while port is None:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit(f"nlpmon did not start: {log.read_text()[-2000:]}")
                    for line in log.read_text().splitlines():
                        if "metrics and models at http://127.0.0.1:" in line:
                            port = int(line.rsplit(":", 1)[1].strip("/"))
                    time.sleep(0.25)
                started = time.monotonic()
                watch(proc, port, n, stage_ends, args.models, args.sample_s, deadline, obs)
                # one more event of every model, so that each partition gets a snapshot of calibrated models
                first = args.events_per_model
                checkpoints = scrape(port).checkpoints
                publish(bootstrap, topic, later_lines(range(args.models), 1, first, t0), "touch", placement)
                watch(proc, port, n + args.models, [], args.models, args.sample_s, deadline, obs)
                wait_for_snapshots(bootstrap, state_topic, dict(placement.next_offset), deadline)
                at_rest = checkpointed(port, checkpoints, deadline)
                whole_state = newest_state_bytes(bootstrap, state_topic, f"fleet-{s}", topic, args.partitions)
                # phase 2: one model only (m000), every other model idle
                publish(bootstrap, topic, later_lines(range(1), args.active_events, first + 1, t0), "active",
                        placement)
                active_end = watch(proc, port, n + args.models + args.active_events, [], args.models,
                                   args.sample_s, deadline, obs)
                active_part = placement.partition_of["m000"]
                wait_for_snapshots(bootstrap, state_topic, {active_part: placement.next_offset[active_part]},
                                   deadline)
                active_end = checkpointed(port, at_rest.checkpoints, deadline)
            finally:
                proc.terminate()
                try:
                    proc.wait(120)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if args.log:
            args.log.write_text(log.read_text())
        if "Traceback" in log.read_text():
            print(log.read_text()[-3000:], file=sys.stderr)
    assert obs.first_event_at is not None and obs.all_counted_at is not None and obs.all_calibrated_at is not None
    scrape_ms = sorted(x.seconds * 1000 for x in obs.scrapes)
    counting_s = obs.all_counted_at - obs.first_event_at
    rebalances = active_end.rebalances - obs.assignments_at_first_event
    model_state = whole_state / args.models  # reference profile, windows and the rest
    fleet_per_checkpoint = at_rest.state_bytes / max(1.0, at_rest.checkpoints)
    checkpoints = active_end.checkpoints - at_rest.checkpoints
    active_per_checkpoint = (active_end.state_bytes - at_rest.state_bytes) / max(1.0, checkpoints)
    active_models = placement.models_in(active_part)
    load = os.getloadavg()
    print(f"{args.models} models x {args.events_per_model:,} events ({n:,}; auto-baseline {args.baseline:,} each), "
          f"{args.partitions} partitions, one process, {os.cpu_count()} cores, load average "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end; start-up to first event "
          f"{obs.first_event_at - started:.1f} s\n")
    bounds = stage_bounds(args.models)
    rows = [
        ("longest gap between polls (s)", f"{active_end.poll_gap:.2f}", "<= 1", active_end.poll_gap <= 1.0),
        ("rebalances", f"{rebalances:.0f}", "0", rebalances == 0),
        ("events/s (first to last event counted)",
         f"{n / counting_s:,.0f}" if counting_s >= 5 * args.sample_s else "(too few events to time)", "", None),
        *[(f"RSS after {m} models (MiB)", f"{r / 2**20:,.0f}", "<= 1024 at 200" if m == bounds[-1] else "",
           (r <= GiB) if m == bounds[-1] else None) for m, r in zip(bounds, obs.rss_at_stage, strict=False)],
        ("peak RSS (MiB)", f"{obs.peak_rss / 2**20:,.0f}", "", None),
        ("one model's whole state in the state topic (bytes; reference profile included)", f"{model_state:,.0f}",
         "", None),
        ("state-topic bytes per model per checkpoint, fleet phase",
         f"{fleet_per_checkpoint / args.models:,.0f} ({at_rest.checkpoints:.0f} checkpoints)", "", None),
        (f"state-topic bytes per checkpoint, one model active ({args.models - 1} idle, {active_models - 1} of them "
         "in its partition)",
         f"{active_per_checkpoint:,.0f} = {active_per_checkpoint / max(1.0, model_state):.2f} models' worth "
         f"({checkpoints:.0f} checkpoints)", "only what changed (< 1 model)", active_per_checkpoint < model_state),
        ("/metrics size (KiB, at the end)", f"{active_end.size / 1024:,.0f}", "", None),
        ("/metrics scrape time, median / max (ms)", f"{scrape_ms[len(scrape_ms) // 2]:.0f} / {scrape_ms[-1]:.0f}",
         "< 250", scrape_ms[-1] < 250),
        ("time until every model is calibrated (s, from the first event)",
         f"{obs.all_calibrated_at - obs.first_event_at:.0f}", "", None),
    ]
    print("| measure | value | target | met |")
    print("|---|---|---|---|")
    for name, value, target, met in rows:
        print(f"| {name} | {value} | {target} | {'' if met is None else ('yes' if met else 'NO')} |")


if __name__ == "__main__":
    main()
