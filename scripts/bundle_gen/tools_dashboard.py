"""The Tools dashboard: which tools the cache pays off for, with a TTL recommendation per tool.

Scoped by the namespace, cache_name and tool_name variables (``TOOL_SCOPE``). The recommendation column uses
``agent_cache.stats.recommend``'s thresholds.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.models import dashboard as model

from agent_cache.stats import DISABLE_BELOW, INCREASE_TTL_ABOVE, LONG_TTL_SECONDS

from .grafana import (
    RANGE,
    RATE,
    RECOMMENDATION_MAPPINGS,
    SCOPE,
    TOOL_SCOPE,
    PanelSpec,
    Query,
    build_dashboard,
    cache_variables,
    hit_ratio,
    quantile_query,
    recommendation_query,
)
from .promql import by, series


def tools() -> dict[str, Any]:
    s = TOOL_SCOPE
    per_tool = ("cache_name", "tool_name")
    saved = f"sum {by('cost_saved_total', per_tool)} (increase({series('cost_saved_total', s, tier='tool')}[{RANGE}]))"
    lookups = f"sum {by('requests_total', per_tool)} (increase({series('requests_total', s, tier='tool')}[{RANGE}]))"
    hit_rate = hit_ratio(s, per_tool, RANGE, tier="tool")
    ttl = f"max {by('tool_ttl_seconds', per_tool)} ({series('tool_ttl_seconds', s)})"
    overview_panels = [
        PanelSpec(
            "table",
            "Tools: hit rate, lookups, savings, TTL and recommendation",
            "Per tool over the selected time range. TTL: of the latest result an instance stored (0: none). The "
            "recommendation applies agent-cache's own rule (agent_cache.stats.recommend): hit rate above "
            f"{INCREASE_TTL_ABOVE:.0%} with a TTL under {LONG_TTL_SECONDS // 3600} h → a longer TTL pays off, "
            f"from {DISABLE_BELOW:.0%} → optimal, below {DISABLE_BELOW:.0%} → shorten the TTL or stop caching the "
            "tool (the AgentCache's spec.toolPolicies, or `cache.tool.set_policy`).",
            [
                Query(hit_rate, table=True),
                Query(lookups, table=True),
                Query(saved, table=True),
                Query(ttl, table=True),
                Query(recommendation_query(hit_rate, ttl, per_tool), table=True),
            ],
            "short",
            width=24,
            height=10,
            transformations=[
                model.DataTransformerConfig(id_val="merge", options={}),
                model.DataTransformerConfig(
                    id_val="organize",
                    options={
                        "excludeByName": {"Time": True},
                        "renameByName": {
                            "cache_name": "cache",
                            "tool_name": "tool",
                            "Value #A": "hit rate",
                            "Value #B": "lookups",
                            "Value #C": "saved",
                            "Value #D": "TTL",
                            "Value #E": "recommendation",
                        },
                    },
                ),
            ],
            overrides=[
                ("hit rate", [model.DynamicConfigValue(id_val="unit", value="percentunit")]),
                ("lookups", [model.DynamicConfigValue(id_val="unit", value="short")]),
                ("saved", [model.DynamicConfigValue(id_val="unit", value="currencyUSD")]),
                ("TTL", [model.DynamicConfigValue(id_val="unit", value="s")]),
                (
                    "recommendation",
                    [
                        model.DynamicConfigValue(id_val="mappings", value=RECOMMENDATION_MAPPINGS),
                        model.DynamicConfigValue(
                            id_val="custom.cellOptions", value={"type": "color-background", "mode": "basic"}
                        ),
                    ],
                ),
            ],
        ),
        PanelSpec(
            "bargauge",
            "Top tools by dollars saved",
            "The ten tools whose cache hits saved the most over the selected time range (declared tool cost × hits).",
            [Query(f"topk(10, {saved})", "{{cache_name}} {{tool_name}}", instant=True)],
            "currencyUSD",
            width=12,
            height=9,
        ),
        PanelSpec(
            "timeseries",
            "Tool hit rate",
            "Hits / lookups per tool.",
            [Query(hit_ratio(s, per_tool, RATE, tier="tool"), "{{cache_name}} {{tool_name}}")],
            "percentunit",
            height=9,
            min=0,
            max=1,
        ),
    ]
    detail = [
        PanelSpec(
            "timeseries",
            "Dollars saved per hour per tool",
            "Saving rate per tool, in dollars per hour.",
            [
                Query(
                    f"sum {by('cost_saved_total', per_tool)} "
                    f"(rate({series('cost_saved_total', s, tier='tool')}[{RATE}])) * 3600",
                    "{{cache_name}} {{tool_name}}",
                )
            ],
            "currencyUSD",
        ),
        PanelSpec(
            "timeseries",
            "Tool lookups per second",
            "Tool lookups per second by tool and result (hit or miss).",
            [
                Query(
                    f"sum {by('requests_total', ('tool_name', 'result'))} "
                    f"(rate({series('requests_total', s, tier='tool')}[{RATE}]))",
                    "{{tool_name}} {{result}}",
                )
            ],
            "reqps",
        ),
        PanelSpec(
            "timeseries",
            "Tool tier latency p99 by operation",
            "0.99 quantile of tool tier operations (all tools: durations are not labelled by tool).",
            [Query(quantile_query("0.99", f'{SCOPE}, tier="tool"', ("operation",)), "{{operation}}")],
            "s",
            width=24,
        ),
    ]
    return build_dashboard(
        "agent-cache-tools",
        "agent-cache / Tools",
        "Which tools the cache pays off for: hit rate, savings and a TTL recommendation per tool.",
        [("Tools", overview_panels), ("Per tool over time", detail)],
        cache_variables(tools=True),
    )
