"""A real workload of the library for the live Prometheus test, with the rarer series made to appear for real.

The demo's simulated agents provide hits, misses, savings, latencies, bytes and sessions. Errors, config refresh
failures, discovery failures, coalesced misses and a live config version only appear when they really happen, so
this makes them happen: a corrupted entry, a malformed live config, a discovery hash of the wrong type, concurrent
``get_or_compute`` callers and a config applied the way the operator applies it.
"""

from __future__ import annotations

import asyncio
import threading

from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import AgentCache, AgentCacheOptions, ToolStoreOptions
from agent_cache.config import CacheConfig, apply_config, changed_channel
from agent_cache.demo.workload import TIER_DEFAULTS, run_workload
from agent_cache.types import ConfigRefreshOptions, DiscoveryOptions, NearCacheOptions, TelemetryOptions

CACHE = "support_bot"
SPEC = {"tiers": {"llm": {"ttl": 3600}}, "toolPolicies": {"get_weather": {"ttl": 600}}}


async def _faults(cache: AgentCache, client: Valkey) -> None:
    # A corrupt tool entry: read as a miss, deleted and counted as errors_total{error="corrupt"}.
    await cache.tool.store("lookup_order", {"id": 1}, '{"status": "shipped"}', ToolStoreOptions(cost=0.002))
    entry = await cache.tool.check("lookup_order", {"id": 1})
    assert entry.key is not None
    await client.set(entry.key, b"\xff not an envelope")
    await cache.tool.check("lookup_order", {"id": 1})
    # A malformed live config, announced: config_refresh_failed_total; then the good one again.
    await client.hset(f"{CACHE}:__config", "spec", "{not json")
    await client.publish(changed_channel(CACHE), "broken")
    # The discovery registry of the wrong type: the next heartbeat fails (discovery_write_failed_total).
    await client.delete("__betterdb:caches")
    await client.set("__betterdb:caches", "not a hash")
    # Concurrent callers of one missing tool result: one computes, the others are coalesced.

    async def slow() -> str:
        await asyncio.sleep(0.2)
        return '{"temp": 21}'

    await asyncio.gather(*(cache.tool.get_or_compute("get_weather", {"city": "Oslo"}, slow) for _ in range(4)))
    # A lookup skipped on purpose (per-request cache control): bypass_total.
    with cache.control(no_cache=True):
        await cache.tool.check("get_weather", {"city": "Oslo"})
    await asyncio.sleep(2.5)
    await client.delete("__betterdb:caches", f"{CACHE}:__config")
    await apply_config(client, CACHE, CacheConfig.from_spec(SPEC), source="live-test")


async def drive(url: str, registry: CollectorRegistry, stop: threading.Event) -> None:
    client = Valkey.from_url(url)
    options = AgentCacheOptions(
        client=client,
        name=CACHE,
        tier_defaults=TIER_DEFAULTS,
        telemetry=TelemetryOptions(registry=registry),
        discovery=DiscoveryOptions(heartbeat_interval_ms=500),
        config_refresh=ConfigRefreshOptions(interval_ms=1000),
        near_cache=NearCacheOptions(max_entries=20),  # small: the near-cache's evictions happen for real too
    )
    try:
        await apply_config(client, CACHE, CacheConfig.from_spec(SPEC), source="live-test")
        async with AgentCache(options) as cache:
            await cache.flush()
            await _faults(cache, client)
            seed = 0
            while not stop.is_set():
                await run_workload(cache, requests=40, users=4, speed=0.02, seed=seed)
                with cache.tenant("acme"):  # the per-tenant series (agent_cache_tenant_*)
                    await run_workload(cache, requests=10, users=2, speed=0.02, seed=seed % 3)
                seed += 1
    finally:
        await client.aclose()
