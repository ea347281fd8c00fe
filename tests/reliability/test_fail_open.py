"""A cache problem never becomes an agent outage: real servers killed, paused and restarted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import (
    AgentCacheError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    LlmStoreOptions,
)
from agent_cache import stats as stats_module
from agent_cache.embedded import EmbeddedValkey
from tests.reliability.conftest import make_cache

pytestmark = pytest.mark.valkey

PARAMS = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


async def test_llm_and_tool_calls_keep_working_through_an_outage(
    valkey_server_factory: Callable[..., Any], client_factory: Callable[..., Any]
) -> None:
    server = valkey_server_factory()
    registry = CollectorRegistry()
    cache = make_cache(client_factory(server.url), registry)
    await cache.llm.store(PARAMS, "before", LlmStoreOptions(tokens={"input": 1, "output": 1}))
    assert (await cache.llm.check(PARAMS)).hit

    server.kill()
    outcomes = []
    for i in range(30):  # an agent's loop: every call must return, none may raise
        llm = await cache.llm.check(PARAMS)
        tool = await cache.tool.check("search", {"q": i})
        await cache.llm.store(PARAMS, "during")
        await cache.tool.store("search", {"q": i}, "r")
        outcomes.append((llm.hit, llm.error is not None, tool.hit, tool.error is not None))
    assert all(o == (False, True, False, True) for o in outcomes)
    assert cache.backend.breaker.state in ("open", "half-open")
    errors = registry.get_sample_value(
        "agent_cache_errors_total", {"cache_name": "rel", "tier": "llm", "operation": "check", "error": "unavailable"}
    )
    assert errors == 30

    with pytest.raises(BackendUnavailableError):  # state must not be lost silently
        await cache.session.set("t", "f", "v")

    server.restart()
    for _ in range(100):  # the breaker lets a probe through after its cooldown and closes again
        if (await cache.llm.check(PARAMS)).error is None:
            break
        await asyncio.sleep(0.05)
    assert cache.backend.breaker.state == "closed"
    await cache.llm.store(PARAMS, "after")
    assert (await cache.llm.check(PARAMS)).response == "after"
    await cache.close()


async def test_on_error_raise_surfaces_the_failure(
    valkey_server_factory: Callable[..., Any], client_factory: Callable[..., Any]
) -> None:
    server = valkey_server_factory()
    cache = make_cache(client_factory(server.url), on_error="raise")
    server.kill()
    with pytest.raises(BackendError):
        await cache.llm.check(PARAMS)
    with pytest.raises(BackendError):
        await cache.tool.store("t", {}, "r")
    await cache.close()


async def test_a_paused_server_hits_the_timeout_not_a_hang(
    valkey_server_factory: Callable[..., Any], client_factory: Callable[..., Any]
) -> None:
    server = valkey_server_factory()
    cache = make_cache(client_factory(server.url), timeout_s=0.2, breaker_threshold=100)
    await cache.llm.store(PARAMS, "x")
    server.pause()
    try:
        result = await asyncio.wait_for(cache.llm.check(PARAMS), timeout=10)  # a guard, not a measurement
        assert result.hit is False and result.error is not None and result.error.startswith("timeout")
        with pytest.raises(BackendTimeoutError):
            await asyncio.wait_for(cache.session.get("t", "f"), timeout=10)
    finally:
        server.resume()
    for _ in range(50):
        if (await cache.llm.check(PARAMS)).hit:
            break
        await asyncio.sleep(0.05)
    assert (await cache.llm.check(PARAMS)).hit
    await cache.close()


@pytest.mark.cluster
@pytest.mark.slow
async def test_operations_recover_after_a_cluster_primary_is_killed() -> None:
    from agent_cache.embedded import EmbeddedCluster
    from tests.servers import cluster_client

    with EmbeddedCluster() as cluster:
        client = cluster_client(cluster.startup_nodes, socket_connect_timeout=0.3, socket_timeout=0.5)
        cache = make_cache(client, timeout_s=1.0, breaker_cooldown_s=0.2)
        keys = [{**PARAMS, "messages": [{"role": "user", "content": str(i)}]} for i in range(60)]
        for params in keys:
            await cache.llm.store(params, "v")
        primary = next(port for port, role in cluster.node_roles().items() if role == "primary")
        cluster.kill_node(primary)
        raised = 0
        recovered = False
        for _ in range(200):  # up to ~20 s for the replica to take over
            try:
                results = [await cache.llm.check(params) for params in keys]
            except Exception:
                raised += 1
                results = []
            if results and all(r.error is None for r in results):
                recovered = True
                break
            await asyncio.sleep(0.1)
        assert raised == 0, "an exception reached the agent"
        assert recovered, "operations did not recover after failover"
        await cache.llm.store(keys[0], "after failover")
        assert (await cache.llm.check(keys[0])).response == "after failover"
        await cache.close()
        await client.aclose()


async def refuse_writes(client: Valkey) -> None:
    await client.config_set("maxmemory-policy", "noeviction")
    await client.config_set("maxmemory", "1")  # every write is refused with OOM; reads still work


async def test_counts_wait_in_bounded_memory_while_valkey_refuses_writes_and_none_is_lost(
    valkey_server_factory: Callable[..., EmbeddedValkey],
) -> None:
    server = valkey_server_factory()
    client = Valkey.from_url(server.url)
    cache = make_cache(client, breaker_threshold=1_000)  # keep trying: the flushes are what is tested
    try:
        await refuse_writes(client)
        for i in range(40):
            assert not (await cache.tool.check("weather", {"i": i})).hit  # a miss, counted in-process
            with contextlib.suppress(AgentCacheError):
                await cache.stats()  # flushes first: refused
            # The buffer holds a field once however many flushes failed (tool:misses, tool:weather:misses).
            assert cache._stats.pending <= 4, f"after {i + 1} refused flushes: {cache._stats.pending} fields buffered"
        await client.config_set("maxmemory", "0")
        stats = await cache.stats()
        assert stats.tool.misses == 40  # every count arrived once: none lost, none doubled by the retries
        assert stats.per_tool["weather"].misses == 40
    finally:
        await cache.close()
        await client.aclose()


async def test_a_long_outage_with_ever_new_tools_drops_counts_past_the_limit_and_counts_the_drops(
    valkey_server_factory: Callable[..., EmbeddedValkey], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats_module, "MAX_PENDING_FIELDS", 5)
    server = valkey_server_factory()
    client = Valkey.from_url(server.url)
    registry = CollectorRegistry()
    cache = make_cache(client, registry, breaker_threshold=1_000)
    try:
        await refuse_writes(client)
        for i in range(6):
            await cache.tool.check(f"tool_{i}", {})  # tool:misses, then two fields per new tool
            with contextlib.suppress(AgentCacheError):
                await cache.stats()
        dropped = registry.get_sample_value("agent_cache_stats_dropped_total", {"cache_name": "rel"})
        assert dropped is not None and dropped > 0
        await client.config_set("maxmemory", "0")
        stats = await cache.stats()
        assert stats.tool.misses == 6  # a field already buffered keeps counting
        # One field per new tool fits beside the batch being retried until the limit; the last was dropped.
        assert sorted(stats.per_tool) == [f"tool_{i}" for i in range(5)]
        assert dropped == 1
    finally:
        await cache.close()
        await client.aclose()
