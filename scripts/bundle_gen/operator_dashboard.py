"""The operator dashboard: managed AgentCaches, reconciles, failures, durations, config pushes.

Its queries name the operator's own metrics, read from ``agent_cache_operator.metrics`` (``operator_metrics.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders import dashboard as gd

from .grafana import (
    OPERATOR_SCOPE,
    QUANTILE_NAMES,
    RANGE,
    RATE,
    PanelSpec,
    Query,
    build_dashboard,
    label_variable,
)
from .promql import by, series


def _op(suffix: str, part: str = "", **matchers: str) -> str:
    return series(suffix, OPERATOR_SCOPE, part=part, operator=True, **matchers)


def _op_by(suffix: str, labels: Sequence[str]) -> str:
    return by(suffix, labels, operator=True)


def operator() -> dict[str, Any]:
    buckets = _op("reconcile_duration_seconds", part="bucket")
    summary = [
        PanelSpec(
            "stat",
            "Managed AgentCaches",
            "AgentCache resources the operator currently manages.",
            [Query(f"sum ({_op('managed_caches')})", instant=True)],
            "short",
            width=8,
            height=5,
        ),
        PanelSpec(
            "stat",
            "Reconciles in range",
            "AgentCache reconciles over the selected time range (create, update, resume, timer).",
            [Query(f"sum (increase({_op('reconciles_total')}[{RANGE}]))", instant=True)],
            "short",
            width=8,
            height=5,
        ),
        PanelSpec(
            "stat",
            "Reconcile failures in range",
            "Failed reconciles over the selected time range (the operator retries them with backoff).",
            [Query(f"sum (increase({_op('reconcile_failures_total')}[{RANGE}]))", instant=True)],
            "short",
            width=8,
            height=5,
            no_value="0",
        ),
    ]
    activity = [
        PanelSpec(
            "timeseries",
            "Reconciles per second by trigger and result",
            "AgentCache reconciles per second by what triggered them and how they ended.",
            [
                Query(
                    f"sum {_op_by('reconciles_total', ('trigger', 'result'))} "
                    f"(rate({_op('reconciles_total')}[{RATE}]))",
                    "{{trigger}} {{result}}",
                )
            ],
            "ops",
        ),
        PanelSpec(
            "timeseries",
            "Reconcile failures per second by reason",
            "Failed reconciles per second by condition reason (invalid spec, Valkey unavailable, authentication, "
            "permissions, conflicts).",
            [
                Query(
                    f"sum {_op_by('reconcile_failures_total', ('reason',))} "
                    f"(rate({_op('reconcile_failures_total')}[{RATE}]))",
                    "{{reason}}",
                )
            ],
            "ops",
        ),
        PanelSpec(
            "timeseries",
            "Reconcile duration",
            "p50, p95 and p99 of one AgentCache reconcile (Valkey and Kubernetes API calls included).",
            [
                Query(
                    f"histogram_quantile({q}, sum {_op_by('reconcile_duration_seconds', ('le',))} "
                    f"(rate({buckets}[{RATE}])))",
                    QUANTILE_NAMES[q],
                )
                for q in ("0.5", "0.95", "0.99")
            ],
            "s",
        ),
        PanelSpec(
            "timeseries",
            "Config pushes per second by reason",
            "Config writes to Valkey: a new config version, or a re-assertion after drift (Valkey restarted or "
            "flushed behind the operator's back).",
            [
                Query(
                    f"sum {_op_by('config_pushes_total', ('reason',))} (rate({_op('config_pushes_total')}[{RATE}]))",
                    "{{reason}}",
                )
            ],
            "ops",
        ),
    ]
    return build_dashboard(
        "agent-cache-operator",
        "agent-cache / Operator",
        "The agent-cache operator: managed AgentCaches, reconciles, failures, durations and config pushes.",
        [("Summary", summary), ("Reconciles", activity)],
        [
            gd.DatasourceVariable("datasource").label("Data source").type("prometheus"),
            label_variable(
                "namespace",
                "Namespace",
                "Namespace the operator runs in.",
                f"label_values({series('managed_caches', operator=True)}, namespace)",
            ),
        ],
    )
