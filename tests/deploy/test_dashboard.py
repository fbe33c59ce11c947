"""Static checks of the Grafana dashboard and its provisioning: every PromQL expression names only metrics
nlpmon exports (metric_catalogue(); histograms as _bucket/_sum/_count) plus `up`, with their real labels;
every panel has a title; the provisioning files point at the mounted paths of docker-compose.yml."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nlpmon.observability.metrics import metric_catalogue

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "nlpmon.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "nlpmon.yml"
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
TARGET_LABELS = {"instance", "job"}  # added by Prometheus to every scraped series


def exported_series() -> dict[str, set[str]]:
    """Series name -> label names, as Prometheus stores them after scraping nlpmon."""
    series: dict[str, set[str]] = {"up": set(TARGET_LABELS)}
    for m in metric_catalogue():
        labels = set(m["labels"]) | TARGET_LABELS
        if m["type"] == "histogram":
            series[m["name"] + "_bucket"] = labels | {"le"}
            series[m["name"] + "_sum"] = labels
            series[m["name"] + "_count"] = labels
        else:
            series[m["name"]] = labels
    return series


SERIES = exported_series()

# --- a small PromQL reader: enough to list metric names, matcher labels, grouping labels ---------------------
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_IDENT = re.compile(r"(?<![\w.])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan", "Inf", "NaN"}
_LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")


def read_promql(expr: str) -> tuple[list[str], list[tuple[str | None, set[str]]], list[set[str]]]:
    """(metric names, [(selector's metric or None, its matcher labels)], [grouping label sets])."""
    s = _STRING.sub('""', expr)
    s = _GRAFANA_VAR.sub("0", s)
    s = _RANGE.sub("", s)
    groupings = [{x.strip() for x in m.group(2).split(",") if x.strip()} for m in _GROUPING.finditer(s)]
    s = _GROUPING.sub(" ", s)
    selectors: list[tuple[str | None, set[str]]] = []
    for m in _SELECTOR.finditer(s):
        selectors.append((m.group(1), set(_MATCHER.findall(m.group(2)))))
    s = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", s)
    names = [n for n in _IDENT.findall(s) if n not in _KEYWORDS]
    return names, selectors, groupings


def promql_problems(expr: str, legend: str = "") -> list[str]:
    """Why ``expr`` would not work on nlpmon's series (empty: fine)."""
    names, selectors, groupings = read_promql(expr)
    problems = [f"unknown metric {n!r}" for n in names if n not in SERIES]
    if not names:
        problems.append("names no metric")
    for metric, labels in selectors:
        if metric is None:
            problems.append("selector without a metric name")
        elif metric in SERIES and not labels <= SERIES[metric]:
            problems.append(f"{metric} has no label(s) {sorted(labels - SERIES[metric])}")
    known = set().union(*(SERIES.get(n, set()) for n in names)) if names else set()
    for group in groupings:
        if not group <= known:
            problems.append(f"grouping by label(s) {sorted(group - known)} that {names} lack")
    wanted = set(_LEGEND_LABEL.findall(legend))
    available = set().union(*groupings) if groupings else known
    if not wanted <= available:
        problems.append(f"legend {legend!r} uses label(s) {sorted(wanted - available)} the result lacks")
    return problems


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*),\s*)?([A-Za-z_]\w*)\s*\)\s*$", re.S)


def variable_query_problems(query: str) -> list[str]:
    m = _LABEL_VALUES.match(query)
    if m is None:
        return promql_problems(query)
    expr, label = m.group(1), m.group(2)
    if expr is None:  # label_values(label): any series carrying it
        return [] if any(label in labels for labels in SERIES.values()) else [f"no series has label {label!r}"]
    problems = promql_problems(expr)
    names, _, _ = read_promql(expr)
    if not any(label in SERIES.get(n, set()) for n in names):
        problems.append(f"{names} have no label {label!r}")
    return problems


# --- the dashboard -----------------------------------------------------------------------------------------
def load_dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels") or [])  # rows (collapsed ones hold their panels)


def all_targets() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{p.get('title')}/{t.get('refId')}", t) for p in walk_panels(load_dashboard()["panels"])
            for t in p.get("targets") or []]


def query_variables() -> list[dict[str, Any]]:
    return [v for v in load_dashboard()["templating"]["list"] if v.get("type") == "query"]


def _variable_query(v: dict[str, Any]) -> str:
    q = v.get("query")
    return str(q["query"] if isinstance(q, dict) else q)


def test_dashboard_parses_with_model_and_version_variables() -> None:
    d = load_dashboard()
    assert d["schemaVersion"] >= 37
    assert d["uid"] and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert _variable_query(variables["model"]) == "label_values(nlpmon_events_total, model)"
    assert re.fullmatch(r"label_values\(nlpmon_events_total\{.*\}, model_version\)",
                        _variable_query(variables["version"]))
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"


