"""Responses API event streams: a stored response replayed as the API's events, and live events kept until the end."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._caching import Answer, UncacheableResponseError
from ._responses_output import build_response, output_answer, wire
from ._sdk import require
from ._stream import IncompleteStreamError

if TYPE_CHECKING:
    from openai.types.responses import Response, ResponseStreamEvent


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
