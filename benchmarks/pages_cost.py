"""What the model pages cost: the monitor's per-event cost with their evidence kept, the report, the page.

Prints markdown tables; every cost is set against a reference measured in the same run:

* monitor µs/event (384-dim base64 events, batches of 2,000 as in replay and of 20 as a busy service
  polls them) with the page evidence on (defaults) against off (``history_points=0,
  projection_points=0, confidence_sample=0``, the lowest-confidence lists still kept), in one process
  with the runs interleaved; with ``--baseline-tree DIR`` (a source tree of an older nlpmon, e.g.
  ``git archive main | tar -x -C /tmp/base``) also against that code, in another process on the same
  events (run after, so machine load can differ);
* ``ModelMonitor.report()`` after new events (projection and neighbour lookups recomputed) and
  unchanged (cached), against the pre-existing part of the report;
* rendering ``/models/<model>`` (HTML) and encoding ``/api/models/<model>`` (JSON), and a GET of each
  through the real server on 127.0.0.1.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/pages_cost.py [--events 10000] [--baseline-tree DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from nlpmon.demo import SyntheticStream
from nlpmon.events import decode_event
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.observability import pages
from nlpmon.observability.http import ObservabilityServer, json_bytes

OFF = {"history_points": 0, "projection_points": 0, "confidence_sample": 0}

# Runs in this tree or in --baseline-tree (only APIs both have): prints monitor µs/event per batch size.
CHILD = r"""
import importlib.util, json, sys, time
sys.path.insert(0, sys.argv[1])  # older trees import themselves as `service`; the package folder is nlpmon here
spec = importlib.util.spec_from_file_location("nlpmon", sys.argv[1] + "/service/__init__.py",
                                              submodule_search_locations=[sys.argv[1] + "/service"])
