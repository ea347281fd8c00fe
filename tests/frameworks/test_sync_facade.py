"""SyncAgentCache: the whole API without asyncio, from scripts, threads and running event loops."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

import pytest

from agent_cache import (
    AgentCache,
    AgentCacheUsageError,
    Computed,
    LlmStoreOptions,
    SyncAgentCache,
    TierDefaults,
    ToolPolicy,
    ToolStoreOptions,
)
from tests.frameworks.conftest import open_sync_cache, telemetry
from tests.servers import ServerHandle, flush_all_primaries

PARAMS = {"model": "gpt-4o", "messages": [{"role": "user", "content": "What is Valkey?"}], "temperature": 0}
TIERS = {"session": TierDefaults(ttl=600)}


def _comparable(value: Any) -> Any:
    """Results minus what differs between two runs by design (nothing here: keys are deterministic)."""
    return asdict(value) if hasattr(value, "__dataclass_fields__") else value


def run_scenario_sync(cache: SyncAgentCache) -> list[Any]:
    out: list[Any] = [cache.llm.check(PARAMS)]
    out.append(cache.llm.store(PARAMS, "An in-memory store.", LlmStoreOptions(tokens={"input": 10, "output": 20})))
    out.append(cache.llm.check(PARAMS))
    cache.tool.set_policy("get_weather", ToolPolicy(ttl=900))
    out.append(cache.tool.get_policy("get_weather"))
    out.append(cache.tool.check("get_weather", {"city": "Sofia"}))
    out.append(cache.tool.store("get_weather", {"city": "Sofia"}, '{"t": 21}', ToolStoreOptions(cost=0.002)))
    out.append(cache.tool.check("get_weather", {"city": "Sofia"}))
    cache.session.set("thread:1", "intent", "book_flight")
    cache.session.set("thread:1", "city", "Sofia")
    out.append(cache.session.get("thread:1", "intent"))
    out.append(cache.session.get_all("thread:1"))
    out.append(cache.session.touch("thread:1"))
    out.append(cache.session.delete("thread:1", "city"))
    out.append(cache.stats())
    out.append(cache.tool_effectiveness())
    out.append(cache.tool.invalidate("get_weather", {"city": "Sofia"}))
    out.append(cache.tool.invalidate_by_tool("get_weather"))
    out.append(cache.llm.invalidate_by_model("gpt-4o"))
    out.append(cache.session.destroy_thread("thread:1"))
    return [_comparable(item) for item in out]


async def run_scenario_async(cache: AgentCache) -> list[Any]:
    out: list[Any] = [await cache.llm.check(PARAMS)]
    out.append(
        await cache.llm.store(PARAMS, "An in-memory store.", LlmStoreOptions(tokens={"input": 10, "output": 20}))
    )
    out.append(await cache.llm.check(PARAMS))
    await cache.tool.set_policy("get_weather", ToolPolicy(ttl=900))
    out.append(cache.tool.get_policy("get_weather"))
    out.append(await cache.tool.check("get_weather", {"city": "Sofia"}))
    out.append(await cache.tool.store("get_weather", {"city": "Sofia"}, '{"t": 21}', ToolStoreOptions(cost=0.002)))
    out.append(await cache.tool.check("get_weather", {"city": "Sofia"}))
    await cache.session.set("thread:1", "intent", "book_flight")
    await cache.session.set("thread:1", "city", "Sofia")
    out.append(await cache.session.get("thread:1", "intent"))
    out.append(await cache.session.get_all("thread:1"))
    out.append(await cache.session.touch("thread:1"))
    out.append(await cache.session.delete("thread:1", "city"))
    out.append(await cache.stats())
    out.append(await cache.tool_effectiveness())
    out.append(await cache.tool.invalidate("get_weather", {"city": "Sofia"}))
    out.append(await cache.tool.invalidate_by_tool("get_weather"))
    out.append(await cache.llm.invalidate_by_model("gpt-4o"))
    out.append(await cache.session.destroy_thread("thread:1"))
    return [_comparable(item) for item in out]


def test_same_results_as_the_async_api(backend_target: Any) -> None:
    """A plain script (no event loop anywhere) gets what ``await`` gets, on every kind of server."""
    with open_sync_cache(backend_target.server, tier_defaults=TIERS) as cache:
        cache.run(lambda c: flush_all_primaries(c.client))
        sync_results = run_scenario_sync(cache)
        cache.run(lambda c: flush_all_primaries(c.client))

        async def on_the_async_api(client: Any) -> list[Any]:
            async with AgentCache(client=client, name="fw", tier_defaults=TIERS, telemetry=telemetry()) as twin:
                return await run_scenario_async(twin)

        async_results = cache.run(lambda c: on_the_async_api(c.client))
    assert sync_results == async_results
    assert sync_results[2]["hit"] and sync_results[2]["response"] == "An in-memory store."
    assert sync_results[-1] == 1


async def test_blocking_calls_from_inside_a_running_event_loop(valkey_server: ServerHandle) -> None:
    """An async app calling the sync API (e.g. a sync library inside a coroutine) does not deadlock."""
    with open_sync_cache(valkey_server) as cache:
        cache.flush()
        cache.session.set("t", "f", "v")
        assert cache.session.get("t", "f") == "v"
        assert await cache.arun(lambda c: c.session.get("t", "f")) == "v"
        # The caller's loop still runs other tasks around the blocking calls.
        ticks = asyncio.create_task(asyncio.sleep(0, result="ticked"))
        cache.tool.store("w", {}, "r")
        assert await ticks == "ticked"
        assert cache.tool.check("w", {}).hit


def test_many_threads_share_one_cache(valkey_server: ServerHandle) -> None:
    with open_sync_cache(valkey_server) as cache:
        cache.flush()

        def work(i: int) -> str | None:
            cache.session.set(f"thread-{i % 4}", f"field-{i}", str(i))
            return cache.session.get(f"thread-{i % 4}", f"field-{i}")

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert list(pool.map(work, range(64))) == [str(i) for i in range(64)]
        assert sum(len(cache.session.get_all(f"thread-{t}")) for t in range(4)) == 64
        assert cache.stats().session.writes == 64


def test_calls_from_its_own_loop_fail_fast_instead_of_deadlocking(valkey_server: ServerHandle) -> None:
    with open_sync_cache(valkey_server) as cache:

        async def nested(_: AgentCache) -> Any:
            return cache.stats()  # would wait for the loop it is running on

        with pytest.raises(AgentCacheUsageError, match="own event loop"):
            cache.run(nested)
        assert cache.session.get("t", "missing") is None  # still usable


def test_errors_surface_in_the_caller(valkey_server: ServerHandle) -> None:
    with open_sync_cache(valkey_server) as cache, pytest.raises(AgentCacheUsageError, match=r"params\.model"):
        cache.llm.check({"messages": []})


def test_close_flushes_counters_and_stops_the_loop(valkey_server: ServerHandle) -> None:
    before = set(_loop_threads())
    cache = open_sync_cache(valkey_server, stats_flush_interval_s=3600)
    (own_thread,) = set(_loop_threads()) - before
    cache.flush()
    cache.llm.check(PARAMS)

    cache.close()
    cache.close()  # idempotent

    assert not own_thread.is_alive()
    with pytest.raises(AgentCacheUsageError, match="closed"):
        cache.stats()
    with open_sync_cache(valkey_server) as reader:
        assert reader.stats().llm.misses == 1  # the buffered miss was flushed by close()


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "agent-cache sync loop"]


def test_construction_needs_exactly_one_way_to_connect(valkey_server: ServerHandle) -> None:
    with pytest.raises(AgentCacheUsageError, match="URL or client_factory"):
        SyncAgentCache()
    with pytest.raises(AgentCacheUsageError, match="client_factory"):
        SyncAgentCache(valkey_server.url, client=object())
    with pytest.raises(AgentCacheUsageError, match="cache name"):
        SyncAgentCache(valkey_server.url, name="bad name")


def test_tenant_scope_travels_with_each_call_and_stays_in_its_thread(valkey_server: ServerHandle) -> None:
    with open_sync_cache(valkey_server) as cache:
        cache.flush()
        with cache.tenant("acme"):
            cache.llm.store(PARAMS, "acme's answer")
            cache.session.set("thread", "f", "acme")
            assert cache.llm.check(PARAMS).response == "acme's answer"
            # Another thread, started inside the block, is not in acme's scope.
            with ThreadPoolExecutor(1) as pool:
                assert pool.submit(cache.llm.check, PARAMS).result().hit is False
        assert cache.llm.check(PARAMS).hit is False  # outside the block: the default tenant
        assert cache.session.get("thread", "f") is None
        with cache.tenant("globex"):
            assert cache.llm.check(PARAMS).hit is False
        with cache.tenant("acme"):
            assert cache.session.get("thread", "f") == "acme"


def test_get_or_compute_runs_a_plain_function_once_for_many_threads(valkey_server: ServerHandle) -> None:
    calls: list[str] = []
    gate = threading.Barrier(4)

    def slow_answer() -> Computed:
        calls.append(threading.current_thread().name)
        time.sleep(0.2)  # long enough for the other threads to miss too and wait on this flight
        return Computed("computed once", tokens={"input": 3, "output": 5})

    def ask() -> str | None:
        gate.wait()
        return cache.llm.get_or_compute(PARAMS, slow_answer).response

    with open_sync_cache(valkey_server) as cache:
        cache.flush()
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: ask(), range(4)))
        assert answers == ["computed once"] * 4
        assert len(calls) == 1
        assert calls[0] != "agent-cache sync loop"  # the cache's loop stayed free while it ran

        async def async_tool() -> str:
            return '{"t": 21}'

        first = cache.tool.get_or_compute("get_weather", {"city": "Sofia"}, async_tool)
        again = cache.tool.get_or_compute("get_weather", {"city": "Sofia"}, lambda: pytest.fail("hit expected"))
        assert (first.hit, again.hit, again.response) == (False, True, '{"t": 21}')


def test_cached_decorates_a_plain_tool_function(valkey_server: ServerHandle) -> None:
    calls: list[dict[str, Any]] = []
    with open_sync_cache(valkey_server) as cache:
        cache.flush()

        @cache.tool.cached("get_weather", ttl=600, cost=0.001)
        def get_weather(city: str, unit: str = "C") -> dict[str, Any]:
            calls.append({"city": city, "unit": unit})
            return {"city": city, "temp": 21, "unit": unit}

        assert get_weather("Sofia") == {"city": "Sofia", "temp": 21, "unit": "C"}
        assert get_weather(city="Sofia", unit="C") == {"city": "Sofia", "temp": 21, "unit": "C"}  # same key
        assert get_weather("Varna", unit="F")["unit"] == "F"
        assert calls == [{"city": "Sofia", "unit": "C"}, {"city": "Varna", "unit": "F"}]
        assert get_weather.__name__ == "get_weather"
        stats = cache.stats().per_tool["get_weather"]
        assert (stats.hits, stats.misses) == (1, 2)

        async def not_plain() -> None: ...

        with pytest.raises(AgentCacheUsageError, match="plain function"):
            cache.tool.cached()(not_plain)


def test_ensure_discovery_ready_blocks_until_registered(valkey_server: ServerHandle) -> None:
    with open_sync_cache(valkey_server, name="sync_disc") as cache:
        cache.ensure_discovery_ready()
        registered = cache.run(lambda c: c.client.hget("__betterdb:caches", "sync_disc"))
        assert registered is not None


def test_policy_housekeeping_and_llm_clear(valkey_server: ServerHandle) -> None:
    with open_sync_cache(valkey_server) as cache:
        cache.flush()
        cache.tool.set_policy("get_weather", ToolPolicy(ttl=900))
        cache.tool.reset_policies()
        assert cache.tool.policies_loaded is False and cache.tool.get_policy("get_weather") is None
        cache.tool.load_policies()
        assert cache.tool.policies_loaded is True and cache.tool.get_policy("get_weather") == ToolPolicy(ttl=900)
        cache.llm.store(PARAMS, "answer")
        assert cache.llm.clear() == 1
        assert cache.llm.check(PARAMS).hit is False


def test_session_reads_without_sliding_and_the_tracker_reset(valkey_server: ServerHandle) -> None:
    with open_sync_cache(valkey_server) as cache:
        cache.flush()
        cache.session.set("t", "plan:1", "a")
        cache.session.set("t", "plan:2", "b")
        cache.session.set("t", "other", "c")
        assert cache.session.scan_fields_by_prefix("t", "plan:") == {"plan:1": "a", "plan:2": "b"}
        cache.session.reset_tracker()
        assert cache.session.get("t", "other") == "c"  # the next read takes the sliding script, and works
