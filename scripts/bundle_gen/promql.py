"""PromQL built from the metrics definitions, so a query can only name metrics and labels that exist.

Every dashboard query and rule expression selects series through :func:`series`, which looks the metric up in
``agent_cache.telemetry.METRICS`` (or the operator's metrics) and refuses a label the metric does not have. The
tests re-check the finished expressions independently (tests/observability/test_generated.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from agent_cache.telemetry import METRICS, MetricSpec

PREFIX = "agent_cache"
OPERATOR_PREFIX = "agent_cache_operator"

# Labels Prometheus adds when it scrapes a target (prometheus-operator adds namespace, pod, service...).
TARGET_LABELS = frozenset({"namespace", "pod", "instance", "job", "service", "container", "endpoint"})

CACHE_METRICS: dict[str, MetricSpec] = {spec.suffix: spec for spec in METRICS}


def operator_metrics() -> dict[str, MetricSpec]:
    """The operator's own metrics, from the operator package when it defines them."""
    from .operator_metrics import OPERATOR_METRICS

    return {spec.suffix: spec for spec in OPERATOR_METRICS}


def _spec(suffix: str, operator: bool) -> MetricSpec:
    table = operator_metrics() if operator else CACHE_METRICS
    if suffix not in table:
        raise KeyError(f"no metric {suffix!r} in {'the operator metrics' if operator else 'agent_cache METRICS'}")
    return table[suffix]


def series(
    suffix: str,
    base: str = "",
    *,
    part: str = "",
    operator: bool = False,
    **matchers: str,
) -> str:
    """``name{base, label="value"...}``; ``part`` is ``bucket``/``count``/``sum`` for a histogram.

    ``base`` is a pre-built matcher list shared by a whole dashboard or rule set (``namespace=~"$namespace"...``);
    a matcher value starting with ``~`` or ``!`` becomes ``=~`` / ``!=``.
    """
    spec = _spec(suffix, operator)
    name = spec.name(OPERATOR_PREFIX if operator else PREFIX)
    if part:
        if spec.kind != "histogram" or part not in {"bucket", "count", "sum"}:
            raise ValueError(f"{name} has no _{part} series")
        name = f"{name}_{part}"
    parts = [base] if base else []
    for label, value in matchers.items():
        if label not in spec.labels:
            raise KeyError(f"{name} has no label {label!r} (labels: {', '.join(spec.labels)})")
        if value.startswith("~"):
            parts.append(f'{label}=~"{value[1:]}"')
        elif value.startswith("!"):
            parts.append(f'{label}!="{value[1:]}"')
        else:
            parts.append(f'{label}="{value}"')
    return f"{name}{{{', '.join(parts)}}}" if parts else name


def by(suffix: str, labels: Iterable[str], *, operator: bool = False, extra: Iterable[str] = ()) -> str:
    """``by (a, b)`` after checking each label is one of the metric's (or a scrape target label)."""
    spec = _spec(suffix, operator)
    allowed = set(spec.labels) | TARGET_LABELS | set(extra) | ({"le"} if spec.kind == "histogram" else set())
    names = list(labels)
    for label in names:
        if label not in allowed:
            raise KeyError(f"{spec.suffix} has no label {label!r}")
    return f"by ({', '.join(names)})"
