"""The ``/metrics`` body: ``render_exposition``, prometheus_client's text format 0.0.4 rendered fast for the
labelled families of ``NlpmonMetrics`` (``LabelledFamily``), which hold most of the samples of a fleet.

``generate_latest`` costs about 5 us per sample (a ``Sample`` with a label dict per series, then every label
name validated and every value escaped on every scrape): 24,000 samples at 200 models took 180 ms alone and
twice that while the consumer loop held the GIL (benchmarks/metrics_scrape.py, docs/benchmarks.md). A
``LabelledFamily`` renders each series' ``name{labels}`` prefix once, when the series is created, and keeps
its last line while the value does not change, so a scrape is a join of cached strings.

The output is what ``generate_latest`` writes for the same registry: the same families in the same order
(each family's lines together, a counter's ``_created`` samples in their own gauge family after it), the
same sample names, labels (escaped the same way, sorted by name) and values (``floatToGoString``); the tests
parse both and compare every sample. Collectors other than ``LabelledFamily`` are rendered by
``generate_latest`` itself, one collector at a time.

Each family also keeps its whole rendered text, encoded, with the generation it was rendered at: every
write (a value set, a series added or removed) moves the family's generation on, and a render whose
generation is current is reused. ``prerender_exposition`` renders the families that changed on the calling
thread: the service calls it on the consumer loop right after a metrics refresh, where the values change,
so that a scrape joins bytes rendered already and holds the GIL for a few milliseconds rather than for the
tens of milliseconds of rendering 24,000 lines, which a busy loop thread stretches to hundreds
(benchmarks/metrics_scrape.py). A family written after the prerender (between refreshes) is rendered again
by the next scrape, so a scrape is never stale.

Thread safety: writers (``labels``, ``remove``, ``set``, ``inc``) run on one thread (the consumer loop);
``render_exposition``, ``prerender_exposition`` and ``collect`` may run concurrently on any thread. A value
is one float attribute, replaced whole (atomic under the GIL); the series dict is copied under the family's
lock. The generation is read before a render and stored with its text, so a render that raced a write
carries an old generation and is rendered again by the next reader; a render never replaces a newer one.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Literal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["LabelledFamily", "Series", "prerender_exposition", "render_exposition"]

FamilyType = Literal["counter", "gauge"]


def _created_enabled() -> bool:
    """prometheus_client's switch for counters' ``_created`` samples (the same environment variable)."""
    return os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in ("true", "1", "t")


def _escape_value(value: str) -> str:
    """A label value as the text format escapes it (backslash, newline, double quote)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


