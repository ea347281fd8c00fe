"""Provider wire-format bodies and SSE event lists, as the real APIs send them (trimmed to what matters)."""

from __future__ import annotations

import json
from typing import Any

# ─── OpenAI Chat Completions ──────────────────────────────────────────────────


def chat_completion(
    content: str | None = "Valkey is an in-memory data store.",
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    *,
    model: str = "gpt-4o-2024-08-06",
    prompt_tokens: int = 12,
    completion_tokens: int = 9,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-original",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def function_call(call_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def chat_chunks(
    text_pieces: list[str],
    tool_calls: list[tuple[str, str, list[str]]] | None = None,
    *,
    finish_reason: str | None = None,
    usage: tuple[int, int] | None = (12, 9),
    done: bool = True,
) -> list[tuple[str | None, Any]]:
    """SSE events of a streamed chat completion; tool_calls are ``(id, name, argument fragments)``."""
    base = {"id": "chatcmpl-streamed", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "gpt-4o"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> tuple[None, dict[str, Any]]:
        return None, {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": piece}) for piece in text_pieces]
    for index, (call_id, name, fragments) in enumerate(tool_calls or []):
        first = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        events.append(chunk({"tool_calls": [first]}))
        events += [chunk({"tool_calls": [{"index": index, "function": {"arguments": f}}]}) for f in fragments]
    events.append(chunk({}, finish_reason or ("tool_calls" if tool_calls else "stop")))
    if usage is not None:
        prompt, completion = usage
        totals = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        events.append((None, {**base, "choices": [], "usage": totals}))
    if done:
        events.append((None, "[DONE]"))
    return events


# ─── OpenAI Responses ─────────────────────────────────────────────────────────


def message_item(text: str, item_id: str = "msg_1") -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "message", "id": item_id, "role": "assistant", "status": "completed", "content": [part]}


def function_call_item(call_id: str, name: str, args: dict[str, Any], item_id: str = "fc_1") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": json.dumps(args),
        "status": "completed",
    }


def reasoning_item(summary: list[str], encrypted: str | None = None, item_id: str = "rs_1") -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "reasoning",
        "id": item_id,
        "summary": [{"type": "summary_text", "text": s} for s in summary],
    }
    if encrypted is not None:
        item["encrypted_content"] = encrypted
    return item


def response_body(
    output: list[dict[str, Any]], *, status: str = "completed", usage: tuple[int, int] = (20, 7), **config: Any
) -> dict[str, Any]:
    return {
        "id": "resp_original",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "error": None,
        "incomplete_details": None if status == "completed" else {"reason": "max_output_tokens"},
        "model": "gpt-5-2025-08-07",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": usage[0],
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": usage[1],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage[0] + usage[1],
        },
        **config,
    }


def response_events(body: dict[str, Any], pieces: int = 3) -> list[tuple[str | None, Any]]:
    """The SSE events the Responses API sends for ``body``, text and arguments split into ``pieces`` deltas."""
    events: list[tuple[str | None, Any]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append((kind, {"type": kind, "sequence_number": len(events), **fields}))

    def split(text: str) -> list[str]:
        size = max(1, -(-len(text) // pieces))
        return [text[i : i + size] for i in range(0, len(text), size)] or [""]

    opening = {**body, "status": "in_progress", "output": [], "usage": None}
    emit("response.created", response=opening)
    emit("response.in_progress", response=opening)
    for position, item in enumerate(body["output"]):
        at = {"output_index": position, "item_id": item["id"]}
        if item["type"] == "message":
            emit("response.output_item.added", output_index=position, item={**item, "content": []})
            for index, part in enumerate(item["content"]):
                emit("response.content_part.added", **at, content_index=index, part={**part, "text": ""})
                for piece in split(part["text"]):
                    emit("response.output_text.delta", **at, content_index=index, delta=piece, logprobs=[])
                emit("response.output_text.done", **at, content_index=index, text=part["text"], logprobs=[])
                emit("response.content_part.done", **at, content_index=index, part=part)
        elif item["type"] == "function_call":
            emit("response.output_item.added", output_index=position, item={**item, "arguments": ""})
            for piece in split(item["arguments"]):
                emit("response.function_call_arguments.delta", **at, delta=piece)
            emit("response.function_call_arguments.done", **at, arguments=item["arguments"])
        elif item["type"] == "reasoning":
            emit("response.output_item.added", output_index=position, item={**item, "summary": []})
            for index, part in enumerate(item["summary"]):
                emit("response.reasoning_summary_part.added", **at, summary_index=index, part={**part, "text": ""})
                for piece in split(part["text"]):
                    emit("response.reasoning_summary_text.delta", **at, summary_index=index, delta=piece)
                emit("response.reasoning_summary_text.done", **at, summary_index=index, text=part["text"])
                emit("response.reasoning_summary_part.done", **at, summary_index=index, part=part)
        emit("response.output_item.done", output_index=position, item=item)
    emit("response.completed", response=body)
    return events


# ─── Anthropic Messages ───────────────────────────────────────────────────────


def anthropic_message(
    content: list[dict[str, Any]], *, stop_reason: str | None = None, usage: tuple[int, int] = (25, 11)
) -> dict[str, Any]:
    has_tool = any(block["type"] == "tool_use" for block in content)
    return {
        "id": "msg_original",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6-20260101",
        "content": content,
        "stop_reason": stop_reason or ("tool_use" if has_tool else "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage[0],
            "output_tokens": usage[1],
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def anthropic_events(message: dict[str, Any], pieces: int = 3) -> list[tuple[str | None, Any]]:
    """The SSE events of a streamed message, with pings, text/JSON/thinking split into ``pieces`` deltas."""
    events: list[tuple[str | None, Any]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append((kind, {"type": kind, **fields}))

    def split(text: str) -> list[str]:
        size = max(1, -(-len(text) // pieces))
        return [text[i : i + size] for i in range(0, len(text), size)]

    usage = message["usage"]
    emit(
        "message_start", message={**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    )
    emit("ping")
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            emit("content_block_start", index=index, content_block={**block, "text": ""})
            for piece in split(block["text"]):
                emit("content_block_delta", index=index, delta={"type": "text_delta", "text": piece})
        elif block["type"] == "tool_use":
            emit("content_block_start", index=index, content_block={**block, "input": {}})
            for piece in split(json.dumps(block["input"])):
                emit("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": piece})
        elif block["type"] == "thinking":
            emit("content_block_start", index=index, content_block={**block, "thinking": "", "signature": ""})
            for piece in split(block["thinking"]):
                emit("content_block_delta", index=index, delta={"type": "thinking_delta", "thinking": piece})
            emit("content_block_delta", index=index, delta={"type": "signature_delta", "signature": block["signature"]})
        emit("content_block_stop", index=index)
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    emit("message_delta", delta=delta, usage={"output_tokens": usage["output_tokens"]})
    emit("message_stop")
    return events
