"""Anthropic responses: a ``Message`` to a stored answer and back, and as the stream events that replay it.

Everything here works on wire-format dicts (a ``Message``'s JSON); SDK objects are built the way the SDK builds them
from a server's JSON (``construct``), and the SDK is imported only when one is built. The public face of all this
is :mod:`agent_cache.adapters.anthropic`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agent_cache._errors import AgentCacheUsageError
from agent_cache.types import ContentBlock, ReasoningBlock

from ._caching import (
    COMPLETE,
    Answer,
    UncacheableResponseError,
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
    from anthropic.types import Message, RawMessageStreamEvent

# The adapter a missing SDK is reported for.
ADAPTER = "agent_cache.adapters.anthropic"


# ─── Messages ─────────────────────────────────────────────────────────────────


def wire(obj: Any) -> dict[str, Any]:
    """An SDK object (or a mapping) as its JSON dict."""
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


def message_answer(message: Mapping[str, Any]) -> Answer:
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


def _foreign_stop(meta: Mapping[str, Any] | None, has_tool_use: bool) -> str:
    """``stop_reason`` for an entry stored without Anthropic metadata (legacy or another format)."""
    finish = foreign_finish(meta)
    if finish in COMPLETE:
        return "tool_use" if has_tool_use else "end_turn"
    if finish == "length":
        return "max_tokens"
    # stop_sequence without the sequence (Chat Completions does not say which), a refusal of another provider...
    raise AgentCacheUsageError(f"a {finish!r} answer stored by another adapter cannot be an Anthropic message")


def message_data(
    blocks: Sequence[ContentBlock],
    params: Mapping[str, Any],
    input_tokens: int,
    output_tokens: int,
    key: str | None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The wire form of the ``Message`` that stored blocks rebuild (the original one when ``meta`` is this format's)."""
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


def build_message(data: Mapping[str, Any]) -> Message:
    types = require("anthropic.types", "anthropic", ADAPTER)
    message: Message = types.Message.construct(**data)
    return message


# ─── Streams ──────────────────────────────────────────────────────────────────


# Usage fields a message_delta repeats as cumulative totals (the API sends them when they apply).
_DELTA_USAGE = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "server_tool_use",
    "output_tokens_details",
)


def replay_events(message: Mapping[str, Any]) -> list[RawMessageStreamEvent]:
    """The events a live stream of ``message`` sends, for replaying a hit with ``stream=True``."""
    types = require("anthropic.types", "anthropic", ADAPTER)
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


class EventAssembler:
    """Folds raw stream events into the ``Message`` they describe; ``message_stop`` marks a complete answer."""

    def __init__(self) -> None:
        self.build_message: dict[str, Any] | None = None
        self._json: dict[int, str] = {}
        self._stopped = False
        self._problem: str | None = None

    def feed(self, event: Any) -> None:
        data = wire(event)
        kind = data.get("type")
        if kind == "message_start":
            self.build_message = {**data["message"], "content": list(data["message"].get("content") or [])}
            return
        message = self.build_message
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
        if self.build_message is None or not self._stopped:
            raise IncompleteStreamError("the stream ended before message_stop")
        return self.build_message

    def response(self) -> Message:
        return build_message(self._complete())

    def answer(self) -> Answer:
        if self._problem is not None:
            raise UncacheableResponseError(self._problem)
        return message_answer(self._complete())
