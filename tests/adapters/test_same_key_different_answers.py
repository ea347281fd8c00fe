"""Same key, different answers: every adapter, driven through its real SDK or framework, on one order conversation.

The conversation asks where an order is, after a ``get_order`` tool call and its result. A second request that differs
in one place the model reads (the call's arguments, the tool's result — including fields named ``id``, ``state``,
``metadata``, ``usage`` or ``type`` inside it —, an argument that is ``null``, a header that selects a model feature)
must reach the provider and get its own answer. A request that differs only in transport noise (request and trace
ids, credentials, timestamps, ids and usage of earlier responses, transport-only parameters) must be a hit.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from agents import Agent, ModelSettings, RunConfig, Runner
from agents.models.openai_responses import OpenAIResponsesModel
from anthropic import AsyncAnthropic
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatResult
from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock
from openai import AsyncOpenAI
from pydantic import PrivateAttr
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart, UserPromptPart
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.usage import RequestUsage

from agent_cache import AgentCache
from agent_cache.adapters import anthropic as anthropic_adapter
from agent_cache.adapters import openai as openai_adapter
from agent_cache.adapters import openai_responses as responses_adapter
from agent_cache.adapters.langchain import BetterDBLlmCache
from agent_cache.adapters.llamaindex import LlamaIndexPrepareOptions
from agent_cache.adapters.llamaindex import prepare_params as llamaindex_params
from agent_cache.adapters.openai_agents import CachedModel as AgentsCachedModel
from agent_cache.adapters.pydantic_ai import CachedModel as PydanticCachedModel
from tests.adapters.conftest import ProviderServer
from tests.adapters.wire import anthropic_message, chat_completion, message_item, response_body

pytestmark = pytest.mark.valkey


@dataclass(frozen=True)
class Turn:
    """One request of the order conversation. Every field but ``noise`` is something the model reads."""

    args: Mapping[str, Any] = field(default_factory=lambda: {"id": 1001})
    result: Mapping[str, Any] = field(
        default_factory=lambda: {"id": 1001, "state": "shipped", "metadata": {"usage": {"type": "parcel"}}}
    )
    feature: Mapping[str, str] = field(default_factory=dict)
    """Headers that select a model feature."""
    noise: int = 0
    """Seed of the transport noise: request and trace ids, credentials, ids and usage of earlier responses."""

    def headers(self) -> dict[str, str]:
        n = self.noise
        return {
            "X-Request-Id": f"req-{n}",
            "traceparent": f"00-{n:032x}-{n + 1:016x}-01",
            "baggage": f"session={n}",
            "Idempotency-Key": f"idem-{n}",
            **self.feature,
        }


BASE = Turn()
RESULT = dict(BASE.result)
ANSWER_CHANGING = {
    "tool-call arguments": replace(BASE, args={"id": 2002}),
    "tool result": replace(BASE, result={**RESULT, "state": "cancelled"}),
    "id inside the tool result": replace(BASE, result={**RESULT, "id": 2002}),
    "type under metadata.usage inside the tool result": replace(
        BASE, result={**RESULT, "metadata": {"usage": {"type": "letter"}}}
    ),
    "a null argument": replace(BASE, args={"id": 1001, "discount": None}),
    "a feature header": replace(BASE, feature={"anthropic-beta": "context-1m-2025-08-07", "OpenAI-Beta": "x=1"}),
}
NOISY = replace(BASE, noise=1)

Ask = Callable[[Turn], Awaitable[str]]


@dataclass
class Driven:
    ask: Ask
    calls: Callable[[], int]
    """How many requests reached the model."""


_answers = itertools.count(1)


def _answer() -> str:
    return f"answer {next(_answers)}"


def _order_items(turn: Turn) -> list[dict[str, Any]]:
    """The conversation as Responses API input items; server item ids and statuses are noise."""
    return [
        {"role": "user", "content": "Where is my order?"},
        {
            "type": "function_call",
            "id": f"fc_{turn.noise}",
            "call_id": "call_1",
            "name": "get_order",
            "arguments": json.dumps(turn.args),
            "status": "completed",
        },
        {"type": "function_call_output", "call_id": "call_1", "output": json.dumps(turn.result)},
    ]


def _script(provider: ProviderServer, body: Callable[[str], Any]) -> None:
    provider.replies.clear()  # a hit leaves the scripted reply unused
    provider.reply_json(body(_answer()))


async def openai_chat(
    cache: AgentCache, provider: ProviderServer, stack: AsyncExitStack, client_headers: Mapping[str, str] | None = None
) -> Driven:
    client = await stack.enter_async_context(
        AsyncOpenAI(base_url=f"{provider.url}/v1", api_key="k", max_retries=0, default_headers=client_headers)
    )

    async def ask(turn: Turn) -> str:
        _script(provider, lambda text: chat_completion(content=text))
        call = {"name": "get_order", "arguments": json.dumps(turn.args)}
        messages = [
            {"role": "user", "content": "Where is my order?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": call}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": json.dumps(turn.result)},
        ]
        completion = await openai_adapter.cached_create(
            cache,
            client.chat.completions.create,
            model="gpt-4o",
            messages=messages,
            extra_headers={**turn.headers(), "Authorization": f"Bearer key-{turn.noise}"},
            user=f"user-{turn.noise}",
            timeout=10 + turn.noise,
        )
        return str(completion.choices[0].message.content)

    return Driven(ask, provider.calls)


async def openai_responses(
    cache: AgentCache, provider: ProviderServer, stack: AsyncExitStack, client_headers: Mapping[str, str] | None = None
) -> Driven:
    client = await stack.enter_async_context(
        AsyncOpenAI(base_url=f"{provider.url}/v1", api_key="k", max_retries=0, default_headers=client_headers)
    )

    async def ask(turn: Turn) -> str:
        _script(provider, lambda text: response_body([message_item(text)]))
        response = await responses_adapter.cached_create(
            cache,
            client.responses.create,
            model="gpt-5",
            input=_order_items(turn),
            extra_headers=turn.headers(),
            metadata={"trace": str(turn.noise)},
            prompt_cache_key=f"pc-{turn.noise}",
        )
        return str(response.output_text)

    return Driven(ask, provider.calls)


async def anthropic(
    cache: AgentCache, provider: ProviderServer, stack: AsyncExitStack, client_headers: Mapping[str, str] | None = None
) -> Driven:
    client = await stack.enter_async_context(
        AsyncAnthropic(base_url=provider.url, api_key="k", max_retries=0, default_headers=client_headers)
    )

    async def ask(turn: Turn) -> str:
        _script(provider, lambda text: anthropic_message([{"type": "text", "text": text}]))
        messages = [
            {"role": "user", "content": "Where is my order?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_order", "input": turn.args}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": json.dumps(turn.result)}],
            },
        ]
        message = await anthropic_adapter.cached_create(
            cache,
            client.messages.create,
            model="claude-sonnet-4-6",
            max_tokens=256,
            messages=messages,
            extra_headers={**turn.headers(), "x-api-key": f"key-{turn.noise}"},
            metadata={"user_id": f"user-{turn.noise}"},
        )
        return str(message.content[0].text)

    return Driven(ask, provider.calls)


async def openai_agents(
    cache: AgentCache, provider: ProviderServer, stack: AsyncExitStack, client_headers: Mapping[str, str] | None = None
) -> Driven:
    client = await stack.enter_async_context(
        AsyncOpenAI(base_url=f"{provider.url}/v1", api_key="k", max_retries=0, default_headers=client_headers)
    )
    model = AgentsCachedModel(OpenAIResponsesModel("gpt-5", client), cache)

    async def ask(turn: Turn) -> str:
        _script(provider, lambda text: response_body([message_item(text)]))
        settings = ModelSettings(extra_headers=turn.headers(), metadata={"trace": str(turn.noise)})
        agent = Agent(name="Orders", instructions="Answer briefly.", model=model, model_settings=settings)
        result = await Runner.run(agent, _order_items(turn), run_config=RunConfig(tracing_disabled=True))  # type: ignore[arg-type]
        return str(result.final_output)

    return Driven(ask, provider.calls)


async def pydantic_ai(
    cache: AgentCache, provider: ProviderServer, stack: AsyncExitStack, client_headers: Mapping[str, str] | None = None
) -> Driven:
    client = await stack.enter_async_context(
        AsyncOpenAI(base_url=f"{provider.url}/v1", api_key="k", max_retries=0, default_headers=client_headers)
    )
    model = PydanticCachedModel(OpenAIChatModel("gpt-4o", provider=OpenAIProvider(openai_client=client)), cache)

    async def ask(turn: Turn) -> str:
        _script(provider, lambda text: chat_completion(content=text))
        n = turn.noise
        earlier = ModelResponse(
            parts=[ToolCallPart("get_order", dict(turn.args), tool_call_id="call_1", id=f"part-{n}")],
            usage=RequestUsage(input_tokens=10 + n, output_tokens=5 + n),
            model_name=f"gpt-4o-2024-0{n + 5}-01",
            provider_response_id=f"chatcmpl-{n}",
            provider_details={"created": 1_700_000_000 + n},
            run_id=f"run-{n}",
        )
        messages = [
            ModelRequest(parts=[UserPromptPart("Where is my order?")], run_id=f"run-{n}", metadata={"n": n}),
            earlier,
            ModelRequest(
                parts=[ToolReturnPart("get_order", dict(turn.result), tool_call_id="call_1", metadata={"n": n})],
                run_id=f"run-{n}",
            ),
        ]
        settings: Any = {"extra_headers": turn.headers(), "timeout": 10 + n}
        response = await model.request(messages, settings, ModelRequestParameters())
        part = response.parts[0]
        assert isinstance(part, TextPart)
        return part.content

    return Driven(ask, provider.calls)


async def llamaindex(cache: AgentCache, provider: ProviderServer, stack: AsyncExitStack) -> Driven:
    """LlamaIndex has no call wrapper: the documented check-then-store, with the model's answer scripted."""
    calls = itertools.count()
    made = [0]

    async def ask(turn: Turn) -> str:
        messages = [
            ChatMessage(role="user", content="Where is my order?"),
            ChatMessage(
                role="assistant",
                blocks=[ToolCallBlock(tool_call_id="call_1", tool_name="get_order", tool_kwargs=dict(turn.args))],
            ),
            ChatMessage(role="tool", content=json.dumps(turn.result), additional_kwargs={"tool_call_id": "call_1"}),
        ]
        params = await llamaindex_params(
            messages, LlamaIndexPrepareOptions(model="gpt-4o"), extra_headers=turn.headers()
        )
        hit = await cache.llm.check(params)
        if hit.hit:
            return str(hit.response)
        made[0] = next(calls) + 1
        text = _answer()
        await cache.llm.store(params, text)
        return text

    return Driven(ask, lambda: made[0])


