"""LLM response tier: exact match on every answer-changing request parameter.

A hit is one GET. Stores also add the key to a per-model index (a sorted set scored by expiry) so
``invalidate_by_model`` deletes exactly that model's entries instead of scanning the keyspace, and the model
to a registry of models, so ``clear`` walks those indexes.
Valkey failures fail open (a miss, a skipped store) unless the cache was built with ``on_error="raise"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._backend import Backend, as_text
from .._codec import decode_entry, encode_entry, flatten_text, token_counts
from .._errors import BackendError, CorruptEntryError
from .._keys import KeyLayout, llm_hash
from .._scripts import KEY_INDEX_ADD, MODEL_REGISTRY_ADD
from ..cost import CostTable
from ..explain import LlmKeyExplanation, explain_llm_request
from ..types import ContentBlock, LlmCacheResult, LlmStoreOptions
from ._context import TierContext
from ._singleflight import DeferredOutcome, SingleFlight

_INDEX_BATCH = 500
_CLOCK_MARGIN_MS = 60_000  # how far the clocks of two cluster nodes may disagree
_SPAN_NAMES = {operation: f"agent_cache.llm.{operation}" for operation in ("store", "store_multipart")}


@dataclass
class Computed:
    """What a ``get_or_compute`` function may return instead of a plain string: text and token usage."""

    response: str
    tokens: dict[str, int] | None = None


def index_command(index: str, key: str, ttl: int | None) -> tuple[str, tuple[Any, ...]]:
    """The pipeline command that lists LLM entry ``key`` (expiring in ``ttl`` seconds) in ``index``: the
    per-model index, or a framework adapter's. The index prunes expired keys and expires with the last."""
    return Backend.script_command(KEY_INDEX_ADD, (index,), (key, ttl or ""))


