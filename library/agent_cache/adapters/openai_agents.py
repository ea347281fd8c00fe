"""OpenAI Agents SDK (``openai-agents``): a ``Model`` and a ``ModelProvider`` that cache model responses.

::

    from agents import Agent, RunConfig, Runner
    from agent_cache.adapters.openai_agents import CachedModel, CachedModelProvider

    agent = Agent(name="Assistant", model=CachedModel(OpenAIResponsesModel("gpt-5", client), cache))
    # or every model a provider hands out:
    result = await Runner.run(agent, "Hi", run_config=RunConfig(model_provider=CachedModelProvider(provider, cache)))

Both ``get_response`` and ``stream_response`` are cached (``Runner.run`` and ``Runner.run_streamed``); a streamed
hit replays Responses stream events ending in ``response.completed``, which is what the runner reads. The key
holds the model name, the system instructions, the input items (normalized like the Responses adapter: server ids
left out, binary parts through the normalizer), the answer-changing model settings (temperature, reasoning,
max_tokens, tool_choice, extra_body, feature headers of extra_headers...; not metadata, store, retries, timeouts,
credentials or tracing headers), every tool's and handoff's name,
description and JSON schema, the output schema, and ``previous_response_id``/``conversation_id``/``prompt``.

A hit is the original ``ModelResponse``: output items with their ids, ``response_id``, ``Usage`` with its token
details (``raw_usage`` when the settings ask to preserve it); ``request_id`` is None, as no request was made. Its
``response_id`` is the one OpenAI stored for the original call, so server-managed conversation state
(``previous_response_id``) continues from a hit as long as OpenAI still holds that response (see the Responses
adapter); when it does not, OpenAI rejects the id loudly. Entries stored before response metadata existed have a
derived ``response_id`` that OpenAI does not know. Entries holding an incomplete response (stored by the Responses
adapter for the same key) are never a hit here: the SDK's own Responses model raises on those.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent_cache._errors import ConfigurationError
from agent_cache._keys import TRANSPORT_ONLY_PARAMS, answer_headers
from agent_cache.normalizer import BinaryNormalizer, default_normalizer
from agent_cache.types import LlmCacheParams

from ._blocks import describe, plain
from ._caching import (
    Answer,
    UncacheableResponseError,
    answer_of,
    blocks_of,
    client_headers,
    ensure_model_call_allowed,
    lookup,
    metadata,
    native,
    save,
    sent_headers,
    tokens,
    without,
)
from ._responses_format import (
    FORMAT,
    EventAssembler,
    build_response,
    hit_wire,
    normalize_input,
    read_output,
    replay_events,
    wire,
)
from ._stream import RecordingStream

try:
    from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
    from agents.models.interface import Model, ModelProvider, ModelTracing
    from agents.usage import deserialize_usage, serialize_usage
except ImportError as exc:  # the classes below subclass the SDK's, so the import cannot wait
    raise ConfigurationError(
        'agent_cache.adapters.openai_agents needs the OpenAI Agents SDK: pip install "agent-cache[openai-agents]"'
    ) from exc

if TYPE_CHECKING:
    from agents.agent_output import AgentOutputSchemaBase
    from agents.handoffs import Handoff
    from agents.model_settings import ModelSettings
    from agents.tool import Tool
    from openai.types.responses.response_prompt_param import ResponsePromptParam

    from agent_cache.cache import AgentCache

__all__ = ["CachedModel", "CachedModelProvider", "OpenAIAgentsPrepareOptions", "prepare_params"]

log = logging.getLogger("agent_cache.adapters")

# Settings that never change the answer: delivery, accounting, retries and prompt-cache placement.
_TRANSPORT_SETTINGS = TRANSPORT_ONLY_PARAMS | {
    "include_usage",
    "extra_query",
    "retry",
    "preserve_raw_usage",
    "prompt_cache_retention",
    "prompt_cache_options",
}


@dataclass
class OpenAIAgentsPrepareOptions:
    normalizer: BinaryNormalizer = default_normalizer


def _settings(model_settings: ModelSettings | None) -> dict[str, Any]:
    if model_settings is None:
        return {}
    data = model_settings.to_json_dict()
    settings = {k: v for k, v in data.items() if k not in _TRANSPORT_SETTINGS and v is not None}
    if "extra_headers" in settings:  # feature headers (openai-beta...) are in the key; credentials never
        settings["extra_headers"] = answer_headers(settings["extra_headers"])
    return {k: v for k, v in settings.items() if v is not None}


def _tool(tool: Any) -> Any:
    """A tool or handoff as the model sees it: name, description, schema (never its Python callable)."""
    return describe(tool)


def _output_schema(schema: AgentOutputSchemaBase | None) -> dict[str, Any] | None:
    if schema is None or schema.is_plain_text():
        return None
    return {"name": schema.name(), "schema": schema.json_schema(), "strict": schema.is_strict_json_schema()}


async def prepare_params(
    model_name: str,
    system_instructions: str | None,
    input: str | list[TResponseInputItem],
    model_settings: ModelSettings | None = None,
    tools: list[Tool] | None = None,
    output_schema: AgentOutputSchemaBase | None = None,
    handoffs: list[Handoff[Any, Any]] | None = None,
    *,
    previous_response_id: str | None = None,
    conversation_id: str | None = None,
    prompt: ResponsePromptParam | None = None,
    opts: OpenAIAgentsPrepareOptions | None = None,
) -> LlmCacheParams:
    """Cache params for one ``Model.get_response``/``stream_response`` call."""
    normalizer = (opts or OpenAIAgentsPrepareOptions()).normalizer
    params: dict[str, Any] = {
        "model": model_name,
        "instructions": system_instructions,
        "messages": await normalize_input(input, normalizer),
        **_settings(model_settings),
        "tools": [_tool(t) for t in tools or ()] or None,
        "handoffs": [_tool(h) for h in handoffs or ()] or None,
        "output_schema": _output_schema(output_schema),
        "previous_response_id": previous_response_id,
        "conversation_id": conversation_id,
        "prompt": plain(prompt) if prompt is not None else None,
    }
    return {k: v for k, v in params.items() if v is not None}


def _answer(response: ModelResponse) -> Answer:
    """A ``ModelResponse`` as blocks, token counts and metadata in the Responses format.

    The metadata holds the item skeletons (ids, statuses, phases, refusal parts), the response id and the usage as
    the Responses API reports it, and — for a hit of this adapter — the ``Usage`` object as the SDK serializes it
    and ``raw_usage``. Output items that are still ``incomplete`` are not stored.
    """
    items = [wire(item) for item in response.output]
    if any(item.get("status") == "incomplete" for item in items):
        raise UncacheableResponseError("an incomplete output item is not stored")
    blocks, skeletons = read_output(items, strict=False)
    if any(part.get("type") == "refusal" for item in skeletons for part in item.get("content") or ()):
        finish = "refusal"
    else:
        finish = "tool_calls" if any(b["type"] == "tool_call" for b in blocks) else "stop"
    usage = response.usage
    responses_usage = {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": plain(usage.input_tokens_details),
        "output_tokens": usage.output_tokens,
        "output_tokens_details": plain(usage.output_tokens_details),
        "total_tokens": usage.total_tokens,
    }
    agents = {"response_id": response.response_id, "usage": serialize_usage(usage), "raw_usage": response.raw_usage}
    meta = metadata(
        FORMAT,
        finish,
        response=without({"id": response.response_id, "usage": responses_usage}, ()),
        items=skeletons,
        agents=agents,
    )
    return Answer(blocks, tokens(usage.input_tokens, usage.output_tokens), meta)


@dataclass(frozen=True)
class _Hit:
    response: dict[str, Any]
    """The wire ``Response`` a hit stands for (what a streamed hit replays)."""
    agents: Mapping[str, Any] | None
    """What the SDK's ``ModelResponse`` had beyond the response, when this adapter stored it."""
    native: bool

    def model_response(self, model_settings: ModelSettings) -> ModelResponse:
        data = self.response
        raw_usage = None
        if self.agents is not None:
            usage = deserialize_usage(self.agents.get("usage") or {})
            response_id = self.agents.get("response_id")
            raw_usage = self.agents.get("raw_usage")
        else:
            usage = deserialize_usage({"requests": 1, **data["usage"]})
            response_id = data["id"]
            raw_usage = data["usage"] if self.native else None
        return ModelResponse(
            output=list(build_response(data).output),
            usage=usage,
            response_id=response_id,
            request_id=None,  # no request was made: the transport id of the original is not this call's
            raw_usage=raw_usage if model_settings.preserve_raw_usage is True else None,
        )


