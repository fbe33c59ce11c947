"""One Prometheus exposition from the expositions of the members of ``nlpmon run --processes N``.

The rules (docs/metrics.md, "Several processes"):

- **Counters and histograms** (every sample of the family: ``_total``, ``_bucket``, ``_sum``, ``_count``)
  are summed over the members per label set; ``_created`` samples take the earliest. A member that could
  not be fetched this time, and every earlier incarnation of a restarted member, contributes the counter
  samples it last showed (``kept``), so a merged counter never goes down when a member dies or is slow.
  Events that a killed member processed after its last checkpoint are processed again by the group and
  counted again, exactly as ``increase()`` counts them across a restart of a single process.
- **Gauges of a model** (label names starting with ``model``, ``model_version``) come from one member:
  the one whose ``nlpmon_last_event_timestamp_seconds`` of that model version is the newest (the member
  that holds its partition now; a member that lost it drops its gauges at its next refresh), ties and
  models without that gauge going to the first member in order.
- **Other gauges** (process level: lag, assigned partitions, poll age, build info...) are exported per
  member with an added ``member`` label.
- A member that did not answer has no gauges in the result; that is not an error.

Pure functions over parsed families (``prometheus_client.parser``); no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

MEMBER_LABEL = "member"
NEWEST_GAUGE = "nlpmon_last_event_timestamp_seconds"
SUMMED = ("counter", "histogram")

Families = list[Metric]
SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def parse(text: str) -> Families:
    """The metric families of one exposition in the Prometheus text format (raises ValueError on bad text)."""
    return list(text_string_to_metric_families(text))


def summed_only(families: Iterable[Metric]) -> Families:
    """The counter and histogram families of ``families`` (what a member leaves behind when it dies)."""
    return [f for f in families if _summed(f)]


def _summed(f: Metric) -> bool:
    """Summed over members: counters, histograms, and their ``_created`` families (the minimum)."""
    return f.type in SUMMED or f.name.endswith("_created")


def _key(s: Sample) -> SampleKey:
    return s.name, tuple(sorted(s.labels.items()))


def _shell(f: Metric) -> Metric:
    return Metric(f.name, f.documentation, f.type, f.unit)


def sum_families(sources: Sequence[Families]) -> Families:
    """Counter and histogram families summed per sample name and label set over ``sources`` (``_created``:
    the minimum); gauges and other types are ignored. Family order: first seen."""
    out: dict[str, Metric] = {}
    values: dict[str, dict[SampleKey, float]] = {}
    for families in sources:
        for f in families:
            if not _summed(f):
                continue
            if f.name not in out:
                out[f.name], values[f.name] = _shell(f), {}
            acc = values[f.name]
            for s in f.samples:
                k = _key(s)
                if s.name.endswith("_created"):
                    acc[k] = min(acc.get(k, s.value), s.value)
                else:
                    acc[k] = acc.get(k, 0.0) + s.value
    for name, f in out.items():
        for (sample, labels), v in values[name].items():
            f.add_sample(sample, dict(labels), v)
    return list(out.values())


def _model_of(s: Sample) -> tuple[str, str] | None:
    model, version = s.labels.get("model"), s.labels.get("model_version")
    return None if model is None or version is None else (model, version)


def gauge_owners(live: Mapping[str, Families]) -> dict[tuple[str, str], str]:
    """Which member's gauges stand for each model version: the newest ``nlpmon_last_event_timestamp_seconds``,
    ties (and models without that gauge) to the first member in ``live``'s order showing the model."""
    order = {member: i for i, member in enumerate(live)}
    newest: dict[tuple[str, str], dict[str, float]] = {}
    for member, families in live.items():
        for f in families:
            if f.type != "gauge":
                continue
            for s in f.samples:
                model = _model_of(s)
                if model is None:
                    continue
                seen = newest.setdefault(model, {})
                t = seen.get(member, float("-inf"))
                seen[member] = max(t, s.value) if f.name == NEWEST_GAUGE else t
    return {model: max(seen, key=lambda m: (seen[m], -order[m])) for model, seen in newest.items()}


def merge(live: Mapping[str, Families], kept: Sequence[Families] = (),
          exclude: Iterable[str] = ()) -> Families:
    """The merged families of the members that answered (``live``: member name -> its families, in member
    order) and the counter families ``kept`` from members that did not answer or died (see the module
    docstring for the rules). Families named in ``exclude`` (the parent's own metrics, exposed names such as
    ``nlpmon_member_restarts_total``) are left out, with their ``_created``.

    Every family of ``live`` appears (with its help and type) even when it has no sample, so the merged
    exposition declares what a single process declares."""
    skip = {n.removesuffix("_total") for n in exclude} | {n.removesuffix("_total") + "_created" for n in exclude}
    summed = {f.name: f for f in sum_families([*live.values(), *kept])}
    owners = gauge_owners(live)
    out: dict[str, Metric] = {}
    for member, families in live.items():
        for f in families:
            if f.name in skip:
                continue
            if _summed(f):
                out.setdefault(f.name, summed.get(f.name) or _shell(f))
                continue
            target = out.setdefault(f.name, _shell(f))
            for s in f.samples:
                model = _model_of(s)
                if model is not None:
                    if owners.get(model) == member:
                        target.add_sample(s.name, dict(s.labels), s.value)
                elif f.type == "gauge":
                    target.add_sample(s.name, {**s.labels, MEMBER_LABEL: member}, s.value)
                elif not any(x.name == s.name and x.labels == s.labels for x in target.samples):
                    target.add_sample(s.name, dict(s.labels), s.value)  # info/untyped: once
    for name, f in summed.items():  # counters only a dead member had
        if name not in skip:
            out.setdefault(name, f)
    return list(out.values())


def exposition(families: Iterable[Metric]) -> bytes:
    """``families`` in the Prometheus text format (what ``generate_latest`` writes for them)."""
    from prometheus_client import CollectorRegistry, generate_latest

    class _Fixed:
        def __init__(self, fs: list[Metric]) -> None:
            self.fs = fs

        def collect(self) -> list[Metric]:
            return self.fs

        def describe(self) -> list[Metric]:
            return []

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families)))
    return generate_latest(registry)
