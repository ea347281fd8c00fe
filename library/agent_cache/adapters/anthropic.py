"""Anthropic Messages: requests to cache params, ``Message`` to content blocks and back, event streams.

::

    from agent_cache.adapters.anthropic import cached_create

    message = await cached_create(cache, client.messages.create, model="claude-sonnet-4-6", max_tokens=1024,
                                  messages=[{"role": "user", "content": "What is Valkey?"}])
    stream = await cached_create(cache, client.messages.create, stream=True, model=..., max_tokens=..., messages=...)
    async for event in stream:  # RawMessageStreamEvent objects, live or replayed
        ...

The key holds every request parameter except transport-only ones (``stream``, ``metadata``, ``timeout``...) by name,
``extra_headers`` such as ``anthropic-beta`` included (credentials and tracing headers are not) — ``max_tokens``,
``thinking`` (budget), ``tools``, ``tool_choice``, ``stop_sequences``, ``temperature``, ``top_k``, ``output_config``...
— with ``system`` and ``messages`` normalized to content blocks: a string and one text block are the same; ``tool_use``
becomes a tool-call block, ``tool_result`` a tool-result block, ``thinking``/``redacted_thinking`` reasoning blocks
(signatures kept); ``cache_control`` stays as a block hint. Images and PDFs go through the binary normalizer.

Stored: text, ``tool_use`` (ids and inputs), ``thinking`` with its signature and ``redacted_thinking`` as blocks;
the message's other fields as metadata — id, dated model, ``stop_reason``, ``stop_sequence``, ``stop_details``,
usage as reported (cache reads and writes, their TTL split, service tier) — and the token counts for pricing
(input including cache reads and writes). Answers that stopped at ``end_turn``, ``tool_use``, ``max_tokens``,
``model_context_window_exceeded``, ``stop_sequence`` or ``refusal`` are stored; a hit (plain or streamed) is the
original message. Not stored: ``pause_turn``, citations, containers and server-tool blocks. Entries without
metadata (stored before it existed) rebuild with an id derived from the entry and the requested model.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

from agent_cache._errors import AgentCacheUsageError
from agent_cache.normalizer import BinaryNormalizer, default_normalizer
from agent_cache.types import BlockHints, ContentBlock, LlmCacheParams, LlmCacheResult

from ._anthropic_response import (
    ADAPTER,
    EventAssembler,
    build_message,
    message_answer,
    message_data,
    replay_events,
    wire,
)
from ._anthropic_response import FORMAT as FORMAT  # re-exported: it was defined here
from ._blocks import binary_block, extras, is_omitted, materialize, passthrough_params, plain
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
from ._sdk import require
from ._stream import CachedStream, RecordingStream, ReplayStream

if TYPE_CHECKING:
    from anthropic.types import Message, RawMessageStreamEvent

    from agent_cache.cache import AgentCache

__all__ = [
    "Answer",
    "AnthropicPrepareOptions",
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
class AnthropicPrepareOptions:
    normalizer: BinaryNormalizer = default_normalizer


# ─── Requests ─────────────────────────────────────────────────────────────────


async def prepare_params(params: Mapping[str, Any], opts: AnthropicPrepareOptions | None = None) -> LlmCacheParams:
    """Cache params for a ``messages.create`` request (async: the normalizer may fetch)."""
    normalizer = (opts or AnthropicPrepareOptions()).normalizer
    result = passthrough_params(params, ("messages", "system"))
    system = params.get("system")
    if system is not None and not is_omitted(system):
        result["system"] = await _blocks(plain(system), normalizer)
    messages = []
    for message in plain(params.get("messages") or []):
        content = await _blocks(message.get("content", ""), normalizer)
        messages.append({"role": message.get("role"), "content": content, **extras(message, ("role", "content"))})
    result["messages"] = messages
    return result


def _hints(block: Mapping[str, Any]) -> dict[str, Any]:
    cache_control = block.get("cache_control")
    if not cache_control:
        return {}
    hints: BlockHints = {"anthropicCacheControl": cache_control}
    return {"hints": hints}


async def _blocks(content: Any, normalizer: BinaryNormalizer) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [await _block(block, normalizer) for block in content]


async def _block(block: Mapping[str, Any], normalizer: BinaryNormalizer) -> Any:
    kind = block.get("type")
    hints = _hints(block)
    if kind == "text":
        return {
            "type": "text",
            "text": block.get("text", ""),
            **hints,
            **extras(block, ("type", "text", "cache_control")),
        }
    if kind in ("image", "document"):
        source = block.get("source") or {}
        rest = {**hints, **extras(block, ("type", "source", "cache_control"))}
        binary_kind: Literal["image", "document"] = "image" if kind == "image" else "document"
        media_type = source.get("media_type")
        if source.get("type") == "base64":
            return await binary_block(
                binary_kind, normalizer, base64_data=source.get("data", ""), media_type=media_type, **rest
            )
        if source.get("type") == "url":
            return await binary_block(binary_kind, normalizer, url=source.get("url", ""), media_type=media_type, **rest)
        if source.get("type") == "file":
            return await binary_block(
                binary_kind, normalizer, file_id=source.get("file_id", ""), provider="anthropic", **rest
            )
        return plain(block)  # plain-text and nested-content documents are text: verbatim
    if kind == "tool_use":
        known = ("type", "id", "name", "input", "cache_control")
        return {
            "type": "tool_call",
            "id": block.get("id", ""),
            "name": block.get("name", ""),
            "args": plain(block.get("input")),
            **hints,
            **extras(block, known),
        }
    if kind == "tool_result":
        content = block.get("content")
        result: dict[str, Any] = {
            "type": "tool_result",
            "toolCallId": block.get("tool_use_id", ""),
            "content": [] if content is None else await _blocks(content, normalizer),
        }
        if block.get("is_error"):
            result["isError"] = True
        return {**result, **hints, **extras(block, ("type", "tool_use_id", "content", "is_error", "cache_control"))}
    if kind == "thinking":
        reasoning: dict[str, Any] = {"type": "reasoning", "text": block.get("thinking", "")}
        if block.get("signature"):
            reasoning["opaqueSignature"] = block["signature"]
        return reasoning
    if kind == "redacted_thinking":
        return {"type": "reasoning", "text": "", "redacted": True, "opaqueSignature": block.get("data", "")}
    return plain(block)  # server tools, search results and future kinds: verbatim


# ─── Responses ────────────────────────────────────────────────────────────────
# The conversions themselves (and the stream events) are in _anthropic_response; these are their public faces.


def to_answer(message: Message | Mapping[str, Any]) -> Answer:
    """What ``cached_create`` stores: blocks, token counts and metadata (``answer.store_options(ttl)``).

    Stored: answers that stopped at ``end_turn``, ``tool_use``, ``max_tokens``, ``model_context_window_exceeded``,
    ``stop_sequence`` (the sequence kept) or ``refusal`` (its ``stop_details`` kept). Raises
    :class:`UncacheableResponseError` for ``pause_turn``, citations, containers and server-tool blocks.
    """
    return message_answer(wire(message))


def to_blocks(message: Message | Mapping[str, Any]) -> list[ContentBlock]:
    """The answer as content blocks, for an ``end_turn``/``tool_use`` answer that blocks alone rebuild.

    Raises :class:`UncacheableResponseError` otherwise — including ``max_tokens``, ``stop_sequence`` and refusals,
    which need the metadata of :func:`to_answer` to be rebuilt faithfully.
    """
    data = wire(message)
    answer = message_answer(data)
    expected = "tool_use" if any(b["type"] == "tool_call" for b in answer.blocks) else "end_turn"
    if data.get("stop_reason") != expected:
        raise UncacheableResponseError(f"stop_reason {data.get('stop_reason')!r} needs the metadata")
    return answer.complete().blocks


def usage_tokens(message: Message | Mapping[str, Any]) -> dict[str, int] | None:
    """Input (including cache reads and writes) and output tokens, for ``LlmStoreOptions(tokens=...)``."""
    usage = wire(message).get("usage") or {}
    if not usage:
        return None
    input_tokens = sum(
        usage.get(k) or 0 for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return tokens(input_tokens, usage.get("output_tokens"))


def from_blocks(
    blocks: Sequence[ContentBlock],
    params: Mapping[str, Any],
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Message:
    """Rebuild a ``Message`` from stored blocks (text, tool calls, thinking) for ``params``.

    With the entry's ``metadata`` (``LlmCacheResult.metadata``) written by this adapter it is the original message:
    id, dated model, ``stop_reason``, ``stop_sequence``, ``stop_details`` and usage with its cache details.
    Without it (older entries, ``cache.llm.store``) the id is derived from ``key``, ``model`` is the requested one
    and usage holds the given counts (input including cache reads and writes); metadata of another adapter
    contributes its stop reason (``length`` → ``max_tokens``), or raises ``AgentCacheUsageError`` for one a
    message cannot express.
    """
    return build_message(message_data(blocks, params, input_tokens, output_tokens, key, metadata))


def _hit_data(result: LlmCacheResult, params: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        return message_data(
            blocks_of(result), params, result.input_tokens, result.output_tokens, result.key, result.metadata
        )
    except AgentCacheUsageError as exc:
        log.debug("agent-cache: entry %s is not an Anthropic message, calling the provider: %s", result.key, exc)
        return None


# ─── The wrapper ──────────────────────────────────────────────────────────────


@overload
async def cached_create(
    cache: AgentCache,
    create: Callable[..., Awaitable[Any]],
    /,
    *,
    stream: Literal[True],
    options: AnthropicPrepareOptions | None = None,
    ttl: int | None = None,
    **request: Any,
) -> CachedStream[RawMessageStreamEvent, Message]: ...


@overload
async def cached_create(
    cache: AgentCache,
    create: Callable[..., Awaitable[Any]],
    /,
    *,
    stream: Literal[False] = False,
    options: AnthropicPrepareOptions | None = None,
    ttl: int | None = None,
    **request: Any,
) -> Message: ...


async def cached_create(
    cache: AgentCache,
    create: Callable[..., Awaitable[Any]],
    /,
    *,
    stream: bool = False,
    options: AnthropicPrepareOptions | None = None,
    ttl: int | None = None,
    **request: Any,
) -> Message | CachedStream[RawMessageStreamEvent, Message]:
    """``create(**request)`` through the LLM tier (``create`` is ``client.messages.create`` of an async client).

    With ``stream=True`` the result is an async iterator of ``RawMessageStreamEvent``; a live stream is stored only
    after ``message_stop``. Valkey errors follow the cache's ``on_error`` policy.
    """
    require("anthropic", "anthropic", ADAPTER)
    request = materialize(request)
    if stream:
        request["stream"] = True
    params = await prepare_params(with_client_headers(request, create), options)
    result = await lookup(cache, params)
    if result.hit and (data := _hit_data(result, params)) is not None:
        return ReplayStream(replay_events(data), build_message(data)) if stream else build_message(data)
    ensure_model_call_allowed(cache, result.key)  # only_if_cached: a hit that cannot be this response
    response = await create(**request)
    if stream:

        async def store(answer: Answer) -> None:
            await save(cache, params, answer, ttl)

        return RecordingStream(response, EventAssembler(), store)
    if (answer := answer_of(lambda r: message_answer(wire(r)), response)) is not None:
        await save(cache, params, answer, ttl)
    return response  # type: ignore[no-any-return]