nlpmon = importlib.util.module_from_spec(spec)
sys.modules["nlpmon"] = nlpmon
spec.loader.exec_module(nlpmon)
assert nlpmon.__file__.startswith(sys.argv[1]), (nlpmon.__file__, "is not from", sys.argv[1])
from nlpmon.demo import SyntheticStream
from nlpmon.events import decode_event
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
n, batches, configs = int(sys.argv[2]), [int(b) for b in sys.argv[3].split(",")], json.loads(sys.argv[4])
ref = [json.dumps(e) for e in SyntheticStream(seed=1).events(3000, "reference")]
s = SyntheticStream(seed=1, drift_at=3000 + n // 2)
s.index = 3000
lines = [json.dumps(e) for e in s.events(n)]
events = [decode_event(x) for x in lines]
cfgs = [MonitorConfig(**c) for c in configs]
base = MonitorSet(cfgs[0])
base.process_lines(ref)
base.process_lines(lines[:1])
snap = base.snapshot()  # the page settings do not change the state: one calibration serves every config
best = [[float("inf")] * len(batches) for _ in cfgs]
for _ in range(3):  # rounds interleave the configs, so a change of machine load hits all of them alike
    for c, cfg in enumerate(cfgs):
        for j, b in enumerate(batches):
            ms = MonitorSet(cfg)
            ms.restore(snap)
            t0 = time.perf_counter()
            for i in range(0, n, b):
                ms.process_events(events[i:i + b], list(range(min(b, n - i))))
            best[c][j] = min(best[c][j], time.perf_counter() - t0)
print(json.dumps([{b: 1e6 * t / n for b, t in zip(batches, row)} for row in best]))
"""


def monitor_cost(tree: str, n: int, batches: list[int], configs: list[dict[str, Any]]) -> list[dict[int, float]]:
    """µs/event per batch size for each config, measured in one process of ``tree`` (rounds interleaved)."""
    res = subprocess.run([sys.executable, "-c", CHILD, tree, str(n), ",".join(map(str, batches)),
                          json.dumps(configs)], capture_output=True, text=True, check=True, timeout=3600)
    return [{int(k): v for k, v in row.items()} for row in json.loads(res.stdout.strip().splitlines()[-1])]


def timed(fn: Callable[[], Any], repeats: int = 20) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10000)
    ap.add_argument("--baseline-tree", help="source tree of an older nlpmon to compare the monitor's cost with")
    ap.add_argument("--no-compare", action="store_true", help="skip the on/off (and baseline) monitor runs")
    args = ap.parse_args()
    here = str(Path(__file__).resolve().parents[1])
    batches = [2000, 20]
    n = args.events
    print(f"python {sys.version.split()[0]}; {n} events of 384-dim base64 embeddings, reference 3,000, "
          "best of 3\n")
    if not args.no_compare:
        compare(here, n, batches, args.baseline_tree)
    share(n, batches)
    pages_and_api()
    return 0


def compare(here: str, n: int, batches: list[int], baseline_tree: str | None) -> None:
    on, off = monitor_cost(here, n, batches, [{}, OFF])
    base = monitor_cost(baseline_tree, n, batches, [{}])[0] if baseline_tree else None
    print("| batch | monitor µs/event, page evidence on | off | on / off |"
          + (" baseline tree | on / baseline |" if base else ""))
    print("|---|---|---|---|" + ("---|---|" if base else ""))
    for b in batches:
        row = f"| {b:,} | {on[b]:.1f} | {off[b]:.1f} | {on[b] / off[b]:.3f} |"
        if base:
            row += f" {base[b]:.1f} | {on[b] / base[b]:.3f} |"
        print(row)



def share(n: int, batches: list[int]) -> None:
    """The share of the monitor's time spent collecting the page evidence, timed inside the same runs."""
    ref = [json.dumps(e) for e in SyntheticStream(seed=1).events(3000, "reference")]
    s = SyntheticStream(seed=1, drift_at=3000 + n // 2)
    s.index = 3000
    lines = [json.dumps(e) for e in s.events(n)]
    events = [decode_event(x) for x in lines]
    first = MonitorSet(MonitorConfig())
    first.process_lines(ref)
    first.process_lines(lines[:1])
    snap = first.snapshot()
    print("\n| batch | monitor µs/event | of which page evidence µs/event | share |")
    print("|---|---|---|---|")
    for b in batches:
        ms = MonitorSet(MonitorConfig())
        ms.restore(snap)
        mon = ms.monitors[("demo-ner", "1")]
        spent = [0.0]

        def timing(fn: Callable[..., Any], spent: list[float] = spent) -> Callable[..., Any]:
            def wrapped(*a: Any, **k: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    spent[0] += time.perf_counter() - t0
            return wrapped

        mon.evidence.history.add = timing(mon.evidence.history.add)  # type: ignore[method-assign]
        mon.evidence.track_examples = timing(mon.evidence.track_examples)  # type: ignore[method-assign]
        recent = mon.evidence.recent_embeddings
        recent.add = timing(recent.add)  # type: ignore[method-assign]
        t0 = time.perf_counter()
        for i in range(0, n, b):
            ms.process_events(events[i:i + b], list(range(min(b, n - i))))
        total = time.perf_counter() - t0
        print(f"| {b:,} | {1e6 * total / n:.1f} | {1e6 * spent[0] / n:.2f} | "
              f"{spent[0] / total:.1%} |")



def pages_and_api() -> None:
    """report(), page rendering and the API on one drifted model."""
    ref = [json.dumps(e) for e in SyntheticStream(seed=1).events(3000, "reference")]
    s = SyntheticStream(seed=1, drift_at=4000)
    s.index = 3000
    lines = [json.dumps(e) for e in s.events(2000)]
    ms = MonitorSet(MonitorConfig())
    ms.process_lines(ref)
    ms.process_lines(lines[:1900])
    mon = ms.monitors[("demo-ner", "1")]
    tail = [decode_event(x) for x in lines[1900:]]
    mon.report()

    def fresh_report() -> None:  # as after new events: the page views are recomputed
        mon.evidence.invalidate()
        mon.report()

    prof = mon.profile
    assert prof is not None
    old_part = timed(lambda: (mon.label_confidence_report(),
                              [mon.evidence.signal_evidence(k, w, prof) for k, w in mon.windows.items()],
                              [w.current() for w in mon.windows.values()]))
    t_fresh, t_cached = timed(fresh_report), timed(mon.report)
    mon.process(tail[:50])
    rep = {"key": "demo-ner/1", **mon.report()}
    t_page = timed(lambda: pages.model_page("demo-ner/1", rep, time.time(), 5))
    t_json = timed(lambda: json_bytes(rep))
    reports = {"demo-ner/1": rep}
    srv = ObservabilityServer(CollectorRegistry(), reports=lambda: reports, readiness=dict, last_poll=lambda: None)
    srv.start()
    try:
        def fetch(path: str) -> int:
            with urllib.request.urlopen(srv.url + path, timeout=10) as r:
                return len(r.read())

        size_page, size_json = fetch("/models/demo-ner"), fetch("/api/models/demo-ner")
        t_get_page = timed(lambda: fetch("/models/demo-ner"))
        t_get_json = timed(lambda: fetch("/api/models/demo-ner"))
    finally:
        srv.stop()
    print("\n| what (one drifted model) | ms | against |")
    print("|---|---|---|")
    print(f"| report() of the pre-existing evidence (reference) | {1e3 * old_part:.2f} | 1.00 |")
    print(f"| report() after new events (projection, neighbours recomputed) | {1e3 * t_fresh:.2f} | "
          f"{t_fresh / old_part:.2f} |")
    print(f"| report() unchanged (cached page views) | {1e3 * t_cached:.2f} | {t_cached / old_part:.2f} |")
    print(f"| render /models/<model> HTML ({size_page / 1024:.0f} KiB) | {1e3 * t_page:.2f} | "
          f"{t_page / t_json:.2f} x JSON |")
    print(f"| encode /api/models/<model> JSON ({size_json / 1024:.0f} KiB) | {1e3 * t_json:.2f} | 1.00 |")
    print(f"| GET /models/<model> on 127.0.0.1 | {1e3 * t_get_page:.2f} | {t_get_page / t_get_json:.2f} x API |")
    print(f"| GET /api/models/<model> on 127.0.0.1 | {1e3 * t_get_json:.2f} | 1.00 |")


if __name__ == "__main__":
    sys.exit(main())
