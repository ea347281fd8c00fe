"""Alert and recording rules, rendered into the rule groups the generator writes.

One definition renders three ways (see :class:`~.rule_model.Scope`): the platform-wide files in ``dashboards/rules/``
(thresholds written in), the Helm chart's PrometheusRule (thresholds from values), and the operator's per-cache
template (``${cache_name}``, ``${namespace}`` and ``${threshold}`` placeholders filled in by
``agent_cache_operator.bundle``). The alerts themselves are in ``alerts``, what they are made of in ``rule_model``;
both are re-exported here, where the generator and the tests look for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent_cache_operator.bundle import DEFAULT_THRESHOLDS

from .alerts import ALERTS, CACHE_ALERTS, EVICTED, OPERATOR_ALERTS, TOOL_KEYS, UNREACHABLE_RATIO
from .promql import by, series
from .rule_model import (
    CACHE_KEYS,
    LATENCY_KEYS,
    MIN_LOOKUPS,
    RUNBOOK_URL,
    Alert,
    Scope,
    enough_lookups,
    hit_ratio,
    literal_scope,
    template_scope,
)

# Thresholds the committed promtool fixtures are rendered with (the no-traffic alert needs one above 0).
TEST_THRESHOLDS: dict[str, float] = {**DEFAULT_THRESHOLDS, "expectedMinRequestsPerSecond": 1.0}

__all__ = [
    "ALERTS",
    "CACHE_ALERTS",
    "CACHE_KEYS",
    "EVICTED",
    "LATENCY_KEYS",
    "LATENCY_RECORD",
    "MIN_LOOKUPS",
    "OPERATOR_ALERTS",
    "RUNBOOK_URL",
    "TEST_THRESHOLDS",
    "TOOL_KEYS",
    "UNREACHABLE_RATIO",
    "Alert",
    "Scope",
    "cache_alert_rules",
    "enough_lookups",
    "hit_ratio",
    "literal_scope",
    "operator_groups",
    "platform_groups",
    "recording_rules",
    "template_groups",
    "template_scope",
]


# ── recording rules (platform-wide only) ───────────────────────────────────────


LATENCY_RECORD = "namespace_cache_name_tier_operation:agent_cache_operation_duration_seconds:histogram_quantile"


def recording_rules() -> list[dict[str, Any]]:
    tier = (*CACHE_KEYS, "tier")
    lookups = series("requests_total")
    rules: list[dict[str, Any]] = [
        {
            "record": "namespace_cache_name_tier_result:agent_cache_requests:rate5m",
            "expr": f"sum {by('requests_total', (*tier, 'result'))} (rate({lookups}[5m]))",
        },
        {
            "record": "namespace_cache_name_tier:agent_cache_hit_ratio:rate5m",
            "expr": hit_ratio(literal_scope(DEFAULT_THRESHOLDS), tier, "5m"),
        },
        {
            "record": "namespace_cache_name_tier:agent_cache_cost_saved_dollars_per_hour:rate1h",
            "expr": f"sum {by('cost_saved_total', tier)} (rate({series('cost_saved_total')}[1h])) * 3600",
        },
    ]
    buckets = series("operation_duration_seconds", part="bucket")
    grouping = by("operation_duration_seconds", (*LATENCY_KEYS, "le"))
    for quantile in ("0.5", "0.95", "0.99"):
        rules.append(
            {
                "record": LATENCY_RECORD,
                "expr": f"histogram_quantile({quantile}, sum {grouping} (rate({buckets}[5m])))",
                "labels": {"quantile": quantile},
            }
        )
    return rules


def cache_alert_rules(scope: Scope, thresholds: Mapping[str, float] | None) -> list[dict[str, Any]]:
    """The cache alerts; with ``thresholds`` given, a gated alert whose threshold is 0 is left out."""
    return [
        alert.rule(scope)
        for alert in CACHE_ALERTS
        if thresholds is None or alert.gate is None or thresholds[alert.gate] > 0
    ]


def platform_groups(thresholds: Mapping[str, float]) -> list[dict[str, Any]]:
    scope = literal_scope(thresholds)
    return [
        {"name": "agent-cache.rules", "rules": recording_rules()},
        {"name": "agent-cache.alerts", "rules": cache_alert_rules(scope, thresholds)},
    ]


def operator_groups() -> list[dict[str, Any]]:
    scope = literal_scope(DEFAULT_THRESHOLDS)
    return [{"name": "agent-cache-operator.alerts", "rules": [a.rule(scope) for a in OPERATOR_ALERTS]}]


def template_groups() -> list[dict[str, Any]]:
    """The per-cache template the operator fills in (``agent_cache_operator.bundle``)."""
    scope = template_scope()
    rules = []
    for alert in CACHE_ALERTS:
        rule = alert.rule(scope)
        if alert.gate:
            rule["x-enabled-if-positive"] = alert.gate
        rules.append(rule)
    return [{"name": "agent-cache.${cache_name}.alerts", "rules": rules}]
