"""Tool result tier: exact match on tool name + canonical arguments, with per-tool TTL policies.

One tool's entries share a cluster hash tag with the tool's index, so ``invalidate_by_tool`` is a few
single-slot script calls costing O(that tool's entries), and a hit is one GET.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from .._codec import decode_entry, encode_entry
from .._errors import AgentCacheUsageError, BackendError, CorruptEntryError, UnencodableTextError
from .._keys import KeyLayout, tool_hash
from .._scripts import DELETE_INDEXED, DROP_INDEXED_BATCH, SET_INDEXED, SET_TOOL_POLICY
from .._ttl import validate_ttl
from ..types import ToolCacheResult, ToolPolicy, ToolStoreOptions
from ._context import TierContext
from ._control import CacheControl
from ._policy_hash import parse_policy_hash
from ._singleflight import DeferredOutcome, SingleFlight
from ._tool_decorator import cached_tool

P = ParamSpec("P")
R = TypeVar("R")

_DROP_BATCH = 1000
_NAMES_CACHED = 1024


class _ToolNames:
    """The key parts of one tool name, encoded once instead of on every call (stats fields: ``ctx.accounting``)."""

    __slots__ = ("index", "prefix")

    def __init__(self, keys: KeyLayout, tool_name: str) -> None:
        self.prefix = keys.tool_prefix(tool_name)
        self.index = keys.tool_index(tool_name)


def policy_document(policy: ToolPolicy) -> dict[str, Any]:
    """The JSON form of a policy in ``{name}:__tool_policies`` (``{"ttl": 600}``, ``{"cacheable": false}``)."""
    document: dict[str, Any] = {}
    if policy.ttl is not None:
        document["ttl"] = policy.ttl
    if not policy.cacheable:
        document["cacheable"] = False
    return document


def owned_policies_key(keys: KeyLayout) -> str:
    """The tools the live config owns, with the application's policy of each kept aside ('' for none). Its hash
    tag is the policies key, so one script updates both on a cluster."""
    return f"{keys.tool_policies}:{{{keys.tool_policies}}}:config_owned"


def parse_policy(tool: str, raw: bytes | str) -> ToolPolicy:
    """A policy as stored in ``{name}:__tool_policies`` (JSON, e.g. ``{"ttl": 600}``)."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise AgentCacheUsageError(f"tool policy for {tool!r} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AgentCacheUsageError(f"tool policy for {tool!r} must be a JSON object, got {data!r}")
    cacheable = data.get("cacheable", True)
    if not isinstance(cacheable, bool):
        raise AgentCacheUsageError(f"tool policy for {tool!r}: cacheable must be true or false, got {cacheable!r}")
    return ToolPolicy(ttl=validate_ttl(data.get("ttl"), f"tool policy {tool!r} ttl"), cacheable=cacheable)


