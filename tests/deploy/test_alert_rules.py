"""The shipped Prometheus rules, Prometheus config and Alertmanager config, checked with the real tools.

promtool checks and unit-tests the rules (deploy/prometheus/rules/nlpmon.rules.test.yml) and checks the
Prometheus config; amtool checks the Alertmanager config and its routing. Pure-Python tests check that the
rules only use metrics nlpmon exports, that every alert is unit-tested firing and silent, and documented.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from nlpmon.observability.metrics import metric_catalogue
from tests.deploy.conftest import (
    ALERTMANAGER_CONFIG,
    PROMETHEUS_CONFIG,
    ROOT,
    RULE_TESTS,
    RULES,
)
from tests.deploy.test_dashboard import promql_problems

Tools = Callable[..., dict[str, str]]
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
EXPECTED_ALERTS = {  # name -> severity; a new alert must be added here, tested and documented
    "NlpmonDown": "critical", "NlpmonTargetMissing": "critical", "NlpmonLoopStalled": "critical",
    "NlpmonCircuitOpen": "critical", "NlpmonConsumerLagGrowing": "warning", "NlpmonInvalidEventsHigh": "warning",
    "NlpmonDriftDetected": "warning", "NlpmonConfidenceDrop": "warning", "NlpmonModelSilent": "warning",
    "NlpmonNoReference": "warning", "NlpmonQualityF1Drop": "warning", "NlpmonCalibrationGap": "warning",
    "NlpmonLabelsNotJoining": "warning", "NlpmonQualityPartialF1Drop": "warning", "NlpmonStateLost": "critical",
}
PER_MODEL = {"NlpmonDriftDetected", "NlpmonConfidenceDrop", "NlpmonModelSilent", "NlpmonNoReference",
             "NlpmonQualityF1Drop", "NlpmonCalibrationGap", "NlpmonLabelsNotJoining", "NlpmonQualityPartialF1Drop"}


def run(cmd: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_promtool_check_rules(tools: Tools) -> None:
    out = run([tools("promtool")["promtool"], "check", "rules", str(RULES)]).stdout
    assert f"SUCCESS: {len(rules())} rules found" in out


def test_promtool_unit_tests(tools: Tools) -> None:
    out = run([tools("promtool")["promtool"], "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent).stdout
    assert "SUCCESS" in out


def test_promtool_check_config(tools: Tools, tmp_path: Path) -> None:
    """The config names its rule file relative to itself: check a copy of deploy/prometheus."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_CONFIG.parent, copy)
    out = run([tools("promtool")["promtool"], "check", "config", "prometheus.yml"], cwd=copy).stdout
    assert "SUCCESS: 1 rule files found" in out and f"SUCCESS: {len(rules())} rules found" in out
    cfg = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert [t for s in jobs["nlpmon"]["static_configs"] for t in s["targets"]] == ["nlpmon:9308"]
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_amtool_check_config(tools: Tools) -> None:
    out = run([tools("amtool")["amtool"], "check-config", str(ALERTMANAGER_CONFIG)]).stdout
    assert "SUCCESS" in out and "2 receivers" in out


@pytest.mark.parametrize(("labels", "receiver"), [
    ("alertname=NlpmonDriftDetected model=x severity=warning", "team"),
    ("alertname=NlpmonConfidenceDrop model=x severity=warning", "team"),
    ("alertname=NlpmonConsumerLagGrowing topic=t partition=0 severity=warning", "team"),
    ("alertname=NlpmonDown instance=nlpmon:9308 severity=critical", "pager"),
    ("alertname=NlpmonCircuitOpen instance=nlpmon:9308 severity=critical", "pager"),
    ("alertname=NlpmonDriftDetected model=x severity=critical", "pager"),
    ("alertname=NlpmonQualityF1Drop model=x severity=warning", "team"),
    ("alertname=NlpmonLabelsNotJoining model=x severity=warning", "team"),
])
def test_amtool_routes(tools: Tools, labels: str, receiver: str) -> None:
    out = run([tools("amtool")["amtool"], "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
               f"--verify.receivers={receiver}", *labels.split()]).stdout
    assert out.strip() == receiver


