"""LlamaIndex chat messages: keys, binary blocks and a store/hit round trip on a real Valkey."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.tools import FunctionTool

from agent_cache import AgentCache, LlmStoreOptions
from agent_cache._keys import llm_hash
from agent_cache.adapters.llamaindex import from_blocks, prepare_params, to_answer, to_blocks
from tests.adapters.wire import chat_completion

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24


def get_weather(city: str) -> str:
    """The weather in a city."""
    return "21C"


async def key(messages: list[Any], **params: Any) -> str:
    return llm_hash(await prepare_params(messages, model="gpt-4o", **params))


async def test_parameters_tools_and_messages_are_in_the_key() -> None:
    ask = [ChatMessage(role="user", content="hi")]
    base = await key(ask)
    assert await key([{"role": "user", "content": "hi"}]) == base
    assert await key(ask, temperature=0.3) != base
    assert await key(ask, reasoning_effort="high") != base
    assert await key(ask, tools=[FunctionTool.from_defaults(fn=get_weather)]) != base
    assert await key([ChatMessage(role="system", content="hi")]) != base
    params = await prepare_params(ask, model="gpt-4o", tools=[FunctionTool.from_defaults(fn=get_weather)])
    assert params["tools"][0]["function"]["name"] == "get_weather"
    assert "city" in params["tools"][0]["function"]["parameters"]["properties"]


async def test_tool_call_arguments_compare_as_json() -> None:
    def turn(kwargs: Any) -> list[ChatMessage]:
        call = ToolCallBlock(tool_call_id="c1", tool_name="get_weather", tool_kwargs=kwargs)
        return [ChatMessage(role="user", content="hi"), ChatMessage(role="assistant", blocks=[call])]

    assert await key(turn({"city": "Sofia"})) == await key(turn('{"city": "Sofia"}'))
    assert await key(turn({"city": "Sofia"})) != await key(turn({"city": "Oslo"}))


async def test_the_same_image_inline_or_as_a_data_url_is_one_key() -> None:
    b64 = base64.b64encode(PNG).decode()

    def ask(block: ImageBlock) -> list[ChatMessage]:
        return [ChatMessage(role="user", blocks=[TextBlock(text="What is this?"), block])]

    inline = await key(ask(ImageBlock(image=PNG, image_mimetype="image/png")))
    assert inline == await key(ask(ImageBlock(url=f"data:image/png;base64,{b64}")))
    assert inline != await key(ask(ImageBlock(url="https://x.io/a.png")))
    assert inline != await key(ask(ImageBlock(image=PNG, image_mimetype="image/png", detail="low")))
    params = await prepare_params(ask(ImageBlock(image=PNG)), model="gpt-4o")
    assert params["messages"][0]["content"][1]["mediaType"] == "image/png"


@pytest.mark.valkey
async def test_a_chat_response_round_trips_through_the_cache(cache: AgentCache) -> None:
    response = ChatResponse(
        message=ChatMessage(
            role="assistant",
            blocks=[
                ThinkingBlock(content="Need the weather."),
                TextBlock(text="Checking."),
                ToolCallBlock(tool_call_id="c1", tool_name="get_weather", tool_kwargs={"city": "Sofia"}),
            ],
        )
    )
    params = await prepare_params([ChatMessage(role="user", content="Weather?")], model="gpt-4o")
    await cache.llm.store_multipart(params, to_blocks(response), LlmStoreOptions(tokens={"input": 5, "output": 3}))
    hit = await cache.llm.check(params)
    assert hit.hit and hit.content_blocks is not None
    rebuilt = from_blocks(hit.content_blocks)
    assert rebuilt.message.blocks == response.message.blocks
    assert rebuilt.message.role == response.message.role


@pytest.mark.valkey
async def test_a_chat_response_round_trips_with_its_metadata(cache: AgentCache) -> None:
    """Thinking signatures, argument text, additional_kwargs and raw come back; raw as its JSON form."""
    raw = chat_completion(content="Checking.", finish_reason="length")
    response = ChatResponse(
        message=ChatMessage(
            role="assistant",
            blocks=[
                ThinkingBlock(content="Need the weather.", num_tokens=4, additional_information={"signature": "sig"}),
                TextBlock(text="Checking."),
                ToolCallBlock(tool_call_id="c1", tool_name="get_weather", tool_kwargs='{"city": "Sofia"}'),
            ],
        ),
        raw=raw,
        additional_kwargs={"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    )
    params = await prepare_params([ChatMessage(role="user", content="Weather?")], model="gpt-4o")
    answer = to_answer(response)
    assert answer.blocks == to_blocks(response) and answer.tokens == {"input": 12, "output": 9}
    await cache.llm.store_multipart(params, answer.blocks, answer.store_options())
    hit = await cache.llm.check(params)
    assert hit.hit and hit.content_blocks is not None and hit.metadata is not None
    assert hit.metadata["finish"] == "length"  # from raw, for adapters of other formats sharing the entry
    rebuilt = from_blocks(hit.content_blocks, hit.metadata)
    assert rebuilt == response
    assert rebuilt.message.blocks[0].additional_information == {"signature": "sig"}  # type: ignore[union-attr]
