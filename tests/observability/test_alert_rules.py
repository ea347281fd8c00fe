"""Alert and recording rules: promtool checks and unit tests for each of their three renderings.

The same promtool unit tests (generated with the rules, in dashboards/rules/tests/) run against the platform-wide
files, the Helm chart's PrometheusRule and the operator's per-cache groups, so a template or escaping slip in any of
them shows up as an alert that does not fire, fires wrongly, or renders a different text.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from scripts.bundle_gen import rule_tests, rules

from agent_cache_operator.bundle import DEFAULT_THRESHOLDS, prometheus_rule_groups
from tests.observability.conftest import ROOT, promtool

RULES = ROOT / "dashboards" / "rules"
ALERT_NAME = re.compile(r"AgentCache[A-Z][A-Za-z0-9]+")


def _write_rules(path: Path, groups: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def _write_tests(path: Path, rule_file: str, alerts: tuple[rules.Alert, ...], scope: rules.Scope) -> Path:
    document = rule_tests.promtool_tests([rule_file], alerts, scope, include_gated=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_committed_rules_pass_promtool_check(promtool_bin: str) -> None:
    files = sorted(str(p) for p in [*RULES.glob("*.yaml"), *RULES.glob("tests/*.rules.yaml")])
    out = promtool(promtool_bin, "check", "rules", *files)
    assert out.count("SUCCESS") == len(files)


def test_committed_promtool_unit_tests_pass(promtool_bin: str) -> None:
    tests = sorted(p.name for p in (RULES / "tests").glob("*.test.yaml"))
    assert len(tests) == 3
    promtool(promtool_bin, "test", "rules", *tests, cwd=RULES / "tests")


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in (RULES / "tests").glob("*.test.yaml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for check in test["alert_rule_test"]:
                (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = {
        rule["alert"]
        for path in [*RULES.glob("*.yaml"), *RULES.glob("tests/*.rules.yaml")]
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert alerts == {a.name for a in rules.ALERTS}
    assert alerts - fires == set(), "alerts never shown to fire"
    assert alerts - quiet == set(), "alerts never shown to stay quiet"


def test_alerts_follow_the_monitoring_mixin_conventions() -> None:
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    anchors = {m.lower() for m in re.findall(r"^## (AgentCache\w+)", runbooks, flags=re.M)}
    for alert in rules.ALERTS:
        rule = alert.rule(rules.literal_scope(DEFAULT_THRESHOLDS))
        assert ALERT_NAME.fullmatch(rule["alert"])
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
        assert rule["annotations"]["summary"].endswith(".")
        assert re.fullmatch(r"\d+[mh]", rule["for"])
        assert rule["annotations"]["runbook_url"].endswith(f"docs/runbooks.md#{alert.anchor}")
        assert alert.anchor in anchors, f"docs/runbooks.md has no section for {alert.name}"


def test_helm_rendered_rules_pass_the_same_unit_tests(
    full_render: list[dict[str, Any]], promtool_bin: str, tmp_path: Path
) -> None:
    (rule,) = [doc for doc in full_render if doc["kind"] == "PrometheusRule"]
    _write_rules(tmp_path / "chart.rules.yaml", rule["spec"]["groups"])
    promtool(promtool_bin, "check", "rules", str(tmp_path / "chart.rules.yaml"))
    # The full render sets expectedMinRequestsPerSecond=1, the threshold the committed fixtures use.
    scope = rules.literal_scope(rules.TEST_THRESHOLDS)
    _write_tests(tmp_path / "chart.test.yaml", "chart.rules.yaml", rules.ALERTS, scope)
    promtool(promtool_bin, "test", "rules", "chart.test.yaml", cwd=tmp_path)


def test_helm_leaves_the_no_traffic_alert_out_by_default(helm: Any) -> None:
    from tests.observability.conftest import render

    docs = render(helm, "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.cacheAlerts=true")
    (rule,) = [doc for doc in docs if doc["kind"] == "PrometheusRule"]
    names = {r.get("alert") for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "AgentCacheNoTraffic" not in names and "AgentCacheLlmHitRateLow" in names


def test_operator_per_cache_rules_pass_the_same_unit_tests(promtool_bin: str, tmp_path: Path) -> None:
    groups = prometheus_rule_groups(rule_tests.CACHE, rule_tests.NS, {"expectedMinRequestsPerSecond": 1})
    _write_rules(tmp_path / "cache.rules.yaml", groups)
    promtool(promtool_bin, "check", "rules", str(tmp_path / "cache.rules.yaml"))
    scope = rules.Scope("", rules.literal_scope(rules.TEST_THRESHOLDS).threshold, per_cache=True)
    _write_tests(tmp_path / "cache.test.yaml", "cache.rules.yaml", rules.CACHE_ALERTS, scope)
    promtool(promtool_bin, "test", "rules", "cache.test.yaml", cwd=tmp_path)


def test_per_cache_rules_ignore_other_caches(promtool_bin: str, tmp_path: Path) -> None:
    """The low hit rate of another cache (or the same name in another namespace) does not fire this cache's alert."""
    _write_rules(tmp_path / "cache.rules.yaml", prometheus_rule_groups("other_bot", rule_tests.NS, {}))
    quiet = rule_tests.Case("quiet for another cache", rules.ALERTS[0].cases[0].series, "60m")
    document = {
        "rule_files": ["cache.rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [rule_tests.promtool_case(rules.ALERTS[0], quiet, {})],
    }
    (tmp_path / "other.test.yaml").write_text(yaml.safe_dump(document))
    promtool(promtool_bin, "test", "rules", "other.test.yaml", cwd=tmp_path)


def test_per_cache_thresholds_reach_the_expressions() -> None:
    groups = prometheus_rule_groups("support_bot", "shop", {"llmHitRateMin": 0.35, "latencyP99MaxSeconds": 0.002})
    by_name = {r["alert"]: r for g in groups for r in g["rules"]}
    assert "< 0.35" in by_name["AgentCacheLlmHitRateLow"]["expr"]
    assert "0.35" in by_name["AgentCacheLlmHitRateLow"]["annotations"]["description"]
    assert "> 0.002" in by_name["AgentCacheLatencyHigh"]["expr"]
    assert "AgentCacheNoTraffic" not in by_name
    for rule in by_name.values():
        assert "${" not in yaml.safe_dump(rule)
        assert 'namespace="shop", cache_name="support_bot"' in rule["expr"]


def test_unknown_or_invalid_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="llmHitRate, zzz"):
        prometheus_rule_groups("support_bot", "shop", {"zzz": 1, "llmHitRate": 0.2})
    with pytest.raises(ValueError, match="errorRatioMax"):
        prometheus_rule_groups("support_bot", "shop", {"errorRatioMax": -1})
    with pytest.raises(ValueError, match="cache name"):
        prometheus_rule_groups('bad"name', "shop", {})
