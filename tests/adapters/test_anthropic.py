"""Anthropic Messages through the real ``AsyncAnthropic`` client, a loopback server and a real Valkey."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic import AsyncAnthropic
from anthropic.types import Message, RawMessageStreamEvent

from agent_cache import AgentCache, LlmStoreOptions
from agent_cache._keys import llm_hash
from agent_cache.adapters.anthropic import (
    UncacheableResponseError,
    cached_create,
    from_blocks,
    prepare_params,
    to_answer,
    to_blocks,
    usage_tokens,
)
from tests.adapters.conftest import ProviderServer
from tests.adapters.wire import anthropic_events, anthropic_message

pytestmark = pytest.mark.valkey

PATH = "/v1/messages"
MESSAGES = [{"role": "user", "content": "Weather in Sofia?"}]
TOOL = {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {}}}
CONTENT = [
    {"type": "thinking", "thinking": "The user wants the weather.", "signature": "sig-abc"},
    {"type": "text", "text": "Let me check.", "citations": None},
    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Sofia", "days": [1, 2]}},
]
REQUEST: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 1024, "messages": MESSAGES, "tools": [TOOL]}


@pytest.fixture
async def client(provider: ProviderServer) -> AsyncIterator[AsyncAnthropic]:
    async with AsyncAnthropic(base_url=provider.url, api_key="test", max_retries=0) as sdk:
        yield sdk


def essentials(message: Message) -> dict[str, Any]:
    return {
        "content": [block.model_dump(mode="json", exclude_none=True) for block in message.content],
        "stop_reason": message.stop_reason,
        "usage": (message.usage.input_tokens, message.usage.output_tokens),
    }


async def fold(events: AsyncIterator[RawMessageStreamEvent]) -> dict[str, Any]:
    """What a streaming caller reconstructs: per-block text/thinking/JSON, the stop reason, the output tokens."""
    blocks: dict[int, dict[str, Any]] = {}
    stop, sequence, output_tokens, message_id = None, None, None, None
    async for event in events:
        if event.type == "content_block_start":
            blocks[event.index] = {"type": event.content_block.type, "text": ""}
        elif event.type == "content_block_delta":
            delta = event.delta
            piece = getattr(delta, "text", None) or getattr(delta, "partial_json", None)
            piece = piece or getattr(delta, "thinking", None) or getattr(delta, "signature", "")
            blocks[event.index]["text"] += piece
        elif event.type == "message_delta":
            stop, output_tokens = event.delta.stop_reason, event.usage.output_tokens
            sequence = event.delta.stop_sequence
        elif event.type == "message_start":
            message_id = event.message.id
    return {
        "id": message_id,
        "blocks": [b for _, b in sorted(blocks.items())],
        "stop": stop,
        "stop_sequence": sequence,
        "output_tokens": output_tokens,
    }


async def test_miss_then_hit_keeps_thinking_and_tool_use(
    cache: AgentCache, client: AsyncAnthropic, provider: ProviderServer
) -> None:
    provider.reply_json(anthropic_message(CONTENT))
    first = await cached_create(cache, client.messages.create, **REQUEST)
    second = await cached_create(cache, client.messages.create, **REQUEST)
    assert provider.calls(PATH) == 1
    assert isinstance(second, Message)
    assert second == first  # id, dated model, stop reason, usage with its cache details
    assert second.model_dump() == first.model_dump()
    assert (second.id, second.model) == ("msg_original", "claude-sonnet-4-6-20260101")
    usage = second.usage
    assert (usage.input_tokens, usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (25, 100, 2000)
    assert usage.cache_creation is not None and usage.cache_creation.ephemeral_5m_input_tokens == 100
    assert usage.service_tier == "standard"
    saved = (await cache.stats()).cost_saved_micros
    assert saved > 0  # the stored token counts price the hit


async def test_stream_records_and_replays(cache: AgentCache, client: AsyncAnthropic, provider: ProviderServer) -> None:
    message = anthropic_message(CONTENT)
    provider.reply_sse(anthropic_events(message))
    live = await cached_create(cache, client.messages.create, stream=True, **REQUEST)
    original = await fold(live)
    replay = await cached_create(cache, client.messages.create, stream=True, **REQUEST)
    assert provider.calls() == 1
    assert replay.cached
    assert await fold(replay) == original
    assert original["stop"] == "tool_use" and original["output_tokens"] == 11
    assert original["id"] == "msg_original"
    assert await replay.final_response() == await live.final_response()
    # The non-streamed form of the same request is the same entry: the message the stream described.
    rebuilt = await cached_create(cache, client.messages.create, **REQUEST)
    assert rebuilt == await live.final_response()
    assert rebuilt.model_dump() == Message.model_validate(message).model_dump()


async def test_aborted_streams_store_nothing(
    cache: AgentCache, client: AsyncAnthropic, provider: ProviderServer
) -> None:
    events = anthropic_events(anthropic_message([{"type": "text", "text": "An answer cut short", "citations": None}]))
    provider.reply_sse(events, cut_after=5)
    stream = await cached_create(cache, client.messages.create, stream=True, **REQUEST)
    # The SDK surfaces a cut stream as the transport's error; the wrapper lets it through untouched.
    with pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)):
        async for _ in stream:
            pass

    provider.reply_sse(events[:-1])  # no message_stop: the server ended the body early but cleanly
    stream = await cached_create(cache, client.messages.create, stream=True, **REQUEST)
    assert (await fold(stream))["stop"] == "end_turn"

    provider.reply_sse(events)
    async with await cached_create(cache, client.messages.create, stream=True, **REQUEST) as stream:
        async for event in stream:
            if event.type == "content_block_delta":
                break
    assert not (await cache.llm.check(await prepare_params(REQUEST))).hit
    assert provider.calls() == 3


async def test_max_tokens_answers_are_cached_with_their_stop_reason(
    cache: AgentCache, client: AsyncAnthropic, provider: ProviderServer
) -> None:
    cut = anthropic_message([{"type": "text", "text": "Valkey is an in-", "citations": None}], stop_reason="max_tokens")
    provider.reply_json(cut)
    request = {**REQUEST, "max_tokens": 5}
    first = await cached_create(cache, client.messages.create, **request)
    second = await cached_create(cache, client.messages.create, **request)
    assert provider.calls() == 1
    assert second == first and second.stop_reason == "max_tokens"
    replayed = await fold(await cached_create(cache, client.messages.create, stream=True, **request))
    assert (replayed["stop"], replayed["blocks"][0]["text"]) == ("max_tokens", "Valkey is an in-")
    with pytest.raises(UncacheableResponseError):
        to_blocks(cut)  # blocks alone would rebuild it as end_turn


async def test_a_stop_sequence_is_cached_with_the_sequence(
    cache: AgentCache, client: AsyncAnthropic, provider: ProviderServer
) -> None:
    message = anthropic_message(
        [{"type": "text", "text": "Step one", "citations": None}], stop_reason="stop_sequence", stop_sequence="###"
    )
    provider.reply_sse(anthropic_events(message))
    request = {**REQUEST, "stop_sequences": ["###", "END"]}
    live = await cached_create(cache, client.messages.create, stream=True, **request)
    original = await fold(live)
    assert (original["stop"], original["stop_sequence"]) == ("stop_sequence", "###")
    replay = await cached_create(cache, client.messages.create, stream=True, **request)
    assert await fold(replay) == original
    hit = await cached_create(cache, client.messages.create, **request)
    assert provider.calls() == 1
    assert (hit.stop_reason, hit.stop_sequence) == ("stop_sequence", "###")
    assert hit == await live.final_response() == await replay.final_response()

    events = [event async for event in await cached_create(cache, client.messages.create, stream=True, **request)]
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and delta.type == "message_delta"
    assert (start.message.id, start.message.model) == ("msg_original", "claude-sonnet-4-6-20260101")
    assert start.message.usage.cache_read_input_tokens == 2000
    # message_delta carries the cumulative usage, as the API sends it.
    assert (delta.usage.output_tokens, delta.usage.input_tokens, delta.usage.cache_read_input_tokens) == (11, 25, 2000)


async def test_refusals_are_cached_with_their_details(
    cache: AgentCache, client: AsyncAnthropic, provider: ProviderServer
) -> None:
    details = {"type": "refusal", "category": "cyber", "explanation": "This could enable harm."}
    refusal = anthropic_message(
        [{"type": "text", "text": "I can", "citations": None}], stop_reason="refusal", stop_details=details
    )
    provider.reply_sse(anthropic_events(refusal))
    live = await cached_create(cache, client.messages.create, stream=True, **REQUEST)
    await fold(live)
    hit = await cached_create(cache, client.messages.create, **REQUEST)
    assert provider.calls() == 1
    assert hit == await live.final_response()
    assert hit.stop_reason == "refusal" and hit.stop_details is not None
    assert hit.stop_details.category == "cyber"
    with pytest.raises(UncacheableResponseError):
        to_blocks(refusal)


async def test_paused_turns_are_not_stored(cache: AgentCache, client: AsyncAnthropic, provider: ProviderServer) -> None:
    for _ in range(2):
        provider.reply_json(anthropic_message([{"type": "text", "text": "Working"}], stop_reason="pause_turn"))
        await cached_create(cache, client.messages.create, **REQUEST)
    assert provider.calls() == 2


async def test_entries_without_metadata_are_still_served(
    cache: AgentCache, client: AsyncAnthropic, provider: ProviderServer
) -> None:
    original = anthropic_message(CONTENT)
    params = await prepare_params(REQUEST)
    await cache.llm.store_multipart(params, to_blocks(original), LlmStoreOptions(tokens=usage_tokens(original)))
    hit = await cached_create(cache, client.messages.create, **REQUEST)
    assert provider.calls() == 0
    assert hit.id.startswith("msg_") and hit.id != "msg_original"
    assert (hit.model, hit.stop_reason) == ("claude-sonnet-4-6", "tool_use")
    assert (hit.usage.input_tokens, hit.usage.cache_read_input_tokens) == (2125, 0)  # cache reads/writes folded in
    assert essentials(hit)["content"] == essentials(Message.model_validate(original))["content"]


async def key(**request: Any) -> str:
    return llm_hash(await prepare_params({**REQUEST, **request}))


async def test_key_covers_every_answer_changing_parameter() -> None:
    base = await key()
    assert await key(thinking={"type": "enabled", "budget_tokens": 2048}) != base
    assert await key(max_tokens=10) != base
    assert await key(tools=[]) != base
    assert await key(tool_choice={"type": "any"}) != base
    assert await key(stop_sequences=["###"]) != base
    assert await key(system="Be terse.") != base
    assert await key(system="Be terse.") == await key(system=[{"type": "text", "text": "Be terse."}])
    assert await key(stream=True, metadata={"user_id": "u"}, timeout=30, temperature=None) == base
    as_block = [{"role": "user", "content": [{"type": "text", "text": "Weather in Sofia?"}]}]
    assert await key(messages=as_block) == base


async def test_images_and_documents_use_the_normalizer() -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x01" * 30).decode()

    def image(data: str, media_type: str = "image/png") -> list[dict[str, Any]]:
        source = {"type": "base64", "media_type": media_type, "data": data}
        return [{"role": "user", "content": [{"type": "image", "source": source}, {"type": "text", "text": "What?"}]}]

    params = await prepare_params({**REQUEST, "messages": image(png)})
    assert params["messages"][0]["content"][0]["ref"].startswith("sha256:")
    assert png not in json.dumps(params)
    assert await key(messages=image(png)) == await key(messages=image(png[:10] + "\n" + png[10:]))
    other = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x02" * 30).decode()
    assert await key(messages=image(png)) != await key(messages=image(other))
    url_image = [
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x.io/a.png"}}]}
    ]
    assert await key(messages=url_image) != await key(messages=image(png))


async def test_conversation_with_tool_results_keys_stably() -> None:
    turn = [
        *MESSAGES,
        {"role": "assistant", "content": CONTENT},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "21C"}]},
    ]
    echoed = [*MESSAGES, {"role": "assistant", "content": Message.model_validate(anthropic_message(CONTENT)).content}]
    assert await key(messages=echoed) == await key(messages=turn[:2])
    error = [*turn[:2], {"role": "user", "content": [{**turn[2]["content"][0], "is_error": True}]}]
    assert await key(messages=turn) != await key(messages=error)
    params = await prepare_params({**REQUEST, "messages": turn})
    assert params["messages"][2]["content"][0] == {
        "type": "tool_result",
        "toolCallId": "toolu_1",
        "content": [{"type": "text", "text": "21C"}],
    }


def test_blocks_round_trip() -> None:
    original = Message.model_validate(anthropic_message([*CONTENT, {"type": "redacted_thinking", "data": "opaque"}]))
    blocks = to_blocks(original)
    assert blocks[0] == {"type": "reasoning", "text": "The user wants the weather.", "opaqueSignature": "sig-abc"}
    assert blocks[-1] == {"type": "reasoning", "text": "", "redacted": True, "opaqueSignature": "opaque"}
    assert usage_tokens(original) == {"input": 2125, "output": 11}  # input, cache writes and cache reads
    rebuilt = from_blocks(blocks, {"model": "claude-sonnet-4-6"}, input_tokens=25, output_tokens=11)
    assert essentials(rebuilt)["content"] == essentials(original)["content"]
    answer = to_answer(original)
    assert answer.blocks == blocks and answer.metadata is not None and answer.metadata["finish"] == "tool_calls"
    assert from_blocks(answer.blocks, {"model": "claude-sonnet-4-6"}, metadata=answer.metadata) == original
