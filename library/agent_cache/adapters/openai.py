"""OpenAI Chat Completions: requests to cache params, ``ChatCompletion`` to content blocks and back, streams.

One call does it all::

    from agent_cache.adapters.openai import cached_create

    completion = await cached_create(cache, client.chat.completions.create, model="gpt-4o", messages=messages)
    stream = await cached_create(cache, client.chat.completions.create, model="gpt-4o", messages=messages, stream=True)
    async for chunk in stream:  # ChatCompletionChunk objects, live or replayed from the cache
        ...

Works with any async client whose ``create`` speaks Chat Completions (``AsyncOpenAI``, ``AsyncAzureOpenAI``,
OpenAI-compatible servers). The key holds every request parameter except transport-only ones (``stream``,
``stream_options``, ``timeout``, ``user``, ``metadata``, ``store``...), by their own names — and the ``extra_headers``
that can change an answer (``OpenAI-Beta``, a gateway's routing header; never credentials or tracing headers):
``reasoning_effort``, ``max_completion_tokens``, ``tools``, ``response_format``, ``seed``, ``n``... Messages are
normalized to content blocks (a string and one text part are the same message; tool-call arguments are compared as JSON,
not as text), and images, audio and files go through the binary normalizer. A streamed and a non-streamed request share
one entry.

Stored: text, ``reasoning_content`` (OpenAI-compatible servers) and function tool calls (ids kept) as blocks, and
the rest of the completion as response metadata — id, ``created``, dated model, ``system_fingerprint``,
``service_tier``, ``finish_reason``, refusal, usage with its token details. Answers that finished with ``stop``,
``tool_calls`` or ``length`` are stored, refusals included; a hit (plain or streamed) is the original completion.
Not stored (returned uncached): several choices, audio, annotations, logprobs, custom tool calls, ``content_filter``.
Entries without metadata (stored before it existed) rebuild with an id derived from the entry, the requested model
and the stored token counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

from agent_cache._errors import AgentCacheUsageError
from agent_cache.normalizer import BinaryNormalizer, default_normalizer
from agent_cache.types import ContentBlock, LlmCacheParams, LlmCacheResult

from ._blocks import (
    binary_block,
    dump_arguments,
    extras,
    is_omitted,
    materialize,
    parse_arguments,
    passthrough_params,
    plain,
    text_of,
    verbatim_arguments,
)
from ._caching import (
    COMPLETE,
    Answer,
    UncacheableResponseError,
    answer_of,
    blocks_of,
    echoed,
    ensure_model_call_allowed,
    foreign_finish,
    lookup,
    metadata,
    native,
    save,
    synthetic_id,
    tokens,
    with_client_headers,
    without,
)
from ._sdk import require
from ._stream import CachedStream, IncompleteStreamError, RecordingStream, ReplayStream

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    from agent_cache.cache import AgentCache

__all__ = [
    "Answer",
    "OpenAIPrepareOptions",
    "UncacheableResponseError",
    "cached_create",
    "from_blocks",
    "prepare_params",
    "to_answer",
    "to_blocks",
    "usage_tokens",
]

log = logging.getLogger("agent_cache.adapters")


@dataclass
class OpenAIPrepareOptions:
    normalizer: BinaryNormalizer = default_normalizer


# ─── Requests ─────────────────────────────────────────────────────────────────


async def prepare_params(params: Mapping[str, Any], opts: OpenAIPrepareOptions | None = None) -> LlmCacheParams:
    """Cache params for a ``chat.completions.create`` request (async: the normalizer may fetch)."""
    normalizer = (opts or OpenAIPrepareOptions()).normalizer
    result = passthrough_params(params, ("messages", "stop"))
    stop = params.get("stop")
    if isinstance(stop, str):
        result["stop"] = [stop]  # one stop string and a list of it are the same request
    elif stop is not None and not is_omitted(stop):
        result["stop"] = plain(stop)
    result["messages"] = [await _message(plain(m), normalizer) for m in params.get("messages") or ()]
    return result


async def _message(message: Mapping[str, Any], normalizer: BinaryNormalizer) -> dict[str, Any]:
    role = message.get("role")
    out: dict[str, Any] = {"role": role}
    content = message.get("content")
    blocks: list[Any] = [] if content is None else await _content(content, normalizer)
    known: tuple[str, ...] = ("role", "content")
    if role == "assistant":
        # "" and None say the same; SDK messages echoed back carry None where dicts often carry "".
        blocks = [b for b in blocks if not (b.get("type") == "text" and b.get("text") == "" and len(b) == 2)]
        blocks.extend(_tool_call(call) for call in message.get("tool_calls") or ())
        known = ("role", "content", "tool_calls")
    elif role == "tool":
        out["toolCallId"] = message.get("tool_call_id")
        known = ("role", "content", "tool_call_id")
    if content is not None or blocks:
        out["content"] = blocks
    out.update(extras(message, known))
    return out


def _tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    if call.get("type", "function") != "function":
        return dict(call)  # custom tools and future kinds: verbatim
    function = call.get("function") or {}
    block = {
        "type": "tool_call",
        "id": call.get("id", ""),
        "name": function.get("name", ""),
        "args": parse_arguments(function.get("arguments", "")),
    }
    block.update(extras(call, ("id", "type", "function")))
    block.update(extras(function, ("name", "arguments")))
    return block


async def _content(content: Any, normalizer: BinaryNormalizer) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[Any] = []
    for part in content:
        if isinstance(part, str):
            blocks.append({"type": "text", "text": part})
            continue
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", ""), **extras(part, ("type", "text"))})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            image = {"url": image} if isinstance(image, str) else image
            rest = {**extras(image, ("url",)), **extras(part, ("type", "image_url"))}
            blocks.append(await binary_block("image", normalizer, url=image.get("url", ""), **rest))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            audio_format = audio.get("format")
            blocks.append(
                await binary_block(
                    "audio",
                    normalizer,
                    base64_data=audio.get("data", ""),
                    media_type=f"audio/{audio_format}" if audio_format else None,
                )
            )
        elif kind == "file":
            blocks.append(await _file(part.get("file") or {}, normalizer))
        else:
            blocks.append(plain(part))  # refusal parts and future kinds: verbatim
    return blocks


async def _file(file: Mapping[str, Any], normalizer: BinaryNormalizer) -> Any:
    rest = extras(file, ("file_id", "file_data"))
    if file.get("file_id"):
        return await binary_block("document", normalizer, file_id=file["file_id"], provider="openai", **rest)
    if file.get("file_data"):
        return await binary_block("document", normalizer, base64_data=file["file_data"], **rest)
    return {"type": "file", **rest}


# ─── Responses ────────────────────────────────────────────────────────────────

FORMAT = "openai.chat"
# The completion's echo of transport-only request parameters: never stored, taken from the request on a hit.
_ECHOED = ("metadata",)
_FINISHES = ("stop", "tool_calls", "length")


def _wire(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    dumped: dict[str, Any] = obj.model_dump(mode="json")
    return dumped


def _answer(completion: Mapping[str, Any]) -> Answer:
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
    return _answer(_wire(completion))


def to_blocks(completion: ChatCompletion | Mapping[str, Any]) -> list[ContentBlock]:
    """The answer as content blocks, for a complete answer (``stop``/``tool_calls``) that blocks alone rebuild.

    Raises :class:`UncacheableResponseError` otherwise — including truncated answers and refusals, which need the
    metadata of :func:`to_answer` to be rebuilt faithfully.
    """
    return _answer(_wire(completion)).complete().blocks


def usage_tokens(completion: ChatCompletion | Mapping[str, Any]) -> dict[str, int] | None:
    """``{"input": prompt_tokens, "output": completion_tokens}`` for ``LlmStoreOptions(tokens=...)``."""
    usage = _wire(completion).get("usage") or {}
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


def _from_hit(result: LlmCacheResult, params: Mapping[str, Any], request: Mapping[str, Any]) -> ChatCompletion | None:
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


# ─── Streams ──────────────────────────────────────────────────────────────────


# Completion fields every chunk repeats; the other top-level chunk fields are per-chunk (usage, obfuscation).
_CHUNK_FIELDS = ("service_tier", "system_fingerprint")
_PER_CHUNK = frozenset({"choices", "usage", "object", "obfuscation"})


def _chunks(completion: ChatCompletion, include_usage: bool) -> list[ChatCompletionChunk]:
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


class _ChunkAssembler:
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
        data = _wire(chunk)
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
        return _answer(self._completion())


# ─── The wrapper ──────────────────────────────────────────────────────────────


def _include_usage(request: Mapping[str, Any]) -> bool:
    options = request.get("stream_options")
    return isinstance(options, Mapping) and bool(options.get("include_usage"))


@overload
async def cached_create(
    cache: AgentCache,
    create: Callable[..., Awaitable[Any]],
    /,
    *,
    stream: Literal[True],
    options: OpenAIPrepareOptions | None = None,
    ttl: int | None = None,
    **request: Any,
) -> CachedStream[ChatCompletionChunk, ChatCompletion]: ...


@overload
async def cached_create(
    cache: AgentCache,
    create: Callable[..., Awaitable[Any]],
    /,
    *,
    stream: Literal[False] = False,
    options: OpenAIPrepareOptions | None = None,
    ttl: int | None = None,
    **request: Any,
) -> ChatCompletion: ...


async def cached_create(
    cache: AgentCache,
    create: Callable[..., Awaitable[Any]],
    /,
    *,
    stream: bool = False,
    options: OpenAIPrepareOptions | None = None,
    ttl: int | None = None,
    **request: Any,
) -> ChatCompletion | CachedStream[ChatCompletionChunk, ChatCompletion]:
    """``create(**request)`` through the LLM tier: a hit returns without calling the provider.

    ``create`` is ``client.chat.completions.create`` of an async client. With ``stream=True`` the result is an
    async iterator of ``ChatCompletionChunk`` (also an async context manager, with ``close()`` and
    ``final_response()``); a live stream is stored only once it finished. Requests with ``n > 1`` are passed
    through (several choices are not stored). Valkey errors follow the cache's ``on_error`` policy.
    """
    require("openai", "openai", "agent_cache.adapters.openai")
    request = materialize(request)
    if stream:
        request["stream"] = True
    params = await prepare_params(with_client_headers(request, create), options)
    n = request.get("n")
    if not (isinstance(n, int) and n > 1):  # several choices are never stored, so not looked up either
        result = await lookup(cache, params)
        if result.hit and (completion := _from_hit(result, params, request)) is not None:
            return ReplayStream(_chunks(completion, _include_usage(request)), completion) if stream else completion
    ensure_model_call_allowed(cache, None)  # only_if_cached: n > 1, or a hit that cannot be this response
    response = await create(**request)
    if stream:

        async def store(answer: Answer) -> None:
            await save(cache, params, answer, ttl)

        return RecordingStream(response, _ChunkAssembler(_include_usage(request)), store)
    if (answer := answer_of(lambda r: _answer(_wire(r)), response)) is not None:
        await save(cache, params, answer, ttl)
    return response  # type: ignore[no-any-return]
