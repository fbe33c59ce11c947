"""Tag-validity and span-shape signals on real NER predictions: false alarms and injected-fault delays.

Per domain of the development data (see its README): a 3,000-event reference, then a held-out stream of
20,000 events (texts never in the reference; the quotes pool is smaller, so its texts repeat) with the
model's entities written as tags (``ner_faults.tag_events``; IOB2 for pydocs, BIOES for quotes). Counted:
alarms of ``tag_validity``, ``span_length``, ``span_boundary`` on it, at the default target; then two faults
from event 3,000 of its first 6,000 events: 5 % of the documents get one ``I-`` tag after ``O``; every
entity grows by one token. Delay: events from the change to the first alarm of the signal, counting it.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/ner_shape.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ner_faults import rewrite

from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.signals import SIGNAL_NAMES
from nlpmon.replay import replay

NEW = ("tag_validity", "span_length", "span_boundary")
SCHEMES = {"pydocs": "iob2", "quotes": "bioes"}
REFERENCE, STATIONARY, CHANGE, FAULT_EVENTS = 3000, 20000, 3000, 6000
INF = 10**9


def config() -> MonitorConfig:
    """The default configuration with only the new signals running (the others do not change them)."""
    return MonitorConfig(disabled_signals=tuple(s for s in SIGNAL_NAMES if s not in NEW))


def make_stream(data: Path, out: Path, segments: str, seed: int, exclude: Path | None = None) -> Path:
    if not out.exists():
        cmd = [sys.executable, str(data / "make_stream.py"), "--out", str(out), "--segments", segments,
               "--seed", str(seed), "--embedding-format", "base64"]
        if exclude is not None:
            cmd += ["--exclude", str(exclude)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    return out


def head(src: Path, out: Path, n: int) -> Path:
    with src.open() as fin, out.open("w") as fout:
        for i, line in enumerate(fin):
            if i >= n:
                break
            fout.write(line)
    return out


def domain_streams(data: Path, root: Path, domain: str) -> dict[str, Path]:
    """The tagged reference, stationary stream and the two fault streams of one domain (built once)."""
    scheme = SCHEMES[domain]
    raw_ref = make_stream(data, root / f"shape-ref-{domain}.jsonl", f"{domain}:{REFERENCE}", seed=71)
    raw = make_stream(data, root / f"shape-stationary-{domain}.jsonl", f"{domain}:{STATIONARY}", seed=72,
                      exclude=raw_ref)
    out = {"reference": root / f"shape-ref-{domain}-{scheme}.jsonl",
           "stationary": root / f"shape-stationary-{domain}-{scheme}.jsonl",
           "invalid_tags": root / f"shape-invalid-{domain}-{scheme}.jsonl",
           "grown_spans": root / f"shape-grown-{domain}-{scheme}.jsonl"}
    if not out["grown_spans"].exists():
        rewrite(raw_ref, out["reference"], scheme)
        rewrite(raw, out["stationary"], scheme)
        prefix = head(raw, root / f"shape-prefix-{domain}.jsonl", FAULT_EVENTS)
        rewrite(prefix, out["invalid_tags"], scheme, invalid_share=0.05, after=CHANGE, seed=73)
        rewrite(prefix, out["grown_spans"], scheme, grow=True, after=CHANGE)
    return out


def alarms_by_signal(report: dict[str, Any]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for a in report["alerts"]:
        out.setdefault(a["signal"], []).append(int(a["event_index"]))
    return out


def delay(indices: list[int]) -> int:
    return next((i - CHANGE + 1 for i in indices if i >= CHANGE), INF)


def measure(data: Path, root: Path, domain: str) -> dict[str, Any]:
    """Alarms on the stationary stream and the delays of the faults, for one domain."""
    s = domain_streams(data, root, domain)
    t0 = time.perf_counter()
    stationary = replay(s["stationary"], [s["reference"]], config())
    seconds = time.perf_counter() - t0
    model = stationary["models"]["ner-en/1"]
    out: dict[str, Any] = {"domain": domain, "scheme": SCHEMES[domain], "seconds": seconds,
                           "unavailable": {k: v for k, v in model["reference"]["unavailable"].items() if k in NEW},
                           "stationary_alarms": {k: v for k, v in alarms_by_signal(stationary).items() if k in NEW},
                           "stationary_events": stationary["models"]["ner-en/1"]["monitored_events"]}
    for fault, signal in (("invalid_tags", "tag_validity"), ("grown_spans", "span_length")):
        rep = replay(s[fault], [s["reference"]], config())
        by = alarms_by_signal(rep)
        out[fault] = {"signal": signal, "delay": delay(by.get(signal, [])),
                      "before_change": {k: [i for i in v if i < CHANGE] for k, v in by.items()
                                        if any(i < CHANGE for i in v)},
                      "other_signals": {k: delay(v) for k, v in by.items() if k != signal}}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the shared data directory (make_stream.py)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        rows = [measure(args.data, Path(d), domain) for domain in ("pydocs", "quotes")]
    print(f"reference {REFERENCE:,} events; stationary {STATIONARY:,} held-out events; faults from event {CHANGE:,}\n")
    print("| domain (tags) | stationary alarms (new signals) | 5 % documents with one I- after O: tag_validity "
          "delay | spans one token longer: span_length delay | other new signals' delays |")
    print("|---|---|---|---|---|")
    for r in rows:
        others = "; ".join(f"{f}: {', '.join(f'{k} {v}' for k, v in r[f]['other_signals'].items()) or 'none'}"
                           for f in ("invalid_tags", "grown_spans"))
        print(f"| {r['domain']} ({r['scheme'].upper()}) | {sum(len(v) for v in r['stationary_alarms'].values())} "
              f"in {r['stationary_events']:,} | {r['invalid_tags']['delay']} | {r['grown_spans']['delay']} | "
              f"{others} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
