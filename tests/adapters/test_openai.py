"""OpenAI Chat Completions through the real ``AsyncOpenAI`` client, a loopback server and a real Valkey."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import AgentCache, LlmStoreOptions, TelemetryOptions
from agent_cache._keys import llm_hash
from agent_cache.adapters.openai import (
    UncacheableResponseError,
    cached_create,
    from_blocks,
    prepare_params,
    to_answer,
    to_blocks,
    usage_tokens,
)
from tests.adapters.conftest import ProviderServer
from tests.adapters.wire import chat_chunks, chat_completion, function_call
from tests.servers import free_port

pytestmark = pytest.mark.valkey

PATH = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "What is Valkey?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24


@pytest.fixture
async def client(provider: ProviderServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{provider.url}/v1", api_key="test", max_retries=0) as sdk:
        yield sdk


def essentials(completion: ChatCompletion) -> dict[str, Any]:
    """What a caller reads from a completion: the message (tool calls with parsed arguments), finish, usage."""
    choice = completion.choices[0]
    calls = [
        (c.id, c.function.name, json.loads(c.function.arguments))  # type: ignore[union-attr]
        for c in choice.message.tool_calls or []
    ]
    usage = completion.usage
    assert usage is not None
    return {
        "content": choice.message.content,
        "role": choice.message.role,
        "tool_calls": calls,
        "finish_reason": choice.finish_reason,
        "usage": (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens),
    }


async def assemble(stream: AsyncIterator[ChatCompletionChunk]) -> dict[str, Any]:
    """Fold chunks the way a streaming caller does, independently of the adapter's own assembler."""
    text, calls, finish, usage, count = "", {}, None, None, 0
    async for chunk in stream:
        assert isinstance(chunk, ChatCompletionChunk)
        count += 1
        if chunk.usage is not None:
            usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = call.id or slot["id"]
                slot["name"] += (call.function.name or "") if call.function else ""
                slot["arguments"] += (call.function.arguments or "") if call.function else ""
            finish = choice.finish_reason or finish
    parsed = [(c["id"], c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())]
    return {"text": text, "tool_calls": parsed, "finish": finish, "usage": usage, "chunks": count > 0}


async def test_miss_calls_the_provider_and_a_hit_does_not(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    provider.reply_json(chat_completion())
    first = await cached_create(cache, client.chat.completions.create, model="gpt-4o", messages=MESSAGES)
    assert provider.calls(PATH) == 1
    second = await cached_create(cache, client.chat.completions.create, model="gpt-4o", messages=MESSAGES)
    assert provider.calls(PATH) == 1
    assert isinstance(second, ChatCompletion)
    assert essentials(second) == essentials(first)
    assert second.id == first.id == "chatcmpl-original"
    stats = await cache.stats()
    assert (stats.llm.hits, stats.llm.misses) == (1, 1)


async def test_tool_calls_survive_a_hit(cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer) -> None:
    calls = [function_call("call_1", "get_weather", {"city": "Sofia"}), function_call("call_2", "get_weather", {})]
    provider.reply_json(chat_completion(content=None, tool_calls=calls))
    request = {"model": "gpt-4o", "messages": MESSAGES, "tools": [WEATHER_TOOL]}
    first = await cached_create(cache, client.chat.completions.create, **request)
    second = await cached_create(cache, client.chat.completions.create, **request)
    assert provider.calls() == 1
    assert essentials(second) == essentials(first)
    assert essentials(second)["tool_calls"] == [
        ("call_1", "get_weather", {"city": "Sofia"}),
        ("call_2", "get_weather", {}),
    ]
    assert second.choices[0].message.content is None

    # The next turn echoes the SDK's own message object back: it must key like the same message as a dict.
    follow_up = [*MESSAGES, first.choices[0].message, {"role": "tool", "tool_call_id": "call_1", "content": "21C"}]
    as_dicts = [
        *MESSAGES,
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "21C"}]},
    ]
    echoed = await prepare_params({"model": "gpt-4o", "messages": follow_up})
    written = await prepare_params({"model": "gpt-4o", "messages": as_dicts})
    assert llm_hash(echoed) == llm_hash(written)


