"""LLM tier behaviour on every server kind (standalone, cluster, redis7)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent_cache import AgentCacheUsageError, LlmStoreOptions, ModelCost, SerializationError, TierDefaults
from tests.integration.conftest import MakeCache

pytestmark = pytest.mark.valkey

PARAMS = {"model": "gpt-4o", "messages": [{"role": "user", "content": "What is Valkey?"}], "temperature": 0}


async def test_miss_then_store_then_hit_returns_the_response_and_tokens(cache: Any) -> None:
    assert (await cache.llm.check(PARAMS)).hit is False
    key = await cache.llm.store(PARAMS, "An in-memory store.", LlmStoreOptions(tokens={"input": 12, "output": 40}))
    result = await cache.llm.check(PARAMS)
    assert result.hit is True
    assert result.response == "An in-memory store."
    assert result.key == key and key.startswith("t:llm:")
    assert (result.input_tokens, result.output_tokens) == (12, 40)


async def test_answer_changing_parameters_make_different_entries(cache: Any) -> None:
    await cache.llm.store(PARAMS, "base")
    variants = [
        {**PARAMS, "temperature": 0.7},
        {**PARAMS, "max_completion_tokens": 10},
        {**PARAMS, "reasoning_effort": "high"},
        {**PARAMS, "tools": [{"type": "function", "function": {"name": "f"}}]},
        {**PARAMS, "seed": 1},
        {**PARAMS, "model": "gpt-4o-mini"},
    ]
    for variant in variants:
        assert (await cache.llm.check(variant)).hit is False, variant


async def test_transport_options_and_number_spelling_share_an_entry(cache: Any) -> None:
    await cache.llm.store(PARAMS, "base")
    same = {**PARAMS, "temperature": 0.0, "stream": True, "user": "u-1", "top_p": None}
    assert (await cache.llm.check(same)).response == "base"


async def test_store_multipart_round_trips_blocks(cache: Any) -> None:
    blocks = [
        {"type": "reasoning", "text": "think"},
        {"type": "text", "text": "Hello "},
        {"type": "tool_call", "id": "c1", "name": "get_weather", "args": {"city": "Sofia"}},
        {"type": "text", "text": "world"},
    ]
    await cache.llm.store_multipart(PARAMS, blocks)
    result = await cache.llm.check(PARAMS)
    assert result.content_blocks == blocks
    assert result.response == "Hello world"


async def test_ttl_precedence(make_cache: MakeCache, backend_client: Any) -> None:
    cache = make_cache(default_ttl=50, tier_defaults={"llm": TierDefaults(ttl=100)})
    key = await cache.llm.store(PARAMS, "x")
    assert 90 < await backend_client.ttl(key) <= 100
    key = await cache.llm.store(PARAMS, "x", LlmStoreOptions(ttl=20))
    assert 10 < await backend_client.ttl(key) <= 20
    plain = make_cache(name="plain", default_ttl=50)
    key = await plain.llm.store(PARAMS, "x")
    assert 40 < await backend_client.ttl(key) <= 50
    never = make_cache(name="never")
    assert await backend_client.ttl(await never.llm.store(PARAMS, "x")) == -1


async def test_cost_saved_is_counted_per_hit_from_the_cost_table(make_cache: MakeCache) -> None:
    cache = make_cache(cost_table={"my-model": ModelCost(input_per_1k=0.01, output_per_1k=0.03)})
    params = {**PARAMS, "model": "my-model"}
    await cache.llm.store(params, "x", LlmStoreOptions(tokens={"input": 1000, "output": 2000}))
    await cache.llm.check(params)
    await cache.llm.check(params)
    stats = await cache.stats()
    assert stats.cost_saved_micros == 2 * 70_000
    assert stats.llm.hits == 2


async def test_default_cost_table_prices_provider_prefixed_names(cache: Any) -> None:
    params = {**PARAMS, "model": "openai/gpt-4o"}
    await cache.llm.store(params, "x", LlmStoreOptions(tokens={"input": 1000, "output": 1000}))
    await cache.llm.check(params)
    assert (await cache.stats()).cost_saved_micros == 12_500  # $0.0025 + $0.01


async def test_invalidate_by_model_deletes_exactly_that_models_entries(cache: Any, backend_client: Any) -> None:
    for i in range(30):
        await cache.llm.store({**PARAMS, "messages": [{"role": "user", "content": str(i)}]}, "a")
    kept = await cache.llm.store({**PARAMS, "model": "claude-sonnet-4-5"}, "b")
    assert await cache.llm.invalidate_by_model("gpt-4o") == 30
    assert await cache.llm.invalidate_by_model("gpt-4o") == 0
    assert (await cache.llm.check(PARAMS)).hit is False
    assert await backend_client.exists(kept) == 1


async def test_the_model_index_prunes_expired_keys_and_expires_with_its_last_entry(
    make_cache: MakeCache, backend_client: Any
) -> None:
    cache = make_cache()
    index = cache.keys.model_index("gpt-4o")
    await cache.llm.store(PARAMS, "short", LlmStoreOptions(ttl=1))
    assert 0 < await backend_client.pttl(index) <= 1000
    long_lived = await cache.llm.store({**PARAMS, "seed": 1}, "long", LlmStoreOptions(ttl=60))
    assert 59_000 < await backend_client.pttl(index) <= 60_000  # extended, never shortened
    await cache.llm.store({**PARAMS, "seed": 2}, "shorter", LlmStoreOptions(ttl=5))
    assert 59_000 < await backend_client.pttl(index) <= 60_000
    await asyncio.sleep(1.1)
    await cache.llm.store({**PARAMS, "seed": 3}, "no ttl")  # prunes the expired key; the index now never expires
    assert await backend_client.pttl(index) == -1
    assert await backend_client.zcard(index) == 3
    assert await backend_client.zscore(index, long_lived) is not None


async def test_stores_load_the_index_script_on_a_server_that_lost_it(cache: Any, backend_client: Any) -> None:
    await cache.llm.store(PARAMS, "before")
    await backend_client.script_flush()  # as after a restart or a failover to a fresh replica
    await cache.llm.store({**PARAMS, "seed": 1}, "after")  # the index script is sent again, with its source
    assert await cache.llm.invalidate_by_model("gpt-4o") == 2


async def test_bad_input_is_a_usage_error_naming_the_problem(cache: Any) -> None:
    with pytest.raises(AgentCacheUsageError, match=r"params.model"):
        await cache.llm.check({"messages": []})
    with pytest.raises(SerializationError, match=r"params.temperature .*NaN"):
        await cache.llm.check({**PARAMS, "temperature": float("nan")})
    with pytest.raises(SerializationError, match=r"params.messages\[0\].content is a bytes"):
        await cache.llm.check({**PARAMS, "messages": [{"role": "user", "content": b"x"}]})
    with pytest.raises(AgentCacheUsageError, match=r"tokens\['input'\]"):
        await cache.llm.store(PARAMS, "x", LlmStoreOptions(tokens={"input": -1, "output": 1}))
    with pytest.raises(AgentCacheUsageError, match="ttl must be a positive"):
        await cache.llm.store(PARAMS, "x", LlmStoreOptions(ttl=0))


async def test_corrupt_entry_is_a_miss_and_is_removed(cache: Any, backend_client: Any) -> None:
    key = await cache.llm.store(PARAMS, "x")
    await backend_client.set(key, b"\xff not json")
    assert (await cache.llm.check(PARAMS)).hit is False
    assert await backend_client.exists(key) == 0


async def test_response_metadata_round_trips(cache: Any) -> None:
    await cache.llm.store(PARAMS, "x", LlmStoreOptions(metadata={"id": "chatcmpl-1", "finish_reason": "stop"}))
    assert (await cache.llm.check(PARAMS)).metadata == {"id": "chatcmpl-1", "finish_reason": "stop"}


async def test_resolve_ttl_follows_the_store_precedence(make_cache: MakeCache) -> None:
    cache = make_cache(default_ttl=1000, tier_defaults={"llm": TierDefaults(ttl=60)})
    assert cache.llm.resolve_ttl() == 60
    assert cache.llm.resolve_ttl(5) == 5
    assert make_cache(name="u").llm.resolve_ttl() is None


async def test_clear_deletes_every_llm_entry_of_every_model_and_tenant_and_nothing_else(
    make_cache: MakeCache, backend_client: Any
) -> None:
    cache = make_cache()
    keys = [await cache.llm.store(PARAMS, "a"), await cache.llm.store({**PARAMS, "model": "claude-sonnet-4-5"}, "b")]
    with cache.tenant("acme"):
        keys.append(await cache.llm.store(PARAMS, "c", LlmStoreOptions(ttl=60)))
    tool_key = await cache.tool.store("search", {"q": 1}, "r")
    await cache.session.set("thread", "field", "v")
    other = await make_cache(name="t2").llm.store(PARAMS, "other cache")

    assert await cache.llm.clear() == 3
    assert [await backend_client.exists(key) for key in keys] == [0, 0, 0]
    assert (await cache.llm.check(PARAMS)).hit is False
    assert [await backend_client.exists(key) for key in (tool_key, other)] == [1, 1]
    assert await cache.session.get("thread", "field") == "v"
    assert await cache.llm.clear() == 0
    await cache.llm.store(PARAMS, "again")
    assert await cache.llm.clear() == 1


async def test_the_model_registry_expires_after_its_last_entry(cache: Any, backend_client: Any) -> None:
    from agent_cache.tiers.llm import model_registry_key

    registry = model_registry_key(cache.keys)
    await cache.llm.store(PARAMS, "a", LlmStoreOptions(ttl=100))
    await cache.llm.store({**PARAMS, "seed": 1}, "b", LlmStoreOptions(ttl=10))  # a shorter one never lowers it
    assert 100_000 < await backend_client.pttl(registry) <= 160_000  # plus the margin for cluster clocks
    await cache.llm.store({**PARAMS, "seed": 2}, "c")
    assert await backend_client.pttl(registry) == -1  # an entry without TTL: listed for as long as it lives


@pytest.mark.parametrize("moment", ["before_delete", "after_delete"])
async def test_invalidate_by_model_never_leaves_an_entry_stored_meanwhile_unlisted(
    cache: Any, backend_client: Any, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    from agent_cache._backend import Backend

    key = await cache.llm.store(PARAMS, "old")
    index = cache.keys.model_index("gpt-4o")
    real_delete_many = Backend.delete_many
    stored_again = False

    async def delete_many(self: Backend, keys: Any, batch: int = 500) -> int:
        nonlocal stored_again
        if not stored_again and moment == "before_delete":
            stored_again = True
            await cache.llm.store(PARAMS, "new")
        deleted = await real_delete_many(self, keys, batch)
        if not stored_again and moment == "after_delete":
            stored_again = True
            await cache.llm.store(PARAMS, "new")
        return deleted

    monkeypatch.setattr(Backend, "delete_many", delete_many)
    await cache.llm.invalidate_by_model("gpt-4o")
    assert stored_again
    if await backend_client.exists(key):
        assert await backend_client.zscore(index, key) is not None, "a live entry fell out of its model's index"
    monkeypatch.undo()
    await cache.llm.invalidate_by_model("gpt-4o")
    assert await backend_client.exists(key) == 0


async def test_invalidate_by_model_racing_stores_leaves_no_live_entry_unlisted(cache: Any, backend_client: Any) -> None:
    index = cache.keys.model_index("gpt-4o")
    requests = [{**PARAMS, "seed": i} for i in range(20)]
    keys = [cache.llm.key(params) for params in requests]

    async def store_later(params: dict[str, Any], turns: int) -> None:
        for _ in range(turns):  # spread the stores over the invalidation's steps
            await asyncio.sleep(0)
        await cache.llm.store(params, "r")

    for round_ in range(15):  # bounded: each round races 20 stores against one invalidation
        await asyncio.gather(
            cache.llm.invalidate_by_model("gpt-4o"),
            *(store_later(params, (i + round_) % 12) for i, params in enumerate(requests)),
        )
        for key in keys:
            if await backend_client.exists(key):
                assert await backend_client.zscore(index, key) is not None, "a live entry fell out of the index"
    await cache.llm.invalidate_by_model("gpt-4o")
    assert sum([await backend_client.exists(key) for key in keys]) == 0
