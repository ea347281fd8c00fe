"""The OpenAI Responses format, shared by the Responses adapter and the OpenAI Agents SDK wrapper.

Input items become canonical messages for the key; output items become content blocks and back; a stored answer
replays as the Responses API's own stream events. Everything here works on wire-format dicts, and SDK objects are
built the way the SDK builds them from a server's JSON (``construct``: lenient, recursive), so a rebuilt response
is what the client would have parsed.

Blocks map one to one onto output items: consecutive text blocks are the ``output_text`` parts of one message;
a ``function_call`` is a tool-call block (``call_id`` kept); a reasoning item is one reasoning block per summary
part, the first carrying ``encrypted_content`` as ``opaqueSignature``. Output that this mapping cannot carry back
faithfully (hosted tools, citations, refusals, logprobs, message phases, raw reasoning text) is not stored.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agent_cache.normalizer import BinaryNormalizer
from agent_cache.types import ContentBlock, ReasoningBlock

from ._blocks import binary_block, dump_arguments, extras, parse_arguments, plain
from ._caching import Answer, UncacheableResponseError, synthetic_id, tokens
from ._sdk import require
from ._stream import IncompleteStreamError

if TYPE_CHECKING:
    from openai.types.responses import Response, ResponseStreamEvent

_ITEM_VOLATILE = ("id", "status")  # server-assigned, not what the model reads


def wire(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    dumped: dict[str, Any] = obj.model_dump(mode="json", by_alias=True)
    return dumped


# ─── Input items → canonical messages ─────────────────────────────────────────


async def normalize_input(items: Any, normalizer: BinaryNormalizer) -> list[dict[str, Any]]:
    """``input`` (a string or a list of items, dicts or SDK objects) as canonical messages for the key."""
    if isinstance(items, str):
        return [{"role": "user", "content": [{"type": "text", "text": items}]}]
    return [await _item(plain(item), normalizer) for item in items or ()]


async def _item(item: Mapping[str, Any], normalizer: BinaryNormalizer) -> dict[str, Any]:
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        content = item.get("content")
        blocks = [] if content is None else await _parts(content, normalizer)
        return {
            "role": item.get("role"),
            "content": blocks,
            **extras(item, ("type", "role", "content", *_ITEM_VOLATILE)),
        }
    if kind == "function_call":
        call = {
            "type": "tool_call",
            "id": item.get("call_id", ""),
            "name": item.get("name", ""),
            "args": parse_arguments(item.get("arguments", "")),
            **extras(item, ("type", "call_id", "name", "arguments", *_ITEM_VOLATILE)),
        }
        return {"role": "assistant", "content": [call]}
    if kind == "function_call_output":
        output = item.get("output")
        blocks = await _parts(output if output is not None else "", normalizer)
        rest = extras(item, ("type", "call_id", "output", *_ITEM_VOLATILE))
        return {"role": "tool", "toolCallId": item.get("call_id", ""), "content": blocks, **rest}
    if kind == "reasoning":
        summary = [s.get("text", "") for s in item.get("summary") or ()] or [""]
        blocks = [{"type": "reasoning", "text": text} for text in summary]
        if item.get("encrypted_content"):
            blocks[0]["opaqueSignature"] = item["encrypted_content"]
        blocks[0].update(extras(item, ("type", "summary", "encrypted_content", *_ITEM_VOLATILE)))
        return {"role": "assistant", "content": blocks}
    return dict(item)  # item references, hosted-tool calls and future kinds: verbatim


async def _parts(content: Any, normalizer: BinaryNormalizer) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[Any] = []
    for part in content:
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            blocks.append({"type": "text", "text": part.get("text", ""), **extras(part, ("type", "text"))})
        elif kind == "input_image":
            rest = extras(part, ("type", "image_url", "file_id"))
            if part.get("file_id"):
                blocks.append(
                    await binary_block("image", normalizer, file_id=part["file_id"], provider="openai", **rest)
                )
            else:
                blocks.append(await binary_block("image", normalizer, url=part.get("image_url") or "", **rest))
        elif kind == "input_file":
            rest = extras(part, ("type", "file_id", "file_data", "file_url"))
            if part.get("file_id"):
                block = await binary_block("document", normalizer, file_id=part["file_id"], provider="openai", **rest)
            elif part.get("file_data"):
                block = await binary_block("document", normalizer, base64_data=part["file_data"], **rest)
            elif part.get("file_url"):
                block = await binary_block("document", normalizer, url=part["file_url"], **rest)
            else:
                block = plain(part)
            blocks.append(block)
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            audio_format = audio.get("format")
            media_type = f"audio/{audio_format}" if audio_format else None
            blocks.append(
                await binary_block("audio", normalizer, base64_data=audio.get("data", ""), media_type=media_type)
            )
        else:
            blocks.append(plain(part))
    return blocks


# ─── Output items ↔ blocks ────────────────────────────────────────────────────


def output_answer(response: Mapping[str, Any]) -> Answer:
    """A completed response's output as blocks and token counts; raises :class:`UncacheableResponseError`."""
    status = response.get("status")
    if status not in (None, "completed") or response.get("error") or response.get("incomplete_details"):
        raise UncacheableResponseError(f"response status {status!r}: only completed responses are stored")
    blocks = output_blocks(response.get("output") or [])
    usage = response.get("usage") or {}
    return Answer(blocks, tokens(usage.get("input_tokens"), usage.get("output_tokens")))


