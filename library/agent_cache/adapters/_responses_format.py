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

from ._blocks import binary_block, dump_arguments, extras, parse_arguments, plain, verbatim_arguments
from ._caching import (
    COMPLETE,
    Answer,
    UncacheableResponseError,
    echoed,
    foreign_finish,
    metadata,
    native,
    synthetic_id,
    tokens,
    without,
)
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

FORMAT = "openai.responses"
# The response's echo of transport-only request parameters: never stored, taken from the request on a hit (with
# the API's default when the request has none).
ECHOED = ("metadata", "user", "safety_identifier", "prompt_cache_key")
_ECHO_DEFAULTS: dict[str, Any] = {"metadata": {}}


def _finish(response: Mapping[str, Any]) -> str | None:
    """The neutral stop reason of a finished response; None when it is not one the cache stores."""
    status = response.get("status")
    incomplete = response.get("incomplete_details") or {}
    if response.get("error"):
        return None
    if status in (None, "completed") and not incomplete:
        return "stop"
    if status == "incomplete" and incomplete.get("reason") == "max_output_tokens":
        return "length"
    return None


def output_answer(response: Mapping[str, Any]) -> Answer:
    """A finished response as blocks, token counts and metadata; raises :class:`UncacheableResponseError`.

    Stored: completed responses and responses cut short by ``max_output_tokens``, refusals included. The metadata
    holds the response's own fields (id, ``created_at``, ``completed_at``, dated model, status, usage with its
    token details, the server's echo of the configuration...) except the echo of transport-only parameters, and one
    skeleton per output item (id, status, phase, part layout).
    """
    finish = _finish(response)
    if finish is None:
        details = response.get("incomplete_details") or response.get("error")
        raise UncacheableResponseError(f"response status {response.get('status')!r} ({details}): not stored")
    blocks, skeletons = read_output(response.get("output") or [], strict=False)
    if any(part.get("type") == "refusal" for item in skeletons for part in item.get("content") or ()):
        finish = "refusal"
    elif finish == "stop" and any(b["type"] == "tool_call" for b in blocks):
        finish = "tool_calls"
    meta = metadata(FORMAT, finish, response=without(response, ("output", "output_text", *ECHOED)), items=skeletons)
    usage = response.get("usage") or {}
    return Answer(blocks, tokens(usage.get("input_tokens"), usage.get("output_tokens")), meta)


def output_blocks(items: Sequence[Any]) -> list[ContentBlock]:
    """Output items as blocks alone (no metadata): raises for what a rebuild from blocks would change."""
    return read_output(items, strict=True)[0]


