"""Pydantic AI: a real ``Agent`` over ``OpenAIChatModel`` and a loopback server, cached in Valkey."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI
from pydantic_ai import Agent, BinaryContent, ImageUrl
from pydantic_ai.exceptions import ModelConnectionError
from pydantic_ai.messages import (
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    UserPromptPart,
)
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.usage import RequestUsage

from agent_cache import AgentCache, LlmStoreOptions
from agent_cache._keys import llm_hash
from agent_cache.adapters.pydantic_ai import (
    CachedModel,
    UncacheableResponseError,
    from_blocks,
    prepare_params,
    to_answer,
    to_blocks,
)
from tests.adapters.conftest import ProviderServer
from tests.adapters.wire import chat_chunks, chat_completion, function_call

pytestmark = pytest.mark.valkey

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


@pytest.fixture
async def client(provider: ProviderServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{provider.url}/v1", api_key="test", max_retries=0) as sdk:
        yield sdk


# Set by the agent run, or the local time the response was received: a hit is received anew.
RUN_FIELDS = ("timestamp", "run_id", "conversation_id", "model_id", "metadata", "workspace_ref", "state")


def model_side(response: ModelResponse) -> dict[str, Any]:
    """Everything the model produced: the serialized response minus what the agent run sets."""
    data = ModelMessagesTypeAdapter.dump_python([response], mode="json")[0]
    return {k: v for k, v in data.items() if k not in RUN_FIELDS}


def responses(messages: list[Any]) -> list[ModelResponse]:
    return [m for m in messages if isinstance(m, ModelResponse)]


def agent_for(client: AsyncOpenAI, cache: AgentCache) -> tuple[Agent[None, str], list[str]]:
    model = CachedModel(OpenAIChatModel("gpt-4o", provider=OpenAIProvider(openai_client=client)), cache)
    agent = Agent(model, instructions="Answer briefly.")
    calls: list[str] = []

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"21C in {city}"

    return agent, calls


async def test_a_tool_using_run_is_served_from_the_cache(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    agent, calls = agent_for(client, cache)
    provider.reply_json(
        chat_completion(content=None, tool_calls=[function_call("call_1", "get_weather", {"city": "Sofia"})])
    )
    provider.reply_json(chat_completion(content="It is 21C in Sofia."))

    first = await agent.run("Weather in Sofia?")
    second = await agent.run("Weather in Sofia?")
    assert first.output == second.output == "It is 21C in Sofia."
    assert provider.calls("/v1/chat/completions") == 2  # the second run's two model turns were hits
    assert calls == ["Sofia", "Sofia"]  # tools still run
    tool_calls = [
        p for m in second.all_messages() if isinstance(m, ModelResponse) for p in m.parts if isinstance(p, ToolCallPart)
    ]
    assert [(p.tool_call_id, p.tool_name, p.args_as_dict()) for p in tool_calls] == [
        ("call_1", "get_weather", {"city": "Sofia"})
    ]
    assert second.usage.input_tokens == first.usage.input_tokens
    originals, hits = responses(first.all_messages()), responses(second.all_messages())
    assert [model_side(r) for r in hits] == [model_side(r) for r in originals]
    assert hits[0].model_name == "gpt-4o-2024-08-06"  # the dated name the provider reported
    assert hits[0].provider_response_id == "chatcmpl-original"
    assert hits[0].usage.cache_read_tokens == 4 and hits[0].usage.details["reasoning_tokens"] == 2


async def test_streamed_runs_record_and_replay(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    agent, _ = agent_for(client, cache)
    provider.reply_sse(chat_chunks(["Valkey ", "is ", "fast."]))

    async def run() -> tuple[str, list[str]]:
        async with agent.run_stream("What is Valkey?") as result:
            pieces = [piece async for piece in result.stream_text(delta=True)]
            return await result.get_output(), pieces

    live_output, live_pieces = await run()
    cached_output, cached_pieces = await run()
    assert provider.calls() == 1
    assert cached_output == live_output == "Valkey is fast."
    assert "".join(cached_pieces) == "".join(live_pieces)
    async with agent.run_stream("What is Valkey?") as result:
        await result.get_output()
        replayed = responses(result.all_messages())
    assert replayed[0].provider_response_id == "chatcmpl-streamed"
    assert replayed[0].model_name == "gpt-4o-2024-08-06"


async def test_an_interrupted_stream_stores_nothing(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    agent, _ = agent_for(client, cache)
    provider.reply_sse(chat_chunks(["one ", "two ", "three"]), cut_after=3)
    with pytest.raises(ModelConnectionError):
        async with agent.run_stream("Count") as result:
            async for _ in result.stream_text():
                pass
    provider.reply_json(chat_completion(content="one two three"))
    assert (await agent.run("Count")).output == "one two three"
    assert provider.calls() == 2


async def key(messages: list[Any], **settings: Any) -> str:
    return llm_hash(await prepare_params(messages, "gpt-4o", settings, system="openai"))


async def test_key_ignores_timestamps_and_ids_but_not_content() -> None:
    ask = [ModelRequest(parts=[UserPromptPart(content="hi")])]
    again = [ModelRequest(parts=[UserPromptPart(content="hi")])]  # another timestamp
    assert await key(ask) == await key(again)
    assert await key(ask) != await key([ModelRequest(parts=[UserPromptPart(content="hello")])])
    assert await key(ask, temperature=0.1) != await key(ask)
    assert await key(ask, timeout=5, max_retries=3) == await key(ask)
    as_text = ModelResponse(parts=[ToolCallPart("f", '{"a": 1}', tool_call_id="c1")], provider_response_id="r1")
    as_dict = ModelResponse(parts=[ToolCallPart("f", {"a": 1}, tool_call_id="c1")], provider_response_id="r2")
    assert await key([*ask, as_text]) == await key([*ask, as_dict])


async def test_binary_content_goes_through_the_normalizer() -> None:
    def ask(item: Any) -> list[Any]:
        return [ModelRequest(parts=[UserPromptPart(content=["What is this?", item])])]

    params = await prepare_params(ask(BinaryContent(PNG, media_type="image/png")), "gpt-4o", system="openai")
    blocks = params["messages"][0]["parts"][0]["content"]
    assert blocks[1]["type"] == "binary" and blocks[1]["ref"].startswith("sha256:")
    assert await key(ask(BinaryContent(PNG, media_type="image/png"))) != await key(ask(ImageUrl("https://x.io/a.png")))
    other = BinaryContent(PNG + b"\x01", media_type="image/png")
    assert await key(ask(BinaryContent(PNG, media_type="image/png"))) != await key(ask(other))
    assert "iVBOR" not in json.dumps(params)


async def test_a_truncated_response_is_cached_with_its_finish_reason(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    model = CachedModel(OpenAIChatModel("gpt-4o", provider=OpenAIProvider(openai_client=client)), cache)
    provider.reply_json(chat_completion(content="Valkey is an in-mem", finish_reason="length"))
    ask = [ModelRequest(parts=[UserPromptPart(content="What is Valkey?")])]
    settings: Any = {"max_tokens": 5}
    first = await model.request(ask, settings, ModelRequestParameters())
    second = await model.request(ask, settings, ModelRequestParameters())
    assert provider.calls() == 1
    assert first.finish_reason == second.finish_reason == "length"
    assert model_side(second) == model_side(first)
    with pytest.raises(UncacheableResponseError):
        to_blocks(first)  # blocks alone would rebuild it as "stop"


def test_blocks_and_metadata_round_trip() -> None:
    original = ModelResponse(
        parts=[
            ThinkingPart("Need the weather.", id="rs_1", signature="sig", provider_name="openai"),
            TextPart("Checking.", id="msg_1"),
            ToolCallPart("get_weather", '{"city": "Sofia"}', tool_call_id="call_1", id="fc_1"),
        ],
        usage=RequestUsage(input_tokens=20, output_tokens=7, cache_read_tokens=5, details={"reasoning_tokens": 3}),
        model_name="gpt-5-2025-08-07",
        provider_name="openai",
        provider_url="https://api.openai.com/v1/",
        provider_details={"finish_reason": "completed"},
        provider_response_id="resp_original",
        finish_reason="tool_call",
    )
    answer = to_answer(original)
    assert answer.blocks == to_blocks(original)
    rebuilt = from_blocks(answer.blocks, model_name="gpt-5", metadata=answer.metadata)
    assert model_side(rebuilt) == model_side(original)
    assert rebuilt.parts == original.parts  # ids, signature, the argument text exactly as sent
    legacy = from_blocks(answer.blocks, model_name="gpt-5", provider_name="openai", input_tokens=20, output_tokens=7)
    assert (legacy.model_name, legacy.provider_response_id, legacy.finish_reason) == ("gpt-5", None, "tool_call")


async def test_entries_without_metadata_are_still_served(cache: AgentCache, client: AsyncOpenAI) -> None:
    model = CachedModel(OpenAIChatModel("gpt-4o", provider=OpenAIProvider(openai_client=client)), cache)
    ask = [ModelRequest(parts=[UserPromptPart(content="hi")])]
    params = await prepare_params(ask, "gpt-4o", None, ModelRequestParameters(), system="openai")
    await cache.llm.store_multipart(params, [{"type": "text", "text": "Hello."}], LlmStoreOptions())
    hit = await model.request(ask, None, ModelRequestParameters())
    assert (hit.parts, hit.model_name, hit.finish_reason) == ([TextPart("Hello.")], "gpt-4o", "stop")


def test_unfinished_responses_are_not_storable() -> None:
    with pytest.raises(UncacheableResponseError):
        to_answer(ModelResponse(parts=[TextPart("Cut")], finish_reason="content_filter"))
    with pytest.raises(UncacheableResponseError):
        to_answer(ModelResponse(parts=[TextPart("Cut")], state="interrupted"))
