"""The metrics and spans of agent-cache, defined once.

``METRICS`` is the single source of truth for metric names, types, labels, help and buckets: it drives
Prometheus registration here and, through the generators, the Grafana dashboards, the alert rules and
their copies in the Helm chart and the operator. ``SPANS`` lists every span and its attributes.

Names and labels are the reference package's (``agent_cache_requests_total{cache_name,tier,result,
tool_name}`` ...). Histogram buckets start at 10 µs because a cache hit on a nearby Valkey takes tens of
microseconds. Spans never carry prompts or tool arguments — only hashed keys, names and counts.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry import trace
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

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

# Span name -> attributes it carries.
SPANS: dict[str, tuple[str, ...]] = {
    "agent_cache.llm.check": ("cache.key", "cache.model", "cache.hit", "cache.level"),
    "agent_cache.llm.store": ("cache.key", "cache.model", "cache.ttl", "cache.bytes"),
    "agent_cache.llm.store_multipart": (
        "cache.key",
        "cache.model",
        "cache.ttl",
        "cache.bytes",
        "cache.blocks",
    ),
    "agent_cache.llm.invalidate_by_model": ("cache.model", "cache.deleted_count"),
    "agent_cache.llm.clear": ("cache.deleted_count",),
    "agent_cache.tool.check": ("cache.key", "cache.tool_name", "cache.hit", "cache.level"),
    "agent_cache.tool.store": ("cache.key", "cache.tool_name", "cache.ttl", "cache.bytes"),
    "agent_cache.tool.set_policy": ("cache.tool_name", "cache.ttl"),
    "agent_cache.tool.invalidate": ("cache.key", "cache.tool_name", "cache.deleted_count"),
    "agent_cache.tool.invalidate_by_tool": ("cache.tool_name", "cache.deleted_count"),
    "agent_cache.session.get": ("cache.key", "cache.thread_id", "cache.field", "cache.hit"),
    "agent_cache.session.set": ("cache.key", "cache.thread_id", "cache.field", "cache.ttl", "cache.bytes"),
    "agent_cache.session.get_all": ("cache.thread_id", "cache.field_count"),
    "agent_cache.session.delete": ("cache.key", "cache.thread_id", "cache.field", "cache.deleted_count"),
    "agent_cache.session.destroy_thread": ("cache.thread_id", "cache.deleted_count"),
    "agent_cache.session.touch": ("cache.thread_id", "cache.touched_count_approx"),
    "agent_cache.stats": (),
    "agent_cache.flush": ("cache.deleted_count",),
}


class _MetricFamilies:
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


_families: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, _MetricFamilies]] = weakref.WeakKeyDictionary()


def _families_for(registry: CollectorRegistry, prefix: str) -> _MetricFamilies:
    per_prefix = _families.setdefault(registry, {})
    if prefix not in per_prefix:
        per_prefix[prefix] = _MetricFamilies(registry, prefix)
    return per_prefix[prefix]


_UNKNOWN = object()


def _global_provider_set() -> bool:
    """Has the application set a global tracer provider? (Checked per call until it has, so cheaply.)"""
    provider = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)  # what get_tracer_provider() reads
    if provider is _UNKNOWN:  # pragma: no cover - an API version without it: ask the public way
        return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return provider is not None


class _NoSpan:
    """``Telemetry.span`` when nothing would record: no span object, no context switch, no allocation."""

    __slots__ = ()

    def __enter__(self) -> trace.Span:
        return trace.INVALID_SPAN

    def __exit__(self, *exc_info: object) -> None:
        return None


_NO_SPAN = _NoSpan()


class OperationTimer:
    """Times one (tier, operation) into the duration histogram and counts its failures by kind.

    One per (tier, operation), holding its histogram child, so a call costs one small object and no label
    lookups; ``with timer():`` replaces a generator-based context manager on the hot path.
    """

    __slots__ = ("_classify", "_observe", "_telemetry", "operation", "tier")

    def __init__(self, telemetry: Telemetry, tier: str, operation: str, classify: Callable[[BaseException], str]):
        self._telemetry = telemetry
        self._observe = telemetry._child(telemetry._families.duration, tier, operation).observe
        self._classify = classify
        self.tier = tier
        self.operation = operation

    def __call__(self) -> _Timing:
        return _Timing(self)


class _Timing:
    __slots__ = ("_start", "_timer")

    def __init__(self, timer: OperationTimer) -> None:
        self._timer = timer

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        timer = self._timer
        if exc is not None and isinstance(exc, Exception):
            timer._telemetry.error(timer.tier, timer.operation, timer._classify(exc))
        timer._observe(time.perf_counter() - self._start)


class Telemetry:
    """Metrics and spans of one cache; label children are cached so a hot path does no label lookups."""

    def __init__(
        self,
        cache_name: str,
        *,
        prefix: str = "agent_cache",
        registry: CollectorRegistry | None = None,
        tracer_name: str = "@betterdb/agent-cache",
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.cache_name = cache_name
        self._families = _families_for(registry if registry is not None else REGISTRY, prefix)
        self.tracer = trace.get_tracer(tracer_name, tracer_provider=tracer_provider)
        self._children: dict[tuple[Any, ...], Any] = {}
        # Spans are skipped entirely while no tracer provider would record them (OTel's API without an SDK,
        # or a NoOpTracerProvider); a global provider set later is picked up on the next call.
        self._follows_global = isinstance(self.tracer, trace.ProxyTracer)
        self._recording = not self._follows_global and not isinstance(self.tracer, trace.NoOpTracer)

    @property
    def recording(self) -> bool:
        """Would a span started now be recorded? (False: ``span()`` costs nothing.)"""
        if self._recording:
            return True
        if self._follows_global and _global_provider_set():
            self._follows_global = False  # a global provider is set once and for all
            self._recording = True
        return self._recording

    def _child(self, family: Any, *labels: str) -> Any:
        key = (id(family), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(self.cache_name, *labels)
        return child

    def timer(self, tier: str, operation: str, classify: Callable[[BaseException], str]) -> OperationTimer:
        return OperationTimer(self, tier, operation, classify)

    def request(self, tier: str, hit: bool, tool_name: str = "") -> None:
        self._child(self._families.requests, tier, "hit" if hit else "miss", tool_name).inc()

    def duration(self, tier: str, operation: str, seconds: float) -> None:
        self._child(self._families.duration, tier, operation).observe(seconds)

    def cost_saved(self, tier: str, dollars: float, model: str = "", tool_name: str = "") -> None:
        if dollars > 0:
            self._child(self._families.cost_saved, tier, model, tool_name).inc(dollars)

    def tenant_request(self, tier: str, hit: bool, tenant: str) -> None:
        self._child(self._families.tenant_requests, tier, "hit" if hit else "miss", tenant).inc()

    def tenant_cost_saved(self, tier: str, dollars: float, tenant: str) -> None:
        if dollars > 0:
            self._child(self._families.tenant_cost_saved, tier, tenant).inc(dollars)

    def stored_bytes(self, tier: str, size: int) -> None:
        self._child(self._families.stored_bytes, tier).inc(size)

    def tool_ttl(self, tool_name: str, ttl: int | None) -> None:
        self._child(self._families.tool_ttl, tool_name).set(ttl or 0)

    def active_sessions(self, delta: int) -> None:
        self._child(self._families.active_sessions).inc(delta)

    def error(self, tier: str, operation: str, kind: str) -> None:
        self._child(self._families.errors, tier, operation, kind).inc()

    def coalesced(self, tier: str, outcome: str) -> None:
        self._child(self._families.coalesced, tier, outcome).inc()

    def bypass(self, tier: str, reason: str) -> None:
        self._child(self._families.bypass, tier, reason).inc()

    def config_refresh_failed(self) -> None:
        self._child(self._families.config_refresh_failed).inc()

    def discovery_write_failed(self) -> None:
        self._child(self._families.discovery_write_failed).inc()

    def stats_dropped(self, increments: int) -> None:
        self._child(self._families.stats_dropped).inc(increments)

    def near_started(self) -> None:
        """Create the near-cache series at zero: a dashboard shows 0, not "no data", before the first event."""
        families = self._families
        for result in ("hit", "miss"):
            self._child(families.near_requests, result)
        for family in (families.near_invalidations, families.near_evictions, families.near_refused):
            self._child(family)
        self.near_size(0, 0)

    def near_lookup(self, hit: bool, count: int = 1) -> None:
        self._child(self._families.near_requests, "hit" if hit else "miss").inc(count)

    def near_invalidated(self, count: int) -> None:
        self._child(self._families.near_invalidations).inc(count)

    def near_evicted(self, count: int) -> None:
        self._child(self._families.near_evictions).inc(count)

    def near_refused(self, reason: str) -> None:
        self._child(self._families.near_refused).inc()

    def near_size(self, entries: int, size: int) -> None:
        """The L1's size now (set as it changes, so a scrape never calls into the cache)."""
        self._child(self._families.near_entries).set(entries)
        self._child(self._families.near_bytes).set(size)

    def valkey_memory(
        self, node: str, used: int, maximum: int, policy: str, previous_policy: str | None, evicted: int, expired: int
    ) -> None:
        """One primary's INFO figures (``evicted``/``expired``: keys removed since the last reading)."""
        used_family, max_family, evicted_family, expired_family = self._families.valkey_memory
        used_family.labels(self.cache_name, node).set(used)
        max_family.labels(self.cache_name, node).set(maximum)
        evicted_family.labels(self.cache_name, node).inc(evicted)
        expired_family.labels(self.cache_name, node).inc(expired)
        if previous_policy is not None and previous_policy != policy:
            with contextlib.suppress(KeyError):
                self._families.valkey_policy.remove(self.cache_name, node, previous_policy)
        self._families.valkey_policy.labels(self.cache_name, node, policy).set(1)

    def forget_valkey_node(self, node: str, policy: str) -> None:
        """A primary that left (failover, resharding): its series go."""
        for family in self._families.valkey_memory:
            with contextlib.suppress(KeyError):
                family.remove(self.cache_name, node)
        with contextlib.suppress(KeyError):
            self._families.valkey_policy.remove(self.cache_name, node, policy)

    def config_version(self, previous: str | None, current: str | None) -> None:
        family = self._families.config_info
        if previous != current:
            with contextlib.suppress(KeyError):
                family.remove(self.cache_name, previous or "")
        family.labels(self.cache_name, current or "").set(1)

    def span(
        self, name: str, attributes: Mapping[str, str | int | bool] | None = None
    ) -> AbstractContextManager[trace.Span]:
        """A span that records the exception that ends it (a shared no-op while nothing records).

        Hot paths pass no ``attributes`` and set them under ``if span.is_recording():``, so nothing is
        built for a span nobody records.
        """
        if not self.recording:
            return _NO_SPAN
        return self._span(name, attributes)

    @contextmanager
    def _span(self, name: str, attributes: Mapping[str, str | int | bool] | None) -> Iterator[trace.Span]:
        with self.tracer.start_as_current_span(name, record_exception=True) as span:
            if attributes and span.is_recording():
                span.set_attributes(attributes)
            yield span