class LlmCache:
    def __init__(self, context: TierContext, costs: CostTable) -> None:
        self._ctx = context
        self._costs = costs
        self._flights: SingleFlight[tuple[LlmCacheResult, DeferredOutcome]] = SingleFlight(context, "llm")

    def use_cost_table(self, costs: CostTable) -> None:
        """Price later stores with ``costs`` (a live config's overrides merged over the code's)."""
        self._costs = costs

    def resolve_ttl(self, ttl: int | None = None) -> int | None:
        """The TTL a store given ``ttl`` gets: ``ttl`` itself, else the live config's, else the code's defaults."""
        return self._ctx.ttl.resolve("llm", ttl)

    def key(self, params: Mapping[str, Any]) -> str:
        return self._ctx.keys.llm(llm_hash(params, self._ctx.scope))

    def explain(self, params: Mapping[str, Any]) -> LlmKeyExplanation:
        """Why a request hits or misses: its key (under the current ``cache.tenant(...)``), the canonical JSON
        that was hashed, the parameters that entered it and those left out with the reason. No I/O."""
        return explain_llm_request(params, self._ctx.keys, self._ctx.tenant_name)

    def check(self, params: Mapping[str, Any]) -> Awaitable[LlmCacheResult]:
        """A hit (the stored answer, tokens and metadata) or a miss; a Valkey failure is a miss with ``error``."""
        return self._check(params, None)  # the coroutine itself: no extra layer on the hit path

    async def _check(
        self, params: Mapping[str, Any], key: str | None, deferred: DeferredOutcome | None = None
    ) -> LlmCacheResult:
        """``check``, with the request's key when the caller has already derived it. With ``deferred`` the
        outcome is not counted but left there, for a caller that counts one outcome per logical request."""
        ctx = self._ctx
        with ctx.measured("llm", "check"):
            if key is None:
                key = self.key(params)
            model = params["model"]
            with ctx.telemetry.span("agent_cache.llm.check") as span:
                if span.is_recording():
                    span.set_attributes({"cache.key": key, "cache.model": model})
                near, level = ctx.near, "l2"
                try:
                    if near is None:
                        raw = await ctx.backend.get(key)
                    elif (raw := near.lookup(key)) is not None:
                        level = "l1"
                    else:
                        raw = await near.read(key)
                except BackendError as exc:
                    if not ctx.fail_open:
                        raise
                    return LlmCacheResult(hit=False, key=key, error=ctx.failed_open("llm", "check", exc, span))
                entry = None
                if raw is not None:
                    try:
                        entry = decode_entry(raw)
                    except CorruptEntryError:
                        ctx.telemetry.error("llm", "check", "corrupt")
                        with contextlib.suppress(BackendError):
                            await ctx.backend.delete_many([key])
                        if near is not None:
                            near.drop(key)
                hit = entry is not None
                span.set_attribute("cache.hit", hit)
                span.set_attribute("cache.level", level)
                if entry is None:
                    if deferred is None:
                        self._count(False, model, None)
                    return LlmCacheResult(hit=False, key=key)
                cost = entry.get("cost")
                label = str(entry.get("model", model))
                if deferred is None:
                    self._count(True, label, cost)
                else:
                    deferred.cost, deferred.label = cost, label
                tokens = entry.get("tokens") or {}
                return LlmCacheResult(
                    hit=True,
                    response=entry["response"],
                    content_blocks=entry.get("contentBlocks"),
                    key=key,
                    input_tokens=int(tokens.get("input", 0)),
                    output_tokens=int(tokens.get("output", 0)),
                    metadata=entry.get("meta"),
                )

    def _count(self, hit: bool, model: str, cost: Any) -> None:
        """Record one lookup's outcome: the stats hash, the requests metric and, on a hit, the dollars saved."""
        ctx = self._ctx
        ctx.telemetry.request("llm", hit)
        if not hit:
            ctx.stats.add("llm:misses")
            return
        ctx.stats.add("llm:hits")
        if isinstance(cost, int | float) and not isinstance(cost, bool) and cost > 0:
            ctx.stats.add("cost_saved_micros", round(cost * 1_000_000))
            ctx.telemetry.cost_saved("llm", float(cost), model=model)

    async def store(self, params: Mapping[str, Any], response: str, options: LlmStoreOptions | None = None) -> str:
        return await self._store("store", params, response, None, options, None)

    async def store_multipart(
        self,
        params: Mapping[str, Any],
        blocks: Sequence[ContentBlock],
        options: LlmStoreOptions | None = None,
    ) -> str:
        """Store text, tool calls, reasoning and binary refs; ``response`` on a hit is the joined text."""
        return await self._store("store_multipart", params, flatten_text(blocks), list(blocks), options, None)

    async def get_or_compute(
        self,
        params: Mapping[str, Any],
        compute: Callable[[], Awaitable[str | Computed]],
        options: LlmStoreOptions | None = None,
    ) -> LlmCacheResult:
        """A hit, or ``compute()`` stored — called once however many callers miss at the same time.

        ``compute`` returns the response text, or :class:`Computed` with token usage for cost accounting.
        """
        key = self.key(params)  # derived once for every lookup and the store
        model = params["model"]

        async def lookup() -> tuple[LlmCacheResult, DeferredOutcome] | None:
            found = DeferredOutcome(model)
            result = await self._check(params, key, found)  # polls while another process computes count nothing
            return (result, found) if result.hit else None

        async def compute_and_store() -> tuple[LlmCacheResult, DeferredOutcome]:
            produced = await compute()
            if isinstance(produced, str):
                produced = Computed(produced)
            store_options = dataclasses.replace(options or LlmStoreOptions())
            if produced.tokens is not None:
                store_options.tokens = produced.tokens
            await self._store("store", params, produced.response, None, store_options, key)
            tokens = store_options.tokens or {}
            computed = LlmCacheResult(
                hit=False,
                response=produced.response,
                key=key,
                input_tokens=tokens.get("input", 0),
                output_tokens=tokens.get("output", 0),
            )
            return computed, DeferredOutcome(model)

        try:
            (result, found), _ = await self._flights.run(key, lookup, compute_and_store)
        except Exception as exc:
            if not isinstance(exc, BackendError):  # Valkey failed (on_error="raise"): no lookup outcome
                self._count(False, model, None)  # the request missed; computing it failed
            raise
        self._count(result.hit, found.label, found.cost)  # one outcome per call, however long it waited
        return result

    async def _store(
        self,
        operation: str,
        params: Mapping[str, Any],
        response: str,
        blocks: list[ContentBlock] | None,
        options: LlmStoreOptions | None,
        key: str | None,
    ) -> str:
        ctx = self._ctx
        options = options or LlmStoreOptions()
        with ctx.measured("llm", operation):
            if key is None:
                key = self.key(params)
            model: str = params["model"]
            ttl = ctx.ttl.resolve("llm", options.ttl)
            cost = None
            if options.tokens is not None:
                input_tokens, output_tokens = token_counts(options.tokens)
                micros = self._costs.cost_micros(model, input_tokens, output_tokens)
                # Dollars in the entry (the reference's format), rounded so a hit counts exactly these micros.
                cost = None if micros is None else micros / 1_000_000
            value = encode_entry(
                response, contentBlocks=blocks, model=model, tokens=options.tokens, cost=cost, meta=options.metadata
            )
            size = len(value.encode())
            with ctx.telemetry.span(_SPAN_NAMES[operation]) as span:
                if span.is_recording():
                    attributes: dict[str, str | int | bool] = {
                        "cache.key": key,
                        "cache.model": model,
                        "cache.ttl": ttl or -1,
                        "cache.bytes": size,
                    }
                    if blocks is not None:
                        attributes["cache.blocks"] = len(blocks)
                    span.set_attributes(attributes)
                if ctx.too_large("llm", operation, size, span):
                    return key
                stored, stored_size = ctx.pack(value, size)
                set_args: tuple[Any, ...] = (key, stored, "EX", ttl) if ttl else (key, stored)
                listed = [
                    index_command(ctx.keys.model_index(model), key, ttl),
                    Backend.script_command(
                        MODEL_REGISTRY_ADD, (model_registry_key(ctx.keys),), (model, ttl or "", _CLOCK_MARGIN_MS)
                    ),
                ]
                try:
                    if ctx.backend.is_cluster:
                        # The entry before its index, never the other way round (a cluster pipeline sends to
                        # each node at once): then no invalidation can leave a stored entry unlisted.
                        await ctx.backend.write([("SET", set_args)])
                        await ctx.backend.write(listed)
                    else:
                        await ctx.backend.write([("SET", set_args), *listed])  # one connection: in this order
                except BackendError as exc:
                    if not ctx.fail_open:
                        raise
                    ctx.failed_open("llm", operation, exc, span)
                    return key
                finally:
                    if ctx.near is not None:
                        ctx.near.drop(key)  # our own overwrite: no L1 copy of the old entry outlives it
                if ctx.near is not None:
                    await ctx.near.settle(key)  # other processes' L1 copies are invalidated once we return
            ctx.telemetry.stored_bytes("llm", stored_size)
            return key

    async def invalidate_by_model(self, model: str) -> int:
        """Delete every entry stored for ``model`` (all tenants); costs O(that model's entries)."""
        ctx = self._ctx
        with ctx.measured("llm", "invalidate_by_model"):
            with ctx.telemetry.span("agent_cache.llm.invalidate_by_model", {"cache.model": model}) as span:
                try:
                    deleted = await drop_key_index(ctx.backend, ctx.keys.model_index(model))
                finally:
                    if ctx.near is not None:
                        ctx.near.drop_all()
                if ctx.near is not None:
                    await ctx.near.settle()
                span.set_attribute("cache.deleted_count", deleted)
                return deleted

    async def clear(self) -> int:
        """Delete every LLM entry of this cache (all models, all tenants); returns how many. Walks the
        per-model indexes (the registry of models lists them), never the keyspace."""
        ctx = self._ctx
        with ctx.measured("llm", "clear"):
            with ctx.telemetry.span("agent_cache.llm.clear") as span:
                models = await ctx.backend.command("ZRANGE", model_registry_key(ctx.keys), 0, -1)
                deleted = 0
                try:
                    for model in models:
                        deleted += await drop_key_index(ctx.backend, ctx.keys.model_index(as_text(model)))
                finally:
                    if ctx.near is not None:
                        ctx.near.drop_all()
                if ctx.near is not None:
                    await ctx.near.settle()
                span.set_attribute("cache.deleted_count", deleted)
                return deleted


def model_registry_key(keys: KeyLayout) -> str:
    """The models with LLM entries, scored by when their last entry expires (``MODEL_REGISTRY_ADD``)."""
    return f"{keys.name}:__idx:llm_models"


async def drop_key_index(backend: Backend, index: str) -> int:
    """Delete the keys a key index lists (members are whole keys, in any slot) and empty it; returns how
    many existed. Each batch is unlisted first, then deleted: a key stored again meanwhile is either deleted
    or still listed, never left alive and unlisted (stores write the key before listing it). Entries
    stored while it runs are deleted too."""
    deleted = 0
    while True:
        members = await backend.command("ZRANGE", index, 0, _INDEX_BATCH - 1)
        if not members:
            return deleted
        keys = [as_text(member) for member in members]
        await backend.command("ZREM", index, *keys)
        deleted += await backend.delete_many(keys)
