"""The operator's own metrics, read from ``agent_cache_operator.metrics.OperatorMetrics`` (its single definition).

prometheus_client keeps a collector's name, type, labels and buckets on the collector; we instantiate the operator's
metrics on a throwaway registry and turn each collector into a ``MetricSpec`` like the library's.
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from agent_cache.telemetry import MetricSpec
from agent_cache_operator.metrics import PREFIX, OperatorMetrics


def _spec(collector: MetricWrapperBase) -> MetricSpec:
    kind = collector._type
    name = collector._name.removeprefix(f"{PREFIX}_")
    if kind == "counter":
        name += "_total"
    buckets: tuple[float, ...] = ()
    if kind == "histogram":
        buckets = tuple(b for b in collector._upper_bounds if not math.isinf(b))  # type: ignore[attr-defined]
    if kind not in ("counter", "gauge", "histogram"):
        raise ValueError(f"unsupported operator metric type {kind} for {name}")
    return MetricSpec(name, kind, collector._documentation, tuple(collector._labelnames), buckets=buckets)


def _load() -> tuple[MetricSpec, ...]:
    metrics = OperatorMetrics(CollectorRegistry())
    collectors = [value for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)]
    return tuple(_spec(c) for c in sorted(collectors, key=lambda c: c._name))


OPERATOR_METRICS: tuple[MetricSpec, ...] = _load()
