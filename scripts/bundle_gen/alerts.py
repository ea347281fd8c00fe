"""The alert catalogue: every alert's PromQL, annotations and the promtool cases that prove it fires and stays quiet.

Each :class:`~.rule_model.Alert` renders in every :class:`~.rule_model.Scope` (see ``rules``). Names follow the
monitoring-mixins guidelines: ``AgentCache`` prefix, ``severity``, ``summary``, ``description``, ``runbook_url`` and a
``for:`` that rides out blips. The order of ``ALERTS`` is the order of the generated rule files.
"""

from __future__ import annotations

from .promql import by, series
from .rule_model import CACHE_KEYS, LATENCY_KEYS, Alert, Scope, enough_lookups, hit_ratio
from .rule_tests import (
    OPERATOR_FAILURES,
    Case,
    expect,
    latency_buckets,
    lookups,
    ops_and_errors,
    series_of,
)

EVICTED = "agent_cache_valkey_evicted_keys_total"

# ── expressions ────────────────────────────────────────────────────────────────


def _llm_hit_rate_low(scope: Scope) -> str:
    return (
        f"{hit_ratio(scope, CACHE_KEYS, '30m', tier='llm')}\n< {scope.threshold('llmHitRateMin')}\n"
        f"and\n{enough_lookups(scope, CACHE_KEYS, '30m', tier='llm')}"
    )


def _tool_hit_rate_low(scope: Scope) -> str:
    return (
        f"{hit_ratio(scope, CACHE_KEYS, '30m', tier='tool')}\n< {scope.threshold('toolHitRateMin')}\n"
        f"and\n{enough_lookups(scope, CACHE_KEYS, '30m', tier='tool')}"
    )


TOOL_KEYS = (*CACHE_KEYS, "tool_name")


def _tool_should_be_disabled(scope: Scope) -> str:
    return (
        f"{hit_ratio(scope, TOOL_KEYS, '1h', tier='tool')}\n< {scope.threshold('toolDisableBelow')}\n"
        f"and\n{enough_lookups(scope, TOOL_KEYS, '1h', tier='tool')}"
    )


def _latency_high(scope: Scope) -> str:
    buckets = series("operation_duration_seconds", scope.base, part="bucket")
    return (
        f"histogram_quantile(\n  0.99,\n  sum {by('operation_duration_seconds', (*LATENCY_KEYS, 'le'))} "
        f"(rate({buckets}[5m]))\n)\n> {scope.threshold('latencyP99MaxSeconds')}"
    )


def _operations(scope: Scope) -> str:
    count = series("operation_duration_seconds", scope.base, part="count")
    return f"sum {by('operation_duration_seconds', CACHE_KEYS)} (rate({count}[5m]))"


def _error_ratio_high(scope: Scope) -> str:
    errors = series("errors_total", scope.base, error="!usage")
    return f"sum {by('errors_total', CACHE_KEYS)} (rate({errors}[5m]))\n/\n{_operations(scope)}\n> " + scope.threshold(
        "errorRatioMax"
    )


UNREACHABLE_RATIO = 0.5


def _valkey_unreachable(scope: Scope) -> str:
    errors = series("errors_total", scope.base, error="~unavailable|timeout")
    return f"sum {by('errors_total', CACHE_KEYS)} (rate({errors}[5m]))\n/\n{_operations(scope)}\n> {UNREACHABLE_RATIO}"


def _config_refresh_failing(scope: Scope) -> str:
    failed = series("config_refresh_failed_total", scope.base)
    return f"sum {by('config_refresh_failed_total', CACHE_KEYS)} (increase({failed}[10m])) > 0"


def _config_version_skew(scope: Scope) -> str:
    info = series("config_info", scope.base)
    versions = f"count {by('config_info', (*CACHE_KEYS, 'version'))} ({info} == 1)"
    return f"count {by('config_info', CACHE_KEYS)} ({versions}) > 1"


def _no_traffic(scope: Scope) -> str:
    selector = series("requests_total", scope.base)
    rate = f"sum {by('requests_total', CACHE_KEYS)} (rate({selector}[10m]))"
    if scope.per_cache:  # a cache whose pods are all gone exports nothing at all
        rate = f"(\n  {rate}\n  or\n  (absent({selector}) - 1)\n)"
    return f"{rate}\n< {scope.threshold('expectedMinRequestsPerSecond')}"


def _evicting(scope: Scope) -> str:
    """Every instance of a cache reports its Valkey's evictions: the max per node, not the sum."""
    evicted = series("valkey_evicted_keys_total", scope.base)
    return f"max {by('valkey_evicted_keys_total', (*CACHE_KEYS, 'node'))} (rate({evicted}[10m])) > 0"


def _operator_reconcile_failing(scope: Scope) -> str:
    failures = series("reconcile_failures_total", operator=True)
    return (
        f"sum {by('reconcile_failures_total', ('namespace', 'reason'), operator=True)} (increase({failures}[15m])) > 0"
    )