class CachedModel(Model):
    """Wraps any Agents SDK ``Model``: responses are looked up in, and stored to, the LLM tier."""

    def __init__(
        self,
        model: Model,
        cache: AgentCache,
        *,
        model_name: str | None = None,
        ttl: int | None = None,
        options: OpenAIAgentsPrepareOptions | None = None,
    ) -> None:
        name = model_name or getattr(model, "model", None)
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"CachedModel cannot tell the name of {type(model).__name__}: pass model_name=")
        self.model = model
        self.model_name = name
        self._cache = cache
        self._ttl = ttl
        self._options = options or OpenAIAgentsPrepareOptions()

    async def close(self) -> None:
        await self.model.close()

    async def _cleanup_on_run_end(self, owner: object) -> None:
        await self.model._cleanup_on_run_end(owner)

    def get_retry_advice(self, request: Any) -> Any:
        return self.model.get_retry_advice(request)

    async def _params(
        self, system_instructions: str | None, input: Any, model_settings: ModelSettings, *args: Any, **kwargs: Any
    ) -> LlmCacheParams:
        defaults = client_headers(self.model)  # default_headers= of the model's client reach every request
        if defaults:
            headers = sent_headers(defaults, model_settings.extra_headers)
            model_settings = dataclasses.replace(model_settings, extra_headers=headers)
        return await prepare_params(
            self.model_name, system_instructions, input, model_settings, *args, opts=self._options, **kwargs
        )

    async def _hit(self, params: LlmCacheParams, model_settings: ModelSettings) -> _Hit | None:
        result = await lookup(self._cache, params)
        if not result.hit:
            return None
        try:
            data = hit_wire(
                blocks_of(result),
                params,
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                key=result.key,
                meta=result.metadata,
                request={"metadata": model_settings.metadata},
            )
        except UncacheableResponseError as exc:
            ensure_model_call_allowed(self._cache, result.key)
            log.debug("agent-cache: entry %s is not a Responses output, calling the model: %s", result.key, exc)
            return None
        if data.get("status") != "completed":
            # The SDK's Responses model raises on an incomplete response; a hit cannot stand for that.
            ensure_model_call_allowed(self._cache, result.key)
            log.debug("agent-cache: entry %s is an incomplete response, calling the model", result.key)
            return None
        stored = native(result.metadata, FORMAT)
        agents = stored.get("agents") if stored is not None else None
        return _Hit(data, agents if isinstance(agents, Mapping) else None, stored is not None)

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        ids: dict[str, Any] = {
            "previous_response_id": previous_response_id,
            "conversation_id": conversation_id,
            "prompt": prompt,
        }
        if conversation_id is not None:  # server-side state that changes between calls: never cached
            ensure_model_call_allowed(self._cache, None)
            return await self.model.get_response(
                system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, **ids
            )
        params = await self._params(system_instructions, input, model_settings, tools, output_schema, handoffs, **ids)
        hit = await self._hit(params, model_settings)
        if hit is not None:
            return hit.model_response(model_settings)
        response = await self.model.get_response(
            system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, **ids
        )
        if (answer := answer_of(_answer, response)) is not None:
            await save(self._cache, params, answer, self._ttl)
        return response

    def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        ids: dict[str, Any] = {
            "previous_response_id": previous_response_id,
            "conversation_id": conversation_id,
            "prompt": prompt,
        }

        if conversation_id is not None:  # server-side state that changes between calls: never cached
            ensure_model_call_allowed(self._cache, None)
            return self.model.stream_response(
                system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, **ids
            )

        async def events() -> AsyncIterator[TResponseStreamEvent]:
            params = await self._params(
                system_instructions, input, model_settings, tools, output_schema, handoffs, **ids
            )
            hit = await self._hit(params, model_settings)
            if hit is not None:
                for event in replay_events(hit.response):
                    yield event
                return
            source = self.model.stream_response(
                system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, **ids
            )

            async def store(answer: Answer) -> None:
                await save(self._cache, params, answer, self._ttl)

            recording: RecordingStream[TResponseStreamEvent, Any] = RecordingStream(source, EventAssembler(), store)
            try:
                async for event in recording:
                    yield event
            finally:
                await recording.aclose()

        return events()


class CachedModelProvider(ModelProvider):
    """Wraps a ``ModelProvider`` so that every model it returns is a :class:`CachedModel`."""

    def __init__(
        self,
        provider: ModelProvider,
        cache: AgentCache,
        *,
        ttl: int | None = None,
        options: OpenAIAgentsPrepareOptions | None = None,
    ) -> None:
        self.provider = provider
        self._cache = cache
        self._ttl = ttl
        self._options = options

    def get_model(self, model_name: str | None) -> Model:
        model = self.provider.get_model(model_name)
        if isinstance(model, CachedModel):
            return model
        name = getattr(model, "model", None) or model_name
        return CachedModel(model, self._cache, model_name=name, ttl=self._ttl, options=self._options)

    async def aclose(self) -> None:
        await self.provider.aclose()
