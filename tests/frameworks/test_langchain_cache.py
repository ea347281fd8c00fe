"""BetterDBLlmCache with real LangChain chat models: what a LangChain user would notice.

The reference keyed on the prompt only, so a model bound to other tools got the first model's answer;
and it rebuilt hits from their text, losing tool calls. Here a scripted chat model counts its real
calls, so "hit" means the model was not called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import PrivateAttr

from agent_cache import AgentCache, AgentCacheUsageError, LlmStoreOptions, SyncAgentCache
from agent_cache.adapters.langchain import BetterDBLlmCache, cache_params, model_from_llm_string
from tests.frameworks.conftest import open_sync_cache


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return "21°C"


@tool
def web_search(query: str) -> str:
    """Search the web."""
    return "results"


class ScriptedChatModel(GenericFakeChatModel):
    """Answers with the next scripted message and counts the calls that reached it."""

    model_name: str = "gpt-4o"
    _calls: int = PrivateAttr(default=0)

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}  # as provider models do: it lands in llm_string

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self._calls += 1
        return super()._generate(messages, *args, **kwargs)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


def scripted(cache: BetterDBLlmCache, *replies: AIMessage) -> ScriptedChatModel:
    return ScriptedChatModel(messages=iter(replies), cache=cache)


def test_different_bound_tools_do_not_share_answers(sync_cache: SyncAgentCache) -> None:
    model = scripted(BetterDBLlmCache(sync_cache), AIMessage("from weather"), AIMessage("from search"))
    with_weather, with_search = model.bind_tools([get_weather]), model.bind_tools([web_search])

    first = with_weather.invoke("Sofia today?")
    second = with_search.invoke("Sofia today?")
    again = with_weather.invoke("Sofia today?")

    assert (first.content, second.content, again.content) == ("from weather", "from search", "from weather")
    assert model.calls == 2
    stats = sync_cache.stats()
    assert (stats.llm.hits, stats.llm.misses) == (1, 2)


async def test_stop_sequences_and_params_are_part_of_the_key(agent_cache: AgentCache) -> None:
    model = scripted(BetterDBLlmCache(agent_cache), AIMessage("a"), AIMessage("b"), AIMessage("c"))

    assert (await model.ainvoke("q")).content == "a"
    assert (await model.ainvoke("q", stop=["\n"])).content == "b"
    assert (await model.bind(temperature=0.5).ainvoke("q")).content == "c"
    assert (await model.ainvoke("q", stop=["\n"])).content == "b"
    assert model.calls == 3


async def test_a_hit_keeps_tool_calls_metadata_and_usage(agent_cache: AgentCache) -> None:
    call = {"name": "get_weather", "args": {"city": "Sofia"}, "id": "call_1", "type": "tool_call"}
    reply = AIMessage(
        "",
        tool_calls=[call],
        additional_kwargs={"refusal": None, "provider_field": [1, 2]},
        response_metadata={"finish_reason": "tool_calls", "model_name": "gpt-4o"},
        usage_metadata={"input_tokens": 1000, "output_tokens": 500, "total_tokens": 1500},
    )
    model = scripted(BetterDBLlmCache(agent_cache), reply)
    bound = model.bind_tools([get_weather])

    live = await bound.ainvoke("Weather in Sofia?")
    cached = await bound.ainvoke("Weather in Sofia?")

    assert model.calls == 1
    assert isinstance(cached, AIMessage)
    assert cached.tool_calls == live.tool_calls == [call]
    assert cached.additional_kwargs == {"refusal": None, "provider_field": [1, 2]}
    assert cached.response_metadata["finish_reason"] == "tool_calls"
    assert cached.usage_metadata is not None
    assert (cached.usage_metadata["input_tokens"], cached.usage_metadata["output_tokens"]) == (1000, 500)
    stats = await agent_cache.stats()
    assert stats.llm.hits == 1
    assert stats.cost_saved_micros > 0  # priced as gpt-4o, the model parsed from llm_string


async def test_entries_are_filed_under_the_model_name(agent_cache: AgentCache) -> None:
    model = scripted(BetterDBLlmCache(agent_cache), AIMessage("a"), AIMessage("b"))
    await model.ainvoke("q")

    assert await agent_cache.llm.invalidate_by_model("gpt-4o") == 1
    assert (await model.ainvoke("q")).content == "b"


async def test_clear_removes_only_what_langchain_stored(agent_cache: AgentCache) -> None:
    lc_cache = BetterDBLlmCache(agent_cache)
    model = scripted(lc_cache, AIMessage("a"), AIMessage("b"), AIMessage("c"))
    other = {"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}]}
    await agent_cache.llm.store(other, "stored by another adapter", LlmStoreOptions())
    await model.ainvoke("q")
    await model.ainvoke("r")

    await lc_cache.aclear()

    assert (await model.ainvoke("q")).content == "c"
    assert (await agent_cache.llm.check(other)).response == "stored by another adapter"


async def test_tenants_never_share_answers_and_clear_covers_them_all(agent_cache: AgentCache) -> None:
    model = scripted(BetterDBLlmCache(agent_cache), AIMessage("acme"), AIMessage("globex"), AIMessage("after clear"))
    for tenant in ("acme", "globex"):
        with agent_cache.tenant(tenant):
            assert (await model.ainvoke("q")).content == tenant
    with agent_cache.tenant("acme"):
        assert (await model.ainvoke("q")).content == "acme"  # a hit: the tenant's own answer
        await BetterDBLlmCache(agent_cache).aclear()
    with agent_cache.tenant("globex"):
        assert (await model.ainvoke("q")).content == "after clear"


async def test_sync_calls_on_an_async_cache_say_what_to_do(agent_cache: AgentCache) -> None:
    lc_cache = BetterDBLlmCache(agent_cache)
    with pytest.raises(AgentCacheUsageError, match="SyncAgentCache"):
        lc_cache.lookup("prompt", "llm")


def test_valkey_trouble_never_fails_the_model_call(valkey_server_factory: Any) -> None:
    server = valkey_server_factory()
    cache = open_sync_cache(server)
    try:
        model = scripted(BetterDBLlmCache(cache), AIMessage("a"), AIMessage("b"), AIMessage("c"))
        assert model.invoke("q").content == "a"
        server.stop()
        assert model.invoke("q").content == "b"  # lookup failed open, update skipped
        assert model.calls == 2
    finally:
        cache.close()


def test_unreadable_entries_are_misses(standalone_sync_cache: SyncAgentCache) -> None:
    lc_cache = BetterDBLlmCache(standalone_sync_cache)
    standalone_sync_cache.llm.store(cache_params("p", "llm"), '{"not": "generations"}')
    assert lc_cache.lookup("p", "llm") is None


@pytest.mark.parametrize(
    ("llm_string", "model"),
    [
        (
            '{"id": ["langchain", "chat_models", "openai", "ChatOpenAI"], "kwargs": {"model_name": "gpt-4o-mini"}, '
            '"lc": 1, "type": "constructor"}---[(\'stop\', None), (\'tools\', [{"type": "function"}])]',
            "gpt-4o-mini",
        ),
        (
            '{"kwargs": {"model": "claude-sonnet-4-5"}, "lc": 1, "type": "constructor"}---[(\'stop\', None)]',
            "claude-sonnet-4-5",
        ),
        ("[('_type', 'generic-fake-chat-model'), ('model_name', 'gpt-4o'), ('stop', None)]", "gpt-4o"),
        ("[('_type', 'generic-fake-chat-model'), ('stop', None)]", "generic-fake-chat-model"),
        ("Sample LLM string configuration.", "langchain"),
    ],
)
def test_model_name_from_llm_string(llm_string: str, model: str) -> None:
    assert model_from_llm_string(llm_string) == model


def test_the_whole_llm_string_is_in_the_key() -> None:
    base = "[('_type', 'x'), ('model_name', 'gpt-4o'), ('stop', None)]"
    tools = "[('_type', 'x'), ('model_name', 'gpt-4o'), ('stop', None), ('tools', ['a'])]"
    assert cache_params("p", base)["llm_string"] == base
    assert cache_params("p", base) != cache_params("p", tools)
