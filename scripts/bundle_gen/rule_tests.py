"""The promtool unit tests of the alerts: test series, expected alerts and their rendered annotations.

Each alert in ``rules.ALERTS`` carries :class:`Case` s (series, an evaluation time, the alerts expected then); this
turns them into promtool's ``rule_files``/``tests`` documents, for the committed tests in ``dashboards/rules/tests/``
and for the renderings the test suite checks (Helm chart, operator per-cache groups).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .rules import Alert, Scope


@dataclass(frozen=True)
class Case:
    """One promtool test: series, an evaluation time, the alerts expected then (none = stays quiet)."""

    name: str
    series: tuple[tuple[str, str], ...]
    eval_time: str
    alerts: tuple[Mapping[str, str], ...] = ()
    value: str = ""  # how the firing alert's {{ $value }} renders in its description
    per_cache_only: bool = False


OPERATOR_FAILURES = (
    'agent_cache_operator_reconcile_failures_total{namespace="agent-cache-system", reason="ValkeyUnavailable"}'
)

NS, CACHE = "shop", "support_bot"
CACHE_LABELS = {"namespace": NS, "cache_name": CACHE}


def series_of(metric: str, **labels: str) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in {**CACHE_LABELS, **labels}.items())
    return f"{metric}{{{inner}}}"


def lookups(tier: str, hits_per_min: int, misses_per_min: int, minutes: int = 120, **labels: str) -> tuple:
    return (
        (series_of("agent_cache_requests_total", tier=tier, result="hit", **labels), f"0+{hits_per_min}x{minutes}"),
        (series_of("agent_cache_requests_total", tier=tier, result="miss", **labels), f"0+{misses_per_min}x{minutes}"),
    )


def latency_buckets(seconds_bucket: str, per_min: int = 60) -> tuple:
    """Every lookup of the llm tier lands in the bucket ending at ``seconds_bucket``."""
    buckets = ("0.01", "0.025", "0.05", "0.1", "0.25", "+Inf")
    metric = "agent_cache_operation_duration_seconds"
    rows = [
        (
            series_of(f"{metric}_bucket", tier="llm", operation="check", le=le),
            f"0+{per_min if float(le) >= float(seconds_bucket) else 0}x60",
        )
        for le in buckets
    ]
    rows.append((series_of(f"{metric}_count", tier="llm", operation="check"), f"0+{per_min}x60"))
    return tuple(rows)


def ops_and_errors(ops_per_min: int, errors: Mapping[str, int]) -> tuple:
    rows = [
        (
            series_of("agent_cache_operation_duration_seconds_count", tier="llm", operation="check"),
            f"0+{ops_per_min}x60",
        )
    ]
    rows += [
        (series_of("agent_cache_errors_total", tier="llm", operation="check", error=kind), f"0+{n}x60")
        for kind, n in errors.items()
    ]
    return tuple(rows)


def expect(**labels: str) -> Mapping[str, str]:
    return {**CACHE_LABELS, **labels}


# ── promtool unit tests ────────────────────────────────────────────────────────


def promtool_tests(
    rule_files: list[str],
    alerts: tuple[Alert, ...],
    scope: Scope,
    *,
    include_gated: bool,
) -> dict[str, Any]:
    tests: list[dict[str, Any]] = []
    for alert in alerts:
        annotations = alert.rule(scope)["annotations"]
        if alert.gate and not include_gated:
            # Disabled by its threshold: never fires, even on the data that would make it fire.
            case = next(c for c in alert.cases if c.alerts and not c.per_cache_only)
            tests.append(promtool_case(alert, Case(f"absent while {alert.gate} is 0", case.series, case.eval_time), {}))
            continue
        for case in alert.cases:
            if case.per_cache_only and not scope.per_cache:
                continue
            tests.append(promtool_case(alert, case, annotations))
    return {"rule_files": rule_files, "evaluation_interval": "1m", "tests": tests}


def promtool_case(alert: Alert, case: Case, annotations: Mapping[str, str]) -> dict[str, Any]:
    return {
        "name": f"{alert.name} {case.name}",
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in case.series],
        "alert_rule_test": [
            {
                "eval_time": case.eval_time,
                "alertname": alert.name,
                "exp_alerts": [
                    {
                        "exp_labels": dict(labels),
                        "exp_annotations": _expected_annotations(annotations, labels, case.value),
                    }
                    for labels in case.alerts
                ],
            }
        ],
    }


_TEMPLATE = re.compile(r"\{\{ \$(labels\.(\w+)|value[^}]*) \}\}")


def _expected_annotations(annotations: Mapping[str, str], labels: Mapping[str, str], value: str) -> dict[str, str]:
    """The annotations as Prometheus renders them for an alert with ``labels`` and ``value``."""

    def render(match: re.Match[str]) -> str:
        return labels[match.group(2)] if match.group(2) else value

    return {key: _TEMPLATE.sub(render, text) for key, text in annotations.items()}