def test_every_panel_has_a_title_an_id_and_a_place() -> None:
    panels = list(walk_panels(load_dashboard()["panels"]))
    assert panels
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        assert str(p.get("title", "")).strip(), f"panel {p.get('id')} has no title"
        pos = p["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p.get("targets"), f"{p['title']}: no query"


@pytest.mark.parametrize(("where", "target"), all_targets(), ids=[w for w, _ in all_targets()])
def test_expression_uses_only_exported_metrics_and_labels(where: str, target: dict[str, Any]) -> None:
    assert not promql_problems(target["expr"], target.get("legendFormat", "")), where


@pytest.mark.parametrize("variable", query_variables(), ids=[v["name"] for v in query_variables()])
def test_template_variable_queries_use_exported_metrics(variable: dict[str, Any]) -> None:
    assert not variable_query_problems(_variable_query(variable))


def test_every_query_uses_the_datasource_variable() -> None:
    ref = {"type": "prometheus", "uid": "${datasource}"}
    for p in walk_panels(load_dashboard()["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"] == ref, p["title"]
        assert all(t["datasource"] == ref for t in p["targets"]), p["title"]
    assert all(v["datasource"] == ref for v in query_variables())


def test_dashboard_shows_what_operators_need() -> None:
    panels = [p for p in walk_panels(load_dashboard()["panels"]) if p["type"] != "row"]
    exprs = [" ".join(t["expr"] for t in p["targets"]) for p in panels]
    compact = [re.sub(r"\s+", "", e) for e in exprs]

    def panel_with(*needles: str) -> bool:
        return any(all(n in e for n in needles) for e in compact)

    assert panel_with("nlpmon_drift_score{", "nlpmon_drift_threshold{"), "score against threshold"
    assert panel_with("nlpmon_drift_detected{")
    assert panel_with("nlpmon_label_share{", 'window="reference"', 'window="current"')
    assert panel_with("nlpmon_confidence_quantile{")
    assert panel_with("rate(nlpmon_events_total{", "[1m])")
    assert panel_with("nlpmon_consumer_lag")
    assert panel_with("nlpmon_invalid_events_total", "by(reason)")
    assert panel_with("increase(nlpmon_drift_alarms_total")
    assert panel_with("histogram_quantile(0.99,", "rate(nlpmon_batch_seconds_bucket[5m])")
    assert panel_with("nlpmon_circuit_open")
    assert panel_with("nlpmon_event_age_seconds_bucket")
    # tag-sequence validity and span shape (issue 17 items 1, 2)
    for needle in ("nlpmon_drift_score{", "nlpmon_drift_detected{"):
        assert panel_with(needle, 'signal=~"tag_validity|span_length|span_boundary"'), needle
    # quality from delayed ground truth
    assert panel_with('nlpmon_quality{', 'nlpmon_quality_reference{', 'label="__micro__",metric="f1"'), "F1 vs ref"
    assert panel_with('nlpmon_quality{', 'metric="f1",label!~"__.*__"'), "per-label F1"
    assert panel_with("nlpmon_quality_estimated_precision{", 'metric="precision"'), "estimated vs realised"
    assert panel_with("nlpmon_quality_calibration_gap{")
    assert panel_with("nlpmon_quality_drift{")
    assert panel_with("nlpmon_quality_labelled_fraction{")
    assert panel_with("histogram_quantile(", "rate(nlpmon_quality_label_delay_seconds_bucket{")
    assert panel_with("rate(nlpmon_join_total{", "rate(nlpmon_join_events_total{")
    assert panel_with("nlpmon_join_pending{", "nlpmon_join_buffer_bytes{")
    # per model: one row repeated over the model variable
    rows = [p for p in load_dashboard()["panels"] if p["type"] == "row"]
    assert any(r.get("repeat") == "model" for r in rows)


def test_the_promql_reader_catches_mistakes() -> None:
    assert not promql_problems('histogram_quantile(0.99, sum by (le) (rate(nlpmon_batch_seconds_bucket[5m])))')
    assert not promql_problems('sum by (signal) (increase(nlpmon_drift_alarms_total{model=~"$model"}[$__range]))',
                               "{{signal}}")
    assert promql_problems("rate(nlpmon_event_total[1m])")  # typo in the name
    assert promql_problems('nlpmon_drift_score{version="1"}')  # label is model_version
    assert promql_problems("sum by (reason) (nlpmon_drift_score)")  # no such label
    assert promql_problems("sum by (model) (nlpmon_drift_score)", "{{signal}}")  # aggregated away
    assert promql_problems("nlpmon_batch_seconds")  # a histogram is stored as _bucket/_sum/_count
    assert variable_query_problems("label_values(nlpmon_events_total, version)")
    assert not variable_query_problems("label_values(nlpmon_events_total, model)")


# --- provisioning and its mounts ----------------------------------------------------------------------------
def _grafana_mounts() -> dict[str, str]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    out = {}
    for v in compose["services"]["grafana"]["volumes"]:
        src, dst = v.split(":")[:2]
        out[src.removeprefix("./").rstrip("/")] = dst
    return out


def test_datasource_provisioning_points_at_prometheus() -> None:
    config = yaml.safe_load(DATASOURCES.read_text())
    sources = config["datasources"]
    assert len(sources) == 1
    ds = sources[0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090" and ds["isDefault"] is True
    mounts = _grafana_mounts()
    assert mounts["deploy/grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    # the dashboard's $__interval floor matches the scrape interval of the shipped Prometheus config
    assert PROMETHEUS_CONFIG.is_file(), "deploy/prometheus/prometheus.yml is shipped: it is missing"
    scrape = yaml.safe_load(PROMETHEUS_CONFIG.read_text()).get("global", {}).get("scrape_interval", "1m")
    assert ds["jsonData"]["timeInterval"] == scrape


def test_dashboard_provider_points_at_the_mounted_dashboard_folder() -> None:
    config = yaml.safe_load(PROVIDERS.read_text())
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    mounts = _grafana_mounts()
    assert mounts["deploy/grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    folder = str(DASHBOARD.parent.relative_to(ROOT))
    assert provider["options"]["path"] == mounts[folder]
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{mounts[folder]}/{DASHBOARD.name}"


def test_job_matchers_name_a_scrape_job() -> None:
    assert PROMETHEUS_CONFIG.is_file(), "deploy/prometheus/prometheus.yml is shipped: it is missing"
    jobs = {j["job_name"] for j in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    used = {m for _, t in all_targets() for m in re.findall(r'job\s*=\s*"([^"]*)"', t["expr"])}
    assert used and used <= jobs
