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

from agent_cache import AgentCache
from agent_cache._keys import llm_hash
from agent_cache.adapters.anthropic import (
    UncacheableResponseError,
    cached_create,
    from_blocks,
    prepare_params,
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
    stop, output_tokens = None, None
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
    return {"blocks": [b for _, b in sorted(blocks.items())], "stop": stop, "output_tokens": output_tokens}


async def test_miss_then_hit_keeps_thinking_and_tool_use(
    cache: AgentCache, client: AsyncAnthropic, provider: ProviderServer
) -> None:
    provider.reply_json(anthropic_message(CONTENT))
    first = await cached_create(cache, client.messages.create, **REQUEST)
    second = await cached_create(cache, client.messages.create, **REQUEST)
    assert provider.calls(PATH) == 1
    assert isinstance(second, Message)
    assert essentials(second) == essentials(first)
    assert second.id.startswith("msg_") and second.id != first.id
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
    # The non-streamed form of the same request is the same entry, rebuilt as a Message.
    rebuilt = await cached_create(cache, client.messages.create, **REQUEST)
    assert essentials(rebuilt) == essentials(Message.model_validate(message))


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


async def test_truncated_answers_are_not_stored(
    cache: AgentCache, client: AsyncAnthropic, provider: ProviderServer
) -> None:
    for _ in range(2):
        provider.reply_json(anthropic_message([{"type": "text", "text": "Cut"}], stop_reason="max_tokens"))
        await cached_create(cache, client.messages.create, **REQUEST)
    assert provider.calls() == 2
    with pytest.raises(UncacheableResponseError):
        to_blocks(anthropic_message([{"type": "text", "text": "x"}], stop_reason="refusal"))


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
    assert usage_tokens(original) == {"input": 25, "output": 11}
    rebuilt = from_blocks(blocks, {"model": "claude-sonnet-4-6"}, input_tokens=25, output_tokens=11)
    assert essentials(rebuilt) == essentials(original)
