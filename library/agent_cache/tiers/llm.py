"""LLM response tier: exact match on every answer-changing request parameter.

A hit is one GET. Stores also add the key to a per-model index (a sorted set scored by expiry) so
``invalidate_by_model`` deletes exactly that model's entries instead of scanning the keyspace, and the model
to a registry of models, so ``clear`` walks those indexes.
Valkey failures fail open (a miss, a skipped store) unless the cache was built with ``on_error="raise"``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._backend import Backend, as_text
from .._codec import decode_entry, encode_entry, flatten_text, token_counts
from .._errors import BackendError, CorruptEntryError, UnencodableTextError
from .._keys import KeyLayout, llm_hash
from .._scripts import KEY_INDEX_ADD, MODEL_REGISTRY_ADD
from ..cost import CostTable
from ..explain import LlmKeyExplanation, explain_llm_request
from ..types import ContentBlock, LlmCacheResult, LlmStoreOptions
from ._context import TierContext, error_kind
from ._control import CacheControl
from ._model_policies import ModelPolicies
from ._model_policy import ModelPolicy
from ._singleflight import DeferredOutcome, SingleFlight

_INDEX_BATCH = 500
_CLOCK_MARGIN_MS = 60_000  # how far the clocks of two cluster nodes may disagree
_SPAN_NAMES = {"store": "agent_cache.llm.store", "store_multipart": "agent_cache.llm.store_multipart"}


@dataclass
class Computed:
    """What a ``get_or_compute`` function may return instead of a plain string: text and token usage."""

    response: str
    tokens: dict[str, int] | None = None
    finish_reason: str | None = None
    """Why the model stopped (``stop``, ``length``...), for the model policy's ``cache_finish_reasons``."""


def index_command(index: str, key: str, ttl: int | None) -> tuple[str, tuple[Any, ...]]:
    """The pipeline command that lists LLM entry ``key`` (expiring in ``ttl`` seconds) in ``index``: the
    per-model index, or a framework adapter's. The index prunes expired keys and expires with the last."""
    return Backend.script_command(KEY_INDEX_ADD, (index,), (key, ttl or ""))


