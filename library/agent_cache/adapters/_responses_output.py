"""Responses API output items as content blocks and back, and the ``Response`` a hit rebuilds.

Blocks map one to one onto output items (see :mod:`._responses_format`); the metadata keeps one skeleton per item
(id, status, phase, part layout) so a stored response is rebuilt exactly. Entries without it are rebuilt from the
blocks, the request and the key.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agent_cache.types import ContentBlock, ReasoningBlock

from ._blocks import dump_arguments, parse_arguments, verbatim_arguments
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

if TYPE_CHECKING:
    from openai.types.responses import Response

FORMAT = "openai.responses"
# The response's echo of transport-only request parameters: never stored, taken from the request on a hit (with
# the API's default when the request has none).
ECHOED = ("metadata", "user", "safety_identifier", "prompt_cache_key")
_ECHO_DEFAULTS: dict[str, Any] = {"metadata": {}}


def wire(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    dumped: dict[str, Any] = obj.model_dump(mode="json", by_alias=True)
    return dumped


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
