"""Performance by design: one round trip per hit, and per-thread/per-tool work independent of keyspace size."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agent_cache import AgentCache, ConfigRefreshOptions, DiscoveryOptions, TelemetryOptions, TierDefaults
from tests.servers import commands_delta, server_command_counts

pytestmark = pytest.mark.valkey

PARAMS = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def _cache(client: Any, **options: Any) -> AgentCache:
    return AgentCache(
        client=client,
        name="rt",
        telemetry=TelemetryOptions(registry=CollectorRegistry()),
        discovery=DiscoveryOptions(enabled=False),  # keep background I/O out of the counts
        config_refresh=ConfigRefreshOptions(enabled=False),
        stats_flush_interval_s=3600,  # keep the background flush out of the counts
        **options,
    )


async def test_each_hit_is_one_round_trip(counted_client: Any) -> None:
    client, counter = counted_client
    cache = _cache(client, tier_defaults={"session": TierDefaults(ttl=600)})
    await cache.llm.store(PARAMS, "x")
    await cache.tool.store("w", {"c": 1}, "r")
    await cache.session.set("t", "f", "v")
    await cache.session.get("t", "f")  # the first script call may load the script (EVAL after NOSCRIPT)
    for name, hit in (
        ("llm.check", lambda: cache.llm.check(PARAMS)),
        ("tool.check", lambda: cache.tool.check("w", {"c": 1})),
        ("session.get", lambda: cache.session.get("t", "f")),
    ):
        counter.reset()
        for _ in range(10):
            await hit()
        assert counter.count == 10, f"{name} took {counter.count} round trips for 10 hits"
    await cache.close()


async def _fill_unrelated(client: Any, count: int) -> None:
    for start in range(0, count, 5000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(count, start + 5000)):
            pipe.set(f"unrelated:{i}", "x")
        await pipe.execute()


async def _per_thread_and_tool_commands(client: Any) -> dict[str, int]:
    await client.script_flush()  # both runs then load the same scripts the same way
    cache = _cache(client)
    await cache.session.set("thread", "f", "v")
    await cache.tool.store("tool", {"a": 1}, "r")
    await cache.llm.store(PARAMS, "x")
    before = await server_command_counts(client)
    await cache.session.get_all("thread")
    await cache.session.touch("thread", ttl=60)
    await cache.session.destroy_thread("thread")
    await cache.tool.invalidate_by_tool("tool")
    await cache.llm.invalidate_by_model("gpt-4o")
    after = await server_command_counts(client)
    await cache.close()
    return commands_delta(before, after)


async def test_per_thread_and_per_tool_operations_do_not_grow_with_the_keyspace(valkey_client: Any) -> None:
    await valkey_client.flushall()
    empty = await _per_thread_and_tool_commands(valkey_client)
    await valkey_client.flushall()
    await _fill_unrelated(valkey_client, 50_000)
    crowded = await _per_thread_and_tool_commands(valkey_client)
    assert "scan" not in crowded and "keys" not in crowded
    assert crowded == empty


async def test_per_thread_and_per_tool_operations_are_one_round_trip(counted_client: Any) -> None:
    client, counter = counted_client
    cache = _cache(client, tier_defaults={"session": TierDefaults(ttl=600)})
    for name in ("a", "b"):  # the second pass runs with every script already loaded
        for field in ("f1", "f2", "f3"):
            await cache.session.set(name, field, "v")
            await cache.tool.store(name, {"field": field}, "r")
        for operation, call in (
            ("get_all", cache.session.get_all),
            ("touch", cache.session.touch),
            ("destroy_thread", cache.session.destroy_thread),
            ("invalidate_by_tool", cache.tool.invalidate_by_tool),
        ):
            counter.reset()
            await call(name)
            if name == "b":
                assert counter.count == 1, f"{operation} took {counter.count} round trips"
    await cache.close()


async def test_a_session_read_is_a_single_getex_once_the_thread_index_is_known(valkey_client: Any) -> None:
    cache = _cache(valkey_client, tier_defaults={"session": TierDefaults(ttl=600)})
    another_process = _cache(valkey_client, tier_defaults={"session": TierDefaults(ttl=600)})
    await cache.session.set("t", "f", "v")  # the write extended the index: this process knows it
    await cache.session.get("other thread", "f")  # a miss through the script: loads it
    for each in (cache, another_process):  # connect the connections each keeps for reads (CLIENT SETINFO)
        await each.llm.check(PARAMS)
    before = await server_command_counts(valkey_client)
    for _ in range(10):
        assert await cache.session.get("t", "f") == "v"
    assert commands_delta(before, await server_command_counts(valkey_client)) == {"getex": 10}
    before = await server_command_counts(valkey_client)
    for _ in range(10):  # the first read goes through the script, which extends the index; then GETEX
        assert await another_process.session.get("t", "f") == "v"
    delta = commands_delta(before, await server_command_counts(valkey_client))
    assert delta["evalsha"] == 1 and delta["getex"] == 10
    await cache.close()
    await another_process.close()