def output_blocks(items: Sequence[Any]) -> list[ContentBlock]:
    blocks: list[ContentBlock] = []
    previous: str | None = None
    for raw in items:
        item = wire(raw)
        kind = item.get("type")
        if kind == "message":
            if previous == "message" or item.get("phase"):
                raise UncacheableResponseError("adjacent messages or message phases cannot be told apart once stored")
            for part in item.get("content") or ():
                if part.get("type") != "output_text" or part.get("annotations") or part.get("logprobs"):
                    raise UncacheableResponseError(f"a {part.get('type')!r} part with annotations/logprobs")
                blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "function_call":
            if item.get("namespace") or item.get("caller") or item.get("async"):
                raise UncacheableResponseError("a namespaced or program-called function call cannot be stored")
            args = parse_arguments(item.get("arguments", ""))
            blocks.append(
                {"type": "tool_call", "id": item.get("call_id", ""), "name": item.get("name", ""), "args": args}
            )
        elif kind == "reasoning":
            if item.get("content"):
                raise UncacheableResponseError("raw reasoning text cannot be stored")
            if previous == "reasoning" and not item.get("encrypted_content"):
                raise UncacheableResponseError("adjacent reasoning items cannot be told apart once stored")
            summary = [s.get("text", "") for s in item.get("summary") or ()] or [""]
            for index, text in enumerate(summary):
                reasoning: ReasoningBlock = {"type": "reasoning", "text": text}
                if index == 0 and item.get("encrypted_content"):
                    reasoning["opaqueSignature"] = item["encrypted_content"]
                blocks.append(reasoning)
        else:
            raise UncacheableResponseError(f"a {kind!r} output item cannot be stored")
        previous = kind
    return blocks


def output_items(blocks: Sequence[ContentBlock], key: str | None) -> list[dict[str, Any]]:
    """Output items (wire dicts) for stored blocks; ids are derived from the entry's key."""
    items: list[dict[str, Any]] = []
    for block in blocks:
        last = items[-1] if items else None
        index = len(items)
        if block["type"] == "text":
            part = {"type": "output_text", "text": block["text"], "annotations": [], "logprobs": []}
            if last is not None and last["type"] == "message":
                last["content"].append(part)
            else:
                message_id = synthetic_id("msg_", key, index)
                items.append(
                    {"type": "message", "id": message_id, "role": "assistant", "status": "completed", "content": [part]}
                )
        elif block["type"] == "tool_call":
            items.append(
                {
                    "type": "function_call",
                    "id": synthetic_id("fc_", key, index),
                    "call_id": block["id"],
                    "name": block["name"],
                    "arguments": dump_arguments(block["args"]),
                    "status": "completed",
                }
            )
        elif block["type"] == "reasoning":
            continues = last is not None and last["type"] == "reasoning" and "opaqueSignature" not in block
            if not continues:
                items.append({"type": "reasoning", "id": synthetic_id("rs_", key, index), "summary": []})
                if block.get("opaqueSignature"):
                    items[-1]["encrypted_content"] = block["opaqueSignature"]
            if block["text"] or continues:
                items[-1]["summary"].append({"type": "summary_text", "text": block["text"]})
        else:
            raise UncacheableResponseError(f"a {block['type']!r} block cannot be part of a response")
    return items


def response_wire(
    params: Mapping[str, Any],
    output: list[dict[str, Any]],
    *,
    input_tokens: int,
    output_tokens: int,
    key: str | None,
) -> dict[str, Any]:
    """A completed ``Response`` as the server would send it, echoing the request's configuration."""
    now = time.time()
    echoed = {
        name: params[name]
        for name in (
            "instructions",
            "temperature",
            "top_p",
            "max_output_tokens",
            "max_tool_calls",
            "previous_response_id",
            "reasoning",
            "text",
            "truncation",
            "top_logprobs",
            "prompt",
            "prompt_cache_key",
            "service_tier",
            "background",
        )
        if params.get(name) is not None
    }
    return {
        "id": synthetic_id("resp_", key),
        "object": "response",
        "created_at": now,
        "completed_at": now,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "model": params["model"],
        "output": output,
        "parallel_tool_calls": params.get("parallel_tool_calls", True),
        "tool_choice": params.get("tool_choice", "auto"),
        "tools": params.get("tools") or [],
        **echoed,
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
    }


