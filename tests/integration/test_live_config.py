"""The live config protocol end to end: a writer (operator/CLI) and running caches on real servers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agent_cache import ConfigRefreshOptions, LlmStoreOptions, TierDefaults, ToolStoreOptions
from agent_cache.config import CacheConfig, apply_config, delete_config, list_instances, read_config
from tests.integration.conftest import MakeCache, Observed

pytestmark = pytest.mark.valkey

PARAMS = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
SPEC = {
    "defaultTTL": 500,
    "tiers": {"llm": {"ttl": 3000}, "session": {"ttl": 900}},
    "toolPolicies": {"get_weather": {"ttl": 600}, "send_email": {"cacheable": False}},
    "costOverrides": {"gpt-4o": {"inputPer1k": 1.0, "outputPer1k": 2.0}},
}


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {seconds}s")


async def test_a_running_cache_applies_an_announced_config(make_cache: MakeCache, backend_client: Any) -> None:
    cache = make_cache(name="live", tier_defaults={"llm": TierDefaults(ttl=60)})
    await cache.llm.check(PARAMS)  # first use starts the watcher
    await eventually(lambda: _applied(cache, None))
    version = await apply_config(backend_client, "live", CacheConfig.from_spec(SPEC), source="test")
    await eventually(lambda: _applied(cache, version))

    key = await cache.llm.store(PARAMS, "x", LlmStoreOptions(tokens={"input": 1000, "output": 1000}))
    assert 2990 < await backend_client.ttl(key) <= 3000  # config tier beats the code's tier default
    key = await cache.tool.store("other_tool", {}, "r")
    assert 490 < await backend_client.ttl(key) <= 500  # config defaultTTL beats code defaults
    key = await cache.tool.store("get_weather", {}, "r")
    assert 590 < await backend_client.ttl(key) <= 600
    await cache.tool.store("send_email", {"to": "a"}, "sent", ToolStoreOptions(cost=1))
    assert (await cache.tool.check("send_email", {"to": "a"})).hit is False
    await cache.llm.check(PARAMS)
    assert (await cache.stats()).cost_saved_micros == 3_000_000  # priced by the config's override

    instances = await list_instances(backend_client, "live")
    assert [i.version for i in instances] == [version]

    await delete_config(backend_client, "live")
    await eventually(lambda: _applied(cache, None))
    key = await cache.llm.store(PARAMS, "x")
    assert 50 < await backend_client.ttl(key) <= 60  # back to the code's defaults


async def _applied(cache: Any, version: str | None) -> bool:
    return bool(cache.live_config.version == version and cache._upkeep is not None)


async def test_interval_reread_applies_a_config_whose_announcement_was_missed(
    make_cache: MakeCache, backend_client: Any
) -> None:
    cache = make_cache(name="poll", config_refresh=ConfigRefreshOptions(subscribe=False, interval_ms=1000))
    await cache.llm.check(PARAMS)
    config = CacheConfig.from_spec({"tiers": {"llm": {"ttl": 1234}}})
    await backend_client.hset("poll:__config", mapping={"spec": config.canonical(), "version": config.version})
    await eventually(lambda: _applied(cache, config.version))
    assert 1200 < await backend_client.ttl(await cache.llm.store(PARAMS, "x")) <= 1234


async def test_a_malformed_config_keeps_the_last_good_one(
    make_cache: MakeCache, backend_client: Any, observed: Observed
) -> None:
    cache = make_cache(name="bad")
    await cache.llm.check(PARAMS)
    good = await apply_config(backend_client, "bad", CacheConfig.from_spec({"tiers": {"llm": {"ttl": 77}}}), "test")
    await eventually(lambda: _applied(cache, good))
    await backend_client.hset("bad:__config", mapping={"spec": '{"tiers": {"llm": {"ttl": -5}}}', "version": "v2"})
    await backend_client.execute_command("PUBLISH", "bad:__config:changed", "v2")

    async def failure_counted() -> bool:
        return observed.metric("agent_cache_config_refresh_failed_total", cache_name="bad") >= 1

    await eventually(failure_counted)
    assert cache.live_config.version == good
    assert 70 < await backend_client.ttl(await cache.llm.store(PARAMS, "x")) <= 77
    fixed = await apply_config(backend_client, "bad", CacheConfig.from_spec({"tiers": {"llm": {"ttl": 88}}}), "test")
    await eventually(lambda: _applied(cache, fixed))  # the watcher survived the bad value


async def test_apply_is_idempotent_and_readable(backend_client: Any) -> None:
    config = CacheConfig.from_spec(SPEC)
    first = await apply_config(backend_client, "idem", config, "operator:ns/idem")
    second = await apply_config(backend_client, "idem", CacheConfig.from_spec(SPEC), "operator:ns/idem")
    assert first == second == config.version
    applied = await read_config(backend_client, "idem")
    assert applied is not None and applied.config == config and applied.source == "operator:ns/idem"
    policies = await backend_client.hgetall("idem:__tool_policies")
    assert policies == {b"get_weather": b'{"ttl": 600}', b"send_email": b'{"cacheable": false}'}
