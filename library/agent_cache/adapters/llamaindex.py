"""LlamaIndex chat messages: ``ChatMessage`` lists to cache params, ``ChatResponse`` to content blocks and back.

::

    from agent_cache.adapters.llamaindex import from_blocks, prepare_params, to_answer

    params = await prepare_params(messages, model=llm.metadata.model_name, temperature=0.2, tools=tools)
    hit = await cache.llm.check(params)
    if hit.hit:
        response = from_blocks(hit.content_blocks or [], hit.metadata)
    else:
        response = await llm.achat(messages)
        answer = to_answer(response)
        await cache.llm.store_multipart(params, answer.blocks, answer.store_options())

The model, ``temperature``, ``top_p``, ``max_tokens``, ``tools`` and the normalizer may also come in the options, as
``betterdb-agent-cache`` takes them: ``prepare_params(messages, LlamaIndexPrepareOptions(model="gpt-4o"))``.

The key holds the model, every keyword parameter given (``temperature``, ``max_tokens``, ``reasoning_effort``...,
by name), the tools' names, descriptions and parameter schemas (never their callables), and the messages: role,
``additional_kwargs`` (tool calls and ids of older integrations) and blocks — text, tool calls (arguments as JSON),
thinking, and images, audio, video and documents through the binary normalizer (inline bytes, a path and a data
URL of the same bytes give the same key). Messages may be ``ChatMessage`` objects or dicts of their fields — or the
reference's dicts, with ``options.tool_call`` (``id``, ``name``, ``input``) and ``options.tool_result`` (``id``,
``result``); a dict field a ``ChatMessage`` cannot hold is an error, never silently left out of the key.

``to_answer(response)`` also returns response metadata (each block's other fields — a thinking block's
``additional_information``, where integrations keep Anthropic's signature —, ``additional_kwargs``, ``logprobs``,
``raw`` as JSON) for ``store_multipart(params, answer.blocks, answer.store_options())``;
``from_blocks(hit.content_blocks, hit.metadata)`` puts it back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent_cache._errors import AgentCacheUsageError
from agent_cache.normalizer import BinaryNormalizer, default_normalizer
from agent_cache.types import ContentBlock, LlmCacheParams, ReasoningBlock

from ._blocks import Kind, binary_block, extras, parse_arguments, passthrough_params, plain
from ._caching import Answer, UncacheableResponseError, metadata, native, tokens, without
from ._sdk import require

if TYPE_CHECKING:
    from llama_index.core.base.llms.types import ChatMessage, ChatResponse

__all__ = [
    "Answer",
    "LlamaIndexPrepareOptions",
    "UncacheableResponseError",
    "from_blocks",
    "prepare_params",
    "to_answer",
    "to_blocks",
    "usage_tokens",
]

_WHAT = "agent_cache.adapters.llamaindex"
# (block_type, attribute holding inline bytes, mimetype attribute, content-block kind)
_BINARY = {
    "image": ("image", "image_mimetype", "image"),
    "audio": ("audio", None, "audio"),
    "video": ("video", "video_mimetype", "document"),
    "document": ("data", "document_mimetype", "document"),
}


@dataclass
class LlamaIndexPrepareOptions:
    """Options of :func:`prepare_params`. As in ``betterdb-agent-cache``, the model, sampling parameters and tools may
    be given here instead of as keywords; a value given both ways must be the same."""

    model: str = ""
    normalizer: BinaryNormalizer = default_normalizer
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    tools: Sequence[Any] | None = None


def _merged(name: str, keyword: Any, option: Any) -> Any:
    """The keyword's value, or the option's; both given and different is a usage error."""
    if keyword is None or option is None or keyword == option:
        return option if keyword is None else keyword
    raise AgentCacheUsageError(
        f"{name} is given twice with different values: {keyword!r} as a keyword, {option!r} in LlamaIndexPrepareOptions"
    )


def _tool(tool: Any) -> Any:
    metadata = getattr(tool, "metadata", None)
    if metadata is None:
        return plain(tool)
    return {
        "type": "function",
        "function": {
            "name": metadata.name,
            "description": metadata.description,
            "parameters": metadata.get_parameters_dict(),
        },
    }


async def prepare_params(
    messages: Sequence[ChatMessage | Mapping[str, Any]],
    opts: LlamaIndexPrepareOptions | None = None,
    *,
    model: str | None = None,
    tools: Sequence[Any] | None = None,
    normalizer: BinaryNormalizer | None = None,
    **params: Any,
) -> LlmCacheParams:
    """Cache params for a chat call with ``messages``; ``params`` are the call's other parameters, kept by name.

    ``model``, ``tools``, ``normalizer``, ``temperature``, ``top_p`` and ``max_tokens`` may come from ``opts``
    (``LlamaIndexPrepareOptions(model="gpt-4o", temperature=0.2)``) or from the keywords.
    """
    types = require("llama_index.core.base.llms.types", "llamaindex", _WHAT)
    options = opts or LlamaIndexPrepareOptions()
    model = _merged("model", model or None, options.model or None)
    if not isinstance(model, str) or not model:
        raise AgentCacheUsageError("prepare_params needs a model: model=... or LlamaIndexPrepareOptions(model=...)")
    tools = _merged("tools", tools or None, options.tools or None)
    normalizer = normalizer or options.normalizer
    for name in ("temperature", "top_p", "max_tokens"):
        params[name] = _merged(name, params.get(name), getattr(options, name))
    result = passthrough_params(params, ())
    result["model"] = model
    if tools:
        result["tools"] = [_tool(t) for t in tools]
    canonical = []
    for index, message in enumerate(messages):
        chat = _chat_message(types, message, index) if isinstance(message, Mapping) else message
        entry: dict[str, Any] = {
            "role": getattr(chat.role, "value", chat.role),
            "content": [await _block(b, normalizer) for b in chat.blocks],
        }
        if chat.additional_kwargs:
            entry["additional_kwargs"] = plain(chat.additional_kwargs)
        canonical.append(entry)
    result["messages"] = canonical
    return result


def _chat_message(types: Any, message: Mapping[str, Any], index: int) -> Any:
    """A dict message as a ``ChatMessage``: its fields, or the reference's ``options`` (``tool_call``/``tool_result``).

    A field ``ChatMessage`` does not know would be dropped by its validation, and two different messages would share a
    key: it is an error instead.
    """
    data = dict(message)
    options = data.pop("options", None) or {}
    if not isinstance(options, Mapping) or set(options) - {"tool_call", "tool_result"}:
        raise AgentCacheUsageError(
            f"messages[{index}].options may hold tool_call and tool_result only, got {options!r}"
        )
    if data.get("role") == "memory":
        data["role"] = "system"  # LlamaIndex.TS's memory role, as the reference maps it
    if (result := options.get("tool_result")) is not None:
        rest = {k: v for k, v in result.items() if k not in ("id", "result")}
        content = result.get("result", "")
        data["role"] = "tool"
        data["content"] = content if isinstance(content, str) else json.dumps(plain(content), sort_keys=True)
        data["additional_kwargs"] = {**(data.get("additional_kwargs") or {}), "tool_call_id": result["id"], **rest}
    if (calls := options.get("tool_call")) is not None:
        text = data.pop("content", None)
        blocks = [types.TextBlock(text=text)] if isinstance(text, str) and text else []
        for call in calls if isinstance(calls, list) else [calls]:
            extra = set(call) - {"id", "name", "input"}
            if extra:
                raise AgentCacheUsageError(f"messages[{index}].options.tool_call has unknown fields {sorted(extra)}")
            kwargs = call.get("input")
            blocks.append(
                types.ToolCallBlock(tool_call_id=call["id"], tool_name=call["name"], tool_kwargs=kwargs or {})
            )
        data["blocks"] = [*(data.get("blocks") or ()), *blocks]
    unknown = set(data) - {"content", *types.ChatMessage.model_fields}  # content: a shorthand for the blocks
    if unknown:
        raise AgentCacheUsageError(
            f"messages[{index}] has fields a LlamaIndex ChatMessage does not hold: {sorted(unknown)}; they would be "
            "left out of the cache key"
        )
    return types.ChatMessage.model_validate(data)


async def _block(block: Any, normalizer: BinaryNormalizer) -> Any:
    kind = block.block_type
    if kind == "text":
        return {"type": "text", "text": block.text}
    if kind == "tool_call":
        return {
            "type": "tool_call",
            "id": block.tool_call_id or "",
            "name": block.tool_name,
            "args": parse_arguments(block.tool_kwargs),
        }
    if kind == "thinking":
        reasoning = {"type": "reasoning", "text": block.content or ""}
        return {**reasoning, **extras(block.model_dump(mode="json"), ("block_type", "content", "num_tokens"))}
    if kind in _BINARY:
        return await _binary(block, normalizer)
    return plain(block)  # cache points, citations and future kinds: verbatim


async def _binary(block: Any, normalizer: BinaryNormalizer) -> Any:
    data_attr, mimetype_attr, content_kind = _BINARY[block.block_type]
    binary_kind: Kind = content_kind  # type: ignore[assignment]
    media_type = getattr(block, mimetype_attr, None) if mimetype_attr else None
    if media_type is None and block.block_type == "audio" and getattr(block, "format", None):
        media_type = f"audio/{block.format}"
    skip = {"block_type", data_attr, "path", "url", "format", *((mimetype_attr,) if mimetype_attr else ())}
    rest = extras(block.model_dump(mode="json", exclude={data_attr}), skip)
    if block.block_type == "video":
        rest["blockType"] = "video"  # same bytes as a document and as a video are different requests
    url = str(block.url) if getattr(block, "url", None) is not None else None
    if url is not None and getattr(block, data_attr, None) is None and block.path is None:
        return await binary_block(binary_kind, normalizer, url=url, media_type=media_type, **rest)
    resolve = getattr(block, f"resolve_{block.block_type}")  # resolve_image(as_base64=True) etc.
    encoded = resolve(as_base64=True).read()
    return await binary_block(binary_kind, normalizer, base64_data=encoded.decode(), media_type=media_type, **rest)


FORMAT = "llamaindex"
# What the blocks hold of each LlamaIndex block type; its other fields (thinking's num_tokens and
# additional_information — Anthropic's signature —, future fields) are metadata.
_IN_BLOCKS = {
    "text": ("block_type", "text"),
    "tool_call": ("block_type", "tool_call_id", "tool_name", "tool_kwargs"),
    "thinking": ("block_type", "content"),
}
# A raw provider response's stop reason, for adapters of other formats that may share the entry.
_RAW_FINISHES = {
    "length": "length",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "stop_sequence": "stop_sequence",
    "refusal": "refusal",
}


def _json_or_none(value: Any) -> Any:
    """``value`` as JSON values, losslessly (None fields kept), or None when it has no JSON form."""
    from pydantic_core import to_jsonable_python  # LlamaIndex is built on pydantic

    try:
        data = to_jsonable_python(value)
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError):  # PydanticSerializationError is a ValueError: an object with no JSON form
        return None
    return data


def _raw_finish(raw: Any) -> str | None:
    """The neutral stop reason of an OpenAI- or Anthropic-shaped raw response, when it says one."""
    data = _json_or_none(raw)
    if not isinstance(data, Mapping):
        return None
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        reason = choices[0].get("finish_reason")
        message = choices[0].get("message")
        if isinstance(message, Mapping) and message.get("refusal"):
            return "refusal"
    else:
        reason = data.get("stop_reason")
    return _RAW_FINISHES.get(reason) if isinstance(reason, str) else None


def to_answer(response: ChatResponse) -> Answer:
    """Blocks, token counts and metadata for ``cache.llm.store_multipart(params, a.blocks, a.store_options())``.

    The metadata holds each block's fields the content blocks do not (a thinking block's ``num_tokens`` and
    ``additional_information``, where integrations keep Anthropic's signature; a tool call's argument text), the
    response's ``additional_kwargs`` and ``logprobs``, and ``raw`` as JSON (dropped when it has no JSON form).
    Raises :class:`UncacheableResponseError` for other block kinds and message ``additional_kwargs``.
    """
    blocks: list[ContentBlock] = []
    fields: list[dict[str, Any]] = []
    for block in response.message.blocks:
        if block.block_type == "text":
            blocks.append({"type": "text", "text": block.text})
        elif block.block_type == "tool_call":
            args = parse_arguments(block.tool_kwargs)
            blocks.append({"type": "tool_call", "id": block.tool_call_id or "", "name": block.tool_name, "args": args})
        elif block.block_type == "thinking":
            reasoning: ReasoningBlock = {"type": "reasoning", "text": block.content or ""}
            blocks.append(reasoning)
        else:
            raise UncacheableResponseError(f"a {block.block_type!r} block cannot be stored")
        dumped = block.model_dump(mode="json")
        extra = {k: v for k, v in without(dumped, _IN_BLOCKS[block.block_type]).items() if v != {}}
        if block.block_type == "tool_call" and not isinstance(block.tool_kwargs, dict):
            extra["tool_kwargs"] = block.tool_kwargs  # the argument text, exactly
        if block.block_type == "tool_call" and block.tool_call_id is None:
            extra["tool_call_id"] = None
        fields.append(extra)
    if response.message.additional_kwargs:
        raise UncacheableResponseError("additional_kwargs (provider tool calls, ids) cannot be stored")
    finish = _raw_finish(response.raw) or ("tool_calls" if any(b["type"] == "tool_call" for b in blocks) else "stop")
    meta = metadata(
        FORMAT,
        finish,
        blocks=fields if any(fields) else None,
        additional_kwargs=_json_or_none(response.additional_kwargs) or None,
        logprobs=_json_or_none(response.logprobs),
        raw=_json_or_none(response.raw),
    )
    return Answer(blocks, usage_tokens(response), meta)


def to_blocks(response: ChatResponse) -> list[ContentBlock]:
    """The response message as content blocks; raises :class:`UncacheableResponseError` for other block kinds."""
    return to_answer(response).blocks


def usage_tokens(response: ChatResponse) -> dict[str, int] | None:
    """Token counts from ``raw.usage`` when the integration exposes them (OpenAI- or Anthropic-shaped)."""
    raw = response.raw
    usage = raw.get("usage") if isinstance(raw, Mapping) else getattr(raw, "usage", None)
    if usage is None:
        return None
    data = plain(usage) if not isinstance(usage, Mapping) else dict(usage)
    return tokens(
        data.get("prompt_tokens", data.get("input_tokens")), data.get("completion_tokens", data.get("output_tokens"))
    )


def from_blocks(blocks: Sequence[ContentBlock], metadata: Mapping[str, Any] | None = None) -> ChatResponse:
    """An assistant ``ChatResponse`` rebuilt from stored blocks (text, tool calls, thinking).

    With the entry's ``metadata`` (``LlmCacheResult.metadata``) written by :func:`to_answer`, each block gets its
    other fields back and the response its ``additional_kwargs``, ``logprobs`` and ``raw`` (as JSON: a dict, not
    the provider SDK's object).
    """
    types = require("llama_index.core.base.llms.types", "llamaindex", _WHAT)
    stored = native(metadata, FORMAT) or {}
    fields: list[Mapping[str, Any]] = stored.get("blocks") or [{} for _ in blocks]
    if len(fields) != len(blocks):
        raise AgentCacheUsageError("the stored block layout does not match the blocks")
    out: list[Any] = []
    for block, extra in zip(blocks, fields, strict=True):
        if block["type"] == "text":
            out.append(types.TextBlock(**{"text": block["text"], **extra}))
        elif block["type"] == "tool_call":
            call = {"tool_call_id": block["id"], "tool_name": block["name"], "tool_kwargs": block["args"]}
            out.append(types.ToolCallBlock(**{**call, **extra}))
        elif block["type"] == "reasoning":
            out.append(types.ThinkingBlock(**{"content": block["text"], **extra}))
        else:
            raise AgentCacheUsageError(f"a {block['type']!r} block cannot be part of a LlamaIndex chat response")
    response: ChatResponse = types.ChatResponse(
        message=types.ChatMessage(role="assistant", blocks=out),
        raw=stored.get("raw"),
        logprobs=stored.get("logprobs"),
        additional_kwargs=stored.get("additional_kwargs") or {},
    )
    return response
