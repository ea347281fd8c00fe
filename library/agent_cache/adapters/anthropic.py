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

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

from agent_cache._errors import AgentCacheUsageError
from agent_cache.normalizer import BinaryNormalizer, default_normalizer
from agent_cache.types import BlockHints, ContentBlock, LlmCacheParams, LlmCacheResult, ReasoningBlock

from ._blocks import binary_block, extras, is_omitted, materialize, passthrough_params, plain
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
    synthetic_id,
    tokens,
    with_client_headers,
    without,
)
from ._sdk import require
from ._stream import CachedStream, IncompleteStreamError, RecordingStream, ReplayStream

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
_WHAT = "agent_cache.adapters.anthropic"


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


def _wire(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    dumped: dict[str, Any] = obj.model_dump(mode="json")
    return dumped


FORMAT = "anthropic"
_STOPS = {
    "end_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "stop_sequence": "stop_sequence",
    "refusal": "refusal",
}


def _answer(message: Mapping[str, Any]) -> Answer:
    """Blocks, token counts and metadata of a message; :class:`UncacheableResponseError` if they cannot hold it.

    The metadata holds the message's fields but its content: id, dated model, ``stop_reason``, ``stop_sequence``,
    ``stop_details`` and usage as Anthropic reported it (cache reads and writes, their TTL split, service tier...).
    """
    blocks: list[ContentBlock] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            if block.get("citations"):
                raise UncacheableResponseError("citations cannot be stored")
            blocks.append({"type": "text", "text": block.get("text", "")})
        elif kind == "tool_use":
            if block.get("caller") or block.get("toolset_name"):
                raise UncacheableResponseError("a tool_use with a caller or toolset cannot be stored")
            blocks.append(
                {"type": "tool_call", "id": block["id"], "name": block["name"], "args": block.get("input") or {}}
            )
        elif kind == "thinking":
            reasoning: ReasoningBlock = {"type": "reasoning", "text": block.get("thinking", "")}
            if block.get("signature"):
                reasoning["opaqueSignature"] = block["signature"]
            blocks.append(reasoning)
        elif kind == "redacted_thinking":
            blocks.append({"type": "reasoning", "text": "", "redacted": True, "opaqueSignature": block.get("data", "")})
        else:
            raise UncacheableResponseError(f"a {kind!r} block cannot be stored")
    stop = message.get("stop_reason")
    if stop not in _STOPS or message.get("container"):
        raise UncacheableResponseError(f"stop_reason {stop!r}: not stored")
    finish = _STOPS[stop]
    calls = any(b["type"] == "tool_call" for b in blocks)
    if finish in COMPLETE and (finish == "tool_calls") != calls:
        finish = "tool_calls" if calls else "stop"  # a neutral reason that agrees with the blocks
    meta = metadata(FORMAT, finish, message=without(message, ("content",)))
    usage = message.get("usage") or {}
    input_tokens = sum(
        usage.get(k) or 0 for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return Answer(blocks, tokens(input_tokens if usage else None, usage.get("output_tokens")), meta)


def to_answer(message: Message | Mapping[str, Any]) -> Answer:
    """What ``cached_create`` stores: blocks, token counts and metadata (``answer.store_options(ttl)``).

    Stored: answers that stopped at ``end_turn``, ``tool_use``, ``max_tokens``, ``model_context_window_exceeded``,
    ``stop_sequence`` (the sequence kept) or ``refusal`` (its ``stop_details`` kept). Raises
    :class:`UncacheableResponseError` for ``pause_turn``, citations, containers and server-tool blocks.
    """
    return _answer(_wire(message))


def to_blocks(message: Message | Mapping[str, Any]) -> list[ContentBlock]:
    """The answer as content blocks, for an ``end_turn``/``tool_use`` answer that blocks alone rebuild.

    Raises :class:`UncacheableResponseError` otherwise — including ``max_tokens``, ``stop_sequence`` and refusals,
    which need the metadata of :func:`to_answer` to be rebuilt faithfully.
    """
    data = _wire(message)
    answer = _answer(data)
    expected = "tool_use" if any(b["type"] == "tool_call" for b in answer.blocks) else "end_turn"
    if data.get("stop_reason") != expected:
        raise UncacheableResponseError(f"stop_reason {data.get('stop_reason')!r} needs the metadata")
    return answer.complete().blocks


def usage_tokens(message: Message | Mapping[str, Any]) -> dict[str, int] | None:
    """Input (including cache reads and writes) and output tokens, for ``LlmStoreOptions(tokens=...)``."""
    usage = _wire(message).get("usage") or {}
    if not usage:
        return None
    input_tokens = sum(
        usage.get(k) or 0 for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return tokens(input_tokens, usage.get("output_tokens"))


def _foreign_stop(meta: Mapping[str, Any] | None, has_tool_use: bool) -> str:
    """``stop_reason`` for an entry stored without Anthropic metadata (legacy or another format)."""
    finish = foreign_finish(meta)
    if finish in COMPLETE:
        return "tool_use" if has_tool_use else "end_turn"
    if finish == "length":
        return "max_tokens"
    # stop_sequence without the sequence (Chat Completions does not say which), a refusal of another provider...
    raise AgentCacheUsageError(f"a {finish!r} answer stored by another adapter cannot be an Anthropic message")


def _message_data(
    blocks: Sequence[ContentBlock],
    params: Mapping[str, Any],
    input_tokens: int,
    output_tokens: int,
    key: str | None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for block in blocks:
        if block["type"] == "text":
            content.append({"type": "text", "text": block["text"], "citations": None})
        elif block["type"] == "tool_call":
            args = block["args"] if isinstance(block["args"], Mapping) else {}
            content.append({"type": "tool_use", "id": block["id"], "name": block["name"], "input": args})
        elif block["type"] == "reasoning" and block.get("redacted"):
            content.append({"type": "redacted_thinking", "data": block.get("opaqueSignature", "")})
        elif block["type"] == "reasoning":
            content.append(
                {"type": "thinking", "thinking": block["text"], "signature": block.get("opaqueSignature", "")}
            )
        else:
            raise AgentCacheUsageError(f"a {block['type']!r} block cannot be part of a message")
    stored = native(meta, FORMAT)
    if stored is not None and isinstance(stored.get("message"), Mapping):
        return {**stored["message"], "content": content}
    return {
        "id": synthetic_id("msg_", key),
        "type": "message",
        "role": "assistant",
        "model": params["model"],
        "content": content,
        "stop_reason": _foreign_stop(meta, any(c["type"] == "tool_use" for c in content)),
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _message(data: Mapping[str, Any]) -> Message:
    types = require("anthropic.types", "anthropic", _WHAT)
    message: Message = types.Message.construct(**data)
    return message


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
    return _message(_message_data(blocks, params, input_tokens, output_tokens, key, metadata))


def _hit_data(result: LlmCacheResult, params: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        return _message_data(
            blocks_of(result), params, result.input_tokens, result.output_tokens, result.key, result.metadata
        )
    except AgentCacheUsageError as exc:
        log.debug("agent-cache: entry %s is not an Anthropic message, calling the provider: %s", result.key, exc)
        return None


# ─── Streams ──────────────────────────────────────────────────────────────────


# Usage fields a message_delta repeats as cumulative totals (the API sends them when they apply).
_DELTA_USAGE = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "server_tool_use",
    "output_tokens_details",
)


def _events(message: Mapping[str, Any]) -> list[RawMessageStreamEvent]:
    types = require("anthropic.types", "anthropic", _WHAT)
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "stop_details": None,
        "usage": {**usage, "output_tokens": 0},
    }
    events: list[Any] = [types.RawMessageStartEvent.construct(type="message_start", message=start)]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            opened, delta = {**block, "text": ""}, [{"type": "text_delta", "text": block["text"]}]
        elif block["type"] == "tool_use":
            opened, delta = (
                {**block, "input": {}},
                [{"type": "input_json_delta", "partial_json": json.dumps(block["input"])}],
            )
        elif block["type"] == "thinking":
            opened = {**block, "thinking": "", "signature": ""}
            delta = [{"type": "thinking_delta", "thinking": block["thinking"]}]
            if block["signature"]:
                delta.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            opened, delta = block, []
        events.append(
            types.RawContentBlockStartEvent.construct(type="content_block_start", index=index, content_block=opened)
        )
        events += [
            types.RawContentBlockDeltaEvent.construct(type="content_block_delta", index=index, delta=d) for d in delta
        ]
        events.append(types.RawContentBlockStopEvent.construct(type="content_block_stop", index=index))
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": message.get("stop_sequence")}
    if message.get("stop_details") is not None:
        stop["stop_details"] = message["stop_details"]
    delta_usage = {"output_tokens": usage["output_tokens"]}
    delta_usage.update((name, usage[name]) for name in _DELTA_USAGE if usage.get(name) is not None)
    events.append(types.RawMessageDeltaEvent.construct(type="message_delta", delta=stop, usage=delta_usage))
    events.append(types.RawMessageStopEvent.construct(type="message_stop"))
    return events


class _EventAssembler:
    """Folds raw stream events into the ``Message`` they describe; ``message_stop`` marks a complete answer."""

    def __init__(self) -> None:
        self._message: dict[str, Any] | None = None
        self._json: dict[int, str] = {}
        self._stopped = False
        self._problem: str | None = None

    def feed(self, event: Any) -> None:
        data = _wire(event)
        kind = data.get("type")
        if kind == "message_start":
            self._message = {**data["message"], "content": list(data["message"].get("content") or [])}
            return
        message = self._message
        if message is None:
            return
        if kind == "content_block_start":
            message["content"].append(dict(data["content_block"]))
        elif kind == "content_block_delta":
            self._apply(message["content"][data["index"]], data["index"], data["delta"])
        elif kind == "content_block_stop":
            block = message["content"][data["index"]]
            if block.get("type") == "tool_use" and data["index"] in self._json:
                text = self._json.pop(data["index"])
                try:
                    block["input"] = json.loads(text) if text else {}
                except ValueError:  # arguments cut short by max_tokens: the SDK's partial parse cannot be stored
                    self._problem = "tool input that is not complete JSON cannot be stored"
        elif kind == "message_delta":
            message.update({k: v for k, v in (data.get("delta") or {}).items() if v is not None})
            usage = {k: v for k, v in (data.get("usage") or {}).items() if v is not None}
            message["usage"] = {**(message.get("usage") or {}), **usage}
        elif kind == "message_stop":
            self._stopped = True

    def _apply(self, block: dict[str, Any], index: int, delta: Mapping[str, Any]) -> None:
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta.get("text", "")
        elif kind == "input_json_delta":
            self._json[index] = self._json.get(index, "") + delta.get("partial_json", "")
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature", "")
        elif kind == "citations_delta":
            block["citations"] = [*(block.get("citations") or []), delta.get("citation")]

    def _complete(self) -> dict[str, Any]:
        if self._message is None or not self._stopped:
            raise IncompleteStreamError("the stream ended before message_stop")
        return self._message

    def response(self) -> Message:
        return _message(self._complete())

    def answer(self) -> Answer:
        if self._problem is not None:
            raise UncacheableResponseError(self._problem)
        return _answer(self._complete())


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
    require("anthropic", "anthropic", _WHAT)
    request = materialize(request)
    if stream:
        request["stream"] = True
    params = await prepare_params(with_client_headers(request, create), options)
    result = await lookup(cache, params)
    if result.hit and (data := _hit_data(result, params)) is not None:
        return ReplayStream(_events(data), _message(data)) if stream else _message(data)
    ensure_model_call_allowed(cache, result.key)  # only_if_cached: a hit that cannot be this response
    response = await create(**request)
    if stream:

        async def store(answer: Answer) -> None:
            await save(cache, params, answer, ttl)

        return RecordingStream(response, _EventAssembler(), store)
    if (answer := answer_of(lambda r: _answer(_wire(r)), response)) is not None:
        await save(cache, params, answer, ttl)
    return response  # type: ignore[no-any-return]