ALERTS: tuple[Alert, ...] = (
    Alert(
        "AgentCacheLlmHitRateLow",
        _llm_hit_rate_low,
        "15m",
        "warning",
        "LLM cache hit rate is low.",
        "The LLM tier of cache {{ $labels.cache_name }} in {{ $labels.namespace }} answered "
        "{{ $value | humanizePercentage }} of lookups over 30 minutes, below the minimum of [[llmHitRateMin]]: "
        "most LLM calls are paid for.",
        (
            Case("fires below the minimum", lookups("llm", 1, 9), "60m", (expect(severity="warning"),), "10%"),
            Case("fires with no hit at all", lookups("llm", 0, 10), "60m", (expect(severity="warning"),), "0%"),
            Case("quiet above the minimum", lookups("llm", 5, 5), "60m"),
            Case("quiet with too few lookups", lookups("llm", 0, 1), "60m"),
        ),
    ),
    Alert(
        "AgentCacheToolHitRateLow",
        _tool_hit_rate_low,
        "15m",
        "warning",
        "Tool cache hit rate is low.",
        "The tool tier of cache {{ $labels.cache_name }} in {{ $labels.namespace }} answered "
        "{{ $value | humanizePercentage }} of lookups over 30 minutes, below the minimum of [[toolHitRateMin]].",
        (
            Case(
                "fires below the minimum",
                lookups("tool", 1, 9, tool_name="get_weather"),
                "60m",
                (expect(severity="warning"),),
                "10%",
            ),
            Case("quiet above the minimum", lookups("tool", 5, 5, tool_name="get_weather"), "60m"),
        ),
    ),
    Alert(
        "AgentCacheToolShouldBeDisabled",
        _tool_should_be_disabled,
        "1h",
        "info",
        "A cached tool almost never hits.",
        "Tool {{ $labels.tool_name }} of cache {{ $labels.cache_name }} in {{ $labels.namespace }} hit "
        "{{ $value | humanizePercentage }} of lookups over the last hour, below [[toolDisableBelow]]: caching it "
        "costs a write per call and saves almost nothing. Disable caching for it or give it a longer TTL.",
        (
            Case(
                "fires for the tool that never hits",
                lookups("tool", 0, 10, minutes=180, tool_name="search_web")
                + lookups("tool", 5, 5, minutes=180, tool_name="get_weather"),
                "150m",
                (expect(tool_name="search_web", severity="info"),),
                "0%",
            ),
            Case("quiet for a tool that hits", lookups("tool", 5, 5, minutes=180, tool_name="get_weather"), "150m"),
        ),
    ),
    Alert(
        "AgentCacheLatencyHigh",
        _latency_high,
        "15m",
        "warning",
        "Cache operations are slow.",
        "p99 latency of {{ $labels.tier }} {{ $labels.operation }} on cache {{ $labels.cache_name }} in "
        "{{ $labels.namespace }} is {{ $value | humanizeDuration }}, above [[latencyP99MaxSeconds]] s.",
        (
            Case(
                "fires when p99 is above the maximum",
                latency_buckets("0.1"),
                "40m",
                (expect(tier="llm", operation="check", severity="warning"),),
                "99.5ms",
            ),
            Case("quiet when p99 is below the maximum", latency_buckets("0.01"), "40m"),
        ),
    ),
    Alert(
        "AgentCacheErrorRateHigh",
        _error_ratio_high,
        "10m",
        "warning",
        "Cache operations are failing.",
        "{{ $value | humanizePercentage }} of operations on cache {{ $labels.cache_name }} in "
        "{{ $labels.namespace }} failed over 5 minutes (Valkey errors, timeouts or corrupt entries), above "
        "[[errorRatioMax]].",
        (
            Case(
                "fires above the maximum ratio",
                ops_and_errors(100, {"command": 5}),
                "30m",
                (expect(severity="warning"),),
                "5%",
            ),
            Case("quiet below the maximum ratio", ops_and_errors(1000, {"corrupt": 1}), "30m"),
            Case("quiet for callers' usage errors", ops_and_errors(100, {"usage": 50}), "30m"),
        ),
    ),
    Alert(
        "AgentCacheValkeyUnreachable",
        _valkey_unreachable,
        "5m",
        "critical",
        "Valkey is unreachable: the cache is failing open.",
        "{{ $value | humanizePercentage }} of operations on cache {{ $labels.cache_name }} in "
        "{{ $labels.namespace }} could not reach Valkey or timed out over 5 minutes. The provider wrappers fail "
        "open: every LLM call is paid for at full price until Valkey is back.",
        (
            Case(
                "fires when most operations cannot reach Valkey",
                ops_and_errors(100, {"unavailable": 60, "timeout": 30}),
                "30m",
                (expect(severity="critical"),),
                "90%",
            ),
            Case("quiet on occasional timeouts", ops_and_errors(100, {"timeout": 2}), "30m"),
        ),
    ),
    Alert(
        "AgentCacheConfigRefreshFailing",
        _config_refresh_failing,
        "15m",
        "warning",
        "Cache instances cannot apply the live config.",
        "Instances of cache {{ $labels.cache_name }} in {{ $labels.namespace }} keep failing to re-read the live "
        "config pushed by the operator (or found it malformed); they run on the last good config.",
        (
            Case(
                "fires on repeated failures",
                ((series_of("agent_cache_config_refresh_failed_total"), "0+1x60"),),
                "40m",
                (expect(severity="warning"),),
            ),
            Case(
                "quiet after a single failure",
                ((series_of("agent_cache_config_refresh_failed_total"), "0 1 1x60"),),
                "40m",
            ),
        ),
    ),
    Alert(
        "AgentCacheConfigVersionSkew",
        _config_version_skew,
        "30m",
        "warning",
        "Cache instances run different config versions.",
        "Instances of cache {{ $labels.cache_name }} in {{ $labels.namespace }} report {{ $value }} different live "
        "config versions for 30 minutes: some did not pick up the latest AgentCache change.",
        (
            Case(
                "fires while instances disagree",
                (
                    (series_of("agent_cache_config_info", version="aaaa", pod="agent-1"), "1x60"),
                    (series_of("agent_cache_config_info", version="bbbb", pod="agent-2"), "1x60"),
                ),
                "45m",
                (expect(severity="warning"),),
                "2",
            ),
            Case(
                "quiet when all instances agree",
                (
                    (series_of("agent_cache_config_info", version="bbbb", pod="agent-1"), "1x60"),
                    (series_of("agent_cache_config_info", version="bbbb", pod="agent-2"), "1x60"),
                ),
                "45m",
            ),
        ),
    ),
    Alert(
        "AgentCacheNoTraffic",
        _no_traffic,
        "15m",
        "warning",
        "A cache gets less traffic than expected.",
        "Cache {{ $labels.cache_name }} in {{ $labels.namespace }} served "
        '{{ $value | printf "%.2f" }} lookups per second '
        "over 10 minutes, below the expected [[expectedMinRequestsPerSecond]]: its agents may be down or no longer "
        "use the cache.",
        (
            Case(
                "fires below the expected rate",
                lookups("llm", 10, 5, minutes=60),
                "40m",
                (expect(severity="warning"),),
                "0.25",
            ),
            Case("quiet at the expected rate", lookups("llm", 60, 60, minutes=60), "40m"),
            Case(
                "fires when the cache exports nothing",
                ((series_of("agent_cache_active_sessions"), "1x60"),),
                "40m",
                (expect(severity="warning"),),
                "0.00",
                per_cache_only=True,
            ),
        ),
        gate="expectedMinRequestsPerSecond",
    ),
    Alert(
        "AgentCacheEvicting",
        _evicting,
        "15m",
        "warning",
        "Valkey evicts cache entries: memory is full.",
        "Valkey primary {{ $labels.node }} of cache {{ $labels.cache_name }} in {{ $labels.namespace }} evicted "
        '{{ $value | printf "%.2f" }} keys per second over 10 minutes: entries go before their TTL and come back '
        "as misses (and paid calls). Give Valkey more memory or shorten TTLs.",
        (
            Case(
                "fires on sustained evictions, once per node however many instances report it",
                (
                    (series_of(EVICTED, node="10.0.0.7:6379", pod="agent-1"), "0+30x60"),
                    (series_of(EVICTED, node="10.0.0.7:6379", pod="agent-2"), "0+30x60"),
                ),
                "40m",
                (expect(node="10.0.0.7:6379", severity="warning"),),
                "0.50",
            ),
            Case("quiet after a one-off burst", ((series_of(EVICTED, node="10.0.0.7:6379"), "0 500 500x60"),), "40m"),
            Case("quiet without evictions", ((series_of(EVICTED, node="10.0.0.7:6379"), "0x60"),), "40m"),
        ),
    ),
    Alert(
        "AgentCacheOperatorReconcileFailing",
        _operator_reconcile_failing,
        "15m",
        "warning",
        "The agent-cache operator keeps failing to reconcile.",
        "The operator in {{ $labels.namespace }} failed reconciles ({{ $labels.reason }}) throughout the last "
        "30 minutes; AgentCache changes may not reach Valkey, Grafana or Prometheus.",
        (
            Case(
                "fires on continuous failures",
                (
                    (
                        OPERATOR_FAILURES,
                        "0+1x60",
                    ),
                ),
                "40m",
                ({"namespace": "agent-cache-system", "reason": "ValkeyUnavailable", "severity": "warning"},),
            ),
            Case(
                "quiet after one failure",
                (
                    (
                        OPERATOR_FAILURES,
                        "0 1 1x60",
                    ),
                ),
                "40m",
            ),
        ),
        operator=True,
    ),
)

CACHE_ALERTS = tuple(a for a in ALERTS if not a.operator)
OPERATOR_ALERTS = tuple(a for a in ALERTS if a.operator)
