"""Tool policies from two owners: the application (``set_policy``) and the live config (operator or CLI).

The config's policy wins per tool; a tool the config does not name keeps the application's policy, also after a
push, a change and a delete of the config, on every server kind.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent_cache import ConfigRefreshOptions, ToolPolicy
from agent_cache.config import CacheConfig, apply_config, delete_config
from tests.integration.conftest import MakeCache

pytestmark = pytest.mark.valkey


def config(**policies: dict[str, Any]) -> CacheConfig:
    return CacheConfig.from_spec({"toolPolicies": policies})


async def stored_ttl(cache: Any, client: Any, tool: str) -> int | None:
    """The TTL a fresh store of ``tool`` gets (None: it was not stored at all)."""
    key = await cache.tool.store(tool, {"n": 1}, "r")
    ttl = await client.ttl(key)
    await cache.tool.invalidate(tool, {"n": 1})
    return None if ttl == -2 else int(ttl)


async def test_a_config_push_keeps_the_policies_of_tools_it_does_not_name(
    make_cache: MakeCache, backend_client: Any
) -> None:
    app = make_cache(config_refresh=ConfigRefreshOptions(enabled=False))
    await app.tool.set_policy("send_email", ToolPolicy(cacheable=False))
    await app.tool.set_policy("search", ToolPolicy(ttl=60))
    cache = make_cache()

    await apply_config(backend_client, "t", config(search={"ttl": 900}, weather={"ttl": 120}), "test")
    await cache.live_config.refresh()
    assert cache.tool.get_policy("send_email") == ToolPolicy(cacheable=False)  # not named: the code's
    assert await stored_ttl(cache, backend_client, "send_email") is None
    assert 890 < (await stored_ttl(cache, backend_client, "search") or 0) <= 900  # named: the config's wins

    await apply_config(backend_client, "t", config(weather={"ttl": 120}), "test")  # stops naming search
    await cache.live_config.refresh()
    assert cache.tool.get_policy("search") == ToolPolicy(ttl=60)
    assert cache.tool.get_policy("send_email") == ToolPolicy(cacheable=False)

    await delete_config(backend_client, "t")
    await cache.live_config.refresh()
    assert cache.tool.get_policy("weather") is None
    assert cache.tool.get_policy("search") == ToolPolicy(ttl=60)
    assert await backend_client.hgetall("t:__tool_policies") == {
        b"send_email": b'{"cacheable": false}',
        b"search": b'{"ttl": 60}',
    }


async def test_the_policies_hash_shows_what_applies_and_a_new_instance_reads_it(
    make_cache: MakeCache, backend_client: Any
) -> None:
    app = make_cache(config_refresh=ConfigRefreshOptions(enabled=False))
    await app.tool.set_policy("search", ToolPolicy(ttl=60))
    await apply_config(backend_client, "t", config(search={"ttl": 900}), "test")
    assert await backend_client.hget("t:__tool_policies", "search") == b'{"ttl": 900}'  # BetterDB Monitor's view

    await app.tool.set_policy("search", ToolPolicy(ttl=30))  # while the config owns it: kept aside
    assert await backend_client.hget("t:__tool_policies", "search") == b'{"ttl": 900}'
    await apply_config(backend_client, "t", CacheConfig(default_ttl=5), "test")
    fresh = make_cache(config_refresh=ConfigRefreshOptions(enabled=False))
    await fresh.tool.load_policies()
    assert fresh.tool.get_policy("search") == ToolPolicy(ttl=30)  # the latest set_policy came back


async def test_reset_policies_forgets_what_was_read_until_the_next_load(make_cache: MakeCache) -> None:
    first = make_cache(config_refresh=ConfigRefreshOptions(enabled=False))
    await first.tool.set_policy("search", ToolPolicy(ttl=60))
    second = make_cache(config_refresh=ConfigRefreshOptions(enabled=False))
    assert second.tool.get_policy("search") is None
    await second.tool.load_policies()
    assert second.tool.get_policy("search") == ToolPolicy(ttl=60) and second.tool.policies_loaded
    second.tool.reset_policies()
    assert second.tool.get_policy("search") is None and not second.tool.policies_loaded
    await second.tool.load_policies()
    assert second.tool.get_policy("search") == ToolPolicy(ttl=60)


async def test_a_tool_that_is_not_cacheable_is_computed_every_time_and_never_counted(make_cache: MakeCache) -> None:
    cache = make_cache()
    await cache.tool.set_policy("send_email", ToolPolicy(cacheable=False))
    sent: list[int] = []

    async def send() -> str:
        sent.append(1)
        return "sent"

    for _ in range(3):
        assert (await cache.tool.check("send_email", {"to": "a"})).hit is False
        result = await cache.tool.get_or_compute("send_email", {"to": "a"}, send)
        assert (result.hit, result.response) == (False, "sent")
    assert len(sent) == 3
    await cache.tool.check("search", {"q": 1})
    stats = await cache.stats()
    assert "send_email" not in stats.per_tool
    assert (stats.tool.hits, stats.tool.misses) == (0, 1)


async def test_stats_right_after_opening_report_the_policy_ttl(make_cache: MakeCache) -> None:
    writer = make_cache(config_refresh=ConfigRefreshOptions(enabled=False))
    await writer.tool.set_policy("search", ToolPolicy(ttl=300))
    for hit in (True,) * 9 + (False,):
        if not hit:
            await writer.tool.invalidate("search", {"q": 1})
        await writer.tool.store("search", {"q": 1}, "r")
        await writer.tool.check("search", {"q": 1})
    await writer.tool.check("search", {"q": 2})
    await writer.close()

    for _ in range(3):  # opened inside a running loop: its upkeep starts loading the policies in the background
        reader = make_cache()
        stats = await reader.stats()
        assert stats.per_tool["search"].ttl == 300
        [entry] = await make_cache().tool_effectiveness()
        assert (entry.tool, entry.recommendation) == ("search", "increase_ttl")