class _OrderChatModel(GenericFakeChatModel):
    """Answers ``answer <n>`` and counts the calls that reached it."""

    model_name: str = "gpt-4o"
    _calls: int = PrivateAttr(default=0)

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self._calls += 1
        return super()._generate(messages, *args, **kwargs)


def _answers_forever() -> Iterator[AIMessage]:
    while True:
        yield AIMessage(content=_answer())


async def langchain(cache: AgentCache, provider: ProviderServer, stack: AsyncExitStack) -> Driven:
    model = _OrderChatModel(messages=_answers_forever(), cache=BetterDBLlmCache(cache))

    async def ask(turn: Turn) -> str:
        call = {"name": "get_order", "args": dict(turn.args), "id": "call_1", "type": "tool_call"}
        messages = [
            HumanMessage("Where is my order?"),
            AIMessage(
                content="",
                tool_calls=[call],
                id=f"run-{turn.noise}",
                response_metadata={"id": f"chatcmpl-{turn.noise}", "created": 1_700_000_000 + turn.noise},
                usage_metadata={"input_tokens": 10 + turn.noise, "output_tokens": 5, "total_tokens": 15 + turn.noise},
            ),
            ToolMessage(content=json.dumps(turn.result), tool_call_id="call_1"),
        ]
        bound = model.bind(extra_headers=turn.feature) if turn.feature else model
        return str((await bound.ainvoke(messages)).content)

    return Driven(ask, lambda: model._calls)


