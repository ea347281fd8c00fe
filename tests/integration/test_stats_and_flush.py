"""Stats counters, recommendations, flush isolation and discovery on every server kind."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agent_cache import ToolPolicy, ToolStoreOptions
from tests.integration.conftest import MakeCache

pytestmark = pytest.mark.valkey

PARAMS = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


async def test_stats_reflect_every_completed_operation(cache: Any) -> None:
    await cache.llm.check(PARAMS)
    await cache.llm.store(PARAMS, "x")
    await cache.llm.check(PARAMS)
    await cache.tool.check("w", {"c": 1})
    await cache.tool.store("w", {"c": 1}, "r", ToolStoreOptions(cost=0.002))
    for _ in range(3):
        await cache.tool.check("w", {"c": 1})
    await cache.session.set("t", "f", "v")
    await cache.session.get("t", "f")
    await cache.session.get_all("t")
    stats = await cache.stats()
    assert (stats.llm.hits, stats.llm.misses, stats.llm.hit_rate) == (1, 1, 0.5)
    assert (stats.tool.hits, stats.tool.misses) == (3, 1)
    assert stats.per_tool["w"].hits == 3 and stats.per_tool["w"].cost_saved_micros == 6000
    assert (stats.session.reads, stats.session.writes) == (2, 1)
    assert stats.cost_saved_micros == 6000 and stats.cost_saved == pytest.approx(0.006)


async def test_no_increment_is_lost_under_concurrency_and_close(make_cache: MakeCache) -> None:
    writers = [make_cache(stats_flush_interval_s=0.05) for _ in range(3)]
    await writers[0].tool.store("t", {}, "r")

    async def hammer(cache: Any, n: int) -> None:
        for i in range(n):
            await cache.tool.check("t", {} if i % 2 == 0 else {"miss": i})

    await asyncio.gather(*(hammer(c, 200) for c in writers for _ in range(4)))
    for cache in writers:
        await cache.close()
    reader = make_cache()
    stats = await reader.stats()
    assert stats.tool.hits + stats.tool.misses == 3 * 4 * 200
    assert stats.tool.hits == 3 * 4 * 100


async def test_tool_effectiveness_recommendations(make_cache: MakeCache) -> None:
    cache = make_cache()
    await cache.tool.set_policy("hot", ToolPolicy(ttl=300))
    await cache.tool.set_policy("hot_long", ToolPolicy(ttl=7200))
    for tool in ("hot", "hot_long", "mid", "cold"):
        await cache.tool.store(tool, {"k": 0}, "r", ToolStoreOptions(cost=0.01))
    for tool, hits, misses in (("hot", 9, 1), ("hot_long", 9, 1), ("mid", 5, 5), ("cold", 1, 9)):
        for _ in range(hits):
            await cache.tool.check(tool, {"k": 0})
        for i in range(misses):
            await cache.tool.check(tool, {"k": i + 1})
    entries = {e.tool: e for e in await cache.tool_effectiveness()}
    assert entries["hot"].recommendation == "increase_ttl"
    assert entries["hot_long"].recommendation == "optimal"
    assert entries["mid"].recommendation == "optimal"
    assert entries["cold"].recommendation == "decrease_ttl_or_disable"
    assert entries["hot"].cost_saved == pytest.approx(0.09)
    assert [e.tool for e in await cache.tool_effectiveness()][:2] in (["hot", "hot_long"], ["hot_long", "hot"])


async def test_flush_removes_only_this_caches_keys(make_cache: MakeCache, backend_client: Any) -> None:
    mine, neighbour, longer = make_cache(name="app"), make_cache(name="app2"), make_cache(name="app.x")
    for cache in (mine, neighbour, longer):
        await cache.llm.store(PARAMS, "x")
        await cache.tool.store("t", {}, "r")
        await cache.session.set("s", "f", "v")
        await cache.llm.check(PARAMS)
    await mine.tool.set_policy("t", ToolPolicy(ttl=60))
    assert await mine.flush() > 0
    assert (await mine.llm.check(PARAMS)).hit is False
    assert await mine.session.get_all("s") == {}
    assert await backend_client.hget("app:__tool_policies", "t") is not None  # config survives a flush
    for other in (neighbour, longer):
        assert (await other.llm.check(PARAMS)).hit is True
        assert await other.session.get("s", "f") == "v"


async def test_discovery_registers_and_really_writes_the_heartbeat(make_cache: MakeCache, backend_client: Any) -> None:
    cache = make_cache(name="disc")
    await cache.session.set("t", "f", "v")  # first use starts upkeep
    for _ in range(100):
        if await backend_client.exists("__betterdb:heartbeat:disc"):
            break
        await asyncio.sleep(0.02)
    assert 0 < await backend_client.ttl("__betterdb:heartbeat:disc") <= 60
    entry = json.loads(await backend_client.hget("__betterdb:caches", "disc"))
    assert entry["type"] == "agent_cache" and entry["stats_key"] == "disc:__stats"
    await cache.close()
    assert await backend_client.exists("__betterdb:heartbeat:disc") == 0