async def test_streamed_miss_passes_chunks_through_and_a_streamed_hit_replays_them(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    provider.reply_sse(chat_chunks(["Valkey ", "is ", "fast."], [("call_9", "get_weather", ['{"ci', 'ty": "Sofia"}'])]))
    request = {
        "model": "gpt-4o",
        "messages": MESSAGES,
        "tools": [WEATHER_TOOL],
        "stream_options": {"include_usage": True},
    }
    live = await cached_create(cache, client.chat.completions.create, stream=True, **request)
    assert live.cached is False
    original = await assemble(live)
    assert original["text"] == "Valkey is fast."
    assert original["tool_calls"] == [("call_9", "get_weather", {"city": "Sofia"})]

    replay = await cached_create(cache, client.chat.completions.create, stream=True, **request)
    assert replay.cached is True
    assert await assemble(replay) == original
    assert provider.calls() == 1

    # The same request without streaming is the same entry.
    completion = await cached_create(cache, client.chat.completions.create, **request)
    assert completion.choices[0].message.content == "Valkey is fast."
    assert provider.calls() == 1


async def test_a_non_streamed_store_serves_a_streamed_hit(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    provider.reply_json(chat_completion(tool_calls=[function_call("call_1", "get_weather", {"city": "Oslo"})]))
    first = await cached_create(cache, client.chat.completions.create, model="gpt-4o", messages=MESSAGES)
    stream = await cached_create(cache, client.chat.completions.create, model="gpt-4o", messages=MESSAGES, stream=True)
    assert provider.calls() == 1
    replayed = await stream.final_response()
    assert essentials(replayed) == essentials(first)


async def test_a_dropped_stream_raises_and_stores_nothing(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    provider.reply_sse(chat_chunks(["Valkey ", "is ", "fast."]), cut_after=3)
    stream = await cached_create(cache, client.chat.completions.create, model="gpt-4o", messages=MESSAGES, stream=True)
    seen = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            seen.append(chunk)
    assert len(seen) == 3
    provider.reply_json(chat_completion())
    await cached_create(cache, client.chat.completions.create, model="gpt-4o", messages=MESSAGES)
    assert provider.calls() == 2  # nothing was stored by the broken stream


async def test_a_stream_that_ends_without_finish_reason_stores_nothing(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    events = chat_chunks(["half an answer"], usage=None)
    del events[-2]  # the finish chunk; the server still closes cleanly with [DONE]
    provider.reply_sse(events)
    stream = await cached_create(cache, client.chat.completions.create, model="gpt-4o", messages=MESSAGES, stream=True)
    assert (await assemble(stream))["text"] == "half an answer"
    assert not (await cache.llm.check(await prepare_params({"model": "gpt-4o", "messages": MESSAGES}))).hit


async def test_a_consumer_that_stops_early_stores_nothing(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    provider.reply_sse(chat_chunks(["one ", "two ", "three"]))
    async with await cached_create(
        cache, client.chat.completions.create, model="gpt-4o", messages=MESSAGES, stream=True
    ) as stream:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content == "one ":
                break
    assert not (await cache.llm.check(await prepare_params({"model": "gpt-4o", "messages": MESSAGES}))).hit


async def test_a_hit_is_the_original_completion(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    # finish_reason "stop" with a tool call (a forced tool_choice answers so) and argument text with spaces: what the
    # blocks alone would rebuild differently.
    calls = [function_call("call_1", "get_weather", {"city": "Sofia"})]
    provider.reply_json(chat_completion(content=None, tool_calls=calls, finish_reason="stop"))
    request = {"model": "gpt-4o", "messages": MESSAGES, "tools": [WEATHER_TOOL]}
    first = await cached_create(cache, client.chat.completions.create, **request)
    second = await cached_create(cache, client.chat.completions.create, **request)
    assert provider.calls() == 1
    assert second == first
    assert second.model_dump() == first.model_dump()
    assert (second.id, second.created, second.model) == ("chatcmpl-original", 1_700_000_000, "gpt-4o-2024-08-06")
    assert (second.system_fingerprint, second.service_tier) == ("fp_1", "default")
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls[0].function.arguments == '{"city": "Sofia"}'  # type: ignore[index,union-attr]
    usage = second.usage
    assert usage is not None and usage.prompt_tokens_details is not None and usage.completion_tokens_details is not None
    assert (usage.prompt_tokens_details.cached_tokens, usage.completion_tokens_details.reasoning_tokens) == (4, 2)


async def test_a_truncated_answer_is_cached_and_replayed_with_its_finish_reason(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    provider.reply_json(chat_completion(content="Valkey is an in-mem", finish_reason="length", completion_tokens=5))
    request = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 5}
    first = await cached_create(cache, client.chat.completions.create, **request)
    second = await cached_create(cache, client.chat.completions.create, **request)
    assert provider.calls() == 1
    assert second == first
    assert second.choices[0].finish_reason == "length"
    assert second.choices[0].message.content == "Valkey is an in-mem"

    stream = await cached_create(
        cache, client.chat.completions.create, stream=True, stream_options={"include_usage": True}, **request
    )
    assert stream.cached
    replayed = await assemble(stream)
    assert (replayed["text"], replayed["finish"], replayed["usage"]) == ("Valkey is an in-mem", "length", (12, 5))
    assert await stream.final_response() == first
    with pytest.raises(UncacheableResponseError):
        to_blocks(first)  # blocks alone would rebuild it as complete: only to_answer (with metadata) stores it


async def test_a_truncated_stream_is_cached_with_its_finish_reason(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    provider.reply_sse(chat_chunks(["Valkey ", "is "], finish_reason="length", usage=(12, 2)))
    request = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 2, "stream_options": {"include_usage": True}}
    live = await cached_create(cache, client.chat.completions.create, stream=True, **request)
    assert (await assemble(live))["finish"] == "length"
    completion = await cached_create(cache, client.chat.completions.create, **request)
    assert provider.calls() == 1
    assert completion == await live.final_response()
    assert (completion.choices[0].finish_reason, completion.id) == ("length", "chatcmpl-streamed")


async def test_a_streamed_hit_replays_the_original_chunks(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    provider.reply_sse(chat_chunks(["Valkey ", "is ", "fast."], [("call_9", "get_weather", ['{"ci', 'ty": "Sofia"}'])]))
    request = {
        "model": "gpt-4o",
        "messages": MESSAGES,
        "tools": [WEATHER_TOOL],
        "stream_options": {"include_usage": True},
    }
    live = await cached_create(cache, client.chat.completions.create, stream=True, **request)
    live_chunks = [chunk async for chunk in live]
    replay = await cached_create(cache, client.chat.completions.create, stream=True, **request)
    replayed = [chunk async for chunk in replay]
    assert provider.calls() == 1
    assert await replay.final_response() == await live.final_response()

    def header(chunk: ChatCompletionChunk) -> tuple[Any, ...]:
        return (chunk.id, chunk.created, chunk.model, chunk.system_fingerprint, chunk.service_tier, chunk.object)

    assert (
        {header(c) for c in replayed}
        == {header(c) for c in live_chunks}
        == {("chatcmpl-streamed", 1_700_000_001, "gpt-4o-2024-08-06", "fp_2", "default", "chat.completion.chunk")}
    )
    assert replayed[-1].usage == live_chunks[-1].usage  # the usage chunk, token details included
    assert replayed[-1].choices == []
    # The same request without streaming is the completion the stream assembled.
    assert await cached_create(cache, client.chat.completions.create, **request) == await live.final_response()


async def test_refusals_are_cached(cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer) -> None:
    refusal = "I'm sorry, I can't help with that."
    provider.reply_json(chat_completion(content=None, refusal=refusal))
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    request = {"model": "gpt-4o", "messages": MESSAGES, "response_format": schema}
    first = await cached_create(cache, client.chat.completions.create, **request)
    second = await cached_create(cache, client.chat.completions.create, **request)
    assert provider.calls() == 1
    assert second == first
    assert (second.choices[0].message.refusal, second.choices[0].message.content) == (refusal, None)
    stream = await cached_create(cache, client.chat.completions.create, stream=True, **request)
    refused = "".join([c.choices[0].delta.refusal or "" async for c in stream if c.choices])
    assert refused == refusal

    # A streamed refusal is stored too.
    provider.reply_sse(chat_chunks([], refusal_pieces=["I'm sorry, ", "I can't."]))
    other = {**request, "messages": [{"role": "user", "content": "Something else"}]}
    live = await cached_create(cache, client.chat.completions.create, stream=True, **other)
    await live.final_response()
    hit = await cached_create(cache, client.chat.completions.create, **other)
    assert provider.calls() == 2
    assert hit.choices[0].message.refusal == "I'm sorry, I can't."


async def test_filtered_and_multi_choice_answers_are_not_stored(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    provider.reply_json(chat_completion(finish_reason="content_filter"))
    provider.reply_json(chat_completion(finish_reason="content_filter"))
    for _ in range(2):
        await cached_create(cache, client.chat.completions.create, model="gpt-4o", messages=MESSAGES)
    assert provider.calls() == 2

    two = chat_completion()
    two["choices"].append({**two["choices"][0], "index": 1})
    provider.reply_json(two)
    provider.reply_json(two)
    for _ in range(2):
        result = await cached_create(cache, client.chat.completions.create, model="gpt-4o", messages=MESSAGES, n=2)
        assert len(result.choices) == 2
    assert provider.calls() == 4
    with pytest.raises(UncacheableResponseError):
        to_answer(chat_completion(finish_reason="content_filter"))


async def test_entries_without_metadata_are_still_served(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    """An entry stored before response metadata existed (or by hand, without it) rebuilds with derived ids."""
    original = chat_completion(tool_calls=[function_call("call_1", "get_weather", {"city": "Oslo"})])
    params = await prepare_params({"model": "gpt-4o", "messages": MESSAGES})
    await cache.llm.store_multipart(params, to_blocks(original), LlmStoreOptions(tokens=usage_tokens(original)))
    hit = await cached_create(cache, client.chat.completions.create, model="gpt-4o", messages=MESSAGES)
    again = await cached_create(cache, client.chat.completions.create, model="gpt-4o", messages=MESSAGES)
    assert provider.calls() == 0
    assert hit.id.startswith("chatcmpl-") and hit.id != "chatcmpl-original" and hit.id == again.id
    assert (hit.model, hit.system_fingerprint, hit.choices[0].finish_reason) == ("gpt-4o", None, "tool_calls")
    assert essentials(hit) == essentials(ChatCompletion.model_validate(original))


async def key(**request: Any) -> str:
    return llm_hash(await prepare_params({"model": "gpt-4o", "messages": MESSAGES, **request}))


async def test_every_answer_changing_parameter_is_in_the_key() -> None:
    base = await key()
    assert await key(reasoning_effort="high") != base
    assert await key(reasoning_effort="high") != await key(reasoning_effort="low")
    assert await key(max_completion_tokens=100) != base
    assert await key(max_completion_tokens=100) != await key(max_tokens=100)
    assert await key(tools=[WEATHER_TOOL]) != base
    assert await key(response_format={"type": "json_object"}) != base
    assert await key(some_future_parameter=1) != base
    # Transport-only parameters, None and SDK sentinels are not.
    assert await key(stream=True, stream_options={"include_usage": True}, timeout=3, user="u", store=True) == base
    assert await key(temperature=None, seed=openai.NOT_GIVEN) == base
    assert await key(stop="END") == await key(stop=["END"])


async def test_equivalent_messages_share_a_key_and_different_ones_do_not() -> None:
    as_string = await prepare_params({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    as_part = await prepare_params(
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    )
    assert llm_hash(as_string) == llm_hash(as_part)
    system = await prepare_params({"model": "m", "messages": [{"role": "system", "content": "hi"}]})
    assert llm_hash(system) != llm_hash(as_string)
    spaced = [{"role": "assistant", "content": None, "tool_calls": [function_call("c", "f", {"a": 1, "b": [1, 2]})]}]
    compact = [{"role": "assistant", "tool_calls": [{**spaced[0]["tool_calls"][0]}]}]  # type: ignore[index]
    compact[0]["tool_calls"][0]["function"] = {"name": "f", "arguments": '{"a":1,"b":[1,2]}'}
    assert llm_hash(await prepare_params({"model": "m", "messages": spaced})) == llm_hash(
        await prepare_params({"model": "m", "messages": compact})
    )


async def test_binary_parts_go_through_the_normalizer() -> None:
    b64 = base64.b64encode(PNG).decode()

    async def with_image(url: str, detail: str | None = None) -> str:
        image: dict[str, Any] = {"url": url} if detail is None else {"url": url, "detail": detail}
        content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": image}]
        params = await prepare_params({"model": "gpt-4o", "messages": [{"role": "user", "content": content}]})
        block = params["messages"][0]["content"][1]
        assert block["type"] == "binary" and block["ref"].startswith(("sha256:", "url:"))
        assert b64 not in json.dumps(params)  # the key holds a digest, never the payload
        return llm_hash(params)

    data_url = f"data:image/png;base64,{b64}"
    assert await with_image(data_url) == await with_image(f"data:image/png;base64,{b64[:20]}\n{b64[20:]}")
    assert await with_image(data_url) != await with_image(data_url, detail="low")
    assert await with_image(data_url) != await with_image("https://example.com/a.png")
    assert await with_image("https://EXAMPLE.com/a.png#x") == await with_image("https://example.com/a.png")

    async def with_file(file_data: str) -> str:
        content = [{"type": "file", "file": {"file_data": file_data, "filename": "a.png"}}]
        return await key(messages=[{"role": "user", "content": content}])

    # The same bytes as raw base64 and as a data URL are one request.
    assert await with_file(b64) == await with_file(data_url)
    audio = {"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}}
    assert await key(messages=[{"role": "user", "content": [audio]}]) != await with_file(b64)


def test_blocks_round_trip_to_the_sdk_type() -> None:
    original = ChatCompletion.model_validate(
        chat_completion(content="Checking.", tool_calls=[function_call("call_1", "get_weather", {"city": "Sofia"})])
    )
    blocks = to_blocks(original)
    assert blocks == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_call", "id": "call_1", "name": "get_weather", "args": {"city": "Sofia"}},
    ]
    assert usage_tokens(original) == {"input": 12, "output": 9}
    rebuilt = from_blocks(blocks, {"model": "gpt-4o"}, input_tokens=12, output_tokens=9)
    assert essentials(rebuilt) == essentials(original)
    forced = from_blocks(blocks, {"model": "gpt-4o", "tool_choice": {"type": "function", "function": {"name": "x"}}})
    assert forced.choices[0].finish_reason == "stop"  # what OpenAI answers when the tool was forced

    answer = to_answer(original)
    assert answer.blocks == blocks and answer.tokens == {"input": 12, "output": 9}
    assert answer.metadata is not None and answer.metadata["finish"] == "tool_calls"
    assert from_blocks(answer.blocks, {"model": "gpt-4o"}, metadata=answer.metadata) == original


async def test_a_valkey_outage_never_costs_the_caller_its_answer(client: AsyncOpenAI, provider: ProviderServer) -> None:
    port = free_port()  # nothing listens there: every connection is refused at once
    dead = Valkey(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
    cache = AgentCache(client=dead, name="down", telemetry=TelemetryOptions(registry=CollectorRegistry()))
    try:
        provider.reply_json(chat_completion())
        provider.reply_sse(chat_chunks(["still ", "streams"]))
        completion = await cached_create(cache, client.chat.completions.create, model="gpt-4o", messages=MESSAGES)
        assert completion.choices[0].message.content == "Valkey is an in-memory data store."
        stream = await cached_create(
            cache, client.chat.completions.create, model="gpt-4o", messages=MESSAGES, stream=True
        )
        assert (await assemble(stream))["text"] == "still streams"
        assert provider.calls() == 2
    finally:
        await cache.close()
        await dead.aclose()
