"""The metric families of agent-cache: every metric's name, type, labels, help and buckets, and their registration.

``METRICS`` is the single source of truth for metric names, types, labels, help and buckets: it drives
Prometheus registration here and, through the generators (which import it from ``agent_cache.telemetry``), the
Grafana dashboards, the alert rules and their copies in the Helm chart and the operator.

Names and labels are the reference package's (``agent_cache_requests_total{cache_name,tier,result,
tool_name}`` ...). Histogram buckets start at 10 µs because a cache hit on a nearby Valkey takes tens of
microseconds.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MetricKind = Literal["counter", "histogram", "gauge"]

LATENCY_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


@dataclass(frozen=True)
class MetricSpec:
    suffix: str
    kind: MetricKind
    help: str
    labels: tuple[str, ...]
    unit: str = ""
    buckets: tuple[float, ...] = ()

    def name(self, prefix: str) -> str:
        return f"{prefix}_{self.suffix}"


REQUESTS = MetricSpec(
    "requests_total",
    "counter",
    "Cache lookups by tier and result (hit or miss); tool_name is set for the tool tier.",
    ("cache_name", "tier", "result", "tool_name"),
)
OPERATION_DURATION = MetricSpec(
    "operation_duration_seconds",
    "histogram",
    "Duration of cache operations, including the Valkey round trip.",
    ("cache_name", "tier", "operation"),
    unit="seconds",
    buckets=LATENCY_BUCKETS,
)
COST_SAVED = MetricSpec(
    "cost_saved_total",
    "counter",
    "Estimated dollars saved by cache hits (LLM: priced from the cost table; tool: the declared cost).",
    ("cache_name", "tier", "model", "tool_name"),
    unit="dollars",
)
TENANT_REQUESTS = MetricSpec(
    "tenant_requests_total",
    "counter",
    "LLM and tool lookups made inside cache.tenant(...), by tenant and result; tenants past "
    'TelemetryOptions.max_names (default 100) are counted as tenant="other".',
    ("cache_name", "tier", "result", "tenant"),
)
TENANT_COST_SAVED = MetricSpec(
    "tenant_cost_saved_total",
    "counter",
    "Estimated dollars saved by the hits of lookups made inside cache.tenant(...), by tenant (past "
    'TelemetryOptions.max_names tenants: tenant="other").',
    ("cache_name", "tier", "tenant"),
    unit="dollars",
)
STORED_BYTES = MetricSpec(
    "stored_bytes_total",
    "counter",
    "Bytes written to the cache by store operations.",
    ("cache_name", "tier"),
    unit="bytes",
)
ACTIVE_SESSIONS = MetricSpec(
    "active_sessions",
    "gauge",
    "Approximate number of session threads this process has written to and not destroyed.",
    ("cache_name",),
)
ERRORS = MetricSpec(
    "errors_total",
    "counter",
    "Cache operations that failed, by error kind (unavailable, timeout, command, corrupt, too_large, usage; "
    "unencodable: a request whose text has no UTF-8 form, answered as a miss).",
    ("cache_name", "tier", "operation", "error"),
)

CONFIG_REFRESH_FAILED = MetricSpec(
    "config_refresh_failed_total",
    "counter",
    "Live config or tool policy re-reads that failed or found a malformed value (the last good config stays).",
    ("cache_name",),
)
DISCOVERY_WRITE_FAILED = MetricSpec(
    "discovery_write_failed_total",
    "counter",
    "Failed writes of the discovery registry entry or heartbeat.",
    ("cache_name",),
)
STATS_DROPPED = MetricSpec(
    "stats_dropped_total",
    "counter",
    "Hit/miss counter increments this process dropped: its buffer of counts not yet written to Valkey "
    "holds at most a fixed number of distinct fields while flushes fail.",
    ("cache_name",),
)
COALESCED = MetricSpec(
    "coalesced_total",
    "counter",
    "Misses that did not call the LLM/tool because a concurrent caller computed the value "
    "(outcome: local, waited) or that computed after waiting a whole lease (fallback).",
    ("cache_name", "tier", "outcome"),
)
BYPASS = MetricSpec(
    "bypass_total",
    "counter",
    "LLM/tool lookups or stores skipped on purpose, by reason: a per-request cache control (no_cache, refresh, "
    "no_store; only_if_cached: a miss returned without computing) or a model policy (not_cacheable, "
    "finish_reason, empty).",
    ("cache_name", "tier", "reason"),
)
TOOL_TTL = MetricSpec(
    "tool_ttl_seconds",
    "gauge",
    "TTL of the latest result this process stored for a tool (policy, per-call or tier TTL; 0: no expiry).",
    ("cache_name", "tool_name"),
    unit="seconds",
)
CONFIG_INFO = MetricSpec(
    "config_info",
    "gauge",
    "1 for the live config version this instance applied (version is empty without a live config).",
    ("cache_name", "version"),
)
NEAR_REQUESTS = MetricSpec(
    "near_cache_requests_total",
    "counter",
    "Near-cache (L1) lookups of LLM and tool entries: hit answered from process memory, miss went to Valkey.",
    ("cache_name", "result"),
)
NEAR_INVALIDATIONS = MetricSpec(
    "near_cache_invalidations_total",
    "counter",
    "L1 entries dropped because Valkey invalidated them (a write or flush anywhere) or their node's link was lost.",
    ("cache_name",),
)
NEAR_EVICTIONS = MetricSpec(
    "near_cache_evictions_total",
    "counter",
    "L1 entries evicted (least recently used first) to stay within max_entries and max_bytes.",
    ("cache_name",),
)
NEAR_ENTRIES = MetricSpec("near_cache_entries", "gauge", "Entries held in this process's L1.", ("cache_name",))
NEAR_BYTES = MetricSpec(
    "near_cache_bytes",
    "gauge",
    "Memory held by this process's L1 (values, keys and bookkeeping), bounded by max_bytes.",
    ("cache_name",),
    unit="bytes",
)
NEAR_REFUSED = MetricSpec(
    "near_cache_refused_total",
    "counter",
    "Times Valkey refused client tracking (ACL, old server, proxy): the near-cache stays off in that process.",
    ("cache_name",),
)
# Valkey's own figures from INFO (see _memory): the server's, shared by every cache on it; node is a primary's address.
VALKEY_USED = MetricSpec(
    "valkey_memory_used_bytes",
    "gauge",
    "Memory Valkey uses (INFO used_memory), per primary.",
    ("cache_name", "node"),
    unit="bytes",
)
VALKEY_MAX = MetricSpec(
    "valkey_memory_max_bytes",
    "gauge",
    "Valkey's memory limit (INFO maxmemory; 0: no limit), per primary.",
    ("cache_name", "node"),
    unit="bytes",
)
VALKEY_POLICY = MetricSpec(
    "valkey_maxmemory_policy_info",
    "gauge",
    "1 for the maxmemory-policy a primary runs with (noeviction: writes fail once memory is full).",
    ("cache_name", "node", "policy"),
)
VALKEY_EVICTED = MetricSpec(
    "valkey_evicted_keys_total",
    "counter",
    "Keys Valkey evicted to stay within maxmemory (INFO evicted_keys), counted since this process started.",
    ("cache_name", "node"),
)
VALKEY_EXPIRED = MetricSpec(
    "valkey_expired_keys_total",
    "counter",
    "Keys Valkey removed because their TTL ran out (INFO expired_keys), counted since this process started.",
    ("cache_name", "node"),
)

METRICS: tuple[MetricSpec, ...] = (
    REQUESTS,
    OPERATION_DURATION,
    COST_SAVED,
    TENANT_REQUESTS,
    TENANT_COST_SAVED,
    STORED_BYTES,
    ACTIVE_SESSIONS,
    ERRORS,
    CONFIG_REFRESH_FAILED,
    DISCOVERY_WRITE_FAILED,
    STATS_DROPPED,
    COALESCED,
    BYPASS,
    TOOL_TTL,
    CONFIG_INFO,
    NEAR_REQUESTS,
    NEAR_INVALIDATIONS,
    NEAR_EVICTIONS,
    NEAR_ENTRIES,
    NEAR_BYTES,
    NEAR_REFUSED,
    VALKEY_USED,
    VALKEY_MAX,
    VALKEY_POLICY,
    VALKEY_EVICTED,
    VALKEY_EXPIRED,
)


class MetricFamilies:
    """The prometheus_client collectors of one (registry, prefix)."""

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        def make(spec: MetricSpec) -> Any:
            name = spec.name(prefix)
            existing = registry._names_to_collectors.get(name)  # registered by another instance
            if existing is not None:
                return existing
            if spec.kind == "counter":
                return Counter(name, spec.help, spec.labels, registry=registry)
            if spec.kind == "histogram":
                return Histogram(name, spec.help, spec.labels, buckets=spec.buckets, registry=registry)
            return Gauge(name, spec.help, spec.labels, registry=registry)

        self.requests = make(REQUESTS)
        self.duration = make(OPERATION_DURATION)
        self.cost_saved = make(COST_SAVED)
        self.tenant_requests = make(TENANT_REQUESTS)
        self.tenant_cost_saved = make(TENANT_COST_SAVED)
        self.stored_bytes = make(STORED_BYTES)
        self.active_sessions = make(ACTIVE_SESSIONS)
        self.errors = make(ERRORS)
        self.config_refresh_failed = make(CONFIG_REFRESH_FAILED)
        self.discovery_write_failed = make(DISCOVERY_WRITE_FAILED)
        self.stats_dropped = make(STATS_DROPPED)
        self.config_info = make(CONFIG_INFO)
        self.coalesced = make(COALESCED)
        self.bypass = make(BYPASS)
        self.tool_ttl = make(TOOL_TTL)
        self.near_requests = make(NEAR_REQUESTS)
        self.near_invalidations = make(NEAR_INVALIDATIONS)
        self.near_evictions = make(NEAR_EVICTIONS)
        self.near_entries = make(NEAR_ENTRIES)
        self.near_bytes = make(NEAR_BYTES)
        self.near_refused = make(NEAR_REFUSED)
        self.valkey_memory = [make(spec) for spec in (VALKEY_USED, VALKEY_MAX, VALKEY_EVICTED, VALKEY_EXPIRED)]
        self.valkey_policy = make(VALKEY_POLICY)


_families_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, MetricFamilies]] = (
    weakref.WeakKeyDictionary()
)


def families_for(registry: CollectorRegistry, prefix: str) -> MetricFamilies:
    """The collectors of (registry, prefix), made once and shared by every cache that reports there."""
    per_prefix = _families_by_registry.setdefault(registry, {})
    if prefix not in per_prefix:
        per_prefix[prefix] = MetricFamilies(registry, prefix)
    return per_prefix[prefix]
