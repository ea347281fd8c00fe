"""Discovery across an instance's life: ``ensure_discovery_ready()`` (the reference's method) and the
heartbeat that every pod of one cache shares, which one pod's close must not take from the others."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import AgentCache, AgentCacheUsageError, ConfigurationError, TelemetryOptions

pytestmark = pytest.mark.valkey

REGISTRY = "__betterdb:caches"


def pod(client: Valkey, name: str = "shop", **options: Any) -> AgentCache:
    return AgentCache(client=client, name=name, telemetry=TelemetryOptions(registry=CollectorRegistry()), **options)


async def test_ensure_discovery_ready_waits_for_the_registry_entry_and_the_heartbeat(valkey_client: Valkey) -> None:
    cache = pod(valkey_client)
    try:
        await cache.ensure_discovery_ready()  # nothing used the cache yet: this starts the registration
        entry = json.loads(await valkey_client.hget(REGISTRY, "shop"))
        assert entry["type"] == "agent_cache" and entry["prefix"] == "shop"
        assert await valkey_client.exists("__betterdb:heartbeat:shop") == 1
        await cache.ensure_discovery_ready()  # again: already done, returns at once
    finally:
        await cache.close()


async def test_ensure_discovery_ready_raises_when_the_name_belongs_to_another_kind_of_cache(
    valkey_client: Valkey,
) -> None:
    await valkey_client.hset(REGISTRY, "shop", json.dumps({"type": "semantic_cache", "prefix": "shop"}))
    cache = pod(valkey_client)
    try:
        with pytest.raises(ConfigurationError, match="already registered as a 'semantic_cache'"):
            await cache.ensure_discovery_ready()
        with pytest.raises(ConfigurationError):  # the same answer later: the error is kept
            await cache.ensure_discovery_ready()
        with pytest.raises(AgentCacheUsageError):  # what code written for the reference catches
            await cache.ensure_discovery_ready()
        assert json.loads(await valkey_client.hget(REGISTRY, "shop"))["type"] == "semantic_cache"  # untouched
        await cache.session.set("t", "f", "v")  # the cache itself works; only discovery is off
        assert await cache.session.get("t", "f") == "v"
    finally:
        await cache.close()


async def test_ensure_discovery_ready_returns_at_once_when_discovery_is_disabled(valkey_client: Valkey) -> None:
    cache = pod(valkey_client, discovery={"enabled": False})
    try:
        await cache.ensure_discovery_ready()
        assert await valkey_client.hget(REGISTRY, "shop") is None
    finally:
        await cache.close()


async def test_one_pods_close_leaves_the_heartbeat_another_pod_wrote(valkey_client: Valkey) -> None:
    first, second = pod(valkey_client), pod(valkey_client)
    await first.ensure_discovery_ready()
    await second.ensure_discovery_ready()  # the later beat: the key now holds the second pod's
    second_beat = await valkey_client.get("__betterdb:heartbeat:shop")
    await first.close()
    assert await valkey_client.get("__betterdb:heartbeat:shop") == second_beat  # the second pod still looks alive
    await second.close()
    assert await valkey_client.exists("__betterdb:heartbeat:shop") == 0  # the last one out removes it