async def raw_params(cache: AgentCache, provider: ProviderServer, stack: AsyncExitStack) -> Driven:
    """``cache.llm.check`` with hand-written params: the key functions alone."""
    made = [0]

    async def ask(turn: Turn) -> str:
        params = {
            "model": "gpt-4o",
            "messages": [
                {"role": "user", "content": "Where is my order?"},
                {"role": "assistant", "tool_calls": [{"id": "call_1", "name": "get_order", "args": dict(turn.args)}]},
                {"role": "tool", "tool_call_id": "call_1", "content": dict(turn.result)},
            ],
            "extra_headers": {**turn.headers(), "Authorization": f"Bearer key-{turn.noise}"},
            "user": f"user-{turn.noise}",
            "timeout": 10 + turn.noise,
            "stream": bool(turn.noise),
        }
        hit = await cache.llm.check(params)
        if hit.hit:
            return str(hit.response)
        made[0] += 1
        text = _answer()
        await cache.llm.store(params, text)
        return text

    return Driven(ask, lambda: made[0])


DRIVERS: dict[str, Callable[..., Awaitable[Driven]]] = {
    "openai chat": openai_chat,
    "openai responses": openai_responses,
    "anthropic": anthropic,
    "openai-agents": openai_agents,
    "pydantic-ai": pydantic_ai,
    "llamaindex": llamaindex,
    "langchain": langchain,
    "llm.check params": raw_params,
}


