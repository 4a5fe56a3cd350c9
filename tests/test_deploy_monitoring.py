"""
Tests for the fleet monitoring files: C{deploy/prometheus} (alerting and
recording rules, their promtool unit tests, the scrape example) and
C{deploy/grafana/orchestrator.json} (the dashboard).

The rules are checked and unit-tested by the real C{promtool}; every
metric name used by the rules and the dashboard must exist in a real
scrape of the metrics resource (with a webhook notifier and the
prometheus notifier configured, so their families exist too).
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import yaml

from tests.test_metrics import busyExposition, promtool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMETHEUS = os.path.join(ROOT, "deploy", "prometheus")
RULES = os.path.join(PROMETHEUS, "orchestrator.rules.yml")
RULE_TESTS = os.path.join(PROMETHEUS, "orchestrator.rules.test.yml")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "orchestrator.json")

#: Series Prometheus itself adds to every scrape.
PROMETHEUS_SERIES = {"up"}

_CLAUSES = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:$.])([A-Za-z_:][\w:]*)(?!\w)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan"}


def metricNames(expr: str) -> set[str]:
    """
    The metric names a PromQL expression selects: identifiers that are
    neither functions, keywords, label names in matchers or grouping
    clauses, nor Grafana variables.
    """
    text = re.sub(r'"(\\.|[^"\\])*"', '""', expr)  # strings (label values)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = _CLAUSES.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


@pytest.fixture(scope="module")
def rules() -> dict:
    with open(RULES, encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def scrapedNames() -> set[str]:
    """Sample names of a real exposition with every family populated."""
    from prometheus_client.parser import text_string_to_metric_families

    names = set()
    for family in text_string_to_metric_families(busyExposition()):
        names.update(sample.name for sample in family.samples)
    return names


def alerts(rules: dict) -> list[dict]:
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


def test_metricNamesParser():
    """The expression parser finds metric names and ignores functions, labels and clauses."""
    assert metricNames('histogram_quantile(0.95, sum by (instance, le) '
                       '(rate(a_bucket{job="$job", x=~"b|c"}[$__rate_interval]))) / b:c:d offset 5m') == {
        "a_bucket", "b:c:d"}
    assert metricNames("up{job=\"orchestrator\"} == 1 unless on (job, instance) x_info") == {"up", "x_info"}
    assert metricNames("time() - start_time{a=\"b\"}") == {"start_time"}


def test_rulesPassPromtoolCheck():
    """promtool check rules accepts the rule file."""
    done = subprocess.run([promtool(), "check", "rules", RULES], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rulesUnitTestsPass():
    """promtool test rules passes every firing and not-firing case."""
    done = subprocess.run([promtool(), "test", "rules", RULE_TESTS], capture_output=True, text=True,
                          timeout=120, cwd=PROMETHEUS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rulesUnitTestsCanFail(tmp_path):
    """A wrong expectation makes promtool test rules fail (the cases are not vacuous)."""
    with open(RULE_TESTS, encoding="utf-8") as f:
        text = f.read()
    (tmp_path / "orchestrator.rules.yml").write_text(open(RULES, encoding="utf-8").read())
    (tmp_path / "t.yml").write_text(text.replace("process: backend}", "process: worker}", 1))
    done = subprocess.run([promtool(), "test", "rules", "t.yml"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode != 0


def test_everyAlertIsTestedFiringAndNotFiring(rules):
    """Each alert has a promtool case where it fires and one where it must not."""
    with open(RULE_TESTS, encoding="utf-8") as f:
        cases = [case for test in yaml.safe_load(f)["tests"] for case in test.get("alert_rule_test", [])]
    for alert in alerts(rules):
        mine = [c for c in cases if c["alertname"] == alert["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{alert['alert']} never fires in a test"
        assert any(not c["exp_alerts"] for c in mine), f"{alert['alert']} has no not-firing case"


def test_alertsCoverTheFleetConcerns(rules):
    """Alerts exist for backend down, crash loops, giving up, probes, missing metrics and webhooks."""
    names = {a["alert"] for a in alerts(rules)}
    assert names >= {"OrchestratorDown", "OrchestratorMetricsMissing", "OrchestratorProcessDown",
                     "OrchestratorProcessCrashLooping", "OrchestratorProcessGaveUp",
                     "OrchestratorProbeFailing", "OrchestratorProbeSlow",
                     "OrchestratorWebhookDeliveriesFailing"}
    for alert in alerts(rules):
        assert alert["annotations"]["summary"].strip() and alert["annotations"]["description"].strip()
        assert alert["labels"]["severity"] in ("critical", "warning")


def test_ruleMetricNamesExistInARealScrape(rules, scrapedNames):
    """Every metric a rule reads is exported by the orchestrator (or is a recorded rule, or up)."""
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    used = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            used |= metricNames(rule["expr"])
    assert used - recorded - PROMETHEUS_SERIES - scrapedNames == set()
    assert used & scrapedNames  # the parser found real names


def dashboardExpressions(dashboard: dict) -> list[str]:
    exprs = []

    def walk(panels):
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            assert match, query
            exprs.append(match.group(1))
    return exprs


def test_dashboardMetricNamesExistInARealScrape(scrapedNames):
    """Every metric name in the dashboard's queries is in a real scrape of the orchestrator."""
    with open(DASHBOARD, encoding="utf-8") as f:
        dashboard = json.load(f)
    exprs = dashboardExpressions(dashboard)
    assert len(exprs) > 10
    used = set().union(*(metricNames(e) for e in exprs))
    assert used - scrapedNames == set()
    for family in ("orchestrator_process_state", "orchestrator_process_restarts_total",
                   "orchestrator_health_check_duration_seconds_bucket", "orchestrator_process_uptime_seconds",
                   "orchestrator_webhook_deliveries_total"):
        assert family in used


def test_dashboardPanelsAreWellFormed():
    """Panels have unique ids, use the datasource variable and fit the 24-column grid."""
    with open(DASHBOARD, encoding="utf-8") as f:
        dashboard = json.load(f)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"]


def test_scrapeExampleIsValid():
    """The documented scrape configuration passes promtool check config and names the rules."""
    example = os.path.join(PROMETHEUS, "prometheus.example.yml")
    done = subprocess.run([promtool(), "check", "config", example], capture_output=True, text=True,
                          timeout=60, cwd=PROMETHEUS)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(example, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    job = config["scrape_configs"][0]
    assert job["job_name"] == "orchestrator" and job["file_sd_configs"] and job["static_configs"]
    assert config["rule_files"] == ["orchestrator.rules.yml"]


def test_fileSdExampleIsTargetGroups():
    """The file_sd example is a list of target groups of host:port addresses with labels."""
    with open(os.path.join(PROMETHEUS, "targets", "orchestrators.yml.example"), encoding="utf-8") as f:
        groups = yaml.safe_load(f)
    assert groups
    for group in groups:
        assert set(group) == {"targets", "labels"}
        assert all(re.fullmatch(r"[\w.-]+:\d+", t) for t in group["targets"])