class ToolCache:
    def __init__(self, context: TierContext) -> None:
        self._ctx = context
        self._policies: dict[str, ToolPolicy] = {}  # from {name}:__tool_policies (set_policy, Monitor)
        self._live_policies: Mapping[str, ToolPolicy] = {}  # from the live config: the platform's, they win
        self._policy_writes = 0  # bumped by set_policy so a concurrent refresh can't undo it
        self._loaded = False  # the policies hash has been read (refresh_policies) since start or reset
        self._flights: SingleFlight[tuple[ToolCacheResult, DeferredOutcome]] = SingleFlight(context, "tool")
        self._refreshes: SingleFlight[tuple[ToolCacheResult, DeferredOutcome]] = SingleFlight(context, "tool")
        self._names_cache: dict[str, _ToolNames] = {}

    def _cacheable(self, tool_name: str) -> bool:
        policy = self.get_policy(tool_name)
        return policy is None or policy.cacheable

    def _names(self, tool_name: str) -> _ToolNames:
        names = self._names_cache.get(tool_name) if type(tool_name) is str else None
        if names is None:
            names = _ToolNames(self._ctx.keys, tool_name)  # validates the name (raises on a bad one)
            if len(self._names_cache) >= _NAMES_CACHED:
                self._names_cache.clear()
            self._names_cache[tool_name] = names
        return names

    def _entry_key(self, tool_name: str, args: Any) -> tuple[_ToolNames, str, str]:
        names = self._names(tool_name)
        digest = tool_hash(args, self._ctx.scope)
        return names, digest, names.prefix + digest

    def check(self, tool_name: str, args: Any, control: CacheControl | None = None) -> Awaitable[ToolCacheResult]:
        """A hit (the stored result) or a miss; a Valkey failure is a miss with ``error``.

        A tool whose policy says ``cacheable: false`` is a miss without a round trip, and not counted; so is a
        call under ``no_cache`` or ``refresh`` (``control=`` or a ``cache.control(...)`` scope), counted as a bypass."""
        wanted = self._ctx.control_now(control)
        if wanted is None:
            return self._check(tool_name, args, None)  # the coroutine itself: no extra layer on the hit path
        return self._check_controlled(tool_name, args, wanted)

    async def _check_controlled(self, tool_name: str, args: Any, wanted: CacheControl) -> ToolCacheResult:
        if wanted.skips_lookup:
            _, _, key = self._entry_key(tool_name, args)
            self._ctx.bypassed("tool", wanted.lookup_bypass)
            return ToolCacheResult(hit=False, tool_name=tool_name, key=key)
        result = await self._check(tool_name, args, None)
        if not result.hit and wanted.only_if_cached:
            self._ctx.bypassed("tool", "only_if_cached")
        return result

    async def _check(
        self,
        tool_name: str,
        args: Any,
        entry_key: tuple[_ToolNames, str, str] | None,
        deferred: DeferredOutcome | None = None,
    ) -> ToolCacheResult:
        """``check``, with the call's ``_entry_key`` when the caller has already derived it. With ``deferred``
        the outcome is not counted but left there, for a caller that counts one outcome per logical request."""
        ctx = self._ctx
        with ctx.measured("tool", "check"):
            if not self._loaded:
                await self._load_policies_first()
            try:
                _, _, key = entry_key or self._entry_key(tool_name, args)
            except UnencodableTextError as exc:
                return ToolCacheResult(hit=False, tool_name=tool_name, error=ctx.unkeyable("tool", "check", exc))
            with ctx.telemetry.span("agent_cache.tool.check") as span:
                if span.is_recording():
                    span.set_attributes({"cache.key": key, "cache.tool_name": tool_name})
                if not self._cacheable(tool_name):
                    span.set_attribute("cache.skipped", "not_cacheable")
                    return ToolCacheResult(hit=False, tool_name=tool_name, key=key)
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
                    error = ctx.failed_open("tool", "check", exc, span)
                    return ToolCacheResult(hit=False, tool_name=tool_name, key=key, error=error)
                if raw is not None:
                    try:
                        entry = decode_entry(raw)
                    except CorruptEntryError:
                        ctx.telemetry.error("tool", "check", "corrupt")
                        with contextlib.suppress(BackendError):
                            await self.invalidate(tool_name, args)
                span.set_attribute("cache.hit", entry is not None)
                span.set_attribute("cache.level", level)
                if entry is None:
                    if deferred is None:
                        self._count(tool_name, False, None)
                    return ToolCacheResult(hit=False, tool_name=tool_name, key=key)
                if deferred is None:
                    self._count(tool_name, True, entry.get("cost"))
                else:
                    deferred.cost = entry.get("cost")
                return ToolCacheResult(hit=True, tool_name=tool_name, response=entry["response"], key=key)

    def _count(self, tool_name: str, hit: bool, cost: Any) -> None:
        """Record one lookup's outcome: stats hash (tier, tool, tenant), requests metric, dollars saved."""
        self._ctx.accounting.tool(hit, tool_name, cost)

    async def store(
        self,
        tool_name: str,
        args: Any,
        response: str,
        options: ToolStoreOptions | None = None,
        control: CacheControl | None = None,
    ) -> str:
        """Store ``response`` for this call (the tool's TTL policy, else ``options.ttl``, else the defaults).
        Nothing is written under ``no_store``."""
        return await self._store(tool_name, args, response, options, None, control)

    async def _store(
        self,
        tool_name: str,
        args: Any,
        response: str,
        options: ToolStoreOptions | None,
        entry_key: tuple[_ToolNames, str, str] | None,
        control: CacheControl | None = None,
    ) -> str:
        ctx = self._ctx
        options = options or ToolStoreOptions()
        with ctx.measured("tool", "store"):
            if not self._loaded:
                await self._load_policies_first()
            names, digest, key = entry_key or self._entry_key(tool_name, args)
            wanted = ctx.control_now(control)
            if wanted is not None and wanted.no_store:
                ctx.bypassed("tool", "no_store")
                return key
            policy = self.get_policy(tool_name)
            ttl = ctx.ttl.resolve("tool", options.ttl, policy.ttl if policy else None)
            cost = options.cost
            if cost is not None and (isinstance(cost, bool) or not isinstance(cost, int | float) or cost < 0):
                raise AgentCacheUsageError(f"options.cost must be a non-negative number of dollars, got {cost!r}")
            value = encode_entry(response, cost=cost)
            size = len(value.encode())
            with ctx.telemetry.span("agent_cache.tool.store") as span:
                if span.is_recording():
                    span.set_attributes(
                        {"cache.key": key, "cache.tool_name": tool_name, "cache.ttl": ttl or -1, "cache.bytes": size}
                    )
                if not self._cacheable(tool_name) or ctx.too_large("tool", "store", size, span):
                    return key  # the platform marked this tool not cacheable, or the entry is too big
                stored, stored_size = ctx.pack(value, size)
                try:
                    await ctx.backend.run_script(SET_INDEXED, (key, names.index), (digest, stored, ttl or "", ""))
                except BackendError as exc:
                    if not ctx.fail_open:
                        raise
                    ctx.failed_open("tool", "store", exc, span)
                    return key
                finally:
                    if ctx.near is not None:
                        ctx.near.drop(key)  # our own overwrite: no L1 copy of the old entry outlives it
                if ctx.near is not None:
                    await ctx.near.settle(key)  # other processes' L1 copies are invalidated once we return
            ctx.telemetry.stored_bytes("tool", stored_size)
            ctx.accounting.tool_ttl(tool_name, ttl)
            return key

    async def get_or_compute(
        self,
        tool_name: str,
        args: Any,
        compute: Callable[[], Awaitable[str]],
        options: ToolStoreOptions | None = None,
        control: CacheControl | None = None,
    ) -> ToolCacheResult:
        """A hit, or ``compute()`` stored — run once however many callers (processes, pods) miss together.

        Counts one hit or miss per call, however long it waited for another process. A tool that is not
        cacheable (``cacheable: false``) is computed on every call, never coalesced, stored or counted.
        Cache controls as for ``cache.llm.get_or_compute`` (``only_if_cached``: a miss, ``response=None``)."""
        try:
            entry_key = self._entry_key(tool_name, args)  # derived once for every lookup and the store
        except UnencodableTextError as exc:
            error = self._ctx.unkeyable("tool", "get_or_compute", exc)  # raises unless fail-open: then uncached
            wanted = self._ctx.control_now(control)
            if wanted is not None and wanted.only_if_cached:
                self._ctx.bypassed("tool", "only_if_cached")
                return ToolCacheResult(hit=False, tool_name=tool_name, error=error)
            return ToolCacheResult(hit=False, tool_name=tool_name, response=await compute(), error=error)
        _, _, key = entry_key
        wanted = self._ctx.control_now(control)
        if not self._loaded:
            await self._load_policies_first()
        if not self._cacheable(tool_name):
            if wanted is not None and wanted.only_if_cached:
                self._ctx.bypassed("tool", "only_if_cached")
                return ToolCacheResult(hit=False, tool_name=tool_name, key=key)
            return ToolCacheResult(hit=False, tool_name=tool_name, response=await compute(), key=key)
        if wanted is not None:
            return await self._get_or_compute_controlled(tool_name, args, compute, options, entry_key, wanted)

        async def lookup() -> tuple[ToolCacheResult, DeferredOutcome] | None:
            found = DeferredOutcome(tool_name)
            result = await self._check(tool_name, args, entry_key, found)  # polls count nothing
            return (result, found) if result.hit else None

        async def compute_and_store() -> tuple[ToolCacheResult, DeferredOutcome]:
            response = await compute()
            await self._store(tool_name, args, response, options, entry_key)
            computed = ToolCacheResult(hit=False, tool_name=tool_name, response=response, key=key)
            return computed, DeferredOutcome(tool_name)

        try:
            (result, found), _ = await self._flights.run(key, lookup, compute_and_store)
        except Exception as exc:
            if not isinstance(exc, BackendError):  # Valkey failed (on_error="raise"): no lookup outcome
                self._count(tool_name, False, None)  # the call missed; computing it failed
            raise
        self._count(tool_name, result.hit, found.cost)  # one outcome per call, however long it waited
        return result

    async def _get_or_compute_controlled(
        self,
        tool_name: str,
        args: Any,
        compute: Callable[[], Awaitable[str]],
        options: ToolStoreOptions | None,
        entry_key: tuple[_ToolNames, str, str],
        wanted: CacheControl,
    ) -> ToolCacheResult:
        ctx, key = self._ctx, entry_key[2]

        async def compute_and_store() -> ToolCacheResult:
            response = await compute()
            await self._store(tool_name, args, response, options, entry_key, wanted)
            return ToolCacheResult(hit=False, tool_name=tool_name, response=response, key=key)

        if wanted.refresh:  # concurrent refreshes of one call compute once; the entry is overwritten
            ctx.bypassed("tool", "refresh")

            async def nothing() -> None:
                return None

            async def recompute() -> tuple[ToolCacheResult, DeferredOutcome]:
                return await compute_and_store(), DeferredOutcome(tool_name)

            (result, _), _ = await self._refreshes.run(key, nothing, recompute)
            return result
        if wanted.no_cache:
            ctx.bypassed("tool", "no_cache")
            return await compute_and_store()
        found = await self._check(tool_name, args, entry_key)  # counted as a lookup
        if found.hit:
            return found
        if wanted.only_if_cached:
            ctx.bypassed("tool", "only_if_cached")
            return found
        return await compute_and_store()  # no_store: not coalesced, not stored

    def cached(
        self, name: str | None = None, *, ttl: int | None = None, cost: float | None = None
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        """Decorate an async tool function: its bound arguments are the key, its JSON result the entry.

        ``@cache.tool.cached("get_weather", ttl=600, cost=0.001)`` — concurrent misses call it once.
        """
        return cached_tool(self, name, ToolStoreOptions(ttl=validate_ttl(ttl), cost=cost))

    async def set_policy(self, tool_name: str, policy: ToolPolicy) -> None:
        """Persist a per-tool policy; every instance of this cache picks it up on refresh. Where the live
        config names the tool, the config's policy applies and this one is kept until it stops naming it."""
        ctx = self._ctx
        ttl = validate_ttl(policy.ttl, "policy.ttl")
        with ctx.measured("tool", "set_policy"):
            with ctx.telemetry.span(
                "agent_cache.tool.set_policy", {"cache.tool_name": tool_name, "cache.ttl": ttl or -1}
            ):
                stored = ToolPolicy(ttl=ttl, cacheable=policy.cacheable)
                await ctx.backend.run_script(
                    SET_TOOL_POLICY,
                    (ctx.keys.tool_policies, owned_policies_key(ctx.keys)),
                    (tool_name, json.dumps(policy_document(stored))),
                )
                self._policies[tool_name] = stored
                self._policy_writes += 1

    def get_policy(self, tool_name: str) -> ToolPolicy | None:
        live = self._live_policies.get(tool_name)
        return live if live is not None else self._policies.get(tool_name)

    def use_live_policies(self, policies: Mapping[str, ToolPolicy]) -> None:
        """Policies of the live config; they take precedence over the policies hash."""
        self._live_policies = dict(policies)

    def list_policy_names(self) -> list[str]:
        return sorted({*self._policies, *self._live_policies})

    def effective_ttl(self, tool_name: str) -> int | None:
        policy = self.get_policy(tool_name)
        return self._ctx.ttl.resolve("tool", None, policy.ttl if policy else None)

    async def refresh_policies(self) -> None:
        """Re-read every policy; a malformed one keeps its previous value (and raises after the rest apply)."""
        writes_before = self._policy_writes
        raw = await self._ctx.backend.command("HGETALL", self._ctx.keys.tool_policies)
        if self._policy_writes != writes_before:
            return  # a local set_policy raced this read; the next refresh sees both
        self._policies, problems = parse_policy_hash(raw, parse_policy, self._policies)
        self._loaded = True
        if problems:
            raise AgentCacheUsageError("; ".join(problems))

    async def _load_policies_first(self) -> None:
        """Read the policies hash before this instance decides anything about a tool: a tool that another
        instance (or Monitor) set ``cacheable: false`` is never cached here, in the first moments of a process
        or with the live config off. A Valkey outage is the calling operation's to report (it tries again next
        time); a malformed policy is upkeep's (the others apply)."""
        with contextlib.suppress(BackendError, AgentCacheUsageError):
            await self.refresh_policies()

    async def load_policies(self) -> None:
        """Read every policy from Valkey now (the reference's name for ``refresh_policies``)."""
        await self.refresh_policies()

    def reset_policies(self) -> None:
        """Forget the policies read from Valkey; the next refresh (or ``load_policies``) reads them again.
        The live config's policies stay: they come with the config."""
        self._policies = {}
        self._loaded = False

    @property
    def policies_loaded(self) -> bool:
        """Has this instance read the policies hash since it started (or since ``reset_policies``)?"""
        return self._loaded

    async def invalidate(self, tool_name: str, args: Any) -> bool:
        ctx = self._ctx
        with ctx.measured("tool", "invalidate"):
            names, digest, key = self._entry_key(tool_name, args)
            with ctx.telemetry.span(
                "agent_cache.tool.invalidate", {"cache.key": key, "cache.tool_name": tool_name}
            ) as span:
                try:
                    deleted = int(await ctx.backend.run_script(DELETE_INDEXED, (key, names.index), (digest,)))
                finally:
                    if ctx.near is not None:
                        ctx.near.drop(key)
                if ctx.near is not None:
                    await ctx.near.settle(key)
                span.set_attribute("cache.deleted_count", deleted)
                return deleted > 0

    async def invalidate_by_tool(self, tool_name: str) -> int:
        """Delete every cached result of ``tool_name``; costs O(its entries), in bounded batches."""
        ctx = self._ctx
        with ctx.measured("tool", "invalidate_by_tool"):
            with ctx.telemetry.span("agent_cache.tool.invalidate_by_tool", {"cache.tool_name": tool_name}) as span:
                names = self._names(tool_name)
                try:
                    deleted = await drop_index(ctx, (names.index, names.prefix))
                finally:
                    if ctx.near is not None:
                        ctx.near.drop_all()  # our own bulk delete: no L1 copy of those entries outlives it
                if ctx.near is not None:
                    await ctx.near.settle()
                span.set_attribute("cache.deleted_count", deleted)
                return deleted


async def drop_index(ctx: TierContext, *indexes: tuple[str, str]) -> int:
    """Delete every entry of the given ``(index, key prefix)`` pairs (one slot) and the indexes; returns
    how many entries existed. One script call per batch of entries, however many indexes."""
    keys = tuple(index for index, _ in indexes)
    args: tuple[str | int, ...] = (_DROP_BATCH, *(prefix for _, prefix in indexes))
    deleted = 0
    while True:
        batch_deleted, remaining = await ctx.backend.run_script(DROP_INDEXED_BATCH, keys, args)
        deleted += int(batch_deleted)
        if int(remaining) == 0:
            return deleted
