"""Per-request cache control on a real server (standalone, cluster, Redis 7): per call and as a scope.

What a user notices: ``no_cache`` answers fresh and still fills the cache, ``no_store`` never writes, ``refresh``
replaces a stale answer (computing once for concurrent callers), ``only_if_cached`` never computes on a miss, and
a ``cache.control(...)`` scope reaches calls made in tasks started inside it, but not calls outside it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent_cache import (
    AgentCache,
    AgentCacheUsageError,
    CacheControl,
    CacheMissError,
    Computed,
    LlmStoreOptions,
    ModelPolicy,
)
from tests.integration.conftest import MakeCache, Observed

pytestmark = pytest.mark.valkey

PARAMS = {"model": "gpt-4o", "messages": [{"role": "user", "content": "What is Valkey?"}]}


class Model:
    """A compute function that counts its calls and answers the next scripted reply."""

    def __init__(self, *replies: str, delay: float = 0.0) -> None:
        self.replies = list(replies)
        self.calls = 0
        self.delay = delay

    async def __call__(self) -> str:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.replies.pop(0)


def bypassed(observed: Observed, reason: str, tier: str = "llm") -> float:
    return observed.metric("agent_cache_bypass_total", cache_name="t", tier=tier, reason=reason)


def lookups(observed: Observed, result: str, tier: str = "llm") -> float:
    return observed.metric("agent_cache_requests_total", cache_name="t", tier=tier, result=result, tool_name="")


async def test_no_cache_answers_fresh_and_still_stores(cache: AgentCache, observed: Observed) -> None:
    await cache.llm.store(PARAMS, "stale")
    model = Model("fresh")

    skipped = await cache.llm.check(PARAMS, control=CacheControl(no_cache=True))
    result = await cache.llm.get_or_compute(PARAMS, model, control=CacheControl(no_cache=True))

    assert not skipped.hit and skipped.key == cache.llm.key(PARAMS)
    assert (result.hit, result.response, model.calls) == (False, "fresh", 1)
    assert (await cache.llm.check(PARAMS)).response == "fresh"  # stored for everyone else
    assert bypassed(observed, "no_cache") == 2
    assert lookups(observed, "miss") == 0  # a bypass is not a miss: the hit rate is not dragged down


async def test_no_store_looks_up_but_never_writes(cache: AgentCache, backend_client: Any, observed: Observed) -> None:
    model = Model("first", "second")

    computed = await cache.llm.get_or_compute(PARAMS, model, control=CacheControl(no_store=True))
    key = await cache.llm.store(PARAMS, "direct", control=CacheControl(no_store=True))

    assert (computed.hit, computed.response) == (False, "first")
    assert key == cache.llm.key(PARAMS) and await backend_client.exists(key) == 0
    await cache.llm.store(PARAMS, "cached")
    served = await cache.llm.get_or_compute(PARAMS, model, control=CacheControl(no_store=True))
    assert (served.hit, served.response, model.calls) == (True, "cached", 1)  # the lookup still happens
    assert bypassed(observed, "no_store") == 2


async def test_refresh_overwrites_and_concurrent_refreshes_compute_once(cache: AgentCache, observed: Observed) -> None:
    await cache.llm.store(PARAMS, "stale")
    model = Model("fresh", delay=0.05)

    results = await asyncio.gather(
        *(cache.llm.get_or_compute(PARAMS, model, control=CacheControl(refresh=True)) for _ in range(5))
    )

    assert [r.response for r in results] == ["fresh"] * 5
    assert model.calls == 1
    assert (await cache.llm.check(PARAMS)).response == "fresh"
    assert bypassed(observed, "refresh") == 5


async def test_only_if_cached_never_computes_on_a_miss(cache: AgentCache, observed: Observed) -> None:
    model = Model("never")

    miss = await cache.llm.get_or_compute(PARAMS, model, control=CacheControl(only_if_cached=True))
    tool_miss = await cache.tool.get_or_compute("search", {"q": 1}, model, control=CacheControl(only_if_cached=True))
    await cache.llm.store(PARAMS, "cached")
    hit = await cache.llm.get_or_compute(PARAMS, model, control=CacheControl(only_if_cached=True))

    assert (miss.hit, miss.response, tool_miss.response) == (False, None, None)
    assert (hit.hit, hit.response) == (True, "cached")
    assert model.calls == 0
    assert bypassed(observed, "only_if_cached") == 1 and bypassed(observed, "only_if_cached", "tool") == 1
    assert lookups(observed, "miss") == 1  # the lookup happened and missed


async def test_a_scope_reaches_the_tasks_it_starts_and_ends_with_its_block(
    cache: AgentCache, backend_client: Any
) -> None:
    model = Model("in scope", "after")

    async with cache.control(no_store=True):
        inside = await asyncio.create_task(cache.llm.get_or_compute(PARAMS, model))
        await asyncio.gather(cache.tool.store("search", {"q": 1}, "r"))
    assert inside.response == "in scope"
    assert await backend_client.exists(cache.llm.key(PARAMS)) == 0
    assert not (await cache.tool.check("search", {"q": 1})).hit

    after = await cache.llm.get_or_compute(PARAMS, model)  # the scope is over: stored again
    assert (await cache.llm.check(PARAMS)).response == after.response == "after"


async def test_nested_scopes_add_up_and_a_contradiction_is_an_error(cache: AgentCache) -> None:
    await cache.llm.store(PARAMS, "cached")
    with cache.control(no_store=True), cache.control(no_cache=True):
        assert cache.llm.control_in_force() == CacheControl(no_cache=True, no_store=True)
        assert not (await cache.llm.check(PARAMS)).hit
    with cache.control(refresh=True):
        with pytest.raises(AgentCacheUsageError, match="only_if_cached cannot be combined with no_cache or refresh"):
            await cache.llm.check(PARAMS, control=CacheControl(only_if_cached=True))
        with (
            pytest.raises(AgentCacheUsageError, match="refresh=True, only_if_cached=True"),
            cache.control(only_if_cached=True),
        ):
            pass
    assert cache.llm.control_in_force() is None
    assert (await cache.llm.check(PARAMS)).hit


def test_unknown_or_malformed_controls_name_what_was_wrong(cache: AgentCache) -> None:
    with pytest.raises(TypeError, match=r"unknown cache control\(s\) \['no_cahce', 'stale'\]; valid: \['no_cache'"):
        cache.control(no_cahce=True, stale=True)
    with pytest.raises(AgentCacheUsageError, match=r"CacheControl\.refresh must be True or False, got 'yes'"):
        cache.control(refresh="yes")  # type: ignore[arg-type]
    with pytest.raises(AgentCacheUsageError, match="refresh overwrites the entry"):
        CacheControl(refresh=True, no_store=True)
    with pytest.raises(TypeError, match="control must be a CacheControl, got dict"):
        cache.llm.check(PARAMS, control={"no_cache": True})  # type: ignore[arg-type]


async def test_cached_tool_function_raises_cache_miss_instead_of_running(cache: AgentCache) -> None:
    runs = []

    @cache.tool.cached("lookup_order")
    async def lookup_order(order_id: int) -> dict[str, Any]:
        runs.append(order_id)
        return {"id": order_id, "status": "shipped"}

    with cache.control(only_if_cached=True), pytest.raises(CacheMissError) as raised:
        await lookup_order(1)
    assert runs == [] and raised.value.key is not None
    assert await lookup_order(1) == {"id": 1, "status": "shipped"}
    with cache.control(only_if_cached=True):
        assert await lookup_order(1) == {"id": 1, "status": "shipped"}
    with cache.control(refresh=True):
        await lookup_order(1)
    assert runs == [1, 1]


async def test_a_refresh_whose_answer_the_model_policy_refuses_drops_the_stale_entry(
    make_cache: MakeCache, backend_client: Any, observed: Observed
) -> None:
    cache = make_cache()
    await cache.llm.set_model_policy("gpt-4o*", ModelPolicy(cache_finish_reasons={"stop"}))
    await cache.llm.store(PARAMS, "stale answer", LlmStoreOptions(finish_reason="stop"))

    async def truncated() -> Computed:
        return Computed("cut sh", finish_reason="length")

    result = await cache.llm.get_or_compute(PARAMS, truncated, control=CacheControl(refresh=True))

    assert result.response == "cut sh"
    assert await backend_client.exists(cache.llm.key(PARAMS)) == 0  # neither the old nor the truncated answer
    assert bypassed(observed, "finish_reason") == 1


def test_sync_cache_scopes_reach_calls_on_the_cache_thread(valkey_server: Any) -> None:
    from agent_cache import SyncAgentCache

    with SyncAgentCache(valkey_server.url, name="sync_control") as cache:
        cache.llm.set_model_policy("gpt-4o*", ModelPolicy(ttl=30))
        assert cache.llm.get_model_policy("gpt-4o") == ModelPolicy(ttl=30)
        cache.llm.store(PARAMS, "cached")
        with cache.control(no_cache=True):
            assert not cache.llm.check(PARAMS).hit  # the scope travels with the call to the cache's loop
        with cache.control(only_if_cached=True):
            assert cache.llm.get_or_compute({**PARAMS, "model": "other"}, lambda: "never").response is None
        assert cache.llm.check(PARAMS).hit
        assert not cache.llm.check(PARAMS, CacheControl(refresh=True)).hit  # per call, as on AgentCache
        cache.tool.store("search", {"q": 1}, "r", control=CacheControl(no_store=True))
        assert (
            cache.tool.get_or_compute(
                "search", {"q": 1}, lambda: "x", control=CacheControl(only_if_cached=True)
            ).response
            is None
        )


async def test_an_empty_control_changes_nothing(cache: AgentCache) -> None:
    model = Model("once", delay=0.05)
    with cache.control():
        results = await asyncio.gather(
            *(cache.llm.get_or_compute(PARAMS, model, control=CacheControl()) for _ in range(3))
        )
    assert [r.response for r in results] == ["once"] * 3 and model.calls == 1  # still computed once, and stored
    assert cache.llm.control_in_force(CacheControl()) is None


async def test_a_cancelled_refresh_takes_no_one_with_it(cache: AgentCache) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    calls = 0

    async def slow() -> str:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return f"fresh {calls}"

    refresh = CacheControl(refresh=True)
    leader = asyncio.create_task(cache.llm.get_or_compute(PARAMS, slow, control=refresh))
    await started.wait()
    follower = asyncio.create_task(cache.llm.get_or_compute(PARAMS, slow, control=refresh))
    await asyncio.sleep(0.05)  # the follower joins the leader's refresh
    leader.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert (await follower).response == "fresh 2"  # it computed itself, not cancelled with the leader
    assert (await cache.llm.check(PARAMS)).response == "fresh 2"
