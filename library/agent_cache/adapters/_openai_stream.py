"""Chat Completions streams: a completion replayed as its chunks, and live chunks folded back into a completion."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._caching import Answer, UncacheableResponseError
from ._openai_completion import answer_of_completion, wire
from ._sdk import require
from ._stream import IncompleteStreamError

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk


# Completion fields every chunk repeats; the other top-level chunk fields are per-chunk (usage, obfuscation).
_CHUNK_FIELDS = ("service_tier", "system_fingerprint")
_PER_CHUNK = frozenset({"choices", "usage", "object", "obfuscation"})


def replay_chunks(completion: ChatCompletion, include_usage: bool) -> list[ChatCompletionChunk]:
    """The chunks of ``completion`` as the API streams them: one delta per part, then the finish, then usage."""
    chat = require("openai.types.chat", "openai", "agent_cache.adapters.openai")
    message = completion.choices[0].message
    reasoning = getattr(message, "reasoning_content", None)
    first: dict[str, Any] = {"role": "assistant"}
    if message.content is not None:
        first["content"] = ""
    deltas: list[dict[str, Any]] = [first]
    if reasoning:
        deltas.append({"reasoning_content": reasoning})
    if message.content:
        deltas.append({"content": message.content})
    if message.refusal is not None:
        deltas.append({"refusal": message.refusal})
    for index, call in enumerate(message.tool_calls or ()):
        deltas.append({"tool_calls": [{"index": index, **call.model_dump(mode="json", exclude_none=True)}]})
    choices: list[list[dict[str, Any]]] = [[{"index": 0, "delta": delta, "finish_reason": None}] for delta in deltas]
    choices.append([{"index": 0, "delta": {}, "finish_reason": completion.choices[0].finish_reason}])
    base: dict[str, Any] = {
        "id": completion.id,
        "object": "chat.completion.chunk",
        "created": completion.created,
        "model": completion.model,
    }
    for name in _CHUNK_FIELDS:
        if (value := getattr(completion, name, None)) is not None:
            base[name] = value
    chunks = [{**base, "choices": c} for c in choices]
    if include_usage and completion.usage is not None:
        chunks.append({**base, "choices": [], "usage": completion.usage.model_dump(mode="json")})
    return [chat.ChatCompletionChunk.model_validate(c) for c in chunks]


class ChunkAssembler:
    """Folds ``ChatCompletionChunk`` deltas into the ``ChatCompletion`` the same request would have returned."""

    def __init__(self, include_usage: bool) -> None:
        self._include_usage = include_usage
        self._meta: dict[str, Any] = {}
        self._text: dict[str, str | None] = {"content": None, "reasoning_content": None, "refusal": None}
        self._calls: dict[int, dict[str, Any]] = {}
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self._problems: list[str] = []

    def feed(self, chunk: Any) -> None:
        data = wire(chunk)
        for name, value in data.items():
            # The first non-empty value wins: Azure's first chunk (prompt filter results) has id "" and created 0.
            if name not in _PER_CHUNK and value not in (None, "", 0):
                self._meta.setdefault(name, value)
        if data.get("usage"):
            self._usage = data["usage"]
        for choice in data.get("choices") or ():
            if choice.get("index", 0) != 0:
                self._problems.append("several choices cannot be stored as one answer")
                continue
            delta = choice.get("delta") or {}
            for name in self._text:
                if delta.get(name) is not None:
                    self._text[name] = (self._text[name] or "") + delta[name]
            for name in ("function_call", "audio"):
                if delta.get(name):
                    self._problems.append(f"a streamed {name} cannot be stored")
            if choice.get("logprobs"):
                self._problems.append("logprobs cannot be stored")
            for call in delta.get("tool_calls") or ():
                slot = self._calls.setdefault(call.get("index", 0), {"type": "function", "name": "", "arguments": ""})
                for name in ("id", "type"):
                    if call.get(name):
                        slot[name] = call[name]
                function = call.get("function") or {}
                slot["name"] += function.get("name") or ""
                slot["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]

    def _completion(self) -> dict[str, Any]:
        if self._finish is None:
            raise IncompleteStreamError("the stream ended before a finish_reason")
        if self._include_usage and self._usage is None:
            raise IncompleteStreamError("the stream ended before its usage chunk")
        message: dict[str, Any] = {"role": "assistant", **self._text}
        if self._text["reasoning_content"] is None:
            del message["reasoning_content"]
        if self._calls:
            message["tool_calls"] = [
                {
                    "id": slot.get("id", ""),
                    "type": slot["type"],
                    "function": {"name": slot["name"], "arguments": slot["arguments"]},
                }
                for _, slot in sorted(self._calls.items())
            ]
        choice = {"index": 0, "message": message, "finish_reason": self._finish, "logprobs": None}
        return {**self._meta, "object": "chat.completion", "choices": [choice], "usage": self._usage}

    def response(self) -> ChatCompletion:
        chat = require("openai.types.chat", "openai", "agent_cache.adapters.openai")
        completion: ChatCompletion = chat.ChatCompletion.model_validate(self._completion())
        return completion

    def answer(self) -> Answer:
        if self._problems:
            raise UncacheableResponseError(self._problems[0])
        return answer_of_completion(self._completion())
