"""OpenAI Chat Completions: requests to cache params, ``ChatCompletion`` to content blocks and back, streams.

One call does it all::

    from agent_cache.adapters.openai import cached_create

    completion = await cached_create(cache, client.chat.completions.create, model="gpt-4o", messages=messages)
    stream = await cached_create(cache, client.chat.completions.create, model="gpt-4o", messages=messages, stream=True)
    async for chunk in stream:  # ChatCompletionChunk objects, live or replayed from the cache
        ...

Works with any async client whose ``create`` speaks Chat Completions (``AsyncOpenAI``, ``AsyncAzureOpenAI``,
OpenAI-compatible servers). The key holds every request parameter except transport-only ones (``stream``,
``stream_options``, ``timeout``, ``user``, ``metadata``, ``store``...), by their own names — and the ``extra_headers``
that can change an answer (``OpenAI-Beta``, a gateway's routing header; never credentials or tracing headers):
``reasoning_effort``, ``max_completion_tokens``, ``tools``, ``response_format``, ``seed``, ``n``... Messages are
normalized to content blocks (a string and one text part are the same message; tool-call arguments are compared as JSON,
not as text), and images, audio and files go through the binary normalizer. A streamed and a non-streamed request share
one entry.

Stored: text, ``reasoning_content`` (OpenAI-compatible servers) and function tool calls (ids kept) as blocks, and
the rest of the completion as response metadata — id, ``created``, dated model, ``system_fingerprint``,
``service_tier``, ``finish_reason``, refusal, usage with its token details. Answers that finished with ``stop``,
``tool_calls`` or ``length`` are stored, refusals included; a hit (plain or streamed) is the original completion.
Not stored (returned uncached): several choices, audio, annotations, logprobs, custom tool calls, ``content_filter``.
Entries without metadata (stored before it existed) rebuild with an id derived from the entry, the requested model
and the stored token counts.

This module is the wrapper; the request side is in ``_openai_request``, the completion ↔ answer mapping in
``_openai_completion`` and the chunk replay and assembly in ``_openai_stream`` (their public names are re-exported
here).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

from ._blocks import materialize
from ._caching import (
    Answer,
    UncacheableResponseError,
    answer_of,
    ensure_model_call_allowed,
    lookup,
    save,
    with_client_headers,
)
from ._openai_completion import FORMAT as FORMAT
from ._openai_completion import (
    completion_of_hit,
    from_blocks,
    to_answer,
    to_blocks,
    usage_tokens,
)
from ._openai_request import OpenAIPrepareOptions, prepare_params
from ._openai_stream import ChunkAssembler, replay_chunks
from ._sdk import require
from ._stream import CachedStream, RecordingStream, ReplayStream

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    from agent_cache.cache import AgentCache

__all__ = [
    "Answer",
    "OpenAIPrepareOptions",
    "UncacheableResponseError",
    "cached_create",
    "from_blocks",
    "prepare_params",
    "to_answer",
    "to_blocks",
    "usage_tokens",
]


def _include_usage(request: Mapping[str, Any]) -> bool:
    options = request.get("stream_options")
    return isinstance(options, Mapping) and bool(options.get("include_usage"))


@overload
async def cached_create(
    cache: AgentCache,
    create: Callable[..., Awaitable[Any]],
    /,
    *,
    stream: Literal[True],
    options: OpenAIPrepareOptions | None = None,
    ttl: int | None = None,
    **request: Any,
) -> CachedStream[ChatCompletionChunk, ChatCompletion]: ...


@overload
async def cached_create(
    cache: AgentCache,
    create: Callable[..., Awaitable[Any]],
    /,
    *,
    stream: Literal[False] = False,
    options: OpenAIPrepareOptions | None = None,
    ttl: int | None = None,
    **request: Any,
) -> ChatCompletion: ...


async def cached_create(
    cache: AgentCache,
    create: Callable[..., Awaitable[Any]],
    /,
    *,
    stream: bool = False,
    options: OpenAIPrepareOptions | None = None,
    ttl: int | None = None,
    **request: Any,
) -> ChatCompletion | CachedStream[ChatCompletionChunk, ChatCompletion]:
    """``create(**request)`` through the LLM tier: a hit returns without calling the provider.

    ``create`` is ``client.chat.completions.create`` of an async client. With ``stream=True`` the result is an
    async iterator of ``ChatCompletionChunk`` (also an async context manager, with ``close()`` and
    ``final_response()``); a live stream is stored only once it finished. Requests with ``n > 1`` are passed
    through (several choices are not stored). Valkey errors follow the cache's ``on_error`` policy.
    """
    require("openai", "openai", "agent_cache.adapters.openai")
    request = materialize(request)
    if stream:
        request["stream"] = True
    params = await prepare_params(with_client_headers(request, create), options)
    n = request.get("n")
    if not (isinstance(n, int) and n > 1):  # several choices are never stored, so not looked up either
        result = await lookup(cache, params)
        if result.hit and (completion := completion_of_hit(result, params, request)) is not None:
            return (
                ReplayStream(replay_chunks(completion, _include_usage(request)), completion) if stream else completion
            )
    ensure_model_call_allowed(cache, None)  # only_if_cached: n > 1, or a hit that cannot be this response
    response = await create(**request)
    if stream:

        async def store(answer: Answer) -> None:
            await save(cache, params, answer, ttl)

        return RecordingStream(response, ChunkAssembler(_include_usage(request)), store)
    if (answer := answer_of(to_answer, response)) is not None:
        await save(cache, params, answer, ttl)
    return response  # type: ignore[no-any-return]