def read_output(items: Sequence[Any], *, strict: bool) -> tuple[list[ContentBlock], list[dict[str, Any]]]:
    """Blocks and item skeletons (each item's fields the blocks do not hold) of output items.

    ``strict``: for blocks stored without their skeletons, which rebuild consecutive text as one message and
    reasoning as one item per ``encrypted_content`` — so adjacent messages, message phases, adjacent reasoning
    items without encrypted content and refusal parts raise :class:`UncacheableResponseError`. With the skeletons
    they are rebuilt exactly.
    """
    blocks: list[ContentBlock] = []
    skeletons: list[dict[str, Any]] = []
    previous: str | None = None
    for raw in items:
        item = wire(raw)
        kind = item.get("type")
        if kind == "message":
            if strict and (previous == "message" or item.get("phase")):
                raise UncacheableResponseError("adjacent messages or message phases cannot be told apart once stored")
            layout: list[dict[str, Any]] = []
            for part in item.get("content") or ():
                if part.get("type") == "refusal" and not strict:
                    layout.append(dict(part))
                    continue
                if part.get("type") != "output_text" or part.get("annotations") or part.get("logprobs"):
                    raise UncacheableResponseError(f"a {part.get('type')!r} part with annotations/logprobs")
                blocks.append({"type": "text", "text": part.get("text", "")})
                layout.append(without(part, ("text",)))
            skeletons.append({**without(item, ("content",)), "content": layout})
        elif kind == "function_call":
            if item.get("namespace") or item.get("caller") or item.get("async"):
                raise UncacheableResponseError("a namespaced or program-called function call cannot be stored")
            arguments = item.get("arguments", "")
            args = parse_arguments(arguments)
            blocks.append(
                {"type": "tool_call", "id": item.get("call_id", ""), "name": item.get("name", ""), "args": args}
            )
            skeleton = without(item, ("call_id", "name", "arguments"))
            if (text := verbatim_arguments(arguments)) is not None:
                skeleton["arguments"] = text
            skeletons.append(skeleton)
        elif kind == "reasoning":
            if item.get("content"):
                raise UncacheableResponseError("raw reasoning text cannot be stored")
            if strict and previous == "reasoning" and not item.get("encrypted_content"):
                raise UncacheableResponseError("adjacent reasoning items cannot be told apart once stored")
            summary = [s.get("text", "") for s in item.get("summary") or ()]
            for index, text in enumerate(summary or [""]):
                reasoning: ReasoningBlock = {"type": "reasoning", "text": text}
                if index == 0 and item.get("encrypted_content"):
                    reasoning["opaqueSignature"] = item["encrypted_content"]
                blocks.append(reasoning)
            skeletons.append({**without(item, ("summary", "encrypted_content")), "summary": len(summary)})
        else:
            raise UncacheableResponseError(f"a {kind!r} output item cannot be stored")
        previous = kind
    return blocks, skeletons


def output_items(blocks: Sequence[ContentBlock], key: str | None) -> list[dict[str, Any]]:
    """Output items (wire dicts) for blocks stored without skeletons; ids are derived from the entry's key."""
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


