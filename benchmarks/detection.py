"""Detection delays and false alarms on the real NER data in ../shared/data (prints markdown tables).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/detection.py [--data ../shared/data]
        [--only partial|switch|stationary] [--keep DIR]

References (3,000 events) and streams are built with the data's make_stream.py (mixtures with
benchmarks/mixture.py); every A event of a stream is held out of its reference. Nothing is tuned to these
domains: thresholds come from calibration on the reference. Beside nlpmon, the partial-drift rows give
the issue's 20-line baseline (benchmarks/baseline_outliers.py) on the same streams.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_outliers import alarms as baseline_alarms
from mixture import build_mixture, make_stream, reference_seed

from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.signals import SIGNAL_NAMES
from nlpmon.replay import replay

DOMAINS = ("quotes", "pydocs")
SWITCH_SIGNALS = ("embedding", "embedding_outliers", "embedding_clusters", "entity_label", "token_tag",
                  "entity_density", "confidence", "text_length")
MIX = (0.05, 0.1, 0.3)
RAMP = 2000
CHANGE = 3000


def first_after(report: dict[str, Any], signals: tuple[str, ...] | None, at: int, counts_alarm: bool) -> int | None:
    hits = [a["event_index"] for a in report["alerts"]
            if (signals is None or a["signal"] in signals) and a["event_index"] >= at]
    return None if not hits else hits[0] - at + (1 if counts_alarm else 0)


def show(d: int | None) -> str:
    return "-" if d is None else str(d)


def partial(data: Path, tmp: Path) -> None:
    print("### Partial drift (default target 1e-6)\n")
    print("Reference: 3,000 events of A; stream: 3,000 held-out A events, then 4,000 events each from B with "
          "probability p (ramp: p rises linearly 0 -> 1 over 2,000 events). Delay = events from the change "
          "point to the first alarm, counting the alarm event; '-' = no alarm in the 4,000 events.\n")
    print("| stream | nlpmon embedding_outliers | nlpmon embedding_clusters | nlpmon any signal (which) | baseline "
          "| alarms before the change (nlpmon / baseline) |")
    print("|---|---|---|---|---|---|")
    for a in DOMAINS:
        b = DOMAINS[1 - DOMAINS.index(a)]
        for p in (*MIX, None):
            ref, stream = build_mixture(data, tmp, a, b, p=p, ramp=RAMP if p is None else None)
            r = replay(stream, [ref], MonitorConfig())
            out = first_after(r, ("embedding_outliers",), CHANGE, True)
            clu = first_after(r, ("embedding_clusters",), CHANGE, True)
            anyd = first_after(r, None, CHANGE, True)
            which = sorted({x["signal"] for x in r["alerts"] if x["event_index"] >= CHANGE
                            and anyd is not None and x["event_index"] - CHANGE + 1 == anyd})
            base = baseline_alarms(ref, stream, 1e-6)
            bd = next((i - CHANGE + 1 for i in base if i >= CHANGE), None)
            fa = sum(1 for x in r["alerts"] if x["event_index"] < CHANGE)
            fb = sum(1 for i in base if i < CHANGE)
            name = f"{a} + {p:.0%} {b}" if p is not None else f"{a} + ramp 0->100% {b} over {RAMP}"
            print(f"| {name} | {show(out)} | {show(clu)} | {show(anyd)} ({', '.join(which) or '-'}) | {show(bd)} "
                  f"| {fa} / {fb} |", flush=True)


def switch(data: Path, tmp: Path) -> None:
    print("\n### Whole domain switch at event 3,000\n")
    print("Delay = events after the switch until the signal's first alarm (the alarm event not counted, as "
          "before); FA = alarms before the switch.\n")
    print("| switch | target rate | " + " | ".join(SWITCH_SIGNALS) + " | FA before switch |")
    print("|---|---|" + "---|" * len(SWITCH_SIGNALS) + "---|")
    for a in DOMAINS:
        b = DOMAINS[1 - DOMAINS.index(a)]
        ref = make_stream(data, tmp / f"ref-{a}.jsonl", f"{a}:3000", reference_seed(a))
        sw = make_stream(data, tmp / f"sw-{a}.jsonl", f"{a}:3000,{b}:3000", 12, ref)
        for rate in (1e-6, 5e-4):
            r = replay(sw, [ref], MonitorConfig(false_alarm_rate=rate))
            fa = [x for x in r["alerts"] if x["event_index"] < CHANGE]
            fa_txt = ", ".join(f"{x['signal']}@{x['event_index']}" for x in fa) or "0"
            print(f"| {a} -> {b} | {rate:g} | "
                  + " | ".join(show(first_after(r, (s,), CHANGE, False)) for s in SWITCH_SIGNALS)
                  + f" | {fa_txt} |", flush=True)


def stationary(data: Path, tmp: Path) -> None:
    print("\n### Stationary: 20,000 held-out events of the reference's domain (texts repeat once a pool is "
          "used up)\n")
    print("Alarms per signal (every signal nlpmon runs on these events; signals without an alarm not listed), "
          "and the baseline's.\n")
    print("| domain | target rate | alarms, all signals | per signal | embedding alarms per 1,500 events | "
          "baseline alarms |")
    print("|---|---|---|---|---|---|")
    for dom in DOMAINS:
        ref = make_stream(data, tmp / f"ref-{dom}.jsonl", f"{dom}:3000", reference_seed(dom))
        st = make_stream(data, tmp / f"st-{dom}.jsonl", f"{dom}:20000", 13, ref)
        for rate in (1e-6, 5e-4):
            r = replay(st, [ref], MonitorConfig(false_alarm_rate=rate))
            per = {s: sum(1 for x in r["alerts"] if x["signal"] == s) for s in SIGNAL_NAMES}
            txt = ", ".join(f"{s} {n}" for s, n in per.items() if n) or "none"
            base = len(baseline_alarms(ref, st, rate))
            print(f"| {dom} | {rate:g} | {len(r['alerts'])} | {txt} | {per['embedding'] * 1500 / 20000:.2f} | "
                  f"{base} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    ap.add_argument("--only", choices=("partial", "switch", "stationary"))
    ap.add_argument("--keep", type=Path, help="build the streams in this directory (reused when present)")
    args = ap.parse_args()
    if not (args.data / "make_stream.py").is_file():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = args.keep or Path(d)
        tmp.mkdir(parents=True, exist_ok=True)
        for name, fn in (("partial", partial), ("switch", switch), ("stationary", stationary)):
            if args.only in (None, name):
                fn(args.data, tmp)
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
