"""Valkey's memory and eviction figures reach the metrics from the upkeep loop: a real server made to evict, a real
cluster (one series per primary), and a user whose ACL refuses INFO (the cache works, the metrics stay absent)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import AgentCache, TelemetryOptions, _memory
from agent_cache.acl import acl_rule
from tests.integration.conftest import MakeCache, Observed

pytestmark = pytest.mark.valkey

NAME = "mem"
USED = "agent_cache_valkey_memory_used_bytes"
MAX = "agent_cache_valkey_memory_max_bytes"
POLICY = "agent_cache_valkey_maxmemory_policy_info"
EVICTED = "agent_cache_valkey_evicted_keys_total"
EXPIRED = "agent_cache_valkey_expired_keys_total"


@pytest.fixture(autouse=True)
def quick_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read INFO every 0.1 s instead of every 10 s, so the tests see several readings."""
    monkeypatch.setattr(_memory, "READ_INTERVAL_S", 0.1)


def cache_on(client: Any, registry: CollectorRegistry) -> AgentCache:
    return AgentCache(
        client=client, name=NAME, telemetry=TelemetryOptions(registry=registry), stats_flush_interval_s=0.05
    )


async def until(check: Callable[[], Any], what: str, within: float = 20.0) -> Any:
    """Poll until ``check()`` is truthy (a deadline for polling, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not (value := check()):
        assert loop.time() < deadline, f"not met within {within}s: {what}"
        await asyncio.sleep(0.05)
    return value


async def test_evictions_under_allkeys_lru_show_in_the_metric(valkey_server_factory: Callable[..., Any]) -> None:
    server = valkey_server_factory(args=["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"])
    node = f"{server.host}:{server.port}"
    client = Valkey.from_url(server.url)
    registry = CollectorRegistry()
    cache = cache_on(client, registry)
    labels = {"cache_name": NAME, "node": node}
    try:
        await until(lambda: registry.get_sample_value(EVICTED, labels) is not None, "the first INFO reading")
        assert registry.get_sample_value(EVICTED, labels) == 0  # the first reading is the baseline
        assert registry.get_sample_value(MAX, labels) == 4 * 1024 * 1024
        assert registry.get_sample_value(POLICY, {**labels, "policy": "allkeys-lru"}) == 1
        assert 0 < (registry.get_sample_value(USED, labels) or 0) <= 4 * 1024 * 1024
        # Fill it well past maxmemory through the cache itself: Valkey evicts the least recently used entries.
        for i in range(400):  # random answers: compression cannot shrink them below maxmemory
            answer = secrets.token_urlsafe(15_000)
            await cache.llm.store({"model": "m", "messages": [{"role": "user", "content": str(i)}]}, answer)
        info = await client.info("stats")
        assert info["evicted_keys"] > 0
        evicted = await until(lambda: registry.get_sample_value(EVICTED, labels), "evictions in the metric")
        assert 0 < evicted <= info["evicted_keys"]
        assert await client.ttl("never-set") == -2  # the server still answers: nothing failed
    finally:
        await cache.close()
        await client.aclose()


async def test_expired_keys_and_a_policy_change_show_in_the_metrics(
    valkey_server_factory: Callable[..., Any],
) -> None:
    server = valkey_server_factory()
    node = f"{server.host}:{server.port}"
    client = Valkey.from_url(server.url)
    registry = CollectorRegistry()
    cache = cache_on(client, registry)
    labels = {"cache_name": NAME, "node": node}
    try:
        await until(lambda: registry.get_sample_value(POLICY, {**labels, "policy": "noeviction"}), "the default policy")
        assert registry.get_sample_value(MAX, labels) == 0  # no limit
        for i in range(5):
            await client.set(f"short-{i}", "v", px=1)
        await asyncio.sleep(0.01)
        assert await client.exists(*(f"short-{i}" for i in range(5))) == 0  # read: expired on access
        await until(lambda: (registry.get_sample_value(EXPIRED, labels) or 0) >= 5, "expired keys in the metric")
        await client.config_set("maxmemory-policy", "volatile-ttl")
        await until(lambda: registry.get_sample_value(POLICY, {**labels, "policy": "volatile-ttl"}), "the new policy")
        assert registry.get_sample_value(POLICY, {**labels, "policy": "noeviction"}) is None  # one policy per node
    finally:
        await cache.close()
        await client.aclose()


async def test_every_primary_is_reported_on_each_kind_of_server(
    make_cache: MakeCache, backend_client: Any, observed: Observed
) -> None:
    """Standalone Valkey, the 6-node cluster (one series per primary, none for replicas) and redis-server 7."""
    if hasattr(backend_client, "get_primaries"):
        await backend_client.initialize()
        primaries = sorted(node.name for node in backend_client.get_primaries())
        assert len(primaries) == 3
    else:
        kwargs = backend_client.connection_pool.connection_kwargs
        primaries = [f"{kwargs['host']}:{kwargs['port']}"]
    make_cache(name=NAME)

    def nodes() -> list[str]:
        return sorted(
            sample.labels["node"]
            for metric in observed.registry.collect()
            if metric.name == USED
            for sample in metric.samples
        )

    await until(lambda: nodes() == primaries, "one series per primary")
    for node in primaries:
        policy = {"cache_name": NAME, "node": node, "policy": "noeviction"}
        assert observed.registry.get_sample_value(POLICY, policy) == 1
        assert observed.registry.get_sample_value(EVICTED, {"cache_name": NAME, "node": node}) == 0


async def test_a_user_without_info_keeps_caching_and_the_metrics_stay_absent(
    valkey_server_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    server = valkey_server_factory()
    admin = Valkey.from_url(server.url)
    await admin.execute_command("ACL", "SETUSER", "agent", "on", ">s3cret", *acl_rule(NAME).split(), "-info")
    client = Valkey.from_url(server.url, username="agent", password="s3cret")
    registry = CollectorRegistry()
    cache = cache_on(client, registry)
    params = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    try:
        with caplog.at_level(logging.WARNING, logger="agent_cache"):
            await cache.llm.store(params, "hello")
            assert (await cache.llm.check(params)).hit
            await until(lambda: "memory figures are unavailable" in caplog.text, "the refusal is logged")
            await asyncio.sleep(0.5)  # several upkeep rounds after the refusal
            assert (await cache.llm.check(params)).hit
        assert caplog.text.count("memory figures are unavailable") == 1  # once, not every round
        assert all(not metric.samples for metric in registry.collect() if metric.name.startswith("agent_cache_valkey"))
        refused = [entry for entry in await admin.acl_log() if entry["object"] == "info"]
        assert [entry["count"] for entry in refused] == [1]  # and it does not retry every round either
    finally:
        await cache.close()
        await client.aclose()
        await admin.aclose()
