"""OpenAI Responses API: requests to cache params, ``Response`` to content blocks and back, event streams.

::

    from agent_cache.adapters.openai_responses import cached_create

    response = await cached_create(cache, client.responses.create, model="gpt-5", input="What is Valkey?")
    stream = await cached_create(cache, client.responses.create, model="gpt-5", input=items, stream=True)
    async for event in stream:  # ResponseStreamEvent objects, live or replayed
        ...

The key holds every request parameter except transport-only ones (``stream``, ``store``, ``metadata``, ``user``,
``timeout``...) by name — the answer-changing ``extra_headers`` (not credentials or tracing headers), ``instructions``,
``reasoning`` (effort and summary), ``max_output_tokens``, ``tools``, ``tool_choice``, ``text`` (format, verbosity),
``include``, ``previous_response_id``, ``conversation``... — and ``input`` normalized under ``messages``: a string and
one ``input_text`` part are the same; an output item echoed back keys like the same item written as a dict (server ids
and statuses are left out); images, files and audio go through the binary normalizer. Background requests go straight to
the provider.

Stored: output text, function calls (``call_id`` kept) and reasoning summaries with ``encrypted_content`` as
blocks, and the rest of the response as metadata: its id, timestamps, dated model, status, usage with its token
details, the server's echo of the configuration and each item's id, status, phase and refusal parts. Completed
responses and responses cut short by ``max_output_tokens`` are stored; a hit (plain or streamed, ending in
``response.completed`` or ``response.incomplete``) is the original response, except the echo of transport-only
parameters (``metadata``, ``user``, ``safety_identifier``, ``prompt_cache_key``), which is the current request's.
Not stored: failed or otherwise incomplete responses, hosted-tool items, annotations, logprobs, raw reasoning text.

A hit keeps the original response id, so ``previous_response_id=hit.id`` continues from the response OpenAI
stored for the original call — whose input and output are the hit's. That works while OpenAI keeps it (the
original request did not send ``store=False``, it was not deleted or expired, and the request comes from the
same project); otherwise OpenAI rejects the request (HTTP 400, ``previous_response_not_found``), as for any
unknown id: the error is loud, context is never lost silently. Entries without metadata (stored before it
existed) have ids derived from the entry, which OpenAI never knew: continue from those by sending the output
items back as ``input``.
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
from ._caching import (
    Answer,
    UncacheableResponseError,
    answer_of,
    blocks_of,
    ensure_model_call_allowed,
    lookup,
    save,
    tokens,
    with_client_headers,
)
from ._responses_format import (
    EventAssembler,
    build_response,
    hit_wire,
    normalize_input,
    output_answer,
    output_blocks,
    replay_events,
    wire,
)
from ._sdk import require
from ._stream import CachedStream, RecordingStream, ReplayStream

if TYPE_CHECKING:
    from openai.types.responses import Response, ResponseStreamEvent

    from agent_cache.cache import AgentCache

__all__ = [
    "Answer",
    "OpenAIResponsesPrepareOptions",
    "UncacheableResponseError",
    "cached_create",
    "from_blocks",
    "prepare_params",
    "to_answer",
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


def to_answer(response: Response | Mapping[str, Any]) -> Answer:
    """What ``cached_create`` stores: blocks, token counts and metadata (``answer.store_options(ttl)``).

    Completed responses and responses cut short by ``max_output_tokens`` are stored, refusals included; raises
    :class:`UncacheableResponseError` for the rest (failed or otherwise incomplete responses, hosted-tool items,
    annotations, logprobs, raw reasoning text).
    """
    return output_answer(wire(response))


def to_blocks(response: Response | Mapping[str, Any]) -> list[ContentBlock]:
    """The output as content blocks, for a completed response that blocks alone rebuild faithfully.

    Raises :class:`UncacheableResponseError` otherwise — including what needs the metadata of :func:`to_answer`:
    incomplete responses, refusals, message phases, adjacent messages or reasoning items.
    """
    data = wire(response)
    output_answer(data).complete()
    return output_blocks(data.get("output") or [])


def usage_tokens(response: Response | Mapping[str, Any]) -> dict[str, int] | None:
    usage = wire(response).get("usage") or {}
    return tokens(usage.get("input_tokens"), usage.get("output_tokens"))


def _response_data(
    blocks: Sequence[ContentBlock],
    params: Mapping[str, Any],
    input_tokens: int,
    output_tokens: int,
    key: str | None,
    meta: Mapping[str, Any] | None,
    request: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    try:
        return hit_wire(
            blocks,
            params,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            key=key,
            meta=meta,
            request=request,
        )
    except UncacheableResponseError as exc:
        raise AgentCacheUsageError(str(exc)) from exc


def from_blocks(
    blocks: Sequence[ContentBlock],
    params: Mapping[str, Any],
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Response:
    """Rebuild a ``Response`` from stored blocks.

    With the entry's ``metadata`` (``LlmCacheResult.metadata``) written by this adapter it is the original response:
    id, ``created_at``/``completed_at``, dated model, status and ``incomplete_details``, item ids, statuses and
    phases, refusal parts, usage with its token details, the server's echo of the configuration. Without it (older
    entries, ``cache.llm.store``) a completed response echoing ``params``, with ids derived from ``key``; metadata
    of another adapter contributes its stop reason (``length`` → ``incomplete``), or raises
    ``AgentCacheUsageError`` for one a response cannot express.
    """
    return build_response(_response_data(blocks, params, input_tokens, output_tokens, key, metadata))


def _hit_data(result: LlmCacheResult, params: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        return _response_data(
            blocks_of(result), params, result.input_tokens, result.output_tokens, result.key, result.metadata, request
        )
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
    params = await prepare_params(with_client_headers(request, create), options)
    # A conversation's server-side content changes between calls, so its id can't key an answer: pass through.
    if request.get("conversation") is not None:
        ensure_model_call_allowed(cache, None)
        return await create(**request)  # type: ignore[no-any-return]
    # A background request expects a queued response to poll, never a finished one from the cache.
    if request.get("background") is not True:
        result = await lookup(cache, params)
        if result.hit and (data := _hit_data(result, params, request)) is not None:
            return ReplayStream(replay_events(data), build_response(data)) if stream else build_response(data)
    ensure_model_call_allowed(cache, None)  # only_if_cached: a background request, or a hit that cannot be this
    response = await create(**request)
    if stream:

        async def store(answer: Answer) -> None:
            await save(cache, params, answer, ttl)

        return RecordingStream(response, EventAssembler(), store)
    if (answer := answer_of(lambda r: output_answer(wire(r)), response)) is not None:
        await save(cache, params, answer, ttl)
    return response  # type: ignore[no-any-return]
