"""Observability of nlpmon: Prometheus metrics (declared once in ``metrics``) and the HTTP server.

- ``metrics``: ``METRICS`` (the one declaration of every metric, with help text), ``metric_catalogue()``.
- ``exporter``: ``NlpmonMetrics``, which registers them and keeps them current (fed once per batch).
- ``quality_series``: which samples a report's quality block (delayed ground truth) makes.
- ``histograms``: the vectorised event-age histogram and the mirrored label-delay histogram.
- ``http``: ``ObservabilityServer`` serving ``/metrics``, ``/healthz``, ``/readyz``, the JSON API
  (``/api/models``) and the HTML pages (``/``, ``/models/<model>``).
- ``pages``, ``charts``, ``markup``: the pages, their inline SVG charts and the escaping helpers; the
  bundled script and style sheet are in ``static/``.

Both take what varies as arguments (registry, clocks, address, report and health callables); neither
touches the global Prometheus registry, Kafka or the monitors.
"""

from .exporter import NlpmonMetrics
from .http import HttpBindError, ObservabilityServer, json_bytes, to_jsonable
from .metrics import METRICS, MetricSpec, catalogue_markdown, metric_catalogue

__all__ = [
    "METRICS",
    "HttpBindError",
    "MetricSpec",
    "NlpmonMetrics",
    "ObservabilityServer",
    "catalogue_markdown",
    "json_bytes",
    "metric_catalogue",
    "to_jsonable",
]
