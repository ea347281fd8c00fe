"""A ``ChatCompletion`` as a cache answer (blocks, token counts, metadata) and rebuilt from one.

Stored answers carry this format's metadata, so a hit is the original completion; entries without it (older ones,
or stored by another adapter) are rebuilt from their blocks, the request and the stop reason they recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agent_cache._errors import AgentCacheUsageError
from agent_cache.types import ContentBlock, LlmCacheResult

from ._blocks import dump_arguments, parse_arguments, text_of, verbatim_arguments
from ._caching import (
    COMPLETE,
    Answer,
    UncacheableResponseError,
    blocks_of,
    echoed,
    foreign_finish,
    metadata,
    native,
    synthetic_id,
    tokens,
    without,
)
from ._sdk import require

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion

log = logging.getLogger("agent_cache.adapters")

FORMAT = "openai.chat"
# The completion's echo of transport-only request parameters: never stored, taken from the request on a hit.
_ECHOED = ("metadata",)
_FINISHES = ("stop", "tool_calls", "length")


def wire(obj: Any) -> dict[str, Any]:
    """A completion or chunk as its JSON dict (SDK objects dumped, mappings copied)."""
    if isinstance(obj, Mapping):
        return dict(obj)
    dumped: dict[str, Any] = obj.model_dump(mode="json")
    return dumped


def answer_of_completion(completion: Mapping[str, Any]) -> Answer:
    """Blocks, token counts and metadata of a completion; :class:`UncacheableResponseError` if they cannot hold it.

    Blocks hold text, ``reasoning_content`` and function calls (parsed arguments). The metadata holds the rest: the
    completion's fields (id, created, dated model, ``system_fingerprint``, ``service_tier``, usage with its token
    details), the choice's (``finish_reason``), the message's (``refusal``...) and each tool call's extra fields
    (and its argument text when it is not the compact dump of its JSON).
    """
    choices = completion.get("choices") or []
    if len(choices) != 1:
        raise UncacheableResponseError(f"{len(choices)} choices cannot be stored as one answer")
    choice = choices[0]
    message = choice.get("message") or {}
    for name in ("audio", "function_call", "annotations"):
        if message.get(name):
            raise UncacheableResponseError(f"the message has {name}, which the cache does not store")
    if choice.get("logprobs"):
        raise UncacheableResponseError("logprobs cannot be stored")
    finish = choice.get("finish_reason")
    if finish not in _FINISHES:
        raise UncacheableResponseError(f"finish_reason {finish!r}: only complete or truncated answers are stored")
    blocks: list[ContentBlock] = []
    if message.get("reasoning_content"):
        blocks.append({"type": "reasoning", "text": message["reasoning_content"]})
    if message.get("content") is not None:
        blocks.append({"type": "text", "text": message["content"]})
    calls = message.get("tool_calls") or []
    call_fields: list[dict[str, Any]] = []
    for call in calls:
        if call.get("type", "function") != "function":
            raise UncacheableResponseError(f"a {call.get('type')!r} tool call cannot be stored")
        function = call.get("function") or {}
        arguments = function.get("arguments") or ""
        blocks.append(
            {
                "type": "tool_call",
                "id": call.get("id") or "",
                "name": function.get("name") or "",
                "args": parse_arguments(arguments),
            }
        )
        fields = without(call, ("id", "type", "function", "index"))
        function_fields = without(function, ("name", "arguments"))
        if (text := verbatim_arguments(arguments)) is not None:
            function_fields["arguments"] = text
        if function_fields:
            fields["function"] = function_fields
        call_fields.append(fields)
    if message.get("refusal"):
        neutral = "refusal"
    elif finish == "length":
        neutral = "length"
    else:
        neutral = "tool_calls" if calls else "stop"
    meta = metadata(
        FORMAT,
        neutral,
        completion=without(completion, ("choices", *_ECHOED)),
        choice=without(choice, ("index", "message", "logprobs")),
        message=without(message, ("role", "content", "tool_calls", "reasoning_content")),
        tool_calls=call_fields if any(call_fields) else None,
    )
    usage = completion.get("usage") or {}
    return Answer(blocks, tokens(usage.get("prompt_tokens"), usage.get("completion_tokens")), meta)


def to_answer(completion: ChatCompletion | Mapping[str, Any]) -> Answer:
    """What ``cached_create`` stores: blocks, token counts and metadata (``answer.store_options(ttl)``).

    Raises :class:`UncacheableResponseError` for what the cache cannot hold (several choices, audio, annotations,
    logprobs, custom tool calls, ``content_filter``...). Truncated answers (``length``) and refusals are stored:
    the metadata says so, and :func:`from_blocks` rebuilds them with it.
    """
    return answer_of_completion(wire(completion))


def to_blocks(completion: ChatCompletion | Mapping[str, Any]) -> list[ContentBlock]:
    """The answer as content blocks, for a complete answer (``stop``/``tool_calls``) that blocks alone rebuild.

    Raises :class:`UncacheableResponseError` otherwise — including truncated answers and refusals, which need the
    metadata of :func:`to_answer` to be rebuilt faithfully.
    """
    return answer_of_completion(wire(completion)).complete().blocks


def usage_tokens(completion: ChatCompletion | Mapping[str, Any]) -> dict[str, int] | None:
    """``{"input": prompt_tokens, "output": completion_tokens}`` for ``LlmStoreOptions(tokens=...)``."""
    usage = wire(completion).get("usage") or {}
    return tokens(usage.get("prompt_tokens"), usage.get("completion_tokens"))


def _finish_reason(has_tool_calls: bool, tool_choice: Any) -> str:
    if not has_tool_calls:
        return "stop"
    # A named tool_choice makes OpenAI answer finish_reason="stop" even though the message calls the tool.
    forced = isinstance(tool_choice, Mapping) and tool_choice.get("type") in ("function", "custom")
    return "stop" if forced else "tool_calls"


def _foreign_finish_reason(meta: Mapping[str, Any] | None, has_tool_calls: bool, tool_choice: Any) -> str:
    """``finish_reason`` for an entry stored without Chat Completions metadata (legacy or another format)."""
    finish = foreign_finish(meta)
    if finish in COMPLETE:
        return _finish_reason(has_tool_calls, tool_choice)
    if finish == "length":
        return "length"
    if finish == "stop_sequence":
        return "stop"  # what Chat Completions reports when a stop sequence ended the answer
    raise AgentCacheUsageError(f"a {finish!r} answer stored by another adapter cannot be a chat completion")


def _completion_data(
    blocks: Sequence[ContentBlock],
    params: Mapping[str, Any],
    input_tokens: int,
    output_tokens: int,
    key: str | None,
    meta: Mapping[str, Any] | None,
) -> dict[str, Any]:
    stored = native(meta, FORMAT)
    call_fields: list[dict[str, Any]] = list((stored or {}).get("tool_calls") or ())
    message: dict[str, Any] = {"role": "assistant", "content": text_of(blocks), "refusal": None}
    reasoning = [str(b.get("text", "")) for b in blocks if b["type"] == "reasoning"]
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    calls: list[dict[str, Any]] = []
    for block in blocks:
        if block["type"] == "tool_call":
            fields = call_fields[len(calls)] if len(calls) < len(call_fields) else {}
            function = {
                "name": block["name"],
                "arguments": dump_arguments(block["args"]),
                **(fields.get("function") or {}),
            }
            calls.append({**fields, "id": block["id"], "type": "function", "function": function})
        elif block["type"] not in ("text", "reasoning"):
            raise AgentCacheUsageError(f"a {block['type']!r} block cannot be part of a chat completion")
    if calls:
        message["tool_calls"] = calls
    choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None}
    completion: dict[str, Any] = {
        "id": synthetic_id("chatcmpl-", key),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": params["model"],
        "choices": [choice],
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }
    if stored is None:
        choice["finish_reason"] = _foreign_finish_reason(meta, bool(calls), params.get("tool_choice"))
        return completion
    message.update(stored.get("message") or {})
    choice.update(stored.get("choice") or {})
    completion.update(stored.get("completion") or {})
    return completion


def from_blocks(
    blocks: Sequence[ContentBlock],
    params: Mapping[str, Any],
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> ChatCompletion:
    """Rebuild a ``ChatCompletion`` from stored blocks (text, reasoning, tool calls) for ``params``.

    With the entry's ``metadata`` (``LlmCacheResult.metadata``) written by this adapter, the completion is the
    original: id, ``created``, dated model, ``system_fingerprint``, ``service_tier``, ``finish_reason``, refusal and
    usage with its token details. Without it (older entries, ``cache.llm.store``) the id is derived from ``key``,
    ``created`` is now, ``model`` is the requested one and usage holds the given token counts; metadata of another
    adapter contributes its stop reason (``length`` stays ``length``), or raises ``AgentCacheUsageError`` for one a
    chat completion cannot express (a refusal).
    """
    chat = require("openai.types.chat", "openai", "agent_cache.adapters.openai")
    data = _completion_data(blocks, params, input_tokens, output_tokens, key, metadata)
    completion: ChatCompletion = chat.ChatCompletion.model_validate(data)
    return completion


def completion_of_hit(
    result: LlmCacheResult, params: Mapping[str, Any], request: Mapping[str, Any]
) -> ChatCompletion | None:
    """The completion a hit stands for, or None when the entry cannot be one (the caller asks the provider)."""
    chat = require("openai.types.chat", "openai", "agent_cache.adapters.openai")
    try:
        data = _completion_data(
            blocks_of(result), params, result.input_tokens, result.output_tokens, result.key, result.metadata
        )
        completion: ChatCompletion = chat.ChatCompletion.model_validate({**data, **echoed(request, _ECHOED)})
    except (AgentCacheUsageError, ValueError) as exc:  # ValueError: pydantic's ValidationError
        log.debug("agent-cache: entry %s is not a chat completion, calling the provider: %s", result.key, exc)
        return None
    return completion
