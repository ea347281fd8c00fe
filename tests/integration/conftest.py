"""Caches wired to a real server (fixtures in tests/conftest.py), a private metrics registry and span exporter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agent_cache import AgentCache, AgentCacheOptions, TelemetryOptions


@dataclass
class Observed:
    registry: CollectorRegistry
    exporter: InMemorySpanExporter
    provider: TracerProvider

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


@pytest.fixture
def observed() -> Observed:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Observed(CollectorRegistry(), exporter, provider)


MakeCache = Callable[..., AgentCache]


@pytest.fixture
async def make_cache(backend_client: Any, observed: Observed) -> AsyncIterator[MakeCache]:
    """Build caches on the parametrized server (standalone, cluster, redis7); closes them afterwards."""
    made: list[AgentCache] = []

    def make(**options: Any) -> AgentCache:
        options.setdefault("name", "t")
        options.setdefault("telemetry", TelemetryOptions(registry=observed.registry, tracer_provider=observed.provider))
        cache = AgentCache(AgentCacheOptions(client=backend_client, **options))
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.close()


@pytest.fixture
def cache(make_cache: MakeCache) -> AgentCache:
    return make_cache()
