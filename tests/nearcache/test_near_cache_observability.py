"""What an operator sees of the near-cache: L1 hits count like any hit (stats, dollars saved), the near-cache
metrics move, and spans say which level answered."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import AgentCache, LlmStoreOptions, ModelCost, NearCacheOptions, TelemetryOptions
from tests.servers import ServerHandle

pytestmark = pytest.mark.valkey

PARAMS = {"model": "m1", "messages": [{"role": "user", "content": "q"}]}


async def test_l1_hits_are_counted_priced_and_traced(valkey_server: ServerHandle) -> None:
    registry, exporter, provider = CollectorRegistry(), InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = Valkey.from_url(valkey_server.url)
    await client.flushall()
    options: dict[str, Any] = {"config_refresh": {"enabled": False}, "discovery": {"enabled": False}}
    cache = AgentCache(
        client=client,
        name="obs",
        near_cache=NearCacheOptions(),
        cost_table={"m1": ModelCost(input_per_1k=1.0, output_per_1k=2.0)},
        telemetry=TelemetryOptions(registry=registry, tracer_provider=provider),
        **options,
    )

    def metric(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, {"cache_name": "obs", **labels}) or 0.0

    try:
        await cache.llm.store(PARAMS, "answer", LlmStoreOptions(tokens={"input": 100, "output": 50}))
        near = cache._near
        assert near is not None
        for _ in range(50):  # until tracking is armed and L1 answers
            await cache.llm.check(PARAMS)
            if near.lookup(cache.llm.key(PARAMS)) is not None:
                break
            await asyncio.sleep(0.02)
        near.report_lookups()
        exporter.clear()
        hits_before = (await cache.stats()).llm.hits
        l1_before = metric("agent_cache_near_cache_requests_total", result="hit")
        saved_before = metric("agent_cache_cost_saved_total", tier="llm", model="m1", tool_name="")
        for _ in range(10):
            assert (await cache.llm.check(PARAMS)).hit
        for _ in range(100):  # L1 hits reach the counter in batches, with the heartbeat (4 times a second)
            if metric("agent_cache_near_cache_requests_total", result="hit") >= l1_before + 10:
                break
            await asyncio.sleep(0.05)
        assert metric("agent_cache_near_cache_requests_total", result="hit") == l1_before + 10
        assert (await cache.stats()).llm.hits == hits_before + 10
        assert metric("agent_cache_cost_saved_total", tier="llm", model="m1", tool_name="") == pytest.approx(
            saved_before + 10 * 0.2
        )
        levels = [span.attributes["cache.level"] for span in exporter.get_finished_spans() if span.attributes
                  and span.name == "agent_cache.llm.check"]  # fmt: skip
        assert levels == ["l1"] * 10
        assert metric("agent_cache_near_cache_entries") == 1
        assert metric("agent_cache_near_cache_bytes") > 0

        other = Valkey.from_url(valkey_server.url)
        await other.delete(cache.llm.key(PARAMS))
        await other.pttl(cache.llm.key(PARAMS))
        await other.aclose()
        exporter.clear()
        assert not (await cache.llm.check(PARAMS)).hit
        assert metric("agent_cache_near_cache_invalidations_total") >= 1
        assert metric("agent_cache_near_cache_entries") == 0
        span = next(s for s in exporter.get_finished_spans() if s.name == "agent_cache.llm.check")
        assert span.attributes is not None and span.attributes["cache.level"] == "l2"
    finally:
        await cache.close()
        await client.aclose()
