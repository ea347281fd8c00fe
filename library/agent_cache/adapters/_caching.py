"""How the high-level wrappers talk to the LLM tier, and what they share about responses.

Valkey trouble is the tier's business: by default a failed lookup is a miss and a failed store is skipped (the
cache's ``on_error`` policy), so a wrapper in front of a paid call never loses the call's answer; with
``on_error="raise"`` the error reaches the caller as the cache was told. A response the wrappers cannot read back
faithfully is returned uncached, never an error.

Response metadata
-----------------
Content blocks carry what the model said; everything else a provider reports about a response (its ids, timestamps,
stop reason, usage details...) is stored beside them as ``LlmStoreOptions(metadata=...)`` and comes back as
``LlmCacheResult.metadata`` on a hit. The dict is the same for every adapter at its top level::

    {"format": "openai.chat", "version": 1, "finish": "length", ...fields of that format}

``format`` names the adapter family that wrote it (``openai.chat``, ``openai.responses``, ``anthropic``,
``pydantic_ai``, ``llamaindex``) and the other fields are that format's own: only a reader of the same format and
version uses them. ``finish`` is a provider-neutral stop reason (:data:`FINISH_REASONS`), read by everyone: an entry
may be shared by several formats (a plain-text conversation keys alike in Chat Completions, the Responses API and
LlamaIndex), and a reader of another format must not rebuild a truncated answer as a complete one. A reader
translates ``length`` and ``stop_sequence`` where its provider can say so, and treats the entry as a miss otherwise
(a refusal of another provider; see :func:`foreign_finish`). Entries without metadata (stored before it existed,
or by ``cache.llm.store``) are read as complete answers, with ids derived from the cache key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from agent_cache._errors import AgentCacheUsageError, CacheMissError, SerializationError
from agent_cache.types import ContentBlock, LlmCacheResult, LlmStoreOptions

from ._blocks import is_omitted, plain

if TYPE_CHECKING:
    from agent_cache.cache import AgentCache

log = logging.getLogger("agent_cache.adapters")


class UncacheableResponseError(AgentCacheUsageError):
    """The response holds something the cache cannot carry faithfully, so it is not stored.

    Several choices, citations, audio, logprobs, hosted-tool items, an answer cut short by a content filter...
    Storing them would make a hit differ from the original; the wrappers return such responses uncached.
    """


METADATA_VERSION: Final = 1

FINISH_REASONS: Final = frozenset({"stop", "tool_calls", "length", "stop_sequence", "refusal"})
"""Provider-neutral stop reasons: a natural end, a turn that calls tools, the output token limit (``max_tokens``,
``length``, ``max_output_tokens``), one of the request's stop sequences, a refusal."""

COMPLETE: Final = frozenset({"stop", "tool_calls"})
"""The stop reasons that content blocks alone describe: what entries without metadata are read as."""


@dataclass(frozen=True)
class Answer:
    """A provider response reduced to what the LLM tier stores: blocks, token counts and response metadata."""

    blocks: list[ContentBlock]
    tokens: dict[str, int] | None = None
    metadata: dict[str, Any] | None = None

    def store_options(self, ttl: int | None = None) -> LlmStoreOptions:
        """``LlmStoreOptions`` for ``cache.llm.store_multipart(params, answer.blocks, answer.store_options())``."""
        return LlmStoreOptions(ttl=ttl, tokens=self.tokens, metadata=self.metadata)

    @property
    def finish(self) -> str | None:
        """The neutral stop reason recorded in the metadata, if any."""
        return None if self.metadata is None else self.metadata.get("finish")

    def complete(self) -> Answer:
        """This answer if blocks alone rebuild it faithfully, else :class:`UncacheableResponseError`.

        ``to_blocks`` helpers use it: a caller that stores blocks without the metadata must not store a truncated
        answer or a refusal, which a hit would rebuild as a complete answer.
        """
        if self.finish not in COMPLETE:
            raise UncacheableResponseError(f"a {self.finish!r} answer needs its metadata to be stored faithfully")
        return self


async def lookup(cache: AgentCache, params: Mapping[str, Any]) -> LlmCacheResult:
    """The tier's answer; a miss (with ``error``) for a request that cannot be a key, which then goes uncached.

    A prompt may hold what canonical JSON refuses (a lone surrogate, a NaN in a tool schema): the provider call the
    wrapper stands in front of is still made, and its answer returned — the cache never turns a call into an error.
    Under ``only_if_cached`` (a ``cache.control(...)`` scope) a miss raises :class:`CacheMissError` instead.
    """
    try:
        result = await cache.llm.check(params)
    except SerializationError as exc:
        ensure_model_call_allowed(cache, None)
        log.warning("agent-cache: the request cannot be a cache key, calling the provider uncached: %s", exc)
        return LlmCacheResult(hit=False, error=f"serialization: {exc}")
    if not result.hit:
        ensure_model_call_allowed(cache, result.key)
        if result.key is None and result.error:  # text with no UTF-8 form: the tier failed open
            log.warning(
                "agent-cache: the request cannot be a cache key, calling the provider uncached: %s", result.error
            )
    return result


def ensure_model_call_allowed(cache: AgentCache, key: str | None) -> None:
    """Raise :class:`CacheMissError` when the caller asked for ``only_if_cached``: the wrappers call it before
    every provider call (a miss, a hit they cannot rebuild, a request they never cache)."""
    control = cache.llm.control_in_force()
    if control is not None and control.only_if_cached:
        raise CacheMissError("only_if_cached: the answer is not in the cache, so the model was not called", key=key)