class Series:
    """One labelled series: a float value, with its rendered line prefix and its last rendered line."""

    __slots__ = ("_counter", "_family", "_line", "created", "created_prefix", "labels", "prefix", "value")

    def __init__(self, family: LabelledFamily, labels: dict[str, str], prefix: str, created_prefix: str,
                 counter: bool) -> None:
        self._family = family  # its generation moves on with every write
        self.labels = labels
        self.prefix = prefix  # 'name{a="x",b="y"} '
        self.created_prefix = created_prefix  # 'name_created{...} ' (counters)
        self.value = 0.0
        self.created = time.time()
        self._counter = counter
        self._line: tuple[float, str] | None = None  # (the value object it was rendered from, line)

    def set(self, value: float) -> None:
        """Set a gauge's value."""
        self.value = float(value)
        self._family.generation += 1

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount``; a counter raises ValueError on a negative one (as prometheus_client does)."""
        if self._counter and amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value = self.value + float(amount)
        self._family.generation += 1

    def line(self) -> str:
        """``prefix value\\n``, rendered again only when the value changed (race-free: the cached line is
        keyed by the very float object it was rendered from)."""
        value = self.value
        cached = self._line
        if cached is not None and cached[0] is value:
            return cached[1]
        text = f"{self.prefix}{floatToGoString(value)}\n"
        self._line = (value, text)
        return text


class LabelledFamily(Collector):
    """A labelled gauge or counter whose series render from cached prefixes (see the module docstring).

    Quacks like a prometheus_client labelled metric where ``NlpmonMetrics`` needs it: ``labels(*values)``
    returns the series (created at 0 on first use), ``remove(*values)`` drops it. ``name`` is the exposed
    name (a counter's ends in ``_total``). Raises ValueError on a wrong number of label values.
    """

    def __init__(self, name: str, documentation: str, type_: FamilyType, labelnames: Sequence[str]) -> None:
        if not labelnames:
            raise ValueError(f"{name}: a LabelledFamily needs label names")
        self.type = type_
        self.base = name.removesuffix("_total") if type_ == "counter" else name
        self.sample_name = f"{self.base}_total" if type_ == "counter" else name
        self.documentation, self.labelnames = documentation, tuple(labelnames)
        self._series: dict[tuple[str, ...], Series] = {}
        self._lock = threading.Lock()
        self._order = sorted(range(len(self.labelnames)), key=lambda i: self.labelnames[i])
        help_ = _escape_help(documentation)
        self._head = f"# HELP {self.sample_name} {help_}\n# TYPE {self.sample_name} {type_}\n"
        self._created_head = f"# HELP {self.base}_created {help_}\n# TYPE {self.base}_created gauge\n"
        self.generation = 0  # moved on by every write (one writer thread)
        self._text: tuple[int, bool, bytes] | None = None  # (generation, with _created, the encoded render)

    def labels(self, *values: str) -> Series:
        series = self._series.get(values)
        if series is not None:
            return series
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.sample_name} takes labels {self.labelnames}, got {values}")
        values = tuple(str(v) for v in values)
        body = ",".join(f'{self.labelnames[i]}="{_escape_value(values[i])}"' for i in self._order)
        with self._lock:
            series = self._series.get(values)
            if series is None:
                series = self._series[values] = Series(
                    self, dict(zip(self.labelnames, values, strict=True)), f"{self.sample_name}{{{body}}} ",
                    f"{self.base}_created{{{body}}} ", self.type == "counter")
                self.generation += 1
        return series

    def remove(self, *values: str) -> None:
        with self._lock:
            if self._series.pop(tuple(str(v) for v in values), None) is not None:
                self.generation += 1

    def series(self) -> list[Series]:
        """The current series (a copy of the list, taken under the lock)."""
        with self._lock:
            return list(self._series.values())

    def render(self) -> str:
        """This family in the text format, as ``generate_latest`` writes it."""
        rows = self.series()
        out = [self._head, *[s.line() for s in rows]]
        if self.type == "counter" and rows and _created_enabled():
            out.append(self._created_head)
            out.extend([f"{s.created_prefix}{floatToGoString(s.created)}\n" for s in rows])
        return "".join(out)

    def text(self) -> bytes:
        """``render()`` encoded, reused while no write happened since it was rendered (on any thread)."""
        generation, created = self.generation, _created_enabled()
        cached = self._text
        if cached is not None and cached[0] == generation and cached[1] == created:
            return cached[2]
        text = self.render().encode("utf-8")
        with self._lock:  # keep the newest of concurrent renders
            if self._text is None or self._text[0] <= generation:
                self._text = (generation, created, text)
        return text

    def describe(self) -> Iterable[Metric]:
        return [Metric(self.base, self.documentation, self.type)]

    def collect(self) -> Iterable[Metric]:
        family = Metric(self.base, self.documentation, self.type)
        created = self.type == "counter" and _created_enabled()
        for s in self.series():
            family.add_sample(self.sample_name, dict(s.labels), s.value)
            if created:
                family.add_sample(f"{self.base}_created", dict(s.labels), s.created)
        return [family]


def _collectors(registry: CollectorRegistry) -> list[Collector] | None:
    """The registry's collectors in registration order (the order ``collect`` follows), or None when this
    prometheus_client keeps them elsewhere or the registry has target info (then ``generate_latest`` renders
    it whole)."""
    names = getattr(registry, "_collector_to_names", None)
    lock = getattr(registry, "_lock", None)
    if not isinstance(names, dict) or lock is None or registry.get_target_info():
        return None
    with lock:
        return list(names)


def render_exposition(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format 0.0.4: ``generate_latest(registry)``'s samples, families
    and order, with every ``LabelledFamily`` rendered from its cached lines. Never blocks on the writers
    beyond a dict copy per family."""
    collectors = _collectors(registry)
    if collectors is None:
        return generate_latest(registry)
    return b"".join([c.text() if isinstance(c, LabelledFamily) else generate_latest(c) for c in collectors])


def prerender_exposition(registry: CollectorRegistry) -> int:
    """Render, on the calling thread, every ``LabelledFamily`` of ``registry`` written since its last render,
    so that the next ``render_exposition`` reuses it; returns how many were rendered."""
    rendered = 0
    for c in _collectors(registry) or ():
        if isinstance(c, LabelledFamily) and (c._text is None or c._text[0] != c.generation):
            c.text()
            rendered += 1
    return rendered