def skeleton_items(blocks: Sequence[ContentBlock], skeletons: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Output items rebuilt exactly: each skeleton takes its blocks in order (its ids, statuses, parts kept)."""
    queue = list(blocks)

    def take(kind: str) -> Any:
        if not queue or queue[0]["type"] != kind:
            raise UncacheableResponseError(f"the stored item layout expects a {kind!r} block")
        return queue.pop(0)

    items: list[dict[str, Any]] = []
    for skeleton in skeletons:
        kind = skeleton.get("type")
        if kind == "message":
            content = [
                {**part, "text": take("text")["text"]} if part.get("type") == "output_text" else dict(part)
                for part in skeleton.get("content") or ()
            ]
            items.append({**skeleton, "content": content})
        elif kind == "function_call":
            block = take("tool_call")
            fields = {"call_id": block["id"], "name": block["name"], "arguments": dump_arguments(block["args"])}
            items.append({**fields, **skeleton})
        elif kind == "reasoning":
            count = int(skeleton.get("summary") or 0)
            taken = [take("reasoning") for _ in range(max(count, 1))]
            item = {**skeleton, "summary": [{"type": "summary_text", "text": b["text"]} for b in taken[:count]]}
            if taken[0].get("opaqueSignature"):
                item["encrypted_content"] = taken[0]["opaqueSignature"]
            items.append(item)
        else:
            raise UncacheableResponseError(f"a stored {kind!r} item cannot be rebuilt")
    if queue:
        raise UncacheableResponseError("the stored item layout does not hold every block")
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
    config = {
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
        **config,
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
    }


def hit_wire(
    blocks: Sequence[ContentBlock],
    params: Mapping[str, Any],
    *,
    input_tokens: int,
    output_tokens: int,
    key: str | None,
    meta: Mapping[str, Any] | None,
    request: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The wire ``Response`` of a hit; raises :class:`UncacheableResponseError` when the entry cannot be one.

    With this format's metadata it is the original response (a full one as stored from the Responses API, or the
    fields an Agents SDK ``ModelResponse`` had over a response derived from the request), with the transport-only
    echoes of ``request``. Without it, items and ids are derived from the blocks and the key, and the stop reason of
    another format's metadata decides the status: ``length`` is ``incomplete`` (``max_output_tokens``).
    """
    stored = native(meta, FORMAT)
    if stored is None:
        data = response_wire(
            params, output_items(blocks, key), input_tokens=input_tokens, output_tokens=output_tokens, key=key
        )
        finish = foreign_finish(meta)
        if finish == "length":
            data.update(status="incomplete", incomplete_details={"reason": "max_output_tokens"}, completed_at=None)
            if data["output"]:
                data["output"][-1]["status"] = "incomplete"
        elif finish not in COMPLETE:
            raise UncacheableResponseError(f"a {finish!r} answer stored by another adapter cannot be a response")
        return data
    items = skeleton_items(blocks, stored.get("items") or [])
    original = stored.get("response") or {}
    if original.get("object") == "response":  # stored from a whole Response
        data = {**original, "output": items}
    else:  # stored from an Agents SDK ModelResponse: its id and usage over a response derived from the request
        derived = response_wire(params, items, input_tokens=input_tokens, output_tokens=output_tokens, key=key)
        data = {**derived, **original}
    data.update({name: value for name, value in _ECHO_DEFAULTS.items() if name not in data})
    if request is not None:
        data.update(echoed(request, ECHOED))
    return data


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

    opening = {
        **response,
        "status": "in_progress",
        "output": [],
        "usage": None,
        "completed_at": None,
        "incomplete_details": None,
    }
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
                if part["type"] == "refusal":
                    emit("response.content_part.added", **at, content_index=index, part={**part, "refusal": ""})
                    emit("response.refusal.delta", **at, content_index=index, delta=part["refusal"])
                    emit("response.refusal.done", **at, content_index=index, refusal=part["refusal"])
                else:
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
    emit("response.incomplete" if response.get("status") == "incomplete" else "response.completed", response=response)
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
    "response.refusal.delta": "ResponseRefusalDeltaEvent",
    "response.refusal.done": "ResponseRefusalDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.reasoning_summary_part.added": "ResponseReasoningSummaryPartAddedEvent",
    "response.reasoning_summary_part.done": "ResponseReasoningSummaryPartDoneEvent",
    "response.reasoning_summary_text.delta": "ResponseReasoningSummaryTextDeltaEvent",
    "response.reasoning_summary_text.done": "ResponseReasoningSummaryTextDoneEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
}


def _event(data: dict[str, Any]) -> ResponseStreamEvent:
    responses = require("openai.types.responses", "openai", "agent_cache.adapters.openai_responses")
    event: ResponseStreamEvent = getattr(responses, _EVENT_CLASSES[data["type"]]).construct(**data)
    return event


class EventAssembler:
    """Keeps what a Responses event stream says about the final response.

    ``response.completed`` and ``response.incomplete`` end a response (``output_answer`` decides whether an
    incomplete one is stored: only a ``max_output_tokens`` cut is); ``response.failed`` and ``error`` do not.
    """

    def __init__(self) -> None:
        self._done_items: dict[int, dict[str, Any]] = {}
        self._final: dict[str, Any] | None = None
        self._failure: str | None = None

    def feed(self, event: Any) -> None:
        data = wire(event)
        kind = data.get("type")
        if kind == "response.output_item.done":
            self._done_items[int(data.get("output_index", len(self._done_items)))] = data["item"]
        elif kind in ("response.completed", "response.incomplete"):
            self._final = dict(data["response"])
            if not self._final.get("output") and self._done_items:
                # Some compatible servers send the final response without its output; the items came before.
                self._final["output"] = [item for _, item in sorted(self._done_items.items())]
        elif kind in ("response.failed", "error"):
            self._failure = str(kind)

    def final(self) -> dict[str, Any]:
        if self._failure is not None:
            raise UncacheableResponseError(f"the stream reported {self._failure}")
        if self._final is None:
            raise IncompleteStreamError("the stream ended before response.completed")
        return self._final

    def response(self) -> Response:
        return build_response(self.final())

    def answer(self) -> Answer:
        return output_answer(self.final())
