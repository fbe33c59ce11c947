"""Sizes of /api/models, the overview page / and one progress line with 10,000 model versions, in their
unbounded form (every model, as before the caps) and as served now, measured in one run.

    .venv/bin/python benchmarks/bounded_outputs.py [--models 10000]
"""

from __future__ import annotations

import argparse
import json

from nlpmon.app.service import progress_line
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.monitor.page_view import ModelSummary
from nlpmon.observability import pages
from nlpmon.observability.http import json_bytes, page_of_models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=10_000)
    args = ap.parse_args()
    ms = MonitorSet(MonitorConfig())
    ms.process_lines([json.dumps({"event_id": str(i), "model": f"ner-{i:05d}", "text": "x"})
                      for i in range(args.models)])
    reports = {k: ModelSummary.of(k, v) for k, v in ms.page_views().items()}
    metrics = ms.metrics_views()
    sizes = {
        "/api/models": (len(json_bytes(page_of_models(reports, {}, default_limit=None).to_json())),
                        len(json_bytes(page_of_models(reports, {}).to_json()))),
        "/ (overview page)": (len(pages.overview_page(page_of_models(reports, {}, default_limit=None), 0.0, 5)),
                              len(pages.overview_page(page_of_models(reports, {}), 0.0, 5))),
        "progress line": (len(progress_line(10**6, 1e4, 0, metrics, max_models=None)),
                          len(progress_line(10**6, 1e4, 0, metrics))),
    }
    print(f"{args.models:,} model versions\n")
    print("| output | every model (before) | bytes now | ratio |")
    print("|---|---:|---:|---:|")
    for name, (before, after) in sizes.items():
        print(f"| {name} | {before:,} | {after:,} | {before / after:,.0f}x smaller |")


if __name__ == "__main__":
    main()
