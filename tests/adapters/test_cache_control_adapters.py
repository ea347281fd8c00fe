"""Cache control and model policies through real SDKs: the OpenAI wrapper and LangChain's ChatOpenAI with our cache.

The provider is a loopback server that counts requests, so "the model was not called" is observed, not assumed. The
call sites are unchanged: a ``cache.control(...)`` scope around them is all a user adds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI

from agent_cache import AgentCache, CacheControl, CacheMissError, ModelPolicy
from agent_cache.adapters.langchain import BetterDBLlmCache
from agent_cache.adapters.openai import cached_create
from tests.adapters.conftest import ProviderServer
from tests.adapters.wire import chat_completion

pytestmark = pytest.mark.valkey

PATH = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "What is Valkey?"}]


@pytest.fixture
async def client(provider: ProviderServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{provider.url}/v1", api_key="test", max_retries=0) as sdk:
        yield sdk


async def ask(cache: AgentCache, client: AsyncOpenAI, **extra: object) -> str | None:
    completion = await cached_create(cache, client.chat.completions.create, model="gpt-4o", messages=MESSAGES, **extra)
    return completion.choices[0].message.content


async def test_openai_wrapper_only_if_cached_raises_without_calling_the_provider(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    with cache.control(only_if_cached=True):
        with pytest.raises(CacheMissError) as raised:
            await ask(cache, client)
        with pytest.raises(CacheMissError):
            await ask(cache, client, n=2)  # several choices are never cached: still no provider call
    assert provider.calls() == 0
    assert raised.value.key is not None and raised.value.key.startswith(f"{cache.name}:llm:")

    provider.reply_json(chat_completion("Valkey is a data store."))
    assert await ask(cache, client) == "Valkey is a data store."
    async with cache.control(only_if_cached=True):
        assert await ask(cache, client) == "Valkey is a data store."  # a hit needs no provider
    assert provider.calls(PATH) == 1


async def test_openai_wrapper_refresh_and_no_store_scopes(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    for text in ("old answer", "new answer", "not kept"):
        provider.reply_json(chat_completion(text))
    assert await ask(cache, client) == "old answer"
    async with cache.control(refresh=True):
        assert await ask(cache, client) == "new answer"  # the cached answer was there: the provider was asked
    assert await ask(cache, client) == "new answer"  # and its answer replaced the old one
    with cache.control(no_store=True):
        assert await ask(cache, client, temperature=0) == "not kept"
    provider.reply_json(chat_completion("asked again"))
    assert await ask(cache, client, temperature=0) == "asked again"
    assert provider.calls(PATH) == 4


async def test_openai_wrapper_model_policy_refuses_truncated_answers(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    await cache.llm.set_model_policy("gpt-4o*", ModelPolicy(cache_finish_reasons={"stop", "tool_calls"}))
    provider.reply_json(chat_completion("Valkey is an in-mem", finish_reason="length"))
    provider.reply_json(chat_completion("Valkey is an in-memory data store."))

    assert await ask(cache, client) == "Valkey is an in-mem"
    assert await ask(cache, client) == "Valkey is an in-memory data store."  # the truncated one was not stored
    assert await ask(cache, client) == "Valkey is an in-memory data store."
    assert provider.calls(PATH) == 2


def chat_model(cache: AgentCache, provider: ProviderServer) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o",
        base_url=f"{provider.url}/v1",
        api_key="test",  # type: ignore[arg-type]
        max_retries=0,
        cache=BetterDBLlmCache(cache),
    )


async def test_langchain_honours_the_scope_without_changing_the_call_site(
    cache: AgentCache, provider: ProviderServer
) -> None:
    model = chat_model(cache, provider)
    async with cache.control(only_if_cached=True):
        with pytest.raises(CacheMissError):
            await model.ainvoke("What is Valkey?")
    assert provider.calls() == 0

    provider.reply_json(chat_completion("old answer"))
    provider.reply_json(chat_completion("new answer"))
    assert (await model.ainvoke("What is Valkey?")).content == "old answer"
    assert (await model.ainvoke("What is Valkey?")).content == "old answer"  # a hit
    async with cache.control(refresh=True):
        assert (await model.ainvoke("What is Valkey?")).content == "new answer"
    with cache.control(only_if_cached=True):
        assert (await model.ainvoke("What is Valkey?")).content == "new answer"
    assert provider.calls(PATH) == 2


async def test_langchain_entries_follow_the_model_policy_finish_reasons(
    cache: AgentCache, provider: ProviderServer
) -> None:
    await cache.llm.set_model_policy("gpt-4o", ModelPolicy(cache_finish_reasons=["stop"]))
    model = chat_model(cache, provider)
    provider.reply_json(chat_completion("cut sh", finish_reason="length"))
    provider.reply_json(chat_completion("complete"))

    assert (await model.ainvoke("Tell me")).content == "cut sh"
    assert (await model.ainvoke("Tell me")).content == "complete"  # truncated: not stored
    assert (await model.ainvoke("Tell me")).content == "complete"
    assert provider.calls(PATH) == 2


def test_control_objects_compare_by_flags() -> None:
    assert CacheControl(no_cache=True).merged(CacheControl(no_store=True)) == CacheControl(no_cache=True, no_store=True)


async def test_anthropic_wrapper_honours_only_if_cached_and_max_tokens_policies(
    cache: AgentCache, provider: ProviderServer
) -> None:
    from anthropic import AsyncAnthropic

    from agent_cache.adapters.anthropic import cached_create as anthropic_create
    from tests.adapters.wire import anthropic_message

    request = {"model": "claude-sonnet-4", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}
    await cache.llm.set_model_policy("claude-*", ModelPolicy(cache_finish_reasons={"stop", "tool_calls"}))
    async with AsyncAnthropic(base_url=provider.url, api_key="test", max_retries=0) as sdk:
        with cache.control(only_if_cached=True), pytest.raises(CacheMissError):
            await anthropic_create(cache, sdk.messages.create, **request)
        assert provider.calls() == 0
        provider.reply_json(anthropic_message([{"type": "text", "text": "Hel"}], stop_reason="max_tokens"))
        provider.reply_json(anthropic_message([{"type": "text", "text": "Hello!"}]))
        for expected in ("Hel", "Hello!", "Hello!"):  # max_tokens is "length": not stored under this policy
            message = await anthropic_create(cache, sdk.messages.create, **request)
            assert message.content[0].text == expected  # type: ignore[union-attr]
    assert provider.calls() == 2
