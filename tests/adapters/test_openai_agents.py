"""OpenAI Agents SDK: a real ``Runner`` with ``OpenAIResponsesModel`` over a loopback server, cached in Valkey."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from agents import Agent, ModelSettings, RunConfig, Runner, function_tool
from agents.models.openai_provider import OpenAIProvider
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI

from agent_cache import AgentCache
from agent_cache._keys import llm_hash
from agent_cache.adapters.openai_agents import CachedModel, CachedModelProvider, prepare_params
from agent_cache.adapters.openai_responses import cached_create as responses_create
from agent_cache.adapters.openai_responses import prepare_params as responses_params
from tests.adapters.conftest import ProviderServer
from tests.adapters.wire import function_call_item, message_item, reasoning_item, response_body, response_events

pytestmark = pytest.mark.valkey

NO_TRACING = RunConfig(tracing_disabled=True)
weather_calls: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    weather_calls.append(city)
    return f"21C in {city}"


@pytest.fixture
async def client(provider: ProviderServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{provider.url}/v1", api_key="test", max_retries=0) as sdk:
        yield sdk


def tool_turns(provider: ProviderServer, *, stream: bool) -> None:
    """Turn 1: reasoning + a call of get_weather; turn 2: the final answer."""
    first = response_body(
        [reasoning_item(["Need the weather."]), function_call_item("call_1", "get_weather", {"city": "Sofia"})]
    )
    second = response_body([message_item("It is 21C in Sofia.")])
    for body in (first, second):
        if stream:
            provider.reply_sse(response_events(body))
        else:
            provider.reply_json(body)


async def test_a_tool_using_run_is_replayed_from_the_cache(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    model = CachedModel(OpenAIResponsesModel("gpt-5", client), cache)
    agent = Agent(name="Weather", instructions="Answer briefly.", model=model, tools=[get_weather])
    tool_turns(provider, stream=False)
    weather_calls.clear()

    first = await Runner.run(agent, "Weather in Sofia?", run_config=NO_TRACING)
    assert first.final_output == "It is 21C in Sofia."
    assert provider.calls("/v1/responses") == 2

    second = await Runner.run(agent, "Weather in Sofia?", run_config=NO_TRACING)
    assert second.final_output == first.final_output
    assert provider.calls() == 2  # both model turns were hits
    assert weather_calls == ["Sofia", "Sofia"]  # tools still run: only model responses are cached
    calls = [item.raw_item for item in second.new_items if item.type == "tool_call_item"]
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("call_1", "get_weather", {"city": "Sofia"})
    ]
    stats = await cache.stats()
    assert (stats.llm.hits, stats.llm.misses) == (2, 2)
    # The model responses are the originals: output items with their ids, response ids, usage with its details.
    assert second.raw_responses == first.raw_responses
    assert [r.response_id for r in second.raw_responses] == ["resp_original", "resp_original"]
    usage = second.raw_responses[0].usage
    assert (usage.input_tokens_details.cached_tokens, usage.output_tokens_details.reasoning_tokens) == (5, 3)
    assert [item.id for item in second.raw_responses[0].output] == ["rs_1", "fc_1"]  # type: ignore[union-attr]


async def test_streamed_runs_record_and_replay(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    provider_model = CachedModelProvider(OpenAIProvider(openai_client=client, use_responses=True), cache)
    agent = Agent(name="Weather", model="gpt-5", tools=[get_weather])
    config = RunConfig(model_provider=provider_model, tracing_disabled=True)
    tool_turns(provider, stream=True)

    async def run() -> tuple[Any, list[str], list[Any]]:
        result = Runner.run_streamed(agent, "Weather in Sofia?", run_config=config)
        deltas = [
            event.data.delta
            async for event in result.stream_events()
            if event.type == "raw_response_event" and event.data.type == "response.output_text.delta"
        ]
        return result.final_output, deltas, result.raw_responses

    live_output, live_deltas, live_responses = await run()
    replay_output, replay_deltas, replay_responses = await run()
    assert provider.calls() == 2
    assert replay_output == live_output == "It is 21C in Sofia."
    assert "".join(replay_deltas) == "".join(live_deltas)
    assert replay_responses == live_responses
    assert [r.response_id for r in replay_responses] == ["resp_original", "resp_original"]

    # A non-streamed run of the same agent is served the same model responses.
    plain_run = await Runner.run(agent, "Weather in Sofia?", run_config=config)
    assert plain_run.raw_responses == live_responses
    assert provider.calls() == 2


async def test_an_interrupted_stream_stores_nothing(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    agent = Agent(name="A", model=CachedModel(OpenAIResponsesModel("gpt-5", client), cache))
    events = response_events(response_body([message_item("Never finished.")]))
    provider.reply_sse(events, cut_after=len(events) - 1)
    result = Runner.run_streamed(agent, "hi", run_config=NO_TRACING)
    with pytest.raises(openai.APIConnectionError):
        async for _ in result.stream_events():
            pass
    provider.reply_json(response_body([message_item("Fine.")]))
    assert (await Runner.run(agent, "hi", run_config=NO_TRACING)).final_output == "Fine."
    assert provider.calls() == 2


async def test_key_includes_tools_settings_and_output_schema() -> None:
    async def key(**kwargs: Any) -> str:
        args: dict[str, Any] = {"model_name": "gpt-5", "system_instructions": "Be brief.", "input": "hi", **kwargs}
        return llm_hash(await prepare_params(**args))

    base = await key()
    assert await key(tools=[get_weather]) != base
    assert await key(model_settings=ModelSettings(temperature=0.2)) != base
    assert await key(model_settings=ModelSettings(max_tokens=5)) != await key(
        model_settings=ModelSettings(max_tokens=6)
    )
    assert await key(model_settings=ModelSettings(metadata={"a": "b"}, store=False, include_usage=True)) == base
    assert await key(previous_response_id="resp_1") != base
    assert await key(system_instructions="Be verbose.") != base
    assert await key(input=[{"role": "user", "content": "hi"}]) == base


async def test_tool_objects_that_cannot_be_hashed_are_described_by_their_schema() -> None:
    guarded = dataclasses.replace(get_weather, tool_input_guardrails=[object()])  # framework objects on the tool
    plain_key = llm_hash(await prepare_params("gpt-5", None, "hi", tools=[get_weather]))
    assert llm_hash(await prepare_params("gpt-5", None, "hi", tools=[guarded])) == plain_key
    renamed = dataclasses.replace(get_weather, description="Another description.")
    assert llm_hash(await prepare_params("gpt-5", None, "hi", tools=[renamed])) != plain_key


async def test_an_incomplete_response_is_never_a_hit_for_the_agents_sdk(
    cache: AgentCache, client: AsyncOpenAI, provider: ProviderServer
) -> None:
    """The SDK's Responses model raises on an incomplete response: an entry holding one is a miss here."""
    model = CachedModel(OpenAIResponsesModel("gpt-5", client), cache)
    params = await prepare_params("gpt-5", None, "hi", ModelSettings())
    assert llm_hash(params) == llm_hash(await responses_params({"model": "gpt-5", "input": "hi"}))  # one entry
    provider.reply_json(response_body([message_item("Cut", status="incomplete")], status="incomplete"))
    assert (await responses_create(cache, client.responses.create, model="gpt-5", input="hi")).status == "incomplete"
    assert (await cache.llm.check(params)).hit  # stored by the Responses adapter

    provider.reply_json(response_body([message_item("Complete.")]))
    agent = Agent(name="A", model=model)
    assert (await Runner.run(agent, "hi", run_config=NO_TRACING)).final_output == "Complete."
    assert provider.calls() == 2
