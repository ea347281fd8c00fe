"""The metrics and spans of agent-cache: ``Telemetry``, what one cache records, and ``SPANS``, every span it opens.

The metric definitions (``METRICS``, ``MetricSpec``, ``LATENCY_BUCKETS`` and one spec per metric) live in
:mod:`agent_cache._metric_families` and are re-exported here, where the generators and tests import them.
``SPANS`` lists every span and its attributes. Spans never carry prompts or tool arguments — only hashed keys,
names and counts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import trace
from prometheus_client import REGISTRY, CollectorRegistry

from ._metric_families import (
    ACTIVE_SESSIONS,
    BYPASS,
    COALESCED,
    CONFIG_INFO,
    CONFIG_REFRESH_FAILED,
    COST_SAVED,
    DISCOVERY_WRITE_FAILED,
    ERRORS,
    LATENCY_BUCKETS,
    METRICS,
    NEAR_BYTES,
    NEAR_ENTRIES,
    NEAR_EVICTIONS,
    NEAR_INVALIDATIONS,
    NEAR_REFUSED,
    NEAR_REQUESTS,
    OPERATION_DURATION,
    REQUESTS,
    STATS_DROPPED,
    STORED_BYTES,
    TENANT_COST_SAVED,
    TENANT_REQUESTS,
    TOOL_TTL,
    VALKEY_EVICTED,
    VALKEY_EXPIRED,
    VALKEY_MAX,
    VALKEY_POLICY,
    VALKEY_USED,
    MetricKind,
    MetricSpec,
    families_for,
)

__all__ = [
    "ACTIVE_SESSIONS",
    "BYPASS",
    "COALESCED",
    "CONFIG_INFO",
    "CONFIG_REFRESH_FAILED",
    "COST_SAVED",
    "DISCOVERY_WRITE_FAILED",
    "ERRORS",
    "LATENCY_BUCKETS",
    "METRICS",
    "NEAR_BYTES",
    "NEAR_ENTRIES",
    "NEAR_EVICTIONS",
    "NEAR_INVALIDATIONS",
    "NEAR_REFUSED",
    "NEAR_REQUESTS",
    "OPERATION_DURATION",
    "REQUESTS",
    "SPANS",
    "STATS_DROPPED",
    "STORED_BYTES",
    "TENANT_COST_SAVED",
    "TENANT_REQUESTS",
    "TOOL_TTL",
    "VALKEY_EVICTED",
    "VALKEY_EXPIRED",
    "VALKEY_MAX",
    "VALKEY_POLICY",
    "VALKEY_USED",
    "MetricKind",
    "MetricSpec",
    "OperationTimer",
    "Telemetry",
]

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
    "agent_cache.session.scan_fields_by_prefix": ("cache.thread_id", "cache.field_prefix", "cache.field_count"),
    "agent_cache.session.delete": ("cache.key", "cache.thread_id", "cache.field", "cache.deleted_count"),
    "agent_cache.session.destroy_thread": ("cache.thread_id", "cache.deleted_count"),
    "agent_cache.session.touch": ("cache.thread_id", "cache.touched_count_approx"),
    "agent_cache.stats": (),
    "agent_cache.flush": ("cache.deleted_count",),
}


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
        self._families = families_for(registry if registry is not None else REGISTRY, prefix)
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