def test_drift_alerts_grouped_by_alertname_and_model() -> None:
    cfg = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    drift = [r for r in cfg["route"]["routes"] if any("NlpmonDriftDetected" in m for m in r.get("matchers", []))]
    assert len(drift) == 1 and drift[0]["group_by"] == ["alertname", "model"] and drift[0]["receiver"] == "team"
    quality = [r for r in cfg["route"]["routes"] if any("NlpmonQualityF1Drop" in m for m in r.get("matchers", []))]
    assert len(quality) == 1 and quality[0]["group_by"] == ["alertname", "model"]
    assert all(a in quality[0]["matchers"][0] for a in ("NlpmonCalibrationGap", "NlpmonLabelsNotJoining"))
    critical = [r for r in cfg["route"]["routes"] if 'severity="critical"' in r.get("matchers", [])]
    assert critical and critical[0]["receiver"] == "pager"
    assert cfg["route"]["routes"].index(critical[0]) == 0, "critical alerts must be routed before the others"


def used_metric_names(rule: dict[str, Any]) -> set[str]:
    """Crude PromQL scan: every token starting with nlpmon_ in the expression and the annotation templates."""
    text = " ".join([rule["expr"], *rule.get("annotations", {}).values()])
    return set(re.findall(r"\bnlpmon_[a-z0-9_]+", text))


def test_rules_only_use_exported_metrics() -> None:
    catalogue = {m["name"]: m["type"] for m in metric_catalogue()}
    unknown = {}
    for rule in rules():
        for name in used_metric_names(rule):
            base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES
                         if name.endswith(s) and catalogue.get(name[: -len(s)]) == "histogram"), name)
            if base not in catalogue:
                unknown.setdefault(rule["alert"], set()).add(name)
    assert not unknown, f"metrics not in metric_catalogue(): {unknown}"
    assert used_metric_names({"expr": "rate(nlpmon_batch_seconds_bucket[5m])"}) == {"nlpmon_batch_seconds_bucket"}


_QUERY_TEMPLATE = re.compile(r'printf\s+\\?"((?:[^"\\]|\\.)*?)\\?"\s+\$labels')


def annotation_queries(rule: dict[str, Any]) -> list[str]:
    """The PromQL of every ``printf "...%q..." $labels... | query`` template in the annotations, with the
    %q placeholders filled."""
    out = []
    for text in rule.get("annotations", {}).values():
        for m in _QUERY_TEMPLATE.finditer(text):
            out.append(m.group(1).replace('\\"', '"').replace("%q", '"x"'))
    return out


def test_rule_expressions_and_annotation_queries_use_exported_labels() -> None:
    """A misspelt label in an expression matches nothing (the alert never fires); in an annotation query
    the annotation shows "unknown". Both are checked against the catalogue's labels (plus job, instance)."""
    problems = {}
    for rule in rules():
        for expr in (rule["expr"], *annotation_queries(rule)):
            if found := promql_problems(expr):
                problems.setdefault(rule["alert"], []).append((expr, found))
    assert not problems
    assert sum(len(annotation_queries(r)) for r in rules()) >= 5  # the templates were found
    bad = {"annotations": {"d": 'x {{ with printf "nlpmon_quality{model=%q,lable=\\"f1\\"}" $labels.model | query }}'}}
    assert annotation_queries(bad) == ['nlpmon_quality{model="x",lable="f1"}']
    assert promql_problems(annotation_queries(bad)[0])


def test_alerts_have_severity_for_and_links() -> None:
    got = {r["alert"]: r for r in rules()}
    assert {n: r["labels"]["severity"] for n, r in got.items()} == EXPECTED_ALERTS
    for name, r in got.items():
        assert r.get("for"), f"{name} has no for: duration"
        ann = r["annotations"]
        assert ann["summary"] and ann["description"], name
        assert ann["runbook"] == f"docs/alerts.md#{name.lower()}", name
        if name in PER_MODEL:
            assert "/models/{{ $labels.model }}?version={{ $labels.model_version }}" in ann["dashboard"], name


def test_every_alert_unit_tested_firing_and_silent() -> None:
    cases = [c for t in yaml.safe_load(RULE_TESTS.read_text())["tests"] for c in t.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    names = {r["alert"] for r in rules()}
    assert names - firing == set(), "alerts without a firing unit test"
    assert names - silent == set(), "alerts without a silent unit test"


def test_every_alert_documented() -> None:
    doc = (ROOT / "docs" / "alerts.md").read_text()
    for r in rules():
        heading = re.search(rf"^## {r['alert']}\n(.*?)(?=^## |\Z)", doc, re.M | re.S)
        assert heading, f"docs/alerts.md has no '## {r['alert']}' section"
        section = heading.group(1)
        assert r["labels"]["severity"] in section and f"for {r['for']}" in section, \
            f"docs/alerts.md: {r['alert']} must state its severity and 'for {r['for']}'"
