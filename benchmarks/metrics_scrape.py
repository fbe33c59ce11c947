"""Cost of rendering ``/metrics`` for a fleet (issue 14, item 4: a scrape under 250 ms at 200 models).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/metrics_scrape.py [--models 200] [--profile]

Builds an ``NlpmonMetrics`` as ``nlpmon run`` holds it for ``--models`` models, each with its own series
(``max_models`` = the number of models, as benchmarks/fleet.py runs): ``--real`` distinct real models
(a ``Pipeline`` over a ``SyntheticStream`` each, auto-baseline of ``--baseline`` events, then
``--events`` production events, the last quarter drifted) give their ``ModelMetrics`` views, which are
copied under the other names (``m000``, ``m001``...), so every model has the families and label sets of a
real model. A runner copy, batch histograms and an alarm per model fill the process-level families.

Then renders the registry ``--repeat`` times with each renderer (prometheus_client's ``generate_latest``,
the reference, and nlpmon's ``render_exposition``: every value new, none, and every value new but rendered
beforehand by ``prerender_exposition``, as the service's loop does after a refresh, so that what is timed is
the scrape's own part): alone, then while a busy pure-Python thread runs (a
stand-in for the consumer loop, which holds the GIL most of the time). Prints the exposition's size, the
series per family (top 10) and the render times (median / max) with their ratio to ``generate_latest``
measured in the same run. ``--profile`` prints the top of a cProfile of one ``generate_latest``.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import json
import pstats
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nlpmon.demo import SyntheticStream  # noqa: E402
from nlpmon.kafka.runner_metrics import RunnerMetrics  # noqa: E402
from nlpmon.monitor.config import MonitorConfig  # noqa: E402
from nlpmon.monitor.pipeline import Pipeline  # noqa: E402
from nlpmon.monitor.views import ModelMetrics  # noqa: E402
from nlpmon.observability.exporter import NlpmonMetrics  # noqa: E402
from nlpmon.observability.exposition import (  # noqa: E402
    LabelledFamily,
    prerender_exposition,
    render_exposition,
)


@dataclasses.dataclass(frozen=True)
class FakeAlarm:
    model: str
    model_version: str
    signal: str


def real_views(n: int, baseline: int, events: int) -> list[ModelMetrics]:
    """``n`` real models' metrics views: auto-baseline, calibration, production (drifting at 3/4)."""
    config = MonitorConfig(auto_baseline_events=baseline, min_reference_events=min(200, baseline),
                           calibration_splits=2)
    out: list[ModelMetrics] = []
    for k in range(n):
        pipe = Pipeline(config)
        stream = SyntheticStream(seed=1000 + k, model=f"real{k}", drift_at=baseline + (3 * events) // 4)
        lines = [json.dumps(e) for e in stream.events(baseline + events)]
        for i in range(0, len(lines), 250):
            pipe.process_lines(lines[i:i + 250])
        pipe.finish()
        out.extend(pipe.metrics_views().values())
    return out


def fleet_metrics(models: int, views: list[ModelMetrics]) -> NlpmonMetrics:
    """An ``NlpmonMetrics`` fed as the loop feeds it, for ``models`` models copied from ``views``."""
    clock = [1.7e9]
    metrics = NlpmonMetrics(CollectorRegistry(), max_models=models, clock=lambda: clock[0], monotonic=lambda: 5.0)
    fleet = [dataclasses.replace(views[i % len(views)], model=f"m{i:03d}") for i in range(models)]
    alarms = [FakeAlarm(v.model, v.model_version, next(iter(v.signals), "embedding")) for v in fleet]
    metrics.observe_models(fleet, alarms, now=clock[0])
    metrics.observe_models(fleet, now=clock[0] + 1)
    metrics.observe_batch(seconds=0.05, event_timestamps=[clock[0] - 2.0] * 100, rejected_reasons=["schema"] * 3,
                          unkeyed={"predictions": 2})
    runner = RunnerMetrics()
    runner.assigned = tuple(("predictions", p) for p in range(12))
    runner.lag = {("predictions", p): 10 * p for p in range(12)}
    runner.batches = 100
    metrics.observe_runner(runner)
    return metrics


def time_renders(render: Callable[[], bytes], repeat: int, before: Callable[[], None] | None = None) -> list[float]:
    out = []
    for _ in range(repeat):
        if before is not None:
            before()
        t = time.perf_counter()
        render()
        out.append(time.perf_counter() - t)
    return out


class BusyLoop:
    """A pure-Python thread that holds the GIL as the consumer loop does (dictionary and float work)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 600.0  # bounded even if never stopped
        d: dict[int, float] = {}
        while not self._stop.is_set() and time.monotonic() < deadline:
            for i in range(2000):
                d[i % 97] = d.get(i % 97, 0.0) + i * 0.5

    def __enter__(self) -> BusyLoop:
        self._thread.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)


def new_values(registry: CollectorRegistry) -> None:
    """Give every labelled series a new float object of the same value, so that no cached line is reused
    (the worst case: a report refresh that changed every value)."""
    for family in registry._collector_to_names:
        if isinstance(family, LabelledFamily):
            for series in family.series():
                series.set(float(repr(series.value)))  # a write: the family's cached render is stale


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.1f} / {max(xs) * 1000:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--real", type=int, default=4, help="distinct real models the fleet is copied from")
    ap.add_argument("--baseline", type=int, default=300)
    ap.add_argument("--events", type=int, default=1200)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    views = real_views(args.real, args.baseline, args.events)
    metrics = fleet_metrics(args.models, views)
    registry = metrics.registry
    print(f"built {args.models} models from {args.real} real ones in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    reference = generate_latest(registry)
    fast = render_exposition(registry)
    same = _samples(reference) == _samples(fast)
    identical = reference == fast
    families = list(text_string_to_metric_families(reference.decode()))
    per_family = Counter({f.name: len(f.samples) for f in families})
    samples = sum(per_family.values())

    print(f"\n{args.models} models, {samples:,} samples in {len(families)} families, exposition "
          f"{len(reference):,} bytes ({len(reference) / 1024:,.0f} KiB; render_exposition: {len(fast):,} bytes, "
          f"same samples: {same}, identical bytes: {identical})\n")
    print("| family | samples |\n|---|---|")
    for name, n in per_family.most_common(10):
        print(f"| `{name}` | {n:,} |")

    renderers: dict[str, tuple[Callable[[], bytes], Callable[[], None] | None]] = {
        "generate_latest (reference)": (lambda: generate_latest(registry), None),
        "render_exposition, every value new": (lambda: render_exposition(registry), lambda: new_values(registry)),
        "render_exposition, values unchanged": (lambda: render_exposition(registry), None),
        "the scrape after the loop's prerender (every value new)": (
            lambda: render_exposition(registry), lambda: (new_values(registry), prerender_exposition(registry))[0]),
    }
    rows = []
    for busy in (False, True):
        for name, (render, before) in renderers.items():
            render()  # warm
            if busy:
                with BusyLoop():
                    xs = time_renders(render, args.repeat, before)
            else:
                xs = time_renders(render, args.repeat, before)
            rows.append((name, busy, xs))
    print(f"\n| renderer | loop thread | render median / max (ms), {args.repeat} renders | median vs generate_latest |")
    print("|---|---|---|---|")
    for name, busy, xs in rows:
        ref = next(r for n, b, r in rows if b == busy and n.startswith("generate_latest"))
        print(f"| {name} | {'busy' if busy else 'idle'} | {ms(xs)} | "
              f"{statistics.median(xs) / statistics.median(ref):.3f} |")

    if args.profile:
        for name, (render, _) in renderers.items():
            prof = cProfile.Profile()
            prof.enable()
            render()
            prof.disable()
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
            print(f"\n### cProfile of one {name}\n\n```\n{out.getvalue().strip()}\n```")


def _samples(text: bytes) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    out = []
    for f in text_string_to_metric_families(text.decode()):
        for s in f.samples:
            v = s.value
            out.append((s.name, tuple(sorted(s.labels.items())), "nan" if v != v else v))
    return sorted(out, key=lambda x: (x[0], x[1]))


if __name__ == "__main__":
    main()
