"""What an alert rule is made of: how one rendering spells selectors and thresholds, and the PromQL they share.

A :class:`Scope` is one rendering of the rules (platform-wide with thresholds written in, the Helm chart's values,
the operator's per-cache template: see ``rules``); an :class:`Alert` is one definition that renders into each. The
hit-ratio helpers serve both the alerts (``alerts``) and the recording rules (``rules``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent_cache_operator.bundle import DEFAULT_THRESHOLDS, format_number

from .promql import by, series
from .rule_tests import Case

RUNBOOK_URL = "https://github.com/agent-cache/agent-cache/blob/main/docs/runbooks.md"
CACHE_KEYS = ("namespace", "cache_name")
LATENCY_KEYS = (*CACHE_KEYS, "tier", "operation")
# Lookups a window must hold before a hit rate counts: a handful of early misses is not a trend.
MIN_LOOKUPS = 100


@dataclass(frozen=True)
class Scope:
    """How one rendering selects series and spells a threshold."""

    base: str  # matchers every cache selector starts with ("" = all caches)
    threshold: Callable[[str], str]
    per_cache: bool = False


def literal_scope(thresholds: Mapping[str, float]) -> Scope:
    return Scope("", lambda key: format_number(float(thresholds[key])))


def template_scope() -> Scope:
    """The operator's per-cache template."""
    return Scope('namespace="${namespace}", cache_name="${cache_name}"', lambda key: "${" + key + "}", per_cache=True)


@dataclass(frozen=True)
class Alert:
    name: str
    expr: Callable[[Scope], str]
    for_: str
    severity: str
    summary: str
    description: str  # Prometheus template; [[key]] becomes the threshold
    cases: tuple[Case, ...]
    gate: str | None = None  # threshold that must be > 0 for the alert to exist
    operator: bool = False
    thresholds_used: tuple[str, ...] = field(default=())

    @property
    def anchor(self) -> str:
        return self.name.lower()

    def rule(self, scope: Scope) -> dict[str, Any]:
        description = self.description
        for key in DEFAULT_THRESHOLDS:
            description = description.replace(f"[[{key}]]", scope.threshold(key))
        return {
            "alert": self.name,
            "expr": self.expr(scope),
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": description,
                "runbook_url": f"{RUNBOOK_URL}#{self.anchor}",
            },
        }


# ── shared expressions ─────────────────────────────────────────────────────────


def _sum(labels: tuple[str, ...], inner: str, suffix: str = "requests_total") -> str:
    return f"sum {by(suffix, labels)} ({inner})"


def hit_ratio(scope: Scope, labels: tuple[str, ...], window: str, **matchers: str) -> str:
    """Hits / lookups; 0 (not absent) when there were lookups but no hit at all."""
    hits = _sum(labels, f"rate({series('requests_total', scope.base, **matchers, result='hit')}[{window}])")
    lookups = _sum(labels, f"rate({series('requests_total', scope.base, **matchers)}[{window}])")
    return f"(\n  {hits}\n  or\n  0 * {lookups}\n)\n/\n{lookups}"


def enough_lookups(scope: Scope, labels: tuple[str, ...], window: str, **matchers: str) -> str:
    lookups = _sum(labels, f"increase({series('requests_total', scope.base, **matchers)}[{window}])")
    return f"{lookups} >= {MIN_LOOKUPS}"
