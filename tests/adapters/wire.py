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
    refusal: str | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal, "annotations": []}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-original",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_1",
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
        "usage": chat_usage(prompt_tokens, completion_tokens),
    }


def chat_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """Usage as OpenAI reports it, with cached prompt tokens and reasoning tokens in the details."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 2,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
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
    refusal_pieces: list[str] | None = None,
) -> list[tuple[str | None, Any]]:
    """SSE events of a streamed chat completion; tool_calls are ``(id, name, argument fragments)``."""
    base = {
        "id": "chatcmpl-streamed",
        "object": "chat.completion.chunk",
        "created": 1_700_000_001,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_2",
        "service_tier": "default",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> tuple[None, dict[str, Any]]:
        data = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return None, {**data, "obfuscation": "x" * len(json.dumps(delta))}  # per-chunk padding, as OpenAI sends

    first: dict[str, Any] = {"role": "assistant", "content": None if refusal_pieces else "", "refusal": None}
    events = [chunk(first)]
    events += [chunk({"content": piece}) for piece in text_pieces]
    events += [chunk({"refusal": piece}) for piece in refusal_pieces or ()]
    for index, (call_id, name, fragments) in enumerate(tool_calls or []):
        first_call = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        events.append(chunk({"tool_calls": [first_call]}))
        events += [chunk({"tool_calls": [{"index": index, "function": {"arguments": f}}]}) for f in fragments]
    events.append(chunk({}, finish_reason or ("tool_calls" if tool_calls else "stop")))
    if usage is not None:
        events.append((None, {**base, "choices": [], "usage": chat_usage(*usage)}))
    if done:
        events.append((None, "[DONE]"))
    return events


# ─── OpenAI Responses ─────────────────────────────────────────────────────────


def message_item(
    text: str,
    item_id: str = "msg_1",
    *,
    phase: str | None = None,
    refusal: str | None = None,
    status: str = "completed",
) -> dict[str, Any]:
    if refusal is not None:
        part: dict[str, Any] = {"type": "refusal", "refusal": refusal}
    else:
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    item = {"type": "message", "id": item_id, "role": "assistant", "status": status, "content": [part]}
    if phase is not None:
        item["phase"] = phase
    return item


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
    output: list[dict[str, Any]],
    *,
    status: str = "completed",
    usage: tuple[int, int] = (20, 7),
    incomplete_reason: str = "max_output_tokens",
    **config: Any,
) -> dict[str, Any]:
    """A Responses API body with the server's echo of its configuration and usage with token details."""
    return {
        "id": "resp_original",
        "object": "response",
        "created_at": 1_700_000_000,
        "completed_at": 1_700_000_002 if status == "completed" else None,
        "status": status,
        "error": None,
        "incomplete_details": None if status == "completed" else {"reason": incomplete_reason},
        "model": "gpt-5-2025-08-07",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "temperature": 1.0,
        "top_p": 1.0,
        "truncation": "disabled",
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "reasoning": {"effort": "medium", "summary": None},
        "service_tier": "default",
        "store": True,
        "metadata": {},
        "usage": {
            "input_tokens": usage[0],
            "input_tokens_details": {"cached_tokens": 5, "cache_write_tokens": 0},
            "output_tokens": usage[1],
            "output_tokens_details": {"reasoning_tokens": 3},
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
                if part["type"] == "refusal":
                    emit("response.content_part.added", **at, content_index=index, part={**part, "refusal": ""})
                    for piece in split(part["refusal"]):
                        emit("response.refusal.delta", **at, content_index=index, delta=piece)
                    emit("response.refusal.done", **at, content_index=index, refusal=part["refusal"])
                    emit("response.content_part.done", **at, content_index=index, part=part)
                    continue
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
    emit("response.completed" if body["status"] == "completed" else f"response.{body['status']}", response=body)
    return events


# ─── Anthropic Messages ───────────────────────────────────────────────────────


def anthropic_message(
    content: list[dict[str, Any]],
    *,
    stop_reason: str | None = None,
    stop_sequence: str | None = None,
    usage: tuple[int, int] = (25, 11),
    stop_details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Messages API body; usage with prompt-cache reads and writes (split by TTL) and the service tier."""
    has_tool = any(block["type"] == "tool_use" for block in content)
    message = {
        "id": "msg_original",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6-20260101",
        "content": content,
        "stop_reason": stop_reason or ("tool_use" if has_tool else "end_turn"),
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": usage[0],
            "output_tokens": usage[1],
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 2000,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 0},
            "service_tier": "standard",
        },
    }
    if stop_details is not None:
        message["stop_details"] = stop_details
    return message


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
    if message.get("stop_details"):
        delta["stop_details"] = message["stop_details"]
    totals = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
    emit("message_delta", delta=delta, usage={name: usage[name] for name in totals})  # cumulative, as the API sends
    emit("message_stop")
    return events
