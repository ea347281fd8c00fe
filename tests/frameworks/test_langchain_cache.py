"""BetterDBLlmCache with real LangChain chat models: what a LangChain user would notice.

The reference keyed on the prompt only, so a model bound to other tools got the first model's answer;
and it rebuilt hits from their text, losing tool calls. Here a scripted chat model counts its real
calls, so "hit" means the model was not called.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import PrivateAttr

from agent_cache import AgentCache, AgentCacheUsageError, LlmStoreOptions, SyncAgentCache
from agent_cache._backend import Backend
from agent_cache.adapters.langchain import BetterDBLlmCache, cache_params, model_from_llm_string, prompt_for_key
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


def _conversation(
    noise: int, *, args_id: int = 1001, result_id: int = 1001, content: str = "Where is order 1001?"
) -> str:
    """LangChain's prompt string for one conversation; fields named like the noise also sit where the model reads."""
    reply = AIMessage(
        "",
        tool_calls=[{"name": "get_order", "args": {"id": args_id, "usage_metadata": 1}, "id": "call_1"}],
        additional_kwargs={"response_metadata": "kept"},
        id=f"run-{noise}",
        response_metadata={"id": f"chatcmpl-{noise}", "created": noise},
        usage_metadata={"input_tokens": noise, "output_tokens": 5, "total_tokens": noise + 5},
    )
    result = json.dumps({"id": result_id, "response_metadata": {"id": "r"}})
    return dumps([HumanMessage(content, id=f"h-{noise}"), reply, ToolMessage(result, tool_call_id="call_1")])


def test_the_key_drops_only_each_messages_own_noise() -> None:
    base = prompt_for_key(_conversation(0))
    assert prompt_for_key(_conversation(1)) == base  # ids, response metadata and usage of the messages
    assert "chatcmpl" not in base and "run-0" not in base and "h-0" not in base
    for other in (_conversation(0, args_id=2002), _conversation(0, result_id=2002), _conversation(0, content="x")):
        assert prompt_for_key(other) != base  # the same names inside arguments, results and content count
    assert '"response_metadata": "kept"' in base and '"usage_metadata": 1' in base


def test_prompts_that_are_not_a_message_list_are_keyed_as_they_are() -> None:
    noisy = _conversation(1)
    for text in ("Where is my order?", '[{"id": 1, "kwargs": {"id": 2}}]', "[{not json", noisy[:-1]):
        assert prompt_for_key(text) == text
    responses_chain = '{"lc": 1, "type": "constructor", "kwargs": {"use_previous_response_id": true}}---[]'
    assert prompt_for_key(noisy, responses_chain) == noisy  # the previous response's id is sent to the model
    assert prompt_for_key(noisy, "[('_type', 'x')]") != noisy


def test_a_prompt_that_cannot_be_a_key_calls_the_model_uncached(
    standalone_sync_cache: SyncAgentCache, caplog: pytest.LogCaptureFixture
) -> None:
    llm = FakeListLLM(responses=["first", "second"], cache=BetterDBLlmCache(standalone_sync_cache))
    with caplog.at_level(logging.WARNING, logger="agent_cache.adapters"):
        assert llm.invoke("Where is my order \udc80?") == "first"  # a lone surrogate: no canonical JSON
        assert llm.invoke("Where is my order \udc80?") == "second"  # nothing was stored
    assert "treated as a miss" in caplog.text and "update skipped" in caplog.text
    assert standalone_sync_cache.stats().llm.hits == 0


@pytest.mark.parametrize("moment", ["before_delete", "after_delete"])
async def test_clear_never_leaves_an_entry_stored_meanwhile_unlisted(
    agent_cache: AgentCache, backend_client: Any, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    lc_cache = BetterDBLlmCache(agent_cache)
    prompt, llm_string = dumps([HumanMessage("q")]), "[('_type', 'fake'), ('model_name', 'gpt-4o')]"
    await lc_cache.aupdate(prompt, llm_string, [ChatGeneration(message=AIMessage("old"))])
    key = agent_cache.llm.key(cache_params(prompt, llm_string))
    index = agent_cache.keys.adapter_index("langchain")
    real_delete_many = Backend.delete_many
    stored_again = False

    async def delete_many(self: Backend, keys: Any, batch: int = 500) -> int:
        nonlocal stored_again
        if not stored_again and moment == "before_delete":
            stored_again = True
            await lc_cache.aupdate(prompt, llm_string, [ChatGeneration(message=AIMessage("new"))])
        deleted = await real_delete_many(self, keys, batch)
        if not stored_again and moment == "after_delete":
            stored_again = True
            await lc_cache.aupdate(prompt, llm_string, [ChatGeneration(message=AIMessage("new"))])
        return deleted

    monkeypatch.setattr(Backend, "delete_many", delete_many)
    await lc_cache.aclear()
    assert stored_again
    if await backend_client.exists(key):
        assert await backend_client.zscore(index, key) is not None, "a live LangChain entry fell out of its index"
    monkeypatch.undo()
    await lc_cache.aclear()
    assert await backend_client.exists(key) == 0
