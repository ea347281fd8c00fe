"""Per-model policies on a real server (standalone, cluster, Redis 7): TTLs, storage rules and their two owners.

TTL precedence for an LLM entry: per call > model policy > live-config tier > code tier > ``default_ttl``. Patterns
are globs, the most specific wins. The live config (operator or CLI) wins per pattern; the application's other
patterns stay, also after the config changes or goes.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent_cache import (
    AgentCache,
    AgentCacheUsageError,
    ConfigRefreshOptions,
    ConfigurationError,
    LlmStoreOptions,
    ModelPolicy,
    TierDefaults,
)
from agent_cache.config import CacheConfig, apply_config, delete_config, unknown_config_fields
from tests.integration.conftest import MakeCache, Observed

pytestmark = pytest.mark.valkey


def params(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


async def ttl_of(cache: AgentCache, client: Any, model: str, **options: Any) -> int | None:
    """The TTL a fresh store for ``model`` gets (None: not stored; 0: no expiry)."""
    key = await cache.llm.store(params(model), "answer", LlmStoreOptions(**options))
    ttl = int(await client.ttl(key))
    await client.delete(key)
    return None if ttl == -2 else max(ttl, 0)


def near(ttl: int | None, expected: int) -> bool:
    return ttl is not None and expected - 5 < ttl <= expected


async def test_ttl_precedence_call_then_model_then_config_then_code_then_default(
    make_cache: MakeCache, backend_client: Any
) -> None:
    cache = make_cache(default_ttl=50, tier_defaults={"llm": TierDefaults(ttl=100)})
    assert near(await ttl_of(cache, backend_client, "gpt-4o"), 100)  # code tier over default_ttl
    cache_default = make_cache(name="d", default_ttl=50)
    assert near(await ttl_of(cache_default, backend_client, "gpt-4o"), 50)

    await apply_config(backend_client, "t", CacheConfig.from_spec({"tiers": {"llm": {"ttl": 200}}}), "test")
    await cache.live_config.refresh()
    assert near(await ttl_of(cache, backend_client, "gpt-4o"), 200)  # live-config tier over the code's

    await cache.llm.set_model_policy("gpt-4o*", ModelPolicy(ttl=300))
    assert near(await ttl_of(cache, backend_client, "gpt-4o"), 300)  # the model policy over the config tier
    assert near(await ttl_of(cache, backend_client, "claude-3"), 200)  # other models: unchanged
    assert near(await ttl_of(cache, backend_client, "gpt-4o", ttl=400), 400)  # per call wins
    assert cache.llm.resolve_ttl(None, "gpt-4o-mini") == 300 and cache.llm.resolve_ttl() == 200


async def test_the_most_specific_pattern_wins(cache: AgentCache, backend_client: Any) -> None:
    for pattern, ttl in (("*", 50), ("gpt-4o*", 100), ("gpt-4o-mini*", 200), ("gpt-4o-mini", 300), ("gpt-?o", 400)):
        await cache.llm.set_model_policy(pattern, ModelPolicy(ttl=ttl))

    expected = {
        "gpt-4o-mini": 300,  # the exact name
        "gpt-4o-mini-2024-07-18": 200,  # 12 literal characters beat 6
        "gpt-4o": 100,  # "gpt-4o*" (6 literal characters) beats "gpt-?o" (5)
        "gpt-5o": 400,
        "claude": 50,
    }
    for model, ttl in expected.items():
        policy = cache.llm.get_model_policy(model)
        assert policy is not None and policy.ttl == ttl, model
        assert near(await ttl_of(cache, backend_client, model), ttl), model


async def test_a_model_that_is_not_cacheable_is_never_read_or_written(
    cache: AgentCache, backend_client: Any, observed: Observed
) -> None:
    await cache.llm.store(params("o1-preview"), "stored before the policy")
    await cache.llm.set_model_policy("o1-*", ModelPolicy(cacheable=False))
    calls = []

    async def compute() -> str:
        calls.append(1)
        return "fresh"

    assert not (await cache.llm.check(params("o1-preview"))).hit
    assert (await cache.llm.get_or_compute(params("o1-preview"), compute)).response == "fresh"
    assert (await cache.llm.get_or_compute(params("o1-preview"), compute)).response == "fresh"
    assert await ttl_of(cache, backend_client, "o1-mini") is None
    assert len(calls) == 2
    assert observed.metric("agent_cache_bypass_total", cache_name="t", tier="llm", reason="not_cacheable") >= 4


async def test_finish_reasons_and_empty_answers_decide_what_is_stored(cache: AgentCache, backend_client: Any) -> None:
    await cache.llm.set_model_policy(
        "gpt-4o*", ModelPolicy(cache_finish_reasons={"stop", "tool_calls"}, cache_empty=False)
    )
    stored = await cache.llm.store(params("gpt-4o"), "complete", LlmStoreOptions(finish_reason="stop"))
    truncated = await cache.llm.store(params("gpt-4o-a"), "cut", LlmStoreOptions(finish_reason="length"))
    filtered = await cache.llm.store(params("gpt-4o-b"), "x", LlmStoreOptions(metadata={"finish": "content_filter"}))
    unknown = await cache.llm.store(params("gpt-4o-c"), "no reason given")  # counts as stop
    empty = await cache.llm.store(params("gpt-4o-d"), "  ", LlmStoreOptions(finish_reason="stop"))
    calls = await cache.llm.store_multipart(
        params("gpt-4o-e"), [{"type": "tool_call", "id": "1", "name": "f", "args": {}}]
    )

    exists = [await backend_client.exists(key) for key in (stored, truncated, filtered, unknown, empty, calls)]
    assert exists == [1, 0, 0, 1, 0, 1]
    hit = await cache.llm.check(params("gpt-4o"))
    assert hit.metadata == {"finish": "stop"}  # the finish reason is recorded for readers (the adapters)


async def test_the_config_wins_per_pattern_and_the_application_keeps_the_rest(
    make_cache: MakeCache, backend_client: Any
) -> None:
    app = make_cache(config_refresh=ConfigRefreshOptions(enabled=False))
    await app.llm.set_model_policy("gpt-4o*", ModelPolicy(ttl=100))
    await app.llm.set_model_policy("claude-*", ModelPolicy(ttl=60))
    cache = make_cache()

    spec = {"modelPolicies": {"gpt-4o*": {"ttl": 900}, "o1-*": {"cacheable": False}}}
    await apply_config(backend_client, "t", CacheConfig.from_spec(spec), "test")
    await cache.live_config.refresh()
    assert cache.llm.get_model_policy("gpt-4o") == ModelPolicy(ttl=900)
    assert cache.llm.get_model_policy("claude-3") == ModelPolicy(ttl=60)
    assert cache.llm.get_model_policy("o1-mini") == ModelPolicy(cacheable=False)
    await cache.llm.set_model_policy("gpt-4o*", ModelPolicy(ttl=120))  # kept aside while the config names it
    assert cache.llm.get_model_policy("gpt-4o") == ModelPolicy(ttl=900)
    await cache.llm.refresh_model_policies()
    assert cache.llm.get_model_policy("gpt-4o") == ModelPolicy(ttl=900)

    await apply_config(backend_client, "t", CacheConfig.from_spec({"modelPolicies": {"o1-*": {"ttl": 5}}}), "test")
    await cache.live_config.refresh()
    assert cache.llm.get_model_policy("gpt-4o") == ModelPolicy(ttl=120)  # the application's latest comes back

    await delete_config(backend_client, "t")
    await cache.live_config.refresh()
    assert cache.llm.get_model_policy("o1-mini") is None
    assert await backend_client.hgetall("t:__model_policies") == {
        b"gpt-4o*": b'{"ttl": 120}',
        b"claude-*": b'{"ttl": 60}',
    }
    await cache.flush()
    assert await backend_client.hlen("t:__model_policies") == 2  # flush keeps policies, like the config


async def test_another_instance_picks_up_a_policy_on_refresh(make_cache: MakeCache) -> None:
    writer, reader = make_cache(), make_cache()
    await writer.llm.set_model_policy("gemini-*", ModelPolicy(ttl=30, cache_finish_reasons=["stop"]))
    assert reader.llm.get_model_policy("gemini-pro") is None
    await reader.llm.refresh_model_policies()
    assert reader.llm.get_model_policy("gemini-pro") == ModelPolicy(ttl=30, cache_finish_reasons=frozenset({"stop"}))
    assert reader.llm.model_policies() == {"gemini-*": ModelPolicy(ttl=30, cache_finish_reasons=frozenset({"stop"}))}


async def test_a_malformed_stored_policy_keeps_the_last_good_one(cache: AgentCache, backend_client: Any) -> None:
    await cache.llm.set_model_policy("gpt-4o*", ModelPolicy(ttl=100))
    await backend_client.hset("t:__model_policies", mapping={"gpt-4o*": "{not json", "bad[": '{"ttl": 1}'})
    with pytest.raises(AgentCacheUsageError) as raised:
        await cache.llm.refresh_model_policies()
    assert "model policy 'gpt-4o*' is not JSON" in str(raised.value) and "'bad['" in str(raised.value)
    assert cache.llm.get_model_policy("gpt-4o") == ModelPolicy(ttl=100)


# ── bad input: errors that name what was wrong (no server needed) ─────────────


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("gpt-[4o", r"model policy pattern 'gpt-\[4o' is not a valid glob: '\[' at 4 is never closed"),
        ("gpt-[]", r"model policy pattern 'gpt-\[\]' is not a valid glob"),
        ("", "model policy pattern must be a non-empty string"),
        (None, "model policy pattern must be a non-empty string, got None"),
    ],
)
async def test_an_invalid_glob_is_refused_naming_it(cache: AgentCache, pattern: Any, message: str) -> None:
    with pytest.raises(AgentCacheUsageError, match=message):
        await cache.llm.set_model_policy(pattern, ModelPolicy(ttl=1))
    assert cache.llm.model_policies() == {}


def test_bad_policies_and_config_documents_name_the_offending_path() -> None:
    with pytest.raises(AgentCacheUsageError, match=r"ModelPolicy\.ttl must be a positive number of seconds, got -1"):
        ModelPolicy(ttl=-1)
    with pytest.raises(AgentCacheUsageError, match="cache_finish_reasons must be a list of finish reasons"):
        ModelPolicy(cache_finish_reasons="stop")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"spec.modelPolicies key 'gpt-\[' is not a valid glob"):
        CacheConfig.from_spec({"modelPolicies": {"gpt-[": {"ttl": 1}}})
    with pytest.raises(ConfigurationError, match=r"spec.modelPolicies.gpt-4o.cacheable must be true or false"):
        CacheConfig.from_spec({"modelPolicies": {"gpt-4o": {"cacheable": "no"}}})
    with pytest.raises(ConfigurationError, match=r"spec.modelPolicies.gpt-4o has unknown field\(s\) \['tll'\]"):
        CacheConfig.from_spec({"modelPolicies": {"gpt-4o": {"tll": 5}}})
    assert unknown_config_fields({"modelPolicies": {"gpt-4o": {"tll": 5, "ttl": 1}}}) == [
        "spec.modelPolicies.gpt-4o.tll"
    ]


def test_the_config_document_round_trips_model_policies() -> None:
    spec = {
        "modelPolicies": {"gpt-4o*": {"ttl": 60, "cacheFinishReasons": ["tool_calls", "stop"], "cacheEmpty": False}}
    }
    config = CacheConfig.from_spec(spec)
    assert config.model_policies == {
        "gpt-4o*": ModelPolicy(ttl=60, cache_finish_reasons=frozenset({"stop", "tool_calls"}), cache_empty=False)
    }
    assert config.to_spec() == {
        "modelPolicies": {"gpt-4o*": {"ttl": 60, "cacheFinishReasons": ["stop", "tool_calls"], "cacheEmpty": False}}
    }
    assert CacheConfig.from_spec(config.to_spec()).version == config.version