async def save(cache: AgentCache, params: Mapping[str, Any], answer: Answer, ttl: int | None) -> str | None:
    """Store ``answer``; None (nothing stored) for a request that cannot be a key (see :func:`lookup`)."""
    try:
        return await cache.llm.store_multipart(params, answer.blocks, answer.store_options(ttl))
    except SerializationError as exc:
        log.debug("agent-cache: response not stored: %s", exc)
        return None


def metadata(fmt: str, finish: str, **fields: Any) -> dict[str, Any]:
    """The metadata dict of one format: ``format``, ``version``, ``finish`` and the format's fields (None dropped)."""
    if finish not in FINISH_REASONS:
        raise UncacheableResponseError(f"stop reason {finish!r} cannot be stored")
    meta: dict[str, Any] = {"format": fmt, "version": METADATA_VERSION, "finish": finish}
    meta.update((name, value) for name, value in fields.items() if value is not None)
    return meta


def native(meta: Mapping[str, Any] | None, fmt: str) -> dict[str, Any] | None:
    """The metadata if format ``fmt`` wrote it (same version), else None: a legacy entry or another format's."""
    if isinstance(meta, Mapping) and meta.get("format") == fmt and meta.get("version") == METADATA_VERSION:
        return dict(meta)
    return None


def foreign_finish(meta: Mapping[str, Any] | None) -> str:
    """The neutral stop reason of an entry this reader does not know the format of.

    Entries without metadata, or with a ``finish`` this version does not know, are complete answers as far as the
    blocks say (``stop``; readers pick ``tool_calls`` from the blocks).
    """
    finish = meta.get("finish") if isinstance(meta, Mapping) else None
    return finish if isinstance(finish, str) and finish in FINISH_REASONS else "stop"


def without(data: Mapping[str, Any], names: Sequence[str] | frozenset[str]) -> dict[str, Any]:
    """``data`` without ``names`` and without None values: a response's fields that blocks do not carry."""
    return {k: v for k, v in data.items() if k not in names and v is not None}


def echoed(request: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The transport-only request parameters a response echoes (``metadata``, ``user``...), from this request.

    They are not in the key, so the entry's original values belong to another caller: they are never stored, and a
    hit echoes the current request's values instead.
    """
    return {
        name: plain(request[name]) for name in names if request.get(name) is not None and not is_omitted(request[name])
    }


def client_headers(source: object) -> dict[str, Any]:
    """The headers set on an SDK client with ``default_headers=``: sent with every request, like ``extra_headers``.

    ``source`` is a bound ``create`` method, an SDK client, or a framework model holding one (``client``,
    ``_client``). They are read from the Stainless SDKs' ``_custom_headers`` (OpenAI, Anthropic), without the SDK's
    own defaults (its version, platform and credentials); a source without them has none.
    """
    owner = getattr(source, "__self__", None)
    for candidate in (
        source,
        _attribute(owner, "_client"),
        _attribute(source, "client"),
        _attribute(source, "_client"),
    ):
        custom = _attribute(candidate, "_custom_headers")
        if isinstance(custom, Mapping):
            return dict(custom)
    return {}


def _attribute(obj: object, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # a framework property that cannot answer yet (an unconfigured client)
        return None


def sent_headers(defaults: Mapping[str, Any], extra: Any) -> Any:
    """The headers an SDK sends: the client's ``defaults`` under the request's ``extra`` (names in any case).

    An omitted value (``omit``/``NOT_GIVEN``) in ``extra`` removes the default of that name, as the SDKs do. Returns
    ``extra`` itself when there are no defaults.
    """
    if not defaults:
        return extra
    overrides = dict(extra) if isinstance(extra, Mapping) else {}
    named = {str(name).lower() for name in overrides}
    merged = {name: value for name, value in defaults.items() if str(name).lower() not in named}
    merged.update((name, value) for name, value in overrides.items() if not is_omitted(value))
    return merged


def with_client_headers(request: Mapping[str, Any], source: object) -> Mapping[str, Any]:
    """``request`` as the key sees it: its ``extra_headers`` merged over the client's default headers."""
    defaults = client_headers(source)
    if not defaults:
        return request
    return {**request, "extra_headers": sent_headers(defaults, request.get("extra_headers"))}


def answer_of(extract: Callable[[Any], Answer], response: Any) -> Answer | None:
    """``extract(response)``, or None when the response is not to be stored.

    A response the blocks cannot carry is expected (logged at debug level); any other failure is a bug in the
    adapter or an unexpected response shape, logged as a warning — either way the caller still gets its response.
    """
    try:
        return extract(response)
    except UncacheableResponseError as exc:
        log.debug("agent-cache: response not stored: %s", exc)
    except Exception:
        log.warning("agent-cache: could not read the response to store it; returned uncached", exc_info=True)
    return None


def tokens(input_tokens: int | None, output_tokens: int | None) -> dict[str, int] | None:
    if input_tokens is None and output_tokens is None:
        return None
    return {"input": int(input_tokens or 0), "output": int(output_tokens or 0)}


def synthetic_id(prefix: str, key: str | None, index: int | None = None, length: int = 24) -> str:
    """A stable id for a response rebuilt without its metadata: the provider's prefix and the entry's hash.

    Entries stored without metadata keep tool-call ids but not response or item ids, so a hit gets an id derived
    from its cache key: the same entry always rebuilds with the same id.
    """
    digest = (key or "").rpartition(":")[2][:length] or "0" * length
    return f"{prefix}{digest}" if index is None else f"{prefix}{digest}_{index}"


def blocks_of(result: LlmCacheResult) -> Sequence[ContentBlock]:
    """The stored blocks, or one text block for an entry stored with plain ``cache.llm.store``."""
    if result.content_blocks is not None:
        return result.content_blocks
    return [{"type": "text", "text": result.response or ""}]
