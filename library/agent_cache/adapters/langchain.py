"""LangChain ``BaseCache`` on the LLM tier: ``ChatOpenAI(cache=BetterDBLlmCache(cache))``.

The key is LangChain's own pair: the serialized prompt and ``llm_string`` — the model's serialized
configuration plus the call's parameters (stop sequences, bound tools, ``tool_choice``, temperature...). The
prompt leaves out each message's ``id``, ``response_metadata`` and ``usage_metadata`` (:func:`prompt_for_key`):
a conversation replayed with other response ids or token counts is the same request.
The reference keyed on the prompt and a few parsed fields only, so two models bound to different tools
shared answers. Entries go through ``cache.llm`` (stats, metrics, spans and cost accounting count them),
under the model name parsed from ``llm_string`` when it has one.

Generations are stored with LangChain's serializer (``dumps``) and revived with an allowlist
(``allowed_objects="core"`` by default), so a hit returns the same ``ChatGeneration`` — tool calls,
``additional_kwargs``, ``response_metadata`` and ``usage_metadata`` included.

Sync (``invoke``) and async (``ainvoke``) both work when the adapter wraps a :class:`SyncAgentCache`; an
:class:`AgentCache` serves the async methods only (its connections belong to its event loop).
Valkey trouble, or a prompt that cannot be a key (a lone surrogate in a completion prompt), never fails the model
call: a lookup then misses and an update is skipped, with a warning.
``clear()`` removes only what LangChain stored, through the adapter's own index (no keyspace scan) — of every
tenant, like ``invalidate_by_model``: inside ``cache.tenant(...)`` lookups and updates are the tenant's own.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from agent_cache._errors import BackendError, ConfigurationError, SerializationError
from agent_cache._ttl import validate_ttl
from agent_cache.sync import cache_runner
from agent_cache.tiers.llm import drop_key_index, index_command
from agent_cache.types import LlmStoreOptions

from ._caching import ensure_model_call_allowed

try:
    from langchain_core._api import suppress_langchain_beta_warning
    from langchain_core.caches import BaseCache
    from langchain_core.load import Serializable, dumps, load
    from langchain_core.outputs import Generation
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigurationError('BetterDBLlmCache needs LangChain: pip install "agent-cache[langchain]"') from exc

if TYPE_CHECKING:
    from agent_cache.cache import AgentCache
    from agent_cache.sync import SyncAgentCache

log = logging.getLogger("agent_cache.adapters")

ADAPTER = "langchain"
FALLBACK_MODEL = "langchain"
_MODEL_FIELDS = ("model_name", "model", "model_id", "deployment_name", "azure_deployment")
_MESSAGE_NOISE = ("id", "response_metadata", "usage_metadata")


def model_from_llm_string(llm_string: str) -> str:
    """The model name LangChain put into ``llm_string`` (its serialized kwargs or the params), if any.

    ``llm_string`` is ``<json of the model>---<repr of sorted params>`` for serializable models and the
    params repr alone otherwise. Falls back to the model's ``_type`` and then to ``"langchain"``.
    """
    params_repr = llm_string.rpartition("---")[2]
    model_kwargs = _model_kwargs(llm_string)
    candidates: list[dict[str, Any]] = [model_kwargs] if model_kwargs else []
    try:
        params = ast.literal_eval(params_repr)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        params = None
    if isinstance(params, list) and all(isinstance(p, tuple) and len(p) == 2 for p in params):
        candidates.append(dict(params))
    for fields in candidates:
        for name in _MODEL_FIELDS:
            value = fields.get(name)
            if isinstance(value, str) and value:
                return value
    for fields in candidates:
        value = fields.get("_type")
        if isinstance(value, str) and value:
            return value
    match = re.search(r"""['"](?:model_name|model)['"]\s*[:,]\s*['"]([^'"]+)['"]""", llm_string)
    return match.group(1) if match else FALLBACK_MODEL


def _model_kwargs(llm_string: str) -> dict[str, Any]:
    """The serialized model's kwargs at the head of ``llm_string`` (empty for a model LangChain cannot dump)."""
    head, _, _ = llm_string.rpartition("---")
    try:
        serialized = json.loads(head) if head else None
    except (ValueError, RecursionError):
        return {}
    kwargs = serialized.get("kwargs") if isinstance(serialized, dict) else None
    return kwargs if isinstance(kwargs, dict) else {}


def _is_serialized_message(item: Any) -> bool:
    """A message as LangChain's ``dumps`` writes it: ``{"lc": 1, "type": "constructor", "id": [..., "messages",
    "<class>"], "kwargs": {...}}``."""
    if not isinstance(item, dict) or item.get("lc") != 1 or item.get("type") != "constructor":
        return False
    path = item.get("id")
    return (
        isinstance(path, list)
        and len(path) >= 2
        and path[-2] == "messages"
        and all(isinstance(part, str) for part in path)
        and isinstance(item.get("kwargs"), dict)
    )


def prompt_for_key(prompt: str, llm_string: str = "") -> str:
    """The part of LangChain's prompt string that changes the answer.

    A chat model's prompt is its messages serialized by ``dumps``: each message's ``id``, ``response_metadata``
    (response and request ids, timestamps, the provider's model name) and ``usage_metadata`` are transport noise
    no provider reads back, so they are dropped from the top level of each message's ``kwargs`` — and nowhere else:
    content, tool calls (with their arguments), tool results and ``additional_kwargs`` are what the model reads.
    A completion model's plain-text prompt is returned as is, and so is everything when the model sends the previous
    response's id from ``response_metadata`` (``ChatOpenAI(use_previous_response_id=True)``).
    """
    if not prompt.startswith("[{"):
        return prompt
    try:
        messages = json.loads(prompt)
    except (ValueError, RecursionError):
        return prompt
    if not isinstance(messages, list) or not all(_is_serialized_message(m) for m in messages):
        return prompt
    if _model_kwargs(llm_string).get("use_previous_response_id"):
        return prompt
    for message in messages:
        fields = message["kwargs"]
        for name in _MESSAGE_NOISE:
            fields.pop(name, None)
    return json.dumps(messages)  # as LangChain writes it: a prompt without noise keys as it always did


def cache_params(prompt: str, llm_string: str) -> dict[str, Any]:
    """LLM-tier params for one lookup: the prompt without transport noise (:func:`prompt_for_key`) and the whole
    ``llm_string``."""
    return {
        "model": model_from_llm_string(llm_string),
        "messages": [{"role": "user", "content": prompt_for_key(prompt, llm_string)}],
        "llm_string": llm_string,
    }


def _usage_tokens(generations: Sequence[Generation]) -> dict[str, int] | None:
    """Token counts for cost accounting, from ``AIMessage.usage_metadata`` (summed over generations)."""
    total_in = total_out = 0
    found = False
    for generation in generations:
        usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
        if not isinstance(usage, dict):
            continue
        tokens_in, tokens_out = usage.get("input_tokens"), usage.get("output_tokens")
        if isinstance(tokens_in, int) and isinstance(tokens_out, int) and tokens_in >= 0 and tokens_out >= 0:
            total_in += tokens_in
            total_out += tokens_out
            found = True
    return {"input": total_in, "output": total_out} if found else None


_NEUTRAL_FINISH = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls", "STOP": "stop"}


def _finish_reason(generations: Sequence[Generation]) -> str | None:
    """The first generation's stop reason (``generation_info`` or the message's ``response_metadata``), in the
    neutral words of ``adapters._caching.FINISH_REASONS`` where known (Anthropic's ``max_tokens`` is ``length``),
    for a model policy's ``cache_finish_reasons``; None when the provider did not say."""
    if not generations:
        return None
    generation = generations[0]
    sources = (generation.generation_info, getattr(getattr(generation, "message", None), "response_metadata", None))
    for source in sources:
        if isinstance(source, dict):
            for name in ("finish_reason", "stop_reason"):
                reason = source.get(name)
                if isinstance(reason, str) and reason:
                    return _NEUTRAL_FINISH.get(reason, reason.lower())
    return None


class BetterDBLlmCache(BaseCache):
    """LangChain LLM cache on agent-cache's LLM tier.

    ``cache`` is an :class:`~agent_cache.AgentCache` (async LangChain calls) or a
    :class:`~agent_cache.SyncAgentCache` (sync and async calls). ``ttl`` overrides the LLM tier's TTL
    for these entries. ``allowed_objects`` is passed to LangChain's loader when a hit is revived.
    """

    def __init__(
        self,
        cache: AgentCache | SyncAgentCache,
        *,
        ttl: int | None = None,
        allowed_objects: Iterable[type[Serializable]] | Literal["all", "core", "messages"] = "core",
    ) -> None:
        super().__init__()
        self._runner = cache_runner(cache)
        self._ttl = validate_ttl(ttl, "ttl")
        self._allowed_objects = allowed_objects

    # ── LangChain API ────────────────────────────────────────────────────────

    def lookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        return self._runner.run(lambda cache: self._lookup(cache, prompt, llm_string))

    async def alookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        return await self._runner.arun(lambda cache: self._lookup(cache, prompt, llm_string))

    def update(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        self._runner.run(lambda cache: self._update(cache, prompt, llm_string, return_val))

    async def aupdate(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        await self._runner.arun(lambda cache: self._update(cache, prompt, llm_string, return_val))

    def clear(self, **kwargs: Any) -> None:
        """Delete every entry LangChain stored in this cache (other adapters' entries stay)."""
        self._runner.run(self._clear)

    async def aclear(self, **kwargs: Any) -> None:
        await self._runner.arun(self._clear)

    # ── on the cache's loop ──────────────────────────────────────────────────

    async def _lookup(self, cache: AgentCache, prompt: str, llm_string: str) -> list[Generation] | None:
        try:
            result = await cache.llm.check(cache_params(prompt, llm_string))
        except (BackendError, SerializationError) as exc:  # Valkey trouble, or a prompt that cannot be a key
            ensure_model_call_allowed(cache, None)
            log.warning("agent-cache %s: LangChain lookup treated as a miss: %s", cache.name, exc)
            return None
        if not result.hit or result.response is None:
            ensure_model_call_allowed(cache, result.key)  # only_if_cached: LangChain would call the model
            if result.key is None and result.error:  # text with no UTF-8 form: the tier failed open
                log.warning("agent-cache %s: LangChain lookup treated as a miss: %s", cache.name, result.error)
            return None
        try:
            return self._revive(result.response)
        except (ValueError, TypeError, KeyError) as exc:
            ensure_model_call_allowed(cache, result.key)
            log.warning(
                "agent-cache %s: a LangChain entry could not be revived (%s); treated as a miss", cache.name, exc
            )
            return None

    def _revive(self, text: str) -> list[Generation]:
        with suppress_langchain_beta_warning():
            revived = load(json.loads(text), allowed_objects=self._allowed_objects)
        if not isinstance(revived, list) or not all(isinstance(g, Generation) for g in revived):
            raise TypeError("the stored value is not a list of Generations")
        return revived

    async def _update(self, cache: AgentCache, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        generations = list(return_val)
        params = cache_params(prompt, llm_string)
        tokens = _usage_tokens(generations)
        options = LlmStoreOptions(ttl=self._ttl, tokens=tokens, finish_reason=_finish_reason(generations))
        try:
            key = await cache.llm.store(params, dumps(generations), options)
            await self._index(cache, key, params["model"])
        except (BackendError, SerializationError) as exc:
            log.warning("agent-cache %s: LangChain update skipped: %s", cache.name, exc)

    async def _index(self, cache: AgentCache, key: str, model: str) -> None:
        """Remember the key in the adapter's index, scored by expiry like the per-model index."""
        ttl = cache.llm.resolve_ttl(self._ttl, model)  # the model's policy may set the entry's TTL
        await cache.backend.write([index_command(cache.keys.adapter_index(ADAPTER), key, ttl)])

    async def _clear(self, cache: AgentCache) -> int:
        # Unlisted before deleted (stores list after writing): an entry stored meanwhile is deleted or still listed.
        return await drop_key_index(cache.backend, cache.keys.adapter_index(ADAPTER))


AgentCacheLangChainCache = BetterDBLlmCache

__all__ = ["AgentCacheLangChainCache", "BetterDBLlmCache", "cache_params", "model_from_llm_string", "prompt_for_key"]
