"""The platform switches the near-cache for a fleet: ``spec.nearCache`` in the live config turns it on, off or
resizes it in running processes (pure parsing and precedence first, then a running cache adopting it)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache import AgentCache, ConfigurationError, NearCacheOptions
from agent_cache._near_switch import effective_options
from agent_cache.config import CacheConfig, NearCacheSetting, apply_config, delete_config, unknown_config_fields
from tests.servers import ServerHandle

PARAMS = {"model": "m", "messages": [{"role": "user", "content": "q"}]}


def test_near_cache_spec_round_trips_and_rejects_bad_values() -> None:
    config = CacheConfig.from_spec({"nearCache": {"enabled": True, "maxEntries": 500, "maxBytes": 2**20}})
    assert config.near_cache == NearCacheSetting(True, 500, 2**20)
    assert CacheConfig.from_spec(config.to_spec()) == config
    assert CacheConfig.from_spec({}).near_cache is None
    assert CacheConfig.from_spec({}).version == CacheConfig().version  # configs without it keep their version
    for bad in ({"enabled": "yes"}, {"maxEntries": 0}, {"maxBytes": -1}, {"maxEntries": True}, []):
        with pytest.raises(ConfigurationError, match="nearCache"):
            CacheConfig.from_spec({"nearCache": bad})
    assert unknown_config_fields({"nearCache": {"enable": False}}) == ["spec.nearCache.enable"]


def test_the_platforms_setting_wins_field_by_field() -> None:
    code = NearCacheOptions(max_entries=100, max_bytes=1000, max_ttl_s=5)
    assert effective_options(code, None) == code
    assert effective_options(None, None) is None
    assert effective_options(code, NearCacheSetting(enabled=False)) is None
    assert effective_options(None, NearCacheSetting()) == NearCacheOptions()
    assert effective_options(code, NearCacheSetting(True, 7, None)) == NearCacheOptions(7, 1000, 5)


async def _l1_answers(cache: AgentCache) -> bool:
    for _ in range(50):
        await cache.llm.check(PARAMS)
        near = cache._near
        if near is not None and near.lookup(cache.llm.key(PARAMS)) is not None:
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.mark.valkey
async def test_a_running_cache_adopts_the_platforms_switch(valkey_server: ServerHandle) -> None:
    admin = Valkey.from_url(valkey_server.url)
    client = Valkey.from_url(valkey_server.url)
    await admin.flushall()
    options: dict[str, Any] = {"discovery": {"enabled": False}}
    cache = AgentCache(client=client, name="fleet", **options)  # the code never asked for a near-cache
    try:
        await cache.llm.store(PARAMS, "answer")
        assert not await _l1_answers(cache)

        await apply_config(admin, "fleet", CacheConfig.from_spec({"nearCache": {"maxEntries": 5}}), "test")
        await cache.live_config.refresh()
        assert await _l1_answers(cache)
        assert cache._near is not None and cache._near.max_entries == 5

        await apply_config(admin, "fleet", CacheConfig.from_spec({"nearCache": {"enabled": False}}), "test")
        await cache.live_config.refresh()
        assert cache._near is None
        await admin.set(cache.llm.key(PARAMS), b'{"response":"new","model":"m"}')
        assert (await cache.llm.check(PARAMS)).response == "new"  # no L1 left behind to answer "answer"

        await apply_config(admin, "fleet", CacheConfig.from_spec({"nearCache": {}}), "test")
        await cache.live_config.refresh()
        assert await _l1_answers(cache)
        await delete_config(admin, "fleet")  # back to the code's choice: off
        await cache.live_config.refresh()
        assert cache._near is None
    finally:
        await cache.close()
        await client.aclose()
        await admin.aclose()


def test_an_agentcache_resource_carries_near_cache_to_the_live_config() -> None:
    """The CRD accepts spec.nearCache (and rejects a bad one), and the operator's config for it includes it."""
    from agent_cache_operator.spec import parse_spec
    from tests.operator.crd_validation import validate

    def resource(**spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": "agentcache.dev/v1alpha1",
            "kind": "AgentCache",
            "metadata": {"name": "support-bot", "namespace": "shop"},
            "spec": {"valkey": {"host": "valkey"}, **spec},
        }

    body = resource(nearCache={"enabled": False, "maxBytes": 2**20})
    assert validate(body) == []
    config = parse_spec(body["spec"], "support-bot").config
    assert config.near_cache == NearCacheSetting(enabled=False, max_bytes=2**20)
    assert validate(resource(nearCache={"maxEntries": 0})) != []
    assert validate(resource(nearCache={"enabled": "yes"})) != []


def test_bad_near_cache_options_are_one_clear_error() -> None:
    from agent_cache import AgentCacheOptions

    assert AgentCacheOptions(client=None).near_cache is None  # off by default
    assert AgentCacheOptions(client=None, near_cache={"max_entries": 5}).near_cache == NearCacheOptions(max_entries=5)
    for bad, named in (
        ({"max_entries": 0}, "near_cache.max_entries"),
        ({"max_bytes": "64MB"}, "near_cache.max_bytes"),
        ({"max_ttl_s": -1}, "near_cache.max_ttl_s"),
        ({"max_entires": 5}, "max_entires"),
        ("yes", "near_cache"),
    ):
        with pytest.raises(ConfigurationError, match=named):
            AgentCacheOptions(client=None, near_cache=bad)
