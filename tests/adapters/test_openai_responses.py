"""OpenAI Responses API through the real ``AsyncOpenAI`` client, a loopback server and a real Valkey."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response, ResponseCompletedEvent, ResponseIncompleteEvent

from agent_cache import AgentCache, CacheMissError, LlmStoreOptions
from agent_cache._keys import llm_hash
from agent_cache.adapters.openai_responses import (
    UncacheableResponseError,
    cached_create,
    from_blocks,
    prepare_params,
    to_answer,
    to_blocks,
    usage_tokens,
)
from tests.adapters.conftest import ProviderServer
from tests.adapters.wire import (
    function_call_item,
    message_item,
    reasoning_item,
    response_body,
    response_events,
)

pytestmark = pytest.mark.valkey

PATH = "/v1/responses"
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}, "strict": False}
OUTPUT = [
    reasoning_item(["The user wants weather.", "Call the tool."], encrypted="gAAAA-opaque"),
    function_call_item("call_7", "get_weather", {"city": "Sofia"}),
    message_item("Checking the weather in Sofia."),
]


@pytest.fixture
async def client(provider: ProviderServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{provider.url}/v1", api_key="test", max_retries=0) as sdk:
        yield sdk


def essentials(response: Response) -> dict[str, Any]:
    """Everything a caller reads from a response except server-assigned ids and timestamps."""
    items = []
    for item in response.output:
        data = item.model_dump(mode="json", exclude_none=True)
        data.pop("id", None)
        if data["type"] == "function_call":
            data["arguments"] = json.loads(data["arguments"])
        items.append(data)
    usage = response.usage
    assert usage is not None
    return {
        "status": response.status,
        "output": items,
        "text": response.output_text,
        "usage": (usage.input_tokens, usage.output_tokens, usage.total_tokens),
    }


async def test_miss_then_hit_with_reasoning_and_tool_calls(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    provider.reply_json(response_body(OUTPUT, tools=[TOOL], reasoning={"effort": "low", "summary": None}))
    request = {"model": "gpt-5", "input": "Weather in Sofia?", "tools": [TOOL], "reasoning": {"effort": "low"}}
    first = await cached_create(cache, client.responses.create, **request)
    second = await cached_create(cache, client.responses.create, **request)
    assert provider.calls(PATH) == 1
    assert isinstance(second, Response)
    assert second == first  # ids, timestamps, dated model, item ids, usage details, the server's configuration echo
    assert second.model_dump() == first.model_dump()
    assert (second.id, second.created_at, second.model) == ("resp_original", 1_700_000_000, "gpt-5-2025-08-07")
    assert [item.id for item in second.output] == ["rs_1", "fc_1", "msg_1"]
    assert second.usage is not None
    assert second.usage.input_tokens_details.cached_tokens == 5
    assert second.usage.output_tokens_details.reasoning_tokens == 3
    assert [t.name for t in second.tools] == ["get_weather"]  # type: ignore[union-attr]
    assert second.reasoning is not None and second.reasoning.effort == "low"


async def test_echoes_of_transport_parameters_come_from_the_current_request(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    """``metadata``, ``user``, ``safety_identifier`` are not in the key: a hit never shows another caller's."""
    tags = {"metadata": {"tenant": "alice"}, "user": "alice", "safety_identifier": "alice-1"}
    provider.reply_json(response_body([message_item("Hi.")], **tags))
    first = await cached_create(cache, client.responses.create, model="gpt-5", input="hi", **tags)
    assert (first.metadata, first.user) == ({"tenant": "alice"}, "alice")
    bob = await cached_create(
        cache, client.responses.create, model="gpt-5", input="hi", metadata={"tenant": "bob"}, user="bob"
    )
    anonymous = await cached_create(cache, client.responses.create, model="gpt-5", input="hi")
    assert provider.calls() == 1
    assert (bob.metadata, bob.user, bob.safety_identifier) == ({"tenant": "bob"}, "bob", None)
    assert (anonymous.metadata, anonymous.user, anonymous.safety_identifier) == ({}, None, None)
    assert bob.model_copy(update=tags) == anonymous.model_copy(update=tags) == first
    entry = await cache.llm.check(await prepare_params({"model": "gpt-5", "input": "hi"}))
    assert "alice" not in str(entry.metadata)  # never stored


