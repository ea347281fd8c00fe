"""The Overview dashboard and the registry of every dashboard the generator writes.

Built with grafana-foundation-sdk (Grafana 11.6 schema, see ``grafana.py``) from the metrics definitions: every query
selects series through ``promql.series``, so it can only name metrics and labels that exist, and is scoped by the
namespace and cache_name variables. Some Overview rows live in their own modules (``memory_panels``,
``tenant_panels``); the other dashboards too (``tools_dashboard``, ``operator_dashboard``).
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.models import dashboard as model

from .grafana import (
    QUANTILE_NAMES,
    RANGE,
    RATE,
    SCOPE,
    PanelSpec,
    Query,
    build_dashboard,
    cache_variables,
    hit_ratio,
    quantile_query,
)
from .memory_panels import memory_row
from .operator_dashboard import operator
from .promql import by, series
from .tenant_panels import tenant_panels
from .tools_dashboard import tools

# ── overview ───────────────────────────────────────────────────────────────────


def overview() -> dict[str, Any]:
    s = SCOPE
    cost = f"sum (increase({series('cost_saved_total', s)}[{RANGE}]))"
    summary = [
        PanelSpec(
            "stat",
            "LLM hit rate",
            "Share of LLM lookups answered from the cache over the selected time range.",
            [Query(hit_ratio(s, (), RANGE, tier="llm"), instant=True)],
            "percentunit",
            width=4,
            height=5,
            min=0,
            max=1,
        ),
        PanelSpec(
            "stat",
            "Tool hit rate",
            "Share of tool lookups answered from the cache over the selected time range.",
            [Query(hit_ratio(s, (), RANGE, tier="tool"), instant=True)],
            "percentunit",
            width=4,
            height=5,
            min=0,
            max=1,
        ),
        PanelSpec(
            "stat",
            "Saved in range",
            "Estimated dollars saved by cache hits over the selected time range: LLM hits priced from the cost "
            "table, tool hits at their declared cost.",
            [Query(cost, instant=True)],
            "currencyUSD",
            width=4,
            height=5,
        ),
        PanelSpec(
            "stat",
            "Saved per hour",
            "Current saving rate: dollars saved per hour, averaged over the last hour.",
            [Query(f"sum (rate({series('cost_saved_total', s)}[1h])) * 3600", instant=True)],
            "currencyUSD",
            width=4,
            height=5,
        ),
        PanelSpec(
            "stat",
            "Active sessions",
            "Session threads the instances have written to and not destroyed (approximate, per process).",
            [Query(f"sum ({series('active_sessions', s)})", instant=True)],
            "short",
            width=4,
            height=5,
        ),
        PanelSpec(
            "stat",
            "Errors in range",
            "Failed cache operations over the selected time range (Valkey unavailable, timeouts, command errors, "
            "corrupt entries, callers' usage errors).",
            [Query(f"sum (increase({series('errors_total', s)}[{RANGE}]))", instant=True)],
            "short",
            width=4,
            height=5,
            no_value="0",
        ),
    ]
    traffic = [
        PanelSpec(
            "timeseries",
            "Hit rate per tier",
            "Hits / lookups per tier (llm, tool, session).",
            [Query(hit_ratio(s, ("tier",), RATE), "{{tier}}")],
            "percentunit",
            min=0,
            max=1,
        ),
        PanelSpec(
            "timeseries",
            "Lookups per second: hits and misses",
            "Cache lookups per second by tier and result.",
            [
                Query(
                    f"sum {by('requests_total', ('tier', 'result'))} (rate({series('requests_total', s)}[{RATE}]))",
                    "{{tier}} {{result}}",
                )
            ],
            "reqps",
        ),
        PanelSpec(
            "timeseries",
            "Dollars saved per hour by tier",
            "Saving rate by tier, in dollars per hour.",
            [
                Query(
                    f"sum {by('cost_saved_total', ('tier',))} (rate({series('cost_saved_total', s)}[{RATE}])) * 3600",
                    "{{tier}}",
                )
            ],
            "currencyUSD",
        ),
        PanelSpec(
            "timeseries",
            "Dollars saved per hour by model",
            "Saving rate of the LLM tier by model, in dollars per hour.",
            [
                Query(
                    f"sum {by('cost_saved_total', ('model',))} "
                    f"(rate({series('cost_saved_total', s, tier='llm')}[{RATE}])) * 3600",
                    "{{model}}",
                )
            ],
            "currencyUSD",
        ),
        PanelSpec(
            "timeseries",
            "Coalesced misses per second",
            "Misses that did not call the LLM or tool because a concurrent caller was already computing the value "
            "(get_or_compute stampede protection): local = same process, waited = another process or pod, "
            "fallback = computed anyway after waiting a whole lease.",
            [
                Query(
                    f"sum {by('coalesced_total', ('tier', 'outcome'))} (rate({series('coalesced_total', s)}[{RATE}]))",
                    "{{tier}} {{outcome}}",
                )
            ],
            "ops",
            width=12,
        ),
        PanelSpec(
            "timeseries",
            "Bypassed lookups and stores per second",
            "Lookups or stores skipped on purpose: per-request cache control (no_cache and refresh skip the "
            "lookup, no_store the store; only_if_cached: misses returned without calling the model) and model "
            "policies (not_cacheable, finish_reason, empty). Not counted as hits or misses.",
            [
                Query(
                    f"sum {by('bypass_total', ('tier', 'reason'))} (rate({series('bypass_total', s)}[{RATE}]))",
                    "{{tier}} {{reason}}",
                )
            ],
            "ops",
            width=12,
        ),
    ]
    latency = [
        PanelSpec(
            "timeseries",
            f"Latency {QUANTILE_NAMES[q]} by tier and operation",
            f"{q} quantile of operation duration, including the Valkey round trip, per tier and operation.",
            [Query(quantile_query(q, s, ("tier", "operation")), "{{tier}} {{operation}}")],
            "s",
            width=8,
        )
        for q in ("0.5", "0.95", "0.99")
    ] + [
        PanelSpec(
            "timeseries",
            "Operations per second",
            "Cache operations per second by tier and operation (failed ones included).",
            [
                Query(
                    f"sum {by('operation_duration_seconds', ('tier', 'operation'))} "
                    f"(rate({series('operation_duration_seconds', s, part='count')}[{RATE}]))",
                    "{{tier}} {{operation}}",
                )
            ],
            "ops",
            width=24,
        )
    ]
    storage = [
        PanelSpec(
            "timeseries",
            "Bytes stored per second by tier",
            "Bytes written to Valkey by store operations, per tier (what the cache adds, not what it holds: "
            "entries expire by TTL).",
            [
                Query(
                    f"sum {by('stored_bytes_total', ('tier',))} (rate({series('stored_bytes_total', s)}[{RATE}]))",
                    "{{tier}}",
                )
            ],
            "Bps",
        ),
        PanelSpec(
            "timeseries",
            "Active sessions",
            "Session threads each cache's instances have written to and not destroyed (approximate).",
            [
                Query(
                    f"sum {by('active_sessions', ('namespace', 'cache_name'))} ({series('active_sessions', s)})",
                    "{{namespace}}/{{cache_name}}",
                )
            ],
            "short",
        ),
    ]
    near_hits = f"sum (rate({series('near_cache_requests_total', s, result='hit')}[{RATE}]))"
    near_lookups = f"sum (rate({series('near_cache_requests_total', s)}[{RATE}]))"
    near = [
        PanelSpec(
            "timeseries",
            "Near-cache (L1) hit rate",
            "Share of LLM and tool lookups answered from process memory (near_cache on), without a Valkey round "
            "trip. Misses went to Valkey, where they may still hit.",
            [Query(f"({near_hits} or 0 * {near_lookups}) / {near_lookups}", "L1 hit rate")],
            "percentunit",
            width=8,
            min=0,
            max=1,
        ),
        PanelSpec(
            "timeseries",
            "Near-cache invalidations and evictions per second",
            "L1 entries dropped because Valkey invalidated them (a write or flush anywhere, a lost link), evicted "
            "to stay within max_entries/max_bytes, and refusals of client tracking (L1 then stays off).",
            [
                Query(f"sum (rate({series('near_cache_invalidations_total', s)}[{RATE}]))", "invalidated"),
                Query(f"sum (rate({series('near_cache_evictions_total', s)}[{RATE}]))", "evicted"),
                Query(f"sum (rate({series('near_cache_refused_total', s)}[{RATE}]))", "tracking refused"),
            ],
            "ops",
            width=8,
        ),
        PanelSpec(
            "timeseries",
            "Near-cache memory",
            "Bytes held in L1 across the selected caches' instances (each bounded by its max_bytes); the legend's "
            "second series is the number of entries.",
            [
                Query(f"sum ({series('near_cache_bytes', s)})", "bytes"),
                Query(f"sum ({series('near_cache_entries', s)})", "entries"),
            ],
            "bytes",
            width=8,
        ),
    ]
    failing_open = series("errors_total", s, error="~unavailable|timeout")
    operations = f"sum (rate({series('operation_duration_seconds', s, part='count')}[{RATE}]))"
    errors = [
        PanelSpec(
            "timeseries",
            "Errors per second by kind",
            "Failed cache operations per second by tier, operation and error kind (unavailable, timeout, "
            "command, corrupt, usage).",
            [
                Query(
                    f"sum {by('errors_total', ('tier', 'operation', 'error'))} "
                    f"(rate({series('errors_total', s)}[{RATE}]))",
                    "{{tier}} {{operation}} {{error}}",
                )
            ],
            "ops",
            width=8,
        ),
        PanelSpec(
            "timeseries",
            "Failing open",
            "Share of operations that could not reach Valkey or timed out. The provider wrappers then call the "
            "model uncached (fail open): every such call is paid for.",
            [Query(f"(sum (rate({failing_open}[{RATE}])) or 0 * {operations}) / {operations}", "failing open")],
            "percentunit",
            width=8,
            min=0,
            max=1,
        ),
        PanelSpec(
            "timeseries",
            "Live config and discovery failures",
            "Failed re-reads of the operator's live config (the last good config stays applied) and failed "
            "discovery heartbeat writes, per cache.",
            [
                Query(
                    f"sum {by('config_refresh_failed_total', ('namespace', 'cache_name'))} "
                    f"(increase({series('config_refresh_failed_total', s)}[{RATE}]))",
                    "config refresh {{namespace}}/{{cache_name}}",
                ),
                Query(
                    f"sum {by('discovery_write_failed_total', ('namespace', 'cache_name'))} "
                    f"(increase({series('discovery_write_failed_total', s)}[{RATE}]))",
                    "discovery {{namespace}}/{{cache_name}}",
                ),
            ],
            "short",
            width=8,
        ),
    ]
    config = [
        PanelSpec(
            "table",
            "Config version per instance",
            "The live config version each instance applied (empty: no live config, code defaults). Instances on "
            "different versions have not all picked up the latest AgentCache change.",
            [Query(f"{series('config_info', s)} == 1", table=True)],
            "short",
            width=16,
            transformations=[
                model.DataTransformerConfig(
                    id_val="organize",
                    options={
                        "excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True},
                        "renameByName": {"version": "config version"},
                    },
                )
            ],
        ),
        PanelSpec(
            "stat",
            "Config versions in use",
            "Distinct live config versions across the selected caches' instances (1 when every instance agrees).",
            [
                Query(
                    f"count (count {by('config_info', ('cache_name', 'version'))} ({series('config_info', s)} == 1))",
                    instant=True,
                )
            ],
            "short",
            width=8,
        ),
    ]
    return build_dashboard(
        "agent-cache-overview",
        "agent-cache / Overview",
        "Hit rates, dollars saved, latency, storage, sessions, tenants, errors and live config of agent-cache caches.",
        [
            ("Summary", summary),
            ("Traffic and savings", traffic),
            ("Latency", latency),
            ("Storage and sessions", storage),
            ("Near-cache (L1)", near),
            ("Valkey memory and evictions", memory_row(s)),
            ("Tenants and stats counters", tenant_panels(s)),
            ("Errors", errors),
            ("Live config", config),
        ],
        cache_variables(),
    )


DASHBOARDS = {"overview": overview, "tools": tools, "operator": operator}
# The dashboards the operator deploys per cache (the operator dashboard is platform-wide: the chart ships it).
CACHE_DASHBOARDS = ("overview", "tools")
