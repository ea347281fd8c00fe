"""LLM response tier: exact match on every answer-changing request parameter.

A hit is one GET. Stores also add the key to a per-model index (a sorted set scored by expiry) so
``invalidate_by_model`` deletes exactly that model's entries instead of scanning the keyspace.
Valkey failures fail open (a miss, a skipped store) unless the cache was built with ``on_error="raise"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._backend import Backend
from .._codec import decode_entry, encode_entry, flatten_text, token_counts
from .._errors import BackendError, CorruptEntryError
from .._keys import llm_hash
from .._scripts import KEY_INDEX_ADD
from ..cost import CostTable
from ..types import ContentBlock, LlmCacheResult, LlmStoreOptions
from ._context import TierContext
from ._singleflight import SingleFlight

_INDEX_BATCH = 500
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
        self._flights: SingleFlight[LlmCacheResult] = SingleFlight(context, "llm")

    def use_cost_table(self, costs: CostTable) -> None:
        """Price later stores with ``costs`` (a live config's overrides merged over the code's)."""
        self._costs = costs

    def resolve_ttl(self, ttl: int | None = None) -> int | None:
        """The TTL a store given ``ttl`` gets: ``ttl`` itself, else the live config's, else the code's defaults."""
        return self._ctx.ttl.resolve("llm", ttl)

    def key(self, params: Mapping[str, Any]) -> str:
        return self._ctx.keys.llm(llm_hash(params, self._ctx.scope))

    def check(self, params: Mapping[str, Any]) -> Awaitable[LlmCacheResult]:
        """A hit (the stored answer, tokens and metadata) or a miss; a Valkey failure is a miss with ``error``."""
        return self._check(params, None)  # the coroutine itself: no extra layer on the hit path

    async def _check(self, params: Mapping[str, Any], key: str | None) -> LlmCacheResult:
        """``check``, with the request's key when the caller has already derived it."""
        ctx = self._ctx
        with ctx.measured("llm", "check"):
            if key is None:
                key = self.key(params)
            model = params["model"]
            with ctx.telemetry.span("agent_cache.llm.check") as span:
                if span.is_recording():
                    span.set_attributes({"cache.key": key, "cache.model": model})
                try:
                    raw = await ctx.backend.get(key)
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
                hit = entry is not None
                span.set_attribute("cache.hit", hit)
                ctx.telemetry.request("llm", hit)
                if entry is None:
                    ctx.stats.add("llm:misses")
                    return LlmCacheResult(hit=False, key=key)
                ctx.stats.add("llm:hits")
                cost = entry.get("cost")
                if isinstance(cost, int | float) and cost > 0:
                    ctx.stats.add("cost_saved_micros", round(cost * 1_000_000))
                    ctx.telemetry.cost_saved("llm", float(cost), model=str(entry.get("model", model)))
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

        async def lookup() -> LlmCacheResult | None:
            result = await self._check(params, key)
            return result if result.hit else None

        async def compute_and_store() -> LlmCacheResult:
            produced = await compute()
            if isinstance(produced, str):
                produced = Computed(produced)
            store_options = dataclasses.replace(options or LlmStoreOptions())
            if produced.tokens is not None:
                store_options.tokens = produced.tokens
            await self._store("store", params, produced.response, None, store_options, key)
            tokens = store_options.tokens or {}
            return LlmCacheResult(
                hit=False,
                response=produced.response,
                key=key,
                input_tokens=tokens.get("input", 0),
                output_tokens=tokens.get("output", 0),
            )

        result, _ = await self._flights.run(key, lookup, compute_and_store)
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
                try:
                    await ctx.backend.write([("SET", set_args), index_command(ctx.keys.model_index(model), key, ttl)])
                except BackendError as exc:
                    if not ctx.fail_open:
                        raise
                    ctx.failed_open("llm", operation, exc, span)
                    return key
            ctx.telemetry.stored_bytes("llm", stored_size)
            return key

    async def invalidate_by_model(self, model: str) -> int:
        """Delete every entry stored for ``model`` (all tenants); costs O(that model's entries)."""
        ctx = self._ctx
        with ctx.measured("llm", "invalidate_by_model"):
            with ctx.telemetry.span("agent_cache.llm.invalidate_by_model", {"cache.model": model}) as span:
                index = ctx.keys.model_index(model)
                deleted = 0
                while True:
                    members = await ctx.backend.command("ZRANGE", index, 0, _INDEX_BATCH - 1)
                    if not members:
                        break
                    keys = [m.decode() if isinstance(m, bytes) else m for m in members]
                    deleted += await ctx.backend.delete_many(keys)
                    await ctx.backend.command("ZREM", index, *keys)
                span.set_attribute("cache.deleted_count", deleted)
                return deleted