class LlmCache:
    def __init__(self, context: TierContext, costs: CostTable) -> None:
        self._ctx = context
        self._costs = costs
        self._flights: SingleFlight[tuple[LlmCacheResult, DeferredOutcome]] = SingleFlight(context, "llm")
        self._refreshes: SingleFlight[tuple[LlmCacheResult, DeferredOutcome]] = SingleFlight(context, "llm")
        self._models = ModelPolicies(context)

    def use_cost_table(self, costs: CostTable) -> None:
        """Price later stores with ``costs`` (a live config's overrides merged over the code's)."""
        self._costs = costs

    def resolve_ttl(self, ttl: int | None = None, model: str | None = None) -> int | None:
        """The TTL a store given ``ttl`` gets: ``ttl`` itself, else ``model``'s policy's, else the live config's,
        else the code's defaults."""
        policy = self._models.for_model(model)
        return self._ctx.ttl.resolve("llm", ttl, policy.ttl if policy else None)

    def control_in_force(self, control: CacheControl | None = None) -> CacheControl | None:
        """The cache control a call made now runs under: the ``cache.control(...)`` scope's, merged with
        ``control`` (None: no control). Adapters read it to honour ``only_if_cached`` before calling a model."""
        return self._ctx.control_now(control)

    # ── model policies (see tiers._model_policy) ─────────────────────────────

    async def set_model_policy(self, pattern: str, policy: ModelPolicy) -> None:
        """Persist a policy for the models ``pattern`` (a glob: ``"gpt-4o*"``) matches; every instance of this
        cache picks it up on refresh. Where the live config names the same pattern, the config's applies."""
        await self._models.set(pattern, policy)

    def get_model_policy(self, model: str) -> ModelPolicy | None:
        """The policy in force for ``model``: the most specific matching pattern's (None: no pattern matches)."""
        return self._models.for_model(model)

    def model_policies(self) -> dict[str, ModelPolicy]:
        """Every pattern and its policy in force (the live config's over the application's)."""
        return dict(self._models.table.policies)

    async def refresh_model_policies(self) -> None:
        """Re-read the model policies hash (upkeep does it on the config interval)."""
        await self._models.refresh()

    def use_live_model_policies(self, policies: Mapping[str, ModelPolicy]) -> None:
        """Model policies of the live config; they take precedence per pattern over the policies hash."""
        self._models.use_live(policies)

    def key(self, params: Mapping[str, Any]) -> str:
        return self._ctx.keys.llm(llm_hash(params, self._ctx.scope))

    def explain(self, params: Mapping[str, Any]) -> LlmKeyExplanation:
        """Why a request hits or misses: its key (under the current ``cache.tenant(...)``), the canonical JSON
        that was hashed, the parameters that entered it and those left out with the reason. No I/O."""
        return explain_llm_request(params, self._ctx.keys, self._ctx.tenant_name)

    def check(self, params: Mapping[str, Any], control: CacheControl | None = None) -> Awaitable[LlmCacheResult]:
        """A hit (the stored answer, tokens and metadata) or a miss; a Valkey failure is a miss with ``error``.

        Under ``no_cache`` or ``refresh`` (``control=`` or a ``cache.control(...)`` scope) a miss without a round
        trip, counted as a bypass."""
        wanted = self._ctx.control_now(control)
        if wanted is None:
            return self._check(params, None)  # the coroutine itself: no extra layer on the hit path
        return self._check_controlled(params, wanted)

    async def _check_controlled(self, params: Mapping[str, Any], wanted: CacheControl) -> LlmCacheResult:
        if wanted.skips_lookup:
            key = self.key(params)
            self._ctx.bypassed("llm", wanted.lookup_bypass)
            return LlmCacheResult(hit=False, key=key)
        result = await self._check(params, None)
        if not result.hit and wanted.only_if_cached:
            self._ctx.bypassed("llm", "only_if_cached")
        return result

    async def _check(
        self, params: Mapping[str, Any], key: str | None, deferred: DeferredOutcome | None = None
    ) -> LlmCacheResult:
        """``check``, with the request's key when the caller has already derived it. With ``deferred`` the
        outcome is not counted but left there, for a caller that counts one outcome per logical request."""
        ctx = self._ctx
        with ctx.measured("llm", "check"):
            if key is None:
                try:
                    key = self.key(params)
                except UnencodableTextError as exc:
                    return LlmCacheResult(hit=False, error=ctx.unkeyable("llm", "check", exc))
            model = params["model"]
            if not self._models.loaded:
                await self._models.load_first()
            with ctx.telemetry.span("agent_cache.llm.check") as span:
                if span.is_recording():
                    span.set_attributes({"cache.key": key, "cache.model": model})
                if self._models.table and not self._cacheable(model):
                    span.set_attribute("cache.skipped", "not_cacheable")
                    ctx.bypassed("llm", "not_cacheable")
                    return LlmCacheResult(hit=False, key=key)
                near, level, entry = ctx.near, "l2", None
                try:
                    if near is None:
                        raw = await ctx.backend.get(key)
                    elif (entry := near.lookup(key)) is not None:
                        raw, level = None, "l1"  # decoded already
                    else:
                        raw = await near.read(key)
                except BackendError as exc:
                    if not ctx.fail_open:
                        raise
                    return LlmCacheResult(hit=False, key=key, error=ctx.failed_open("llm", "check", exc, span))
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
                blocks, meta = entry.get("contentBlocks"), entry.get("meta")
                if level == "l1" and (blocks is not None or meta is not None):
                    blocks, meta = copy.deepcopy((blocks, meta))  # L1's entry is shared: the caller may change these
                return LlmCacheResult(
                    hit=True,
                    response=entry["response"],
                    content_blocks=blocks,
                    key=key,
                    input_tokens=int(tokens.get("input", 0)),
                    output_tokens=int(tokens.get("output", 0)),
                    metadata=meta,
                )

    def _count(self, hit: bool, model: str, cost: Any) -> None:
        """Record one lookup's outcome: stats hash (tier, tenant), requests metric, on a hit the dollars saved."""
        self._ctx.accounting.llm(hit, model, cost)

    def _cacheable(self, model: Any) -> bool:
        policy = self._models.for_model(model)
        return policy is None or policy.cacheable

    async def store(
        self,
        params: Mapping[str, Any],
        response: str,
        options: LlmStoreOptions | None = None,
        control: CacheControl | None = None,
    ) -> str:
        """Store ``response``; returns the key. Nothing is written under ``no_store``, for a model whose policy
        says ``cacheable: false``, or for an answer its policy refuses (finish reason, empty)."""
        return await self._store("store", params, response, None, options, None, control)

    async def store_multipart(
        self,
        params: Mapping[str, Any],
        blocks: Sequence[ContentBlock],
        options: LlmStoreOptions | None = None,
        control: CacheControl | None = None,
    ) -> str:
        """Store text, tool calls, reasoning and binary refs; ``response`` on a hit is the joined text."""
        return await self._store("store_multipart", params, flatten_text(blocks), list(blocks), options, None, control)

    async def get_or_compute(
        self,
        params: Mapping[str, Any],
        compute: Callable[[], Awaitable[str | Computed]],
        options: LlmStoreOptions | None = None,
        control: CacheControl | None = None,
    ) -> LlmCacheResult:
        """A hit, or ``compute()`` stored — called once however many callers miss at the same time.

        ``compute`` returns the response text, or :class:`Computed` with token usage (for cost accounting) and
        the finish reason (for the model policy). Under a cache control: ``no_cache`` computes and stores without
        a lookup, ``refresh`` too (concurrent refreshes of one key compute once), ``no_store`` looks up and computes
        on a miss without storing, ``only_if_cached`` returns a miss (``response=None``) without computing.
        """
        try:
            key = self.key(params)  # derived once for every lookup and the store
        except UnencodableTextError as exc:
            error = self._ctx.unkeyable("llm", "get_or_compute", exc)  # raises unless fail-open: then uncached
            wanted = self._ctx.control_now(control)
            if wanted is not None and wanted.only_if_cached:
                self._ctx.bypassed("llm", "only_if_cached")
                return LlmCacheResult(hit=False, error=error)
            computed = await self._compute(params, compute, options, "", None, store=False)
            return dataclasses.replace(computed, key=None, error=error)
        model = params["model"]
        wanted = self._ctx.control_now(control)
        if not self._models.loaded:
            await self._models.load_first()
        if wanted is not None or (self._models.table and not self._cacheable(model)):
            return await self._get_or_compute_controlled(params, compute, options, key, wanted)

        async def lookup() -> tuple[LlmCacheResult, DeferredOutcome] | None:
            found = DeferredOutcome(model)
            result = await self._check(params, key, found)  # polls while another process computes count nothing
            return (result, found) if result.hit else None

        async def compute_and_store() -> tuple[LlmCacheResult, DeferredOutcome]:
            return await self._compute(params, compute, options, key, None), DeferredOutcome(model)

        try:
            (result, found), _ = await self._flights.run(key, lookup, compute_and_store)
        except Exception as exc:
            if not isinstance(exc, BackendError):  # Valkey failed (on_error="raise"): no lookup outcome
                self._count(False, model, None)  # the request missed; computing it failed
            raise
        self._count(result.hit, found.label, found.cost)  # one outcome per call, however long it waited
        return result

    async def _compute(
        self,
        params: Mapping[str, Any],
        compute: Callable[[], Awaitable[str | Computed]],
        options: LlmStoreOptions | None,
        key: str,
        control: CacheControl | None,
        store: bool = True,
    ) -> LlmCacheResult:
        """``compute()``, stored (unless ``store`` is False, or ``control`` or a policy says not to), as a
        computed (not hit) result."""
        produced = await compute()
        if isinstance(produced, str):
            produced = Computed(produced)
        store_options = dataclasses.replace(options or LlmStoreOptions())
        if produced.tokens is not None:
            store_options.tokens = produced.tokens
        if produced.finish_reason is not None:
            store_options.finish_reason = produced.finish_reason
        if store:
            await self._store("store", params, produced.response, None, store_options, key, control)
        tokens = store_options.tokens or {}
        return LlmCacheResult(
            hit=False,
            response=produced.response,
            key=key,
            input_tokens=tokens.get("input", 0),
            output_tokens=tokens.get("output", 0),
        )

    async def _get_or_compute_controlled(
        self,
        params: Mapping[str, Any],
        compute: Callable[[], Awaitable[str | Computed]],
        options: LlmStoreOptions | None,
        key: str,
        wanted: CacheControl | None,
    ) -> LlmCacheResult:
        """``get_or_compute`` under a cache control, or for a model whose policy says not cacheable."""
        ctx, model = self._ctx, params["model"]
        if not self._cacheable(model):  # never cached: computed every time, never coalesced, stored or counted
            ctx.bypassed("llm", "not_cacheable")
            if wanted is not None and wanted.only_if_cached:
                ctx.bypassed("llm", "only_if_cached")
                return LlmCacheResult(hit=False, key=key)
            return await self._compute(params, compute, options, key, wanted, store=False)
        assert wanted is not None
        if wanted.refresh:  # concurrent refreshes of one key compute once; the entry is overwritten
            ctx.bypassed("llm", "refresh")

            async def nothing() -> None:
                return None

            async def recompute() -> tuple[LlmCacheResult, DeferredOutcome]:
                return await self._compute(params, compute, options, key, wanted), DeferredOutcome(model)

            (result, _), _ = await self._refreshes.run(key, nothing, recompute)
            return result
        if wanted.no_cache:
            ctx.bypassed("llm", "no_cache")
            return await self._compute(params, compute, options, key, wanted)
        found = await self._check(params, key)  # counted as a lookup
        if found.hit:
            return found
        if wanted.only_if_cached:
            ctx.bypassed("llm", "only_if_cached")
            return found
        return await self._compute(params, compute, options, key, wanted)  # no_store: not coalesced, not stored

    async def _store(
        self,
        operation: str,
        params: Mapping[str, Any],
        response: str,
        blocks: list[ContentBlock] | None,
        options: LlmStoreOptions | None,
        key: str | None,
        control: CacheControl | None = None,
    ) -> str:
        ctx = self._ctx
        options = options or LlmStoreOptions()
        with ctx.measured("llm", operation):
            if key is None:
                key = self.key(params)
            model: str = params["model"]
            wanted = ctx.control_now(control)
            if wanted is not None and wanted.no_store:
                ctx.bypassed("llm", "no_store")
                return key
            if not self._models.loaded:
                await self._models.load_first()
            policy = self._models.for_model(model)
            finish = store_finish(options)
            if policy is not None:
                refusal = policy.refusal(finish, is_empty(response, blocks))
                if refusal is not None:
                    ctx.bypassed("llm", refusal)
                    if wanted is not None and wanted.refresh:
                        await self._drop_refused(key)  # a refresh never leaves the answer it meant to replace
                    return key
            ttl = ctx.ttl.resolve("llm", options.ttl, policy.ttl if policy else None)
            cost = None
            if options.tokens is not None:
                input_tokens, output_tokens = token_counts(options.tokens)
                micros = self._costs.cost_micros(model, input_tokens, output_tokens)
                # Dollars in the entry (the reference's format), rounded so a hit counts exactly these micros.
                cost = None if micros is None else micros / 1_000_000
            meta = options.metadata
            if options.finish_reason is not None and not (isinstance(meta, Mapping) and "finish" in meta):
                meta = {**(meta or {}), "finish": options.finish_reason}  # readers (the adapters) see it too
            value = encode_entry(
                response, contentBlocks=blocks, model=model, tokens=options.tokens, cost=cost, meta=meta
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

    async def _drop_refused(self, key: str) -> None:
        ctx = self._ctx
        try:
            await ctx.backend.delete_many([key])
        except BackendError as exc:
            if not ctx.fail_open:
                raise
            ctx.telemetry.error("llm", "store", error_kind(exc))
        finally:
            if ctx.near is not None:
                ctx.near.drop(key)
        if ctx.near is not None:
            await ctx.near.settle(key)

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


def store_finish(options: LlmStoreOptions) -> str | None:
    """The finish reason a store gives: ``options.finish_reason``, else the metadata's ``finish`` (adapters')."""
    if options.finish_reason is not None:
        return options.finish_reason
    meta = options.metadata
    finish = meta.get("finish") if isinstance(meta, Mapping) else None
    return finish if isinstance(finish, str) else None


def is_empty(response: str, blocks: Sequence[ContentBlock] | None) -> bool:
    """No text (blank) and no block other than text: nothing a hit could give back."""
    return not response.strip() and not any(block.get("type") != "text" for block in blocks or ())


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
