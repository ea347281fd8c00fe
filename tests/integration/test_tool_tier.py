"""Tool tier behaviour on every server kind."""

from __future__ import annotations

from typing import Any

import pytest

from agent_cache import AgentCacheUsageError, TierDefaults, ToolPolicy, ToolStoreOptions
from tests.integration.conftest import MakeCache

pytestmark = pytest.mark.valkey


async def test_miss_store_hit_with_argument_order_ignored(cache: Any) -> None:
    assert (await cache.tool.check("get_weather", {"city": "Sofia", "units": "metric"})).hit is False
    await cache.tool.store("get_weather", {"city": "Sofia", "units": "metric"}, '{"temp": 21}')
    result = await cache.tool.check("get_weather", {"units": "metric", "city": "Sofia"})
    assert (result.hit, result.response, result.tool_name) == (True, '{"temp": 21}', "get_weather")
    assert (await cache.tool.check("get_weather", {"city": "Varna", "units": "metric"})).hit is False


async def test_ttl_precedence_call_then_policy_then_tier_then_default(
    make_cache: MakeCache, backend_client: Any
) -> None:
    cache = make_cache(default_ttl=40, tier_defaults={"tool": TierDefaults(ttl=80)})
    assert 70 < await backend_client.ttl(await cache.tool.store("t", {}, "r")) <= 80
    await cache.tool.set_policy("t", ToolPolicy(ttl=600))
    assert 590 < await backend_client.ttl(await cache.tool.store("t", {}, "r")) <= 600
    assert 5 < await backend_client.ttl(await cache.tool.store("t", {}, "r", ToolStoreOptions(ttl=10))) <= 10
    assert 30 < await backend_client.ttl(await make_cache(name="d", default_ttl=40).tool.store("t", {}, "r")) <= 40


async def test_policies_are_shared_by_instances_of_the_same_cache(make_cache: MakeCache) -> None:
    first = make_cache()
    await first.tool.set_policy("search", ToolPolicy(ttl=3600))
    second = make_cache()
    await second.tool.refresh_policies()
    assert second.tool.get_policy("search") == ToolPolicy(ttl=3600)


async def test_invalidate_one_call_and_whole_tool(cache: Any) -> None:
    for city in ("a", "b", "c"):
        await cache.tool.store("weather", {"city": city}, city)
    await cache.tool.store("other", {"city": "a"}, "x")
    assert await cache.tool.invalidate("weather", {"city": "a"}) is True
    assert await cache.tool.invalidate("weather", {"city": "a"}) is False
    assert await cache.tool.invalidate_by_tool("weather") == 2
    assert (await cache.tool.check("weather", {"city": "b"})).hit is False
    assert (await cache.tool.check("other", {"city": "a"})).hit is True


async def test_invalidate_by_tool_handles_more_entries_than_one_batch(cache: Any) -> None:
    for i in range(2500):
        await cache.tool.store("bulk", {"i": i}, "r")
    assert await cache.tool.invalidate_by_tool("bulk") == 2500


@pytest.mark.parametrize("tool", ["a:b", "a", "x*y", "{tag}", "sp ace", "ünïcødé/工具", "a%3Ab"])
async def test_odd_tool_names_work_and_never_collide(cache: Any, tool: str) -> None:
    await cache.tool.store(tool, {"q": 1}, tool)
    await cache.tool.store("a", {"q": 1}, "plain a")
    assert (await cache.tool.check(tool, {"q": 1})).response == (tool if tool != "a" else "plain a")
    stats = await cache.stats()
    assert tool in stats.per_tool
    assert await cache.tool.invalidate_by_tool(tool) == 1
    if tool != "a":
        assert (await cache.tool.check("a", {"q": 1})).response == "plain a"


async def test_bad_input_errors(cache: Any) -> None:
    with pytest.raises(AgentCacheUsageError, match="tool name must not be empty"):
        await cache.tool.check("", {})
    with pytest.raises(AgentCacheUsageError, match=r"args\.when is a datetime"):
        import datetime

        await cache.tool.check("t", {"when": datetime.datetime.now()})
    with pytest.raises(AgentCacheUsageError, match=r"options\.cost"):
        await cache.tool.store("t", {}, "r", ToolStoreOptions(cost=-1))
    with pytest.raises(AgentCacheUsageError, match="response must be a string"):
        await cache.tool.store("t", {}, {"not": "a string"})