async def test_continuing_from_a_hit_uses_the_original_response_id(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    """A hit keeps the original id, so ``previous_response_id`` points at the response OpenAI stored."""
    provider.reply_json(response_body([message_item("Valkey is a data store.")]))
    await cached_create(cache, client.responses.create, model="gpt-5", input="What is Valkey?")
    hit = await cached_create(cache, client.responses.create, model="gpt-5", input="What is Valkey?")
    assert hit.id == "resp_original"

    follow_up = response_body([message_item("It is a fork of Redis.", "msg_2")], previous_response_id=hit.id)
    provider.reply_json({**follow_up, "id": "resp_second"})
    request = {"model": "gpt-5", "input": "Of what?", "previous_response_id": hit.id}
    second = await cached_create(cache, client.responses.create, **request)
    assert provider.calls() == 2  # another key: the provider continues from the original response
    assert provider.requests[-1].body["previous_response_id"] == "resp_original"
    assert (await cached_create(cache, client.responses.create, **request)) == second
    assert provider.calls() == 2


async def test_stream_records_then_replays_the_same_events(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    body = response_body(OUTPUT)
    provider.reply_sse(response_events(body))
    live = await cached_create(cache, client.responses.create, stream=True, model="gpt-5", input="Weather?")
    live_events = [event async for event in live]
    replay = await cached_create(cache, client.responses.create, stream=True, model="gpt-5", input="Weather?")
    replayed = [event async for event in replay]
    assert provider.calls() == 1
    assert (live.cached, replay.cached) == (False, True)

    def shape(events: list[Any]) -> list[str]:
        return [e.type for e in events if not e.type.endswith("delta")]

    assert shape(replayed) == shape(live_events)
    assert [e.sequence_number for e in replayed] == list(range(len(replayed)))
    text = "".join(e.delta for e in replayed if e.type == "response.output_text.delta")
    args = "".join(e.delta for e in replayed if e.type == "response.function_call_arguments.delta")
    summary = "".join(e.delta for e in replayed if e.type == "response.reasoning_summary_text.delta")
    assert (text, json.loads(args)) == ("Checking the weather in Sofia.", {"city": "Sofia"})
    assert summary == "The user wants weather.Call the tool."
    final_live, final_replayed = live_events[-1], replayed[-1]
    assert isinstance(final_live, ResponseCompletedEvent) and isinstance(final_replayed, ResponseCompletedEvent)
    assert final_replayed.response == final_live.response == await replay.final_response()
    assert await live.final_response() == final_live.response
    assert final_replayed.response.id == "resp_original"
    # Every event names the original items.
    item_ids = {getattr(e, "item_id", None) for e in replayed} | {
        getattr(e, "item", None) and e.item.id for e in replayed
    }
    assert item_ids - {None} == {"rs_1", "fc_1", "msg_1"}
    opening = replayed[0].response  # type: ignore[union-attr]
    assert (opening.id, opening.status, opening.created_at) == ("resp_original", "in_progress", 1_700_000_000)
    # A non-streamed request is served the response the stream ended with.
    assert await cached_create(cache, client.responses.create, model="gpt-5", input="Weather?") == final_live.response


async def test_dropped_and_abandoned_streams_store_nothing(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    events = response_events(response_body([message_item("A long answer that never finishes.")]))
    provider.reply_sse(events, cut_after=len(events) - 1)  # everything but response.completed
    stream = await cached_create(cache, client.responses.create, stream=True, model="gpt-5", input="hi")
    with pytest.raises(openai.APIConnectionError):
        async for _ in stream:
            pass

    provider.reply_sse(events)
    stream = await cached_create(cache, client.responses.create, stream=True, model="gpt-5", input="hi")
    async for event in stream:
        if event.type == "response.output_text.delta":
            break
    await stream.aclose()
    assert not (await cache.llm.check(await prepare_params({"model": "gpt-5", "input": "hi"}))).hit


async def test_a_max_output_tokens_cut_is_cached_and_replayed_as_incomplete(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    body = response_body([message_item("Cut sh", status="incomplete")], status="incomplete")
    provider.reply_json(body)
    request = {"model": "gpt-5", "input": "hi", "max_output_tokens": 3}
    first = await cached_create(cache, client.responses.create, **request)
    second = await cached_create(cache, client.responses.create, **request)
    assert provider.calls() == 1
    assert second == first
    assert second.status == "incomplete" and second.incomplete_details is not None
    assert second.incomplete_details.reason == "max_output_tokens"
    assert second.output[0].status == "incomplete"  # type: ignore[union-attr]

    stream = await cached_create(cache, client.responses.create, stream=True, **request)
    events = [event async for event in stream]
    assert isinstance(events[-1], ResponseIncompleteEvent)
    assert events[-1].response == first
    with pytest.raises(UncacheableResponseError):
        to_blocks(body)  # blocks alone would rebuild it as completed


async def test_a_streamed_max_output_tokens_cut_is_stored(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    body = response_body([message_item("Cut sh", status="incomplete")], status="incomplete")
    provider.reply_sse(response_events(body))
    request = {"model": "gpt-5", "input": "hi", "max_output_tokens": 3}
    live = await cached_create(cache, client.responses.create, stream=True, **request)
    events = [event async for event in live]
    assert events[-1].type == "response.incomplete"
    hit = await cached_create(cache, client.responses.create, **request)
    assert provider.calls() == 1
    assert hit == events[-1].response  # type: ignore[union-attr]


async def test_other_unfinished_responses_are_returned_but_not_stored(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    for _ in range(2):
        provider.reply_json(
            response_body([message_item("Cut")], status="incomplete", incomplete_reason="content_filter")
        )
        result = await cached_create(cache, client.responses.create, model="gpt-5", input="hi")
        assert result.status == "incomplete"
    assert provider.calls() == 2
    with pytest.raises(UncacheableResponseError):
        to_answer(response_body([{"type": "web_search_call", "id": "ws_1", "status": "completed"}]))
    with pytest.raises(UncacheableResponseError):
        to_answer(response_body([], status="failed"))


async def test_refusals_and_message_phases_are_cached(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    refused = response_body([message_item("", refusal="I can't help with that.")])
    phased = response_body(
        [
            reasoning_item([], encrypted="enc-1"),
            message_item("Let me think about it.", "msg_a", phase="commentary"),
            message_item("Here it is.", "msg_b", phase="final_answer"),
        ]
    )
    replays = []
    for index, body in enumerate((refused, phased)):
        provider.reply_sse(response_events(body))
        live = await cached_create(cache, client.responses.create, stream=True, model="gpt-5", input=f"q{index}")
        live_events = [event async for event in live]
        hit = await cached_create(cache, client.responses.create, model="gpt-5", input=f"q{index}")
        assert hit == live_events[-1].response == Response.model_validate(body)  # type: ignore[union-attr]
        replay = await cached_create(cache, client.responses.create, stream=True, model="gpt-5", input=f"q{index}")
        replays.append([event async for event in replay])
        assert [e.type for e in replays[-1] if "delta" not in e.type] == [
            e.type for e in live_events if "delta" not in e.type
        ]
    assert provider.calls() == 2
    refusal = "".join(e.delta for e in replays[0] if e.type == "response.refusal.delta")  # type: ignore[union-attr]
    assert refusal == "I can't help with that."
    assert [m.phase for m in replays[1][-1].response.output[1:]] == ["commentary", "final_answer"]  # type: ignore[union-attr]
    with pytest.raises(UncacheableResponseError):
        to_blocks(refused)
    with pytest.raises(UncacheableResponseError):
        to_blocks(phased)


async def test_entries_without_metadata_are_still_served(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    params = await prepare_params({"model": "gpt-5", "input": "Weather?"})
    body = response_body(OUTPUT)
    await cache.llm.store_multipart(params, to_blocks(body), LlmStoreOptions(tokens=usage_tokens(body)))
    hit = await cached_create(cache, client.responses.create, model="gpt-5", input="Weather?")
    assert provider.calls() == 0
    assert hit.id.startswith("resp_") and hit.id != "resp_original"
    assert hit.model == "gpt-5"
    assert [item.id[:3] for item in hit.output] == ["rs_", "fc_", "msg"]  # type: ignore[index]
    assert not {item.id for item in hit.output} & {"rs_1", "fc_1", "msg_1"}
    assert essentials(hit)["output"] == essentials(Response.model_validate(body))["output"]


async def key(**request: Any) -> str:
    return llm_hash(await prepare_params({"model": "gpt-5", "input": "hi", **request}))


async def test_key_covers_every_answer_changing_parameter() -> None:
    base = await key()
    assert await key(reasoning={"effort": "high"}) != await key(reasoning={"effort": "low"})
    assert await key(max_output_tokens=50) != base
    assert await key(tools=[TOOL]) != base
    assert await key(instructions="Be terse.") != base
    assert await key(previous_response_id="resp_1") != base
    assert await key(text={"verbosity": "low"}) != base
    assert await key(include=["reasoning.encrypted_content"]) != base
    assert await key(stream=True, store=False, metadata={"a": "b"}, user="u") == base
    assert await key(input=[{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]) == base


async def test_output_items_echoed_back_key_like_dicts() -> None:
    echoed = Response.model_validate(response_body(OUTPUT)).output
    renamed = [{**item, "id": f"other_{i}"} for i, item in enumerate(OUTPUT)]  # ids are the server's, not content
    turn = [{"role": "user", "content": "Weather?"}]
    assert await key(input=[*turn, *echoed]) == await key(input=[*turn, *renamed])
    changed = [*OUTPUT[:2], message_item("Something else.")]
    assert await key(input=[*turn, *echoed]) != await key(input=[*turn, *changed])


async def test_binary_inputs_go_through_the_normalizer() -> None:
    pdf = base64.b64encode(b"%PDF-1.7 tiny").decode()

    def with_file(file_data: str) -> list[dict[str, Any]]:
        part = {"type": "input_file", "file_data": file_data, "filename": "a.pdf"}
        return [{"role": "user", "content": [{"type": "input_text", "text": "Summarize"}, part]}]

    assert await key(input=with_file(pdf)) == await key(input=with_file(f"data:application/pdf;base64,{pdf}"))
    params = await prepare_params({"model": "gpt-5", "input": with_file(pdf)})
    assert params["messages"][0]["content"][1]["mediaType"] == "application/pdf"
    assert pdf not in json.dumps(params)
    image = {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "high"}
    assert await key(input=[{"role": "user", "content": [image]}]) != await key(
        input=[{"role": "user", "content": [{**image, "detail": "low"}]}]
    )


def test_blocks_round_trip() -> None:
    original = Response.model_validate(response_body(OUTPUT))
    blocks = to_blocks(original)
    assert blocks == [
        {"type": "reasoning", "text": "The user wants weather.", "opaqueSignature": "gAAAA-opaque"},
        {"type": "reasoning", "text": "Call the tool."},
        {"type": "tool_call", "id": "call_7", "name": "get_weather", "args": {"city": "Sofia"}},
        {"type": "text", "text": "Checking the weather in Sofia."},
    ]
    assert usage_tokens(original) == {"input": 20, "output": 7}
    rebuilt = from_blocks(blocks, {"model": "gpt-5"}, input_tokens=20, output_tokens=7, key="c:llm:abc")
    assert essentials(rebuilt)["output"] == essentials(original)["output"]
    assert from_blocks(blocks, {"model": "gpt-5"}, key="c:llm:abc").output[0].id == rebuilt.output[0].id
    answer = to_answer(original)
    assert answer.blocks == blocks and answer.metadata is not None and answer.metadata["finish"] == "tool_calls"
    assert from_blocks(answer.blocks, {"model": "gpt-5"}, metadata=answer.metadata) == original


async def test_requests_in_a_server_side_conversation_are_never_cached(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    for _ in range(2):
        provider.reply_json(response_body(OUTPUT, tools=[TOOL]))
    request = {"model": "gpt-5", "input": "And tomorrow?", "tools": [TOOL], "conversation": "conv_1"}
    await cached_create(cache, client.responses.create, **request)
    await cached_create(cache, client.responses.create, **request)
    assert provider.calls(PATH) == 2  # the conversation may have changed between the two calls
    assert (await cache.stats()).llm.total == 0


async def test_a_background_request_is_never_answered_from_the_cache(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    """``background=True`` asks for a queued response to poll: a finished answer from the cache would be the wrong
    kind of object, so the request always goes to the provider — and under only_if_cached it raises instead. A
    streamed background request that completes is stored like any other (its events ended in the answer)."""
    request = {"model": "gpt-5", "input": "Weather in Sofia?", "tools": [TOOL], "background": True}
    provider.reply_sse(response_events(response_body(OUTPUT, tools=[TOOL])))
    streamed = await cached_create(cache, client.responses.create, stream=True, **request)
    [_ async for _ in streamed]
    assert (await cache.llm.check(await prepare_params(request))).hit  # stored under the background request's key

    provider.reply_json({**response_body([], tools=[TOOL], status="queued"), "background": True})
    queued = await cached_create(cache, client.responses.create, **request)
    assert queued.status == "queued"
    assert provider.calls(PATH) == 2

    with cache.control(only_if_cached=True), pytest.raises(CacheMissError):
        await cached_create(cache, client.responses.create, **request)
    assert provider.calls(PATH) == 2
