"""Detection delays and false alarms on the real NER data in ../shared/data (prints a markdown table).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/detection.py [--data ../shared/data]

References (3,000 events) and streams are built with the data's make_stream.py; every stream is held out
of its reference. Nothing is tuned to these domains: thresholds come from calibration on the reference.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from service.monitor.config import MonitorConfig
from service.replay import replay

DOMAINS = ("quotes", "pydocs")
SIGNALS = ("embedding", "entity_label", "token_tag", "entity_density", "confidence", "text_length")


def build(data: Path, out: Path, segments: str, seed: int, exclude: Path | None = None) -> Path:
    if not out.exists():
        cmd = [sys.executable, str(data / "make_stream.py"), "--out", str(out), "--segments", segments,
               "--seed", str(seed), "--embedding-format", "base64"]
        if exclude:
            cmd += ["--exclude", str(exclude)]
        subprocess.run(cmd, check=True, capture_output=True)
    return out


def first_after(report: dict, signal: str, at: int) -> str:
    hits = [a["event_index"] for a in report["alerts"] if a["signal"] == signal and a["event_index"] >= at]
    return str(hits[0] - at) if hits else "-"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    args = ap.parse_args()
    if not (args.data / "make_stream.py").is_file():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print("Domain switch at event 3,000 (reference: 3,000 held-out events of the first domain).")
        print("Delay = events after the switch until the signal's first alarm; FA = alarms before the switch.\n")
        print("| switch | target rate | " + " | ".join(SIGNALS) + " | FA before switch |")
        print("|---|---|" + "---|" * len(SIGNALS) + "---|")
        for a in DOMAINS:
            b = DOMAINS[1 - DOMAINS.index(a)]
            ref = build(args.data, tmp / f"ref-{a}.jsonl", f"{a}:3000", 11 if a == "quotes" else 21)
            sw = build(args.data, tmp / f"sw-{a}.jsonl", f"{a}:3000,{b}:3000", 12, ref)
            for rate in (1e-6, 5e-4):
                r = replay(sw, [ref], MonitorConfig(false_alarm_rate=rate))
                fa = [x for x in r["alerts"] if x["event_index"] < 3000]
                fa_txt = ", ".join(f"{x['signal']}@{x['event_index']}" for x in fa) or "0"
                print(f"| {a} -> {b} | {rate:g} | " + " | ".join(first_after(r, s, 3000) for s in SIGNALS)
                      + f" | {fa_txt} |")
        print("\nStationary: 20,000 held-out events of the reference's domain (texts repeat once a pool is used up).\n")
        print("| domain | target rate | alarms (all signals) | embedding alarms | per 1,500 events (embedding) |")
        print("|---|---|---|---|---|")
        for dom in DOMAINS:
            ref = build(args.data, tmp / f"ref-{dom}.jsonl", f"{dom}:3000", 11 if dom == "quotes" else 21)
            st = build(args.data, tmp / f"st-{dom}.jsonl", f"{dom}:20000", 13, ref)
            for rate in (1e-6, 5e-4):
                r = replay(st, [ref], MonitorConfig(false_alarm_rate=rate))
                emb = sum(1 for x in r["alerts"] if x["signal"] == "embedding")
                print(f"| {dom} | {rate:g} | {len(r['alerts'])} | {emb} | {emb * 1500 / 20000:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
