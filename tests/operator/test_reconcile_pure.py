"""The operator's decisions, without a cluster or a server: spec checks, connection options, conditions, children."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from agent_cache import AgentCacheStats, SessionStats, TierStats
from agent_cache.config import InstanceRecord
from agent_cache_operator.children import (
    Bundle,
    Child,
    Owner,
    child_name,
    merge_diff,
    plan_monitoring,
    update_patch,
)
from agent_cache_operator.cli import parser
from agent_cache_operator.connection import (
    ConnectionOptions,
    classify_failure,
    client_kwargs,
    connection_options,
    redact,
)
from agent_cache_operator.handlers import OperatorOptions
from agent_cache_operator.kube import ALLOW_ANNOTATION, CONFIG_MAP, GRAFANA_DASHBOARD, PROMETHEUS_RULE, secret_allows
from agent_cache_operator.spec import InvalidSpecError, SecretKeyRef, parse_spec, parse_valkey
from agent_cache_operator.status import (
    Condition,
    changed,
    instances_status,
    merge_conditions,
    ready_condition,
    replacing,
    stats_status,
    status_patch,
)

OWNER = Owner("support-bot", "shop", "uid-1")
FAKE_BUNDLE = Bundle(
    dashboard_files=lambda cache: {f"agent-cache-{cache}-overview.json": json.dumps({"uid": cache})},
    prometheus_rule_groups=lambda cache, namespace, thresholds: [
        {
            "name": f"agent-cache.{cache}",
            "rules": [{"alert": "AgentCacheLowHitRate", "expr": f"x < {thresholds['llmHitRateMin']}"}],
        }
    ],
)


def spec(**fields: Any) -> dict[str, Any]:
    fields.setdefault("valkey", {"host": "valkey", "port": 6379})
    return fields


# ── spec ────────────────────────────────────────────────────────────────────


def test_the_prefix_defaults_to_a_valid_name_and_is_immutable() -> None:
    assert parse_spec(spec(), "support-bot").prefix == "support-bot"
    assert parse_spec(spec(prefix="sb"), "support-bot").prefix == "sb"
    with pytest.raises(InvalidSpecError, match=r"spec\.prefix is required"):
        parse_spec(spec(), "x" * 129)
    assert parse_spec(spec(prefix="shop:prod"), "n").prefix == "shop:prod"  # the library's segmented names
    with pytest.raises(InvalidSpecError, match=r"spec\.prefix 'shop:llm' is invalid: .* cannot follow a ':'"):
        parse_spec(spec(prefix="shop:llm"), "n")
    with pytest.raises(InvalidSpecError, match=r"spec\.prefix 'a b' is invalid"):
        parse_spec(spec(prefix="a b"), "n")
    with pytest.raises(InvalidSpecError, match="immutable: this resource manages cache 'old'"):
        parse_spec(spec(prefix="new"), "n", recorded_prefix="old")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tiers": {"llm": {"ttl": -5}}}, "spec.tiers.llm.ttl must be a positive number of seconds"),
        ({"tiers": {"bogus": {"ttl": 5}}}, "spec.tiers.bogus is not a tier"),
        ({"toolPolicies": {"t": {"cacheable": "no"}}}, "spec.toolPolicies.t.cacheable must be true or false"),
        ({"costOverrides": {"m": {"inputPer1k": -1, "outputPer1k": 1}}}, "spec.costOverrides.m.inputPer1k"),
        ({"deletionPolicy": "Orphan"}, "spec.deletionPolicy must be Retain or Delete"),
        ({"valkey": {"host": "a", "url": "valkey://b"}}, "exactly one of spec.valkey.url and spec.valkey.host"),
        ({"valkey": {"url": "valkey://u:pw@h:1"}}, "spec.valkey.url must not contain a password"),
        ({"valkey": {"host": "h", "password": "pw"}}, "spec.valkey.password is not supported"),
        ({"valkey": {"host": "h", "cluster": True, "db": 2}}, "spec.valkey.db must be 0 with cluster"),
        ({"valkey": {"url": "valkey://h:1", "port": 2}}, "spec.valkey.port goes with spec.valkey.host"),
        ({"monitoring": {"alerts": {"thresholds": {"nope": 1}}}}, "thresholds.nope is not a threshold"),
        ({"monitoring": {"alerts": {"thresholds": {"llmHitRateMin": 2}}}}, "is a ratio from 0 to 1"),
        ({"monitoring": {"dashboards": {"grafanaOperator": "x"}}}, "grafanaOperator must be auto, enabled"),
    ],
)
def test_invalid_specs_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpecError, match=message.replace(".", r"\.")):
        parse_spec(spec(**fields), "n")


def test_a_password_in_a_url_is_never_echoed() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(spec(valkey={"url": "valkey://agent:hunter2@h:1"}), "n")
    assert "hunter2" not in str(caught.value)


def test_tls_is_implied_by_the_scheme_and_cert_refs_default_to_kubernetes_tls_keys() -> None:
    valkey = parse_valkey({"url": "rediss://h:6380", "tls": {"certSecretRef": {"name": "client"}}})
    assert valkey.tls.enabled
    assert valkey.tls.cert == SecretKeyRef("client", "tls.crt") and valkey.tls.key == SecretKeyRef("client", "tls.key")
    assert valkey.endpoint() == "h:6380"
    assert [where for where, _ in valkey.secret_refs()] == ["spec.valkey.tls.certSecretRef"] * 2


# ── connection ───────────────────────────────────────────────────────────────


def test_connection_options_carry_secrets_but_never_show_them() -> None:
    valkey = parse_valkey(
        {
            "host": "valkey",
            "port": 6380,
            "db": 3,
            "passwordSecretRef": {"name": "auth"},
            "usernameSecretRef": {"name": "auth"},
            "tls": {"enabled": True, "caSecretRef": {"name": "ca"}},
        }
    )
    values = {
        SecretKeyRef("auth", "password"): b"p4ss",
        SecretKeyRef("auth", "username"): b"agent",
        SecretKeyRef("ca", "ca.crt"): b"-----BEGIN CERTIFICATE-----",
    }
    options = connection_options(valkey, values)
    assert "p4ss" not in repr(options)
    kwargs = client_kwargs(options)
    assert kwargs["host"] == "valkey" and kwargs["port"] == 6380 and kwargs["db"] == 3
    assert kwargs["username"] == "agent" and kwargs["password"] == "p4ss"
    assert kwargs["ssl"] is True and kwargs["ssl_cert_reqs"] == "required" and kwargs["ssl_check_hostname"]
    assert kwargs["ssl_ca_data"].startswith("-----BEGIN")
    rotated = connection_options(valkey, {**values, SecretKeyRef("auth", "password"): b"n3w"})
    assert rotated.fingerprint != options.fingerprint  # a rotated password builds a new client


def test_cluster_and_url_options() -> None:
    options = ConnectionOptions(parse_valkey({"url": "valkeys://cfg:6379", "cluster": True, "tls": {
        "insecureSkipVerify": True}}))  # fmt: skip
    kwargs = client_kwargs(options)
    assert "host" not in kwargs and "db" not in kwargs and "ssl" not in kwargs  # the URL carries them
    assert kwargs["ssl_cert_reqs"] == "none" and kwargs["ssl_check_hostname"] is False


class AuthenticationError(Exception):
    pass


class ConnectionError(Exception):  # named like valkey-py's
    pass


def test_failures_are_classified_and_redacted() -> None:
    try:
        try:
            raise AuthenticationError("invalid username-password pair or user is disabled.")
        except AuthenticationError as inner:
            raise RuntimeError("Valkey is unavailable for HMGET") from inner
    except RuntimeError as outer:
        failure = classify_failure(outer, "valkey:6379", ["p4ss"])
    assert failure.reason == "AuthenticationFailed" and "valkey:6379" in failure.message

    failure = classify_failure(
        ConnectionError("Error 111 connecting to valkey:6379 with p4ss"), "valkey:6379", ["p4ss"]
    )
    assert failure.reason == "ValkeyUnavailable"
    assert "p4ss" not in failure.message and "***" in failure.message
    assert classify_failure(Exception("NOPERM this user has no permissions"), "v:1").reason == "PermissionDenied"
    assert redact("a secret b", ["secret", ""]) == "a *** b"


def test_backoff_grows_and_is_capped() -> None:
    options = OperatorOptions(retry_base_s=0.5, retry_max_s=4)
    assert [options.backoff(n) for n in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert options.backoff(10_000) == 4


# ── status ───────────────────────────────────────────────────────────────────


def test_last_transition_time_moves_only_when_the_status_flips() -> None:
    first = merge_conditions(None, [Condition("ConfigSynced", "False", "ValkeyUnavailable", "down")], 1, "T1")
    again = merge_conditions(first, [Condition("ConfigSynced", "False", "AuthenticationFailed", "auth")], 2, "T2")
    assert again[0]["lastTransitionTime"] == "T1" and again[0]["reason"] == "AuthenticationFailed"
    assert again[0]["observedGeneration"] == 2
    flipped = merge_conditions(again, [Condition("ConfigSynced", "True", "Applied", "ok")], 2, "T3")
    assert flipped[0]["lastTransitionTime"] == "T3"
    ordered = merge_conditions(
        flipped, [Condition("AlertsReady", "True", "Deployed", ""), Condition("Ready", "True", "Ready", "")], 2, "T4"
    )
    assert [c["type"] for c in ordered] == ["Ready", "ConfigSynced", "AlertsReady"]
    assert changed(ordered, [Condition("ConfigSynced", "True", "Applied", "ok")]) == []
    assert changed(ordered, [Condition("ConfigSynced", "True", "Applied", "new")]) != []


def test_ready_follows_the_config_and_mentions_degraded_monitoring() -> None:
    synced = Condition("ConfigSynced", "True", "Applied", "live")
    alerts = Condition("AlertsReady", "False", "PrometheusRuleCRDMissing", "no CRD")
    ready = ready_condition(synced, None, alerts)
    assert ready.status == "True" and "AlertsReady: no CRD" in ready.message
    down = ready_condition(Condition("ConfigSynced", "False", "ValkeyUnavailable", "down"), alerts)
    assert (down.status, down.reason) == ("False", "ValkeyUnavailable")


def test_stats_and_instances_in_status() -> None:
    stats = AgentCacheStats(TierStats(2, 1), TierStats(0, 0), SessionStats(1, 2), 6_000_000, {})
    status = stats_status(stats)
    assert status["llmHitRate"] == 0.6667 and "toolHitRate" not in status  # no traffic: no rate
    # Only what `kubectl get` shows: the counters change with every request and live in Prometheus.
    assert status == {"llmHitRate": 0.6667, "costSavedDollars": 6.0}
    records = [InstanceRecord("a", "v2", 0, "h", 1), InstanceRecord("b", "v1", 0, "h", 2)]
    assert instances_status(records, "v2") == {"total": 2, "current": 1}
    assert status_patch({"prefix": "p", "stats": status}, {"prefix": "p", "stats": status, "x": 1}) == {"x": 1}
    # Counters an older operator wrote are removed by the merge patch, once.
    old = {"llmHits": 2, "llmHitRate": 0.5}
    assert replacing(old, status) == {"llmHitRate": 0.6667, "costSavedDollars": 6.0, "llmHits": None}
    assert replacing(status, status) == status


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("support-bot", True),
        (" billing , support-bot ", True),
        ("*", True),
        ("billing", False),
        ("support-bot-2", False),  # names, not prefixes
        ("support", False),
        ("", False),
        (None, False),
    ],
)
def test_a_secret_is_used_only_by_the_agentcaches_its_annotation_names(value: str | None, allowed: bool) -> None:
    annotations = None if value is None else {ALLOW_ANNOTATION: value}
    assert secret_allows(annotations, "support-bot") is allowed
    assert not secret_allows({"agentcache.dev/allow": "true"}, "support-bot")  # only the documented annotation


# ── children ─────────────────────────────────────────────────────────────────


def test_a_segmented_cache_name_gets_dashboards_under_valid_config_map_keys() -> None:
    from agent_cache_operator.bundle import dashboard_files

    segmented, flat = dashboard_files("shop:prod"), dashboard_files("shop_prod")
    assert segmented and all(re.fullmatch(r"[-._a-zA-Z0-9]+", key) for key in segmented)  # a ConfigMap key
    assert not set(segmented) & set(flat)  # two caches, two sets of files in one Grafana folder
    for text in segmented.values():
        variables = {v["name"]: v for v in json.loads(text)["templating"]["list"]}
        assert variables["cache_name"]["current"]["value"] == "shop:prod"


def test_without_monitoring_crds_only_the_config_map_is_deployed() -> None:
    plan = plan_monitoring(parse_spec(spec(), "support-bot"), OWNER, served=frozenset({CONFIG_MAP}), bundle=FAKE_BUNDLE)
    assert [(c.kind, c.name) for c in plan.desired] == [(CONFIG_MAP, "agentcache-support-bot-dashboards")]
    config_map = plan.desired[0].manifest
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["ownerReferences"] == [OWNER.reference()]
    assert OWNER.reference()["controller"] is True
    assert plan.dashboards is not None and plan.dashboards.status == "True"
    assert plan.alerts is not None and (plan.alerts.status, plan.alerts.reason) == ("False", "PrometheusRuleCRDMissing")


def test_with_the_crds_rules_and_grafana_dashboards_follow_the_spec() -> None:
    served = frozenset({CONFIG_MAP, GRAFANA_DASHBOARD, PROMETHEUS_RULE})
    parsed = parse_spec(
        spec(prefix="sb", monitoring={"alerts": {"labels": {"release": "prom"}, "thresholds": {"llmHitRateMin": 0.4}}}),
        "support-bot",
    )
    plan = plan_monitoring(parsed, OWNER, served=served, bundle=FAKE_BUNDLE)
    kinds = {c.kind: c for c in plan.desired}
    rule = kinds[PROMETHEUS_RULE].manifest
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["spec"]["groups"][0]["rules"][0]["expr"] == "x < 0.4"
    assert kinds[GRAFANA_DASHBOARD].manifest["spec"]["json"] == json.dumps({"uid": "sb"})
    assert plan.status() == {
        "dashboardsConfigMap": "agentcache-support-bot-dashboards",
        "prometheusRule": "agentcache-support-bot-alerts",
        "grafanaDashboards": ["agentcache-support-bot-agent-cache-sb-overview"],
    }

    disabled = parse_spec(
        spec(prefix="sb", monitoring={"alerts": {"enabled": False}, "dashboards": {"grafanaOperator": "disabled"}}),
        "support-bot",
    )
    plan = plan_monitoring(disabled, OWNER, served=served, bundle=FAKE_BUNDLE, recorded=plan.status())
    assert set(plan.absent) == {
        (PROMETHEUS_RULE, "agentcache-support-bot-alerts"),
        (GRAFANA_DASHBOARD, "agentcache-support-bot-agent-cache-sb-overview"),
    }
    assert plan.alerts is not None and plan.alerts.reason == "Disabled"


def test_grafana_operator_required_without_its_crd() -> None:
    parsed = parse_spec(spec(monitoring={"dashboards": {"grafanaOperator": "enabled"}}), "n")
    plan = plan_monitoring(parsed, OWNER, served=frozenset({CONFIG_MAP}), bundle=FAKE_BUNDLE)
    assert plan.dashboards is not None
    assert (plan.dashboards.status, plan.dashboards.reason) == ("False", "GrafanaDashboardCRDMissing")


def test_update_patch_touches_only_what_differs() -> None:
    parsed = parse_spec(spec(monitoring={"dashboards": {"labels": {"team": "ml"}}}), "support-bot")
    desired = plan_monitoring(parsed, OWNER, served=frozenset({CONFIG_MAP}), bundle=FAKE_BUNDLE).desired[0]
    assert update_patch(desired.manifest, desired) is None
    actual = json.loads(json.dumps(desired.manifest))
    actual["data"]["stale.json"] = "{}"
    actual["metadata"]["labels"]["added-by-someone"] = "x"
    actual["metadata"]["labels"]["team"] = "old"
    patch = update_patch(actual, desired)
    assert patch == {"metadata": {"labels": {"team": "ml"}}, "data": {"stale.json": None}}
    # A label the operator set before and no longer wants goes; others' labels stay.
    relabelled = Child(desired.kind, json.loads(json.dumps(desired.manifest)))
    del relabelled.manifest["metadata"]["labels"]["team"]
    patch = update_patch(desired.manifest, relabelled)
    assert patch is not None and patch["metadata"]["labels"] == {"team": None}


def test_merge_diff_and_names() -> None:
    assert merge_diff({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": 1}, "d": [2]}) == {"a": {"c": None}, "d": [2]}
    assert child_name("Support_Bot", "x.json") == "agentcache-support-bot-x.json"
    long = child_name("a" * 300, "dashboards")
    assert len(long) <= 253 and long != child_name("a" * 299, "dashboards")


def test_cli_reads_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_CACHE_OPERATOR_STANDALONE", "true")
    monkeypatch.setenv("AGENT_CACHE_OPERATOR_NAMESPACES", "team-a,team-b")
    monkeypatch.setenv("AGENT_CACHE_OPERATOR_RESYNC_SECONDS", "5")
    args = parser().parse_args([])
    assert args.standalone and args.namespace == ["team-a", "team-b"] and args.resync_interval == 5
    assert parser().parse_args(["--metrics-port", "0"]).metrics_port == 0
