"""Pydantic AI: a ``WrapperModel`` that caches model responses in the LLM tier.

::

    from pydantic_ai import Agent
    from agent_cache.adapters.pydantic_ai import CachedModel

    agent = Agent(CachedModel("openai:gpt-5", cache))  # or CachedModel(OpenAIChatModel(...), cache)

``request`` and ``request_stream`` are both cached (``agent.run``, ``run_stream``, ``iter``); a streamed hit is a
``CompletedStreamedResponse`` that replays the parts as stream events. The key holds the model (name and provider
system), the message history — dumped with Pydantic AI's own serializer, minus the messages' and parts' own fields the
model never reads (timestamps, run and conversation ids, usage, provider response ids, part ids, application
``metadata``; never anything inside tool arguments, tool results or prompts) and with binary content and file URLs
through the binary normalizer — the answer-changing model settings (not timeouts or retries; of ``extra_headers`` only
the headers that can change an answer, like ``anthropic-beta``) and the request parameters: function and output tools
with their JSON schemas, native tools, output mode and schema, whether text or images may be output, and the thinking
level.

Stored: text, tool calls (ids kept; arguments as JSON) and thinking with its signature as blocks, and the rest of
the ``ModelResponse`` the model produced as metadata: dated ``model_name``, ``provider_response_id``,
``provider_details``, ``provider_url``, ``finish_reason``, usage with its cache/reasoning/audio details, each part's
id, provider name and details and the argument text. Responses that finished with ``stop``, ``tool_call`` or
``length`` are stored; a hit is the model's original response, received now (``timestamp``; the agent run sets
``run_id`` and the like as for any response). Not stored: responses that are not ``complete``, finished with
``content_filter`` or ``error``, or hold native-tool, file or speech parts and citations.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from agent_cache._errors import AgentCacheUsageError, ConfigurationError
from agent_cache._keys import TRANSPORT_ONLY_PARAMS, answer_headers
from agent_cache.normalizer import BinaryNormalizer, default_normalizer
from agent_cache.types import ContentBlock, LlmCacheParams, ReasoningBlock

from ._blocks import Kind, binary_block, describe, extras, parse_arguments, plain
from ._caching import (
    COMPLETE,
    Answer,
    UncacheableResponseError,
    answer_of,
    blocks_of,
    ensure_model_call_allowed,
    foreign_finish,
    lookup,
    metadata,
    native,
    save,
    tokens,
    with_client_headers,
    without,
)

try:
    from pydantic_ai.messages import (
        FinishReason,
        ModelMessage,
        ModelMessagesTypeAdapter,
        ModelResponse,
        ModelResponsePart,
        TextPart,
        ThinkingPart,
        ToolCallPart,
    )
    from pydantic_ai.models import CompletedStreamedResponse, KnownModelName, Model, ModelRequestParameters
    from pydantic_ai.models.wrapper import WrapperModel
    from pydantic_ai.usage import RequestUsage
except ImportError as exc:  # CachedModel subclasses WrapperModel, so the import cannot wait
    raise ConfigurationError(
        'agent_cache.adapters.pydantic_ai needs Pydantic AI: pip install "agent-cache[pydantic-ai]"'
    ) from exc

if TYPE_CHECKING:
    from pydantic_ai import RunContext
    from pydantic_ai.models import StreamedResponse
    from pydantic_ai.settings import ModelSettings

    from agent_cache.cache import AgentCache

__all__ = [
    "Answer",
    "CachedModel",
    "PydanticAIPrepareOptions",
    "UncacheableResponseError",
    "from_blocks",
    "prepare_params",
    "to_answer",
    "to_blocks",
]

log = logging.getLogger("agent_cache.adapters")

# Transport noise of serialized messages, by where it occurs: fields the model never reads, or that differ between
# a live response and its cached copy. Only these fields at these places are left out — never anything inside part
# content, tool-call arguments or tool results, which are the user's data (a tool result's own ``id`` or ``state``
# is an answer-changing value like any other).
_MESSAGE_NOISE = frozenset(
    {
        "timestamp",
        "request_timestamp",
        "duration",
        "run_id",
        "conversation_id",
        "usage",
        "model_name",
        "model_id",
        "provider_name",
        "provider_url",
        "canonical_system",
        "provider_details",
        "provider_response_id",
        "finish_reason",
        "failed_attempts",
        "history_digest",
        "workspace_ref",
        "metadata",
    }
)
# Parts: their own ids and timestamps, and what Pydantic AI documents as never sent to the model.
_PART_NOISE = frozenset({"timestamp", "id", "record_id", "metadata", "tool_kind", "ui_visibility"})
_TRANSPORT_SETTINGS = TRANSPORT_ONLY_PARAMS | {
    "request_timeout",
    "first_event_timeout",
    "max_retries",
    "cache",
}
_FILE_URL_KINDS: dict[str, Kind] = {
    "image-url": "image",
    "audio-url": "audio",
    "document-url": "document",
    "video-url": "document",
}


def _kind_of(media_type: str) -> Kind:
    if media_type.startswith("image/"):
        return "image"
    return "audio" if media_type.startswith("audio/") else "document"


@dataclasses.dataclass
class PydanticAIPrepareOptions:
    normalizer: BinaryNormalizer = default_normalizer


# ─── Requests ─────────────────────────────────────────────────────────────────


async def _messages(dumped: list[Any], normalizer: BinaryNormalizer) -> list[Any]:
    """Serialized messages for the key: message and part noise left out, file content through the normalizer."""
    out = []
    for message in dumped:
        entry = {k: v for k, v in message.items() if k not in _MESSAGE_NOISE and v is not None and k != "parts"}
        entry["parts"] = [await _part(part, normalizer) for part in message.get("parts") or ()]
        out.append(entry)
    return out


async def _part(part: Mapping[str, Any], normalizer: BinaryNormalizer) -> dict[str, Any]:
    entry = {}
    for name, value in part.items():
        if name in _PART_NOISE or value is None:
            continue
        if name == "args" and part.get("part_kind") == "tool-call":
            value = parse_arguments(value)  # '{"a": 1}' and {"a": 1} are the same call
        elif name == "content":
            value = await _files(value, normalizer)
        entry[name] = value
    return entry


# The fields Pydantic AI serializes for binary content and file URLs (always all of them): a dict with other fields,
# or with some missing, is user data.
_BINARY_FIELDS = frozenset({"kind", "data", "media_type", "vendor_metadata", "identifier"})
_FILE_URL_FIELDS = frozenset({"kind", "url", "media_type", "force_download", "vendor_metadata", "identifier"})


async def _files(content: Any, normalizer: BinaryNormalizer) -> Any:
    """A part's content with its binary content and file URLs (the content itself, or items of a content list)
    as normalizer refs. Nothing else is changed or left out: the rest is user data and stays in the key verbatim."""
    if isinstance(content, list):
        return [await _file(item, normalizer) for item in content]
    return await _file(content, normalizer)


async def _file(value: Any, normalizer: BinaryNormalizer) -> Any:
    if not isinstance(value, dict):
        return value
    kind = value.get("kind")
    if not isinstance(kind, str):
        return value
    if kind == "binary" and isinstance(value.get("data"), str) and value.keys() == _BINARY_FIELDS:
        media_type = str(value.get("media_type") or "")
        rest = extras(value, ("kind", "data", "media_type"))
        return await binary_block(
            _kind_of(media_type), normalizer, base64_data=value["data"], media_type=media_type or None, **rest
        )
    if kind in _FILE_URL_KINDS and isinstance(value.get("url"), str) and value.keys() == _FILE_URL_FIELDS:
        rest = extras(value, ("kind", "url", "media_type"))
        return await binary_block(
            _FILE_URL_KINDS[kind],
            normalizer,
            url=value["url"],
            media_type=value.get("media_type"),
            urlKind=kind,
            **rest,
        )
    return value


def _request_parameters(parameters: ModelRequestParameters | None) -> dict[str, Any]:
    if parameters is None:
        return {}
    out = {
        "function_tools": [describe(t) for t in parameters.function_tools],
        "native_tools": [describe(t) for t in parameters.native_tools],
        "output_mode": parameters.output_mode,
        "output_object": describe(parameters.output_object) if parameters.output_object is not None else None,
        "output_tools": [describe(t) for t in parameters.output_tools],
        "prompted_output_template": parameters.prompted_output_template,
        "allow_text_output": parameters.allow_text_output,
        "allow_image_output": parameters.allow_image_output,
        "thinking": plain(parameters.thinking),
    }
    return {k: v for k, v in out.items() if v is not None and v != []}


async def prepare_params(
    messages: Sequence[ModelMessage],
    model_name: str,
    model_settings: ModelSettings | Mapping[str, Any] | None = None,
    model_request_parameters: ModelRequestParameters | None = None,
    *,
    system: str | None = None,
    opts: PydanticAIPrepareOptions | None = None,
) -> LlmCacheParams:
    """Cache params for one ``Model.request`` call (``system`` is the provider, e.g. ``"openai"``)."""
    normalizer = (opts or PydanticAIPrepareOptions()).normalizer
    dumped = ModelMessagesTypeAdapter.dump_python(list(messages), mode="json")
    settings = {
        k: plain(v) for k, v in (model_settings or {}).items() if k not in _TRANSPORT_SETTINGS and v is not None
    }
    if "extra_headers" in settings:  # feature headers (anthropic-beta...) are in the key; credentials never
        settings["extra_headers"] = answer_headers(settings["extra_headers"])
    params: dict[str, Any] = {
        "model": model_name,
        "system": system,
        "messages": await _messages(dumped, normalizer),
        **settings,
        "request": _request_parameters(model_request_parameters) or None,
    }
    return {k: v for k, v in params.items() if v is not None}


# ─── Responses ────────────────────────────────────────────────────────────────


FORMAT = "pydantic_ai"
# Fields the agent run sets on a response after the model returned it (or that say where a run stands): not the
# model's, so never stored. ``timestamp`` is when the response was received locally: a hit is received now (the
# provider's own timestamp stays in ``provider_details``).
_RUN_FIELDS = (
    "parts",
    "timestamp",
    "model_id",
    "run_id",
    "conversation_id",
    "metadata",
    "workspace_ref",
    "failed_attempts",
    "state",
)
# What the blocks hold of each part kind; the rest of the part (ids, provider name and details) is metadata.
_IN_BLOCKS = {
    "text": ("content",),
    "tool-call": ("tool_name", "args", "tool_call_id"),
    "thinking": ("content", "signature"),
}
_FINISHES = {None: "stop", "stop": "stop", "tool_call": "tool_calls", "length": "length"}


def _answer(response: ModelResponse) -> Answer:
    """Blocks, token counts and metadata of a ``ModelResponse``; :class:`UncacheableResponseError` for the rest."""
    if response.state != "complete":
        raise UncacheableResponseError(f"response state {response.state!r}: only complete responses are stored")
    blocks: list[ContentBlock] = []
    for part in response.parts:
        if isinstance(part, TextPart) and part.part_kind == "text" and not getattr(part, "citations", None):
            blocks.append({"type": "text", "text": part.content})
        elif isinstance(part, ToolCallPart) and part.part_kind == "tool-call":
            args = parse_arguments(part.args) if part.args is not None else {}
            blocks.append({"type": "tool_call", "id": part.tool_call_id, "name": part.tool_name, "args": args})
        elif isinstance(part, ThinkingPart) and part.part_kind == "thinking":
            reasoning: ReasoningBlock = {"type": "reasoning", "text": part.content}
            if part.signature:
                reasoning["opaqueSignature"] = part.signature
            blocks.append(reasoning)
        else:
            raise UncacheableResponseError(f"a {part.part_kind!r} part cannot be stored")
    if response.finish_reason not in _FINISHES:
        raise UncacheableResponseError(f"finish_reason {response.finish_reason!r}: not stored")
    calls = any(b["type"] == "tool_call" for b in blocks)
    finish = "length" if response.finish_reason == "length" else "tool_calls" if calls else "stop"
    dumped = ModelMessagesTypeAdapter.dump_python([response], mode="json")[0]
    parts = []
    for part_data in dumped["parts"]:
        fields = without(part_data, _IN_BLOCKS[part_data["part_kind"]])
        if part_data["part_kind"] == "tool-call" and not isinstance(part_data["args"], dict):
            fields["args"] = part_data["args"]  # the provider's argument text (or None), exactly
        parts.append(fields)
    meta = metadata(FORMAT, finish, response=without(dumped, _RUN_FIELDS), parts=parts)
    return Answer(blocks, tokens(response.usage.input_tokens, response.usage.output_tokens), meta)


def to_answer(response: ModelResponse) -> Answer:
    """What ``CachedModel`` stores: blocks, token counts and metadata (``answer.store_options(ttl)``).

    Complete responses that finished with ``stop``, ``tool_call`` or ``length`` are stored; raises
    :class:`UncacheableResponseError` for other states and finish reasons (``content_filter``, ``error``) and for
    native-tool, file or speech parts and citations.
    """
    return _answer(response)


def to_blocks(response: ModelResponse) -> list[ContentBlock]:
    """The parts as content blocks, for a complete answer (``stop``/``tool_call``) that blocks alone rebuild.

    Raises :class:`UncacheableResponseError` otherwise — including ``length``, which needs the metadata of
    :func:`to_answer` to be rebuilt faithfully.
    """
    return _answer(response).complete().blocks


def _foreign_finish_reason(meta: Mapping[str, Any] | None, has_tool_calls: bool) -> FinishReason:
    finish = foreign_finish(meta)
    if finish in COMPLETE:
        return "tool_call" if has_tool_calls else "stop"
    if finish in ("length", "stop_sequence"):
        return "length" if finish == "length" else "stop"
    raise AgentCacheUsageError(f"a {finish!r} answer stored by another adapter cannot be a Pydantic AI response")


def from_blocks(
    blocks: Sequence[ContentBlock],
    *,
    model_name: str,
    provider_name: str | None = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    metadata: Mapping[str, Any] | None = None,
) -> ModelResponse:
    """Rebuild a ``ModelResponse`` from stored blocks (text, tool calls, thinking).

    With the entry's ``metadata`` (``LlmCacheResult.metadata``) written by this adapter it is the model's original
    response — dated ``model_name``, ``provider_response_id``, ``provider_details``, ``finish_reason``, usage with
    its cache and reasoning details, part ids — received now (``timestamp``). Without it, the given model and
    provider names and token counts.
    """
    stored = native(metadata, FORMAT)
    if stored is not None:
        return _stored_response(blocks, stored)
    parts: list[ModelResponsePart] = []
    for block in blocks:
        if block["type"] == "text":
            parts.append(TextPart(content=block["text"]))
        elif block["type"] == "tool_call":
            parts.append(ToolCallPart(tool_name=block["name"], args=block["args"], tool_call_id=block["id"]))
        elif block["type"] == "reasoning":
            signature = block.get("opaqueSignature")
            parts.append(
                ThinkingPart(
                    content=block["text"], signature=signature, provider_name=provider_name if signature else None
                )
            )
        else:
            raise AgentCacheUsageError(f"a {block['type']!r} block cannot be part of a Pydantic AI response")
    has_calls = any(isinstance(p, ToolCallPart) for p in parts)
    return ModelResponse(
        parts=parts,
        usage=RequestUsage(input_tokens=input_tokens, output_tokens=output_tokens),
        model_name=model_name,
        provider_name=provider_name,
        finish_reason=_foreign_finish_reason(metadata, has_calls),
    )


def _stored_response(blocks: Sequence[ContentBlock], stored: Mapping[str, Any]) -> ModelResponse:
    fields: list[Mapping[str, Any]] = stored.get("parts") or []
    if len(fields) != len(blocks):
        raise AgentCacheUsageError("the stored part layout does not match the blocks")
    parts: list[dict[str, Any]] = []
    for block, part in zip(blocks, fields, strict=True):
        if block["type"] == "text":
            parts.append({"part_kind": "text", "content": block["text"], **part})
        elif block["type"] == "tool_call":
            call = {"tool_name": block["name"], "args": block["args"], "tool_call_id": block["id"]}
            parts.append({"part_kind": "tool-call", **call, **part})
        elif block["type"] == "reasoning":
            thinking = {"content": block["text"], "signature": block.get("opaqueSignature")}
            parts.append({"part_kind": "thinking", **thinking, **part})
        else:
            raise AgentCacheUsageError(f"a {block['type']!r} block cannot be part of a Pydantic AI response")
    data = {**(stored.get("response") or {}), "kind": "response", "parts": parts}
    try:
        message = ModelMessagesTypeAdapter.validate_python([data])[0]
    except ValueError as exc:  # pydantic's ValidationError
        raise AgentCacheUsageError(f"the stored response does not validate: {exc}") from exc
    if not isinstance(message, ModelResponse):
        raise AgentCacheUsageError("the stored response is not a ModelResponse")
    return message


# ─── The wrapper ──────────────────────────────────────────────────────────────


class CachedModel(WrapperModel):
    """Any Pydantic AI model (or ``"provider:model"`` name) with its responses cached in the LLM tier."""

    def __init__(
        self,
        wrapped: Model | KnownModelName | str,
        cache: AgentCache,
        *,
        ttl: int | None = None,
        options: PydanticAIPrepareOptions | None = None,
    ) -> None:
        super().__init__(wrapped)
        self.cache = cache
        self.ttl = ttl
        self.options = options or PydanticAIPrepareOptions()

    async def _params(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> LlmCacheParams:
        settings = with_client_headers(model_settings or {}, self.wrapped)  # default_headers= of the model's client
        return await prepare_params(
            messages, self.model_name, settings, model_request_parameters, system=self.system, opts=self.options
        )

    async def _hit(self, params: LlmCacheParams) -> ModelResponse | None:
        result = await lookup(self.cache, params)
        if not result.hit:
            return None
        try:
            return from_blocks(
                blocks_of(result),
                model_name=self.model_name,
                provider_name=self.system,
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                metadata=result.metadata,
            )
        except AgentCacheUsageError as exc:
            ensure_model_call_allowed(self.cache, result.key)
            log.debug("agent-cache: entry %s is not a Pydantic AI response, calling the model: %s", result.key, exc)
            return None

    async def _store(self, params: LlmCacheParams, response: ModelResponse) -> None:
        if (answer := answer_of(_answer, response)) is not None:
            await save(self.cache, params, answer, self.ttl)

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        params = await self._params(messages, model_settings, model_request_parameters)
        hit = await self._hit(params)
        if hit is not None:
            return hit
        response = await self.wrapped.request(messages, model_settings, model_request_parameters)
        await self._store(params, response)
        return response

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncGenerator[StreamedResponse]:
        params = await self._params(messages, model_settings, model_request_parameters)
        hit = await self._hit(params)
        if hit is not None:
            yield CompletedStreamedResponse(hit, model_request_parameters=model_request_parameters, replay_events=True)
            return
        async with self.wrapped.request_stream(
            messages, model_settings, model_request_parameters, run_context
        ) as stream:
            yield stream
        # Reached only when the consumer's block ended without an error; get() says whether the stream finished.
        await self._store(params, stream.get())
