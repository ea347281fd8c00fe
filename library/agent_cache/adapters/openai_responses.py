"""OpenAI Responses API: requests to cache params, ``Response`` to content blocks and back, event streams.

::

    from agent_cache.adapters.openai_responses import cached_create

    response = await cached_create(cache, client.responses.create, model="gpt-5", input="What is Valkey?")
    stream = await cached_create(cache, client.responses.create, model="gpt-5", input=items, stream=True)
    async for event in stream:  # ResponseStreamEvent objects, live or replayed
        ...

The key holds every request parameter except transport-only ones (``stream``, ``store``, ``metadata``, ``user``,
``timeout``...) by name — ``instructions``, ``reasoning`` (effort and summary), ``max_output_tokens``, ``tools``,
``tool_choice``, ``text`` (format, verbosity), ``include``, ``previous_response_id``, ``conversation``... — and
``input`` normalized under ``messages``: a string and one ``input_text`` part are the same; an output item echoed
back keys like the same item written as a dict (server ids and statuses are left out); images, files and audio go
through the binary normalizer. Background requests go straight to the provider.

Stored: output text, function calls (``call_id`` kept) and reasoning summaries with ``encrypted_content``. Not
stored: incomplete or failed responses and output the blocks cannot carry (hosted tools, citations, refusals,
logprobs). A hit is a ``Response`` with ids derived from the entry — the OpenAI server does not know them, so chain
turns by passing output items back as ``input``, not with ``previous_response_id``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

from agent_cache._errors import AgentCacheUsageError
from agent_cache.normalizer import BinaryNormalizer, default_normalizer
from agent_cache.types import ContentBlock, LlmCacheParams, LlmCacheResult

from ._blocks import is_omitted, materialize, passthrough_params
from ._caching import Answer, UncacheableResponseError, answer_of, blocks_of, lookup, save, tokens
from ._responses_format import (
    EventAssembler,
    build_response,
    normalize_input,
    output_answer,
    output_items,
    replay_events,
    response_wire,
    wire,
)
from ._sdk import require
from ._stream import CachedStream, RecordingStream, ReplayStream

if TYPE_CHECKING:
    from openai.types.responses import Response, ResponseStreamEvent

    from agent_cache.cache import AgentCache

__all__ = [
    "OpenAIResponsesPrepareOptions",
    "UncacheableResponseError",
    "cached_create",
    "from_blocks",
    "prepare_params",
    "to_blocks",
    "usage_tokens",
]

log = logging.getLogger("agent_cache.adapters")


@dataclass
class OpenAIResponsesPrepareOptions:
    normalizer: BinaryNormalizer = default_normalizer


async def prepare_params(
    params: Mapping[str, Any], opts: OpenAIResponsesPrepareOptions | None = None
) -> LlmCacheParams:
    """Cache params for a ``responses.create`` request; ``input`` becomes canonical ``messages``."""
    normalizer = (opts or OpenAIResponsesPrepareOptions()).normalizer
    result = passthrough_params(params, ("input",))
    items = params.get("input")
    if items is not None and not is_omitted(items):
        result["messages"] = await normalize_input(items, normalizer)
    return result


def to_blocks(response: Response | Mapping[str, Any]) -> list[ContentBlock]:
    """The output as content blocks; raises :class:`UncacheableResponseError` when it cannot be stored faithfully."""
    return output_answer(wire(response)).blocks


def usage_tokens(response: Response | Mapping[str, Any]) -> dict[str, int] | None:
    usage = wire(response).get("usage") or {}
    return tokens(usage.get("input_tokens"), usage.get("output_tokens"))


def _response_data(
    blocks: Sequence[ContentBlock], params: Mapping[str, Any], input_tokens: int, output_tokens: int, key: str | None
) -> dict[str, Any]:
    try:
        items = output_items(blocks, key)
    except UncacheableResponseError as exc:
        raise AgentCacheUsageError(str(exc)) from exc
    return response_wire(params, items, input_tokens=input_tokens, output_tokens=output_tokens, key=key)


def from_blocks(
    blocks: Sequence[ContentBlock],
    params: Mapping[str, Any],
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    key: str | None = None,
) -> Response:
    """Rebuild a completed ``Response`` from stored blocks, echoing the request's configuration."""
    return build_response(_response_data(blocks, params, input_tokens, output_tokens, key))


def _hit_data(result: LlmCacheResult, params: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        return _response_data(blocks_of(result), params, result.input_tokens, result.output_tokens, result.key)
    except AgentCacheUsageError as exc:
        log.debug("agent-cache: entry %s is not a Responses output, calling the provider: %s", result.key, exc)
        return None


@overload
async def cached_create(
    cache: AgentCache,
    create: Callable[..., Awaitable[Any]],
    /,
    *,
    stream: Literal[True],
    options: OpenAIResponsesPrepareOptions | None = None,
    ttl: int | None = None,
    **request: Any,
) -> CachedStream[ResponseStreamEvent, Response]: ...


@overload
async def cached_create(
    cache: AgentCache,
    create: Callable[..., Awaitable[Any]],
    /,
    *,
    stream: Literal[False] = False,
    options: OpenAIResponsesPrepareOptions | None = None,
    ttl: int | None = None,
    **request: Any,
) -> Response: ...


async def cached_create(
    cache: AgentCache,
    create: Callable[..., Awaitable[Any]],
    /,
    *,
    stream: bool = False,
    options: OpenAIResponsesPrepareOptions | None = None,
    ttl: int | None = None,
    **request: Any,
) -> Response | CachedStream[ResponseStreamEvent, Response]:
    """``create(**request)`` through the LLM tier (``create`` is ``client.responses.create`` of an async client).

    With ``stream=True`` the result is an async iterator of ``ResponseStreamEvent``; a live stream is stored only
    after ``response.completed``. Valkey errors follow the cache's ``on_error`` policy.
    """
    require("openai", "openai", "agent_cache.adapters.openai_responses")
    request = materialize(request)
    if stream:
        request["stream"] = True
    params = await prepare_params(request, options)
    # A background request expects a queued response to poll, never a finished one from the cache.
    if request.get("background") is not True:
        result = await lookup(cache, params)
        if result.hit and (data := _hit_data(result, params)) is not None:
            return ReplayStream(replay_events(data), build_response(data)) if stream else build_response(data)
    response = await create(**request)
    if stream:

        async def store(answer: Answer) -> None:
            await save(cache, params, answer, ttl)

        return RecordingStream(response, EventAssembler(), store)
    if (answer := answer_of(lambda r: output_answer(wire(r)), response)) is not None:
        await save(cache, params, answer, ttl)
    return response  # type: ignore[no-any-return]