@pytest.fixture(params=list(DRIVERS))
async def driven(request: pytest.FixtureRequest, cache: AgentCache, provider: ProviderServer) -> AsyncIterator[Driven]:
    async with AsyncExitStack() as stack:
        yield await DRIVERS[request.param](cache, provider, stack)


@pytest.mark.parametrize("variant", list(ANSWER_CHANGING))
async def test_a_request_that_differs_where_the_model_reads_gets_its_own_answer(driven: Driven, variant: str) -> None:
    first = await driven.ask(BASE)
    other = await driven.ask(ANSWER_CHANGING[variant])
    assert driven.calls() == 2, f"{variant}: served the answer of another request"
    assert other != first
    assert await driven.ask(BASE) == first  # both are stored, each under its own key
    assert await driven.ask(ANSWER_CHANGING[variant]) == other
    assert driven.calls() == 2


async def test_a_request_that_differs_only_in_transport_noise_is_a_hit(driven: Driven) -> None:
    first = await driven.ask(BASE)
    assert await driven.ask(NOISY) == first
    assert driven.calls() == 1


FEATURE_HEADERS = {"anthropic-beta": "context-1m-2025-08-07", "OpenAI-Beta": "x=1"}
NOISE_HEADERS = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "X-Request-Id": "r-9"}


@pytest.mark.parametrize("name", ["openai chat", "openai responses", "anthropic", "openai-agents", "pydantic-ai"])
async def test_headers_set_on_the_sdk_client_follow_the_same_rule(
    name: str, cache: AgentCache, provider: ProviderServer
) -> None:
    """``default_headers=`` on the client reach every request: a feature header there is part of the key too."""
    async with AsyncExitStack() as stack:
        plain = await DRIVERS[name](cache, provider, stack)
        traced = await DRIVERS[name](cache, provider, stack, client_headers=NOISE_HEADERS)
        beta = await DRIVERS[name](cache, provider, stack, client_headers=FEATURE_HEADERS)
        first = await plain.ask(BASE)
        assert await traced.ask(BASE) == first
        assert provider.calls() == 1
        with_beta = await beta.ask(BASE)
        assert provider.calls() == 2 and with_beta != first
        assert await plain.ask(replace(BASE, feature=FEATURE_HEADERS)) == with_beta  # one header, however it is set
        assert provider.calls() == 2


LONE_SURROGATE = "Where is my order \udc80?"  # what a bad decode of user input leaves behind


async def test_a_request_that_cannot_be_a_key_goes_to_the_model_uncached(
    cache: AgentCache, provider: ProviderServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The wrappers fail open when canonical JSON refuses a request: the model is called and nothing is stored."""
    seen: list[str] = []

    def local_model(messages: list[Any], info: AgentInfo) -> ModelResponse:
        seen.append(str(messages[-1].parts[0].content))
        return ModelResponse(parts=[TextPart("answered")])

    model = PydanticCachedModel(FunctionModel(local_model), cache)  # a model that takes any Python text
    for _ in range(2):
        response = await model.request(
            [ModelRequest(parts=[UserPromptPart(LONE_SURROGATE)])], None, ModelRequestParameters()
        )
        assert isinstance(response.parts[0], TextPart) and response.parts[0].content == "answered"
    assert seen == [LONE_SURROGATE, LONE_SURROGATE]  # never served from the cache, never an error
    assert "content holds a lone surrogate" in caplog.text

    # The OpenAI SDK sends what the key cannot hold, a datetime in extra_body (as ISO text): uncached, answered.
    async with AsyncOpenAI(base_url=f"{provider.url}/v1", api_key="k", max_retries=0) as client:
        for _ in range(2):
            provider.reply_json(chat_completion(content="answered"))
            completion = await openai_adapter.cached_create(
                cache,
                client.chat.completions.create,
                model="gpt-4o",
                messages=[{"role": "user", "content": "Orders since?"}],
                extra_body={"since": datetime(2026, 12, 1, tzinfo=UTC)},
            )
            assert completion.choices[0].message.content == "answered"
    assert provider.calls() == 2
    assert "params.extra_body.since is a datetime" in caplog.text