def build_response(data: Mapping[str, Any]) -> Response:
    responses = require("openai.types.responses", "openai", "agent_cache.adapters.openai_responses")
    response: Response = responses.Response.construct(**data)
    return response


# ─── Streams ──────────────────────────────────────────────────────────────────


def replay_events(response: Mapping[str, Any]) -> list[ResponseStreamEvent]:
    """The Responses API's event sequence for a completed response (one delta per part)."""
    events: list[dict[str, Any]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append({"type": kind, "sequence_number": len(events), **fields})

    opening = {**response, "status": "in_progress", "output": [], "usage": None, "completed_at": None}
    emit("response.created", response=opening)
    emit("response.in_progress", response=opening)
    for position, item in enumerate(response.get("output") or ()):
        at = {"output_index": position, "item_id": item["id"]}
        if item["type"] == "message":
            emit(
                "response.output_item.added",
                output_index=position,
                item={**item, "status": "in_progress", "content": []},
            )
            for index, part in enumerate(item["content"]):
                emit("response.content_part.added", **at, content_index=index, part={**part, "text": ""})
                emit("response.output_text.delta", **at, content_index=index, delta=part["text"], logprobs=[])
                emit("response.output_text.done", **at, content_index=index, text=part["text"], logprobs=[])
                emit("response.content_part.done", **at, content_index=index, part=part)
        elif item["type"] == "function_call":
            emit(
                "response.output_item.added",
                output_index=position,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            emit("response.function_call_arguments.delta", **at, delta=item["arguments"])
            emit("response.function_call_arguments.done", **at, arguments=item["arguments"])
        elif item["type"] == "reasoning":
            emit("response.output_item.added", output_index=position, item={**item, "summary": []})
            for index, part in enumerate(item["summary"]):
                emit("response.reasoning_summary_part.added", **at, summary_index=index, part={**part, "text": ""})
                emit("response.reasoning_summary_text.delta", **at, summary_index=index, delta=part["text"])
                emit("response.reasoning_summary_text.done", **at, summary_index=index, text=part["text"])
                emit("response.reasoning_summary_part.done", **at, summary_index=index, part=part)
        emit("response.output_item.done", output_index=position, item=item)
    emit("response.completed", response=response)
    return [_event(e) for e in events]


_EVENT_CLASSES = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.reasoning_summary_part.added": "ResponseReasoningSummaryPartAddedEvent",
    "response.reasoning_summary_part.done": "ResponseReasoningSummaryPartDoneEvent",
    "response.reasoning_summary_text.delta": "ResponseReasoningSummaryTextDeltaEvent",
    "response.reasoning_summary_text.done": "ResponseReasoningSummaryTextDoneEvent",
    "response.completed": "ResponseCompletedEvent",
}


def _event(data: dict[str, Any]) -> ResponseStreamEvent:
    responses = require("openai.types.responses", "openai", "agent_cache.adapters.openai_responses")
    event: ResponseStreamEvent = getattr(responses, _EVENT_CLASSES[data["type"]]).construct(**data)
    return event


class EventAssembler:
    """Keeps what a Responses event stream says about the final response: ``response.completed`` is the end."""

    def __init__(self) -> None:
        self._done_items: dict[int, dict[str, Any]] = {}
        self._completed: dict[str, Any] | None = None
        self._failure: str | None = None

    def feed(self, event: Any) -> None:
        data = wire(event)
        kind = data.get("type")
        if kind == "response.output_item.done":
            self._done_items[int(data.get("output_index", len(self._done_items)))] = data["item"]
        elif kind == "response.completed":
            self._completed = dict(data["response"])
            if not self._completed.get("output") and self._done_items:
                # Some compatible servers send the final response without its output; the items came before.
                self._completed["output"] = [item for _, item in sorted(self._done_items.items())]
        elif kind in ("response.failed", "response.incomplete", "error"):
            self._failure = str(kind)

    def completed(self) -> dict[str, Any]:
        if self._failure is not None:
            raise UncacheableResponseError(f"the stream reported {self._failure}")
        if self._completed is None:
            raise IncompleteStreamError("the stream ended before response.completed")
        return self._completed

    def response(self) -> Response:
        return build_response(self.completed())

    def answer(self) -> Answer:
        return output_answer(self.completed())
