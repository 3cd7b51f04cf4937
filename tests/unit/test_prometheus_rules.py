"""The alerts (charts/miosa-operator/files/prometheus-rules.yaml) and the Grafana dashboard
(integrations/grafana) against the real promtool and the operator's real metric names.

promtool comes from Debian's `prometheus` package, installed by hack/host-packages.sh
(`make binaries`, part of CI).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from miosa_operator.observability import metrics  # noqa: F401  (declares the metrics)
from miosa_operator.observability.census import VersionCensus

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "charts" / "miosa-operator" / "files" / "prometheus-rules.yaml"
RULE_TESTS = Path(__file__).parent / "prometheus" / "rules-test.yaml"
DASHBOARD = REPO / "integrations" / "grafana" / "miosa-operator.json"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: run `make binaries` (hack/host-packages.sh installs it)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_names() -> set[str]:
    """Every sample name the operator exports (counters' _total, histograms' _bucket…), also
    of labelled metrics that have no sample yet."""
    families = [*REGISTRY.collect(), *metrics.CensusCollector(VersionCensus()).collect()]
    return {f.name + suffix for f in families for suffix in SUFFIXES.get(f.type, ("",))}


def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 3 rules found" in result.stdout


def test_every_alert_fires_and_stays_quiet_on_its_sample_series() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]}
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    assert tested == alerts, "every alert needs a promtool unit test"


def _metric_names(expr: str) -> set[str]:
    return {name for name in re.findall(r"\b(miosa_[a-z_]+)", expr)}


def test_rules_use_only_metrics_the_operator_exports() -> None:
    exported = exported_names()
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert _metric_names(rule["expr"]) <= exported, rule["alert"]


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_dashboard_queries_use_exported_metrics_and_parse(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    exported = exported_names()
    for query in queries:
        assert _metric_names(query) <= exported, query
    # promtool parses PromQL of rule files: each query (Grafana's variables filled in) as a
    # recording rule.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": q.replace("$__rate_interval", "5m").replace("$job", ".*")}
        for i, q in enumerate(queries)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_chart_ships_the_rules_file_as_is() -> None:
    template = (REPO / "charts" / "miosa-operator" / "templates" / "prometheusrule.yaml").read_text()
    assert '.Files.Get "files/prometheus-rules.yaml"' in template
