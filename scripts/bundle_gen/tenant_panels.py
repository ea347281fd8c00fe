"""The Overview dashboard's row of stats accounting: lookups, hit rate and dollars saved per tenant, and counts lost.

From ``agent_cache_tenant_requests_total`` and ``agent_cache_tenant_cost_saved_total``, which count only lookups
made inside ``cache.tenant(...)``; each instance counts at most ``TelemetryOptions.max_names`` tenants by name and
the rest as ``other``, so these panels have a bounded number of series whatever the number of tenants. The last
panel shows counter increments an instance dropped because its buffer of unwritten counts was full.
"""

from __future__ import annotations

from .grafana import RATE, PanelSpec, Query
from .promql import by, series

TOP = 10  # tenants shown per panel: the busiest / the biggest savers


def tenant_panels(scope: str) -> list[PanelSpec]:
    per_tenant = by("tenant_requests_total", ("tenant",))
    lookups = f"sum {per_tenant} (rate({series('tenant_requests_total', scope)}[{RATE}]))"
    hits = f"sum {per_tenant} (rate({series('tenant_requests_total', scope, result='hit')}[{RATE}]))"
    saved = (
        f"sum {by('tenant_cost_saved_total', ('tenant',))} "
        f"(rate({series('tenant_cost_saved_total', scope)}[{RATE}])) * 3600"
    )
    return [
        PanelSpec(
            "timeseries",
            "Lookups per second by tenant",
            f"LLM and tool lookups made inside cache.tenant(...), the {TOP} busiest tenants. Tenants past an "
            "instance's max_names (default 100) are counted as 'other'; untenanted lookups are not shown.",
            [Query(f"topk({TOP}, {lookups})", "{{tenant}}")],
            "reqps",
            width=8,
        ),
        PanelSpec(
            "timeseries",
            "Hit rate by tenant",
            f"Share of each tenant's LLM and tool lookups answered from the cache, for the {TOP} busiest tenants.",
            [Query(f"({hits} or 0 * {lookups}) / topk({TOP}, {lookups})", "{{tenant}}")],
            "percentunit",
            width=8,
            min=0,
            max=1,
        ),
        PanelSpec(
            "timeseries",
            "Dollars saved per hour by tenant",
            f"Saving rate of each tenant's cache hits, in dollars per hour, for the {TOP} biggest savers.",
            [Query(f"topk({TOP}, {saved})", "{{tenant}}")],
            "currencyUSD",
            width=8,
        ),
        PanelSpec(
            "timeseries",
            "Stats increments dropped",
            "Hit/miss counter increments an instance dropped while Valkey refused its stats writes and its buffer "
            "already held the most distinct fields it keeps (10,000): stats() and the stats hash undercount by this.",
            [
                Query(
                    f"sum {by('stats_dropped_total', ('namespace', 'cache_name'))} "
                    f"(increase({series('stats_dropped_total', scope)}[{RATE}]))",
                    "{{namespace}}/{{cache_name}}",
                )
            ],
            "short",
            width=8,
        ),
    ]
