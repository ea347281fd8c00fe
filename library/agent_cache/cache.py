"""The ``AgentCache`` facade: three tiers behind one Valkey client, plus stats, discovery and upkeep.

Upkeep runs in one background task of the event loop the cache is used from: it flushes buffered
counters every ``stats_flush_interval_s``, refreshes tool policies and the discovery heartbeat.
It starts on first use (or at construction inside a running loop) and ``close()`` ends it after a
final flush. Nothing here talks to Valkey directly — that is the backend's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType
from typing import Any, Self

from ._backend import Backend
from ._discovery import Discovery, build_metadata, now_iso
from ._errors import AgentCacheError, ConfigurationError
from ._keys import KeyLayout
from ._ttl import TIERS, TtlPolicy
from .cost import CostTable
from .stats import StatsBuffer, parse_stats, tool_effectiveness
from .telemetry import Telemetry
from .tiers._context import TierContext
from .tiers.llm import LlmCache
from .tiers.session import SessionStore
from .tiers.tool import ToolCache
from .types import AgentCacheOptions, AgentCacheStats, ToolEffectivenessEntry

log = logging.getLogger("agent_cache")

_POLICY_REFRESH_S = 30.0


class AgentCache:
    """Multi-tier exact-match cache: ``cache.llm``, ``cache.tool``, ``cache.session``.

    ``AgentCache(AgentCacheOptions(client=...))`` as in the reference, or ``AgentCache(client=..., ...)``.
    """

    def __init__(self, options: AgentCacheOptions | None = None, /, **kwargs: Any) -> None:
        if options is None:
            options = AgentCacheOptions(**kwargs)
        elif kwargs:
            raise TypeError("pass either an AgentCacheOptions or keyword options, not both")
        self.options = options
        self.name = options.name
        self.keys = KeyLayout(options.name)
        self._backend = Backend(options.client)
        self._costs = CostTable(options.cost_table, use_default=options.use_default_cost_table)
        self._ttl = TtlPolicy.from_options(options.default_ttl, options.tier_defaults)
        telemetry_options = options.telemetry
        self.telemetry = Telemetry(
            options.name,
            prefix=telemetry_options.metrics_prefix,
            registry=telemetry_options.registry,
            tracer_name=telemetry_options.tracer_name,
            tracer_provider=telemetry_options.tracer_provider,
        )
        self._stats = StatsBuffer(self._backend, self.keys.stats, on_pending=self._ensure_upkeep)
        context = TierContext(self._backend, self.keys, self._stats, self.telemetry, self._ttl)
        self.llm = LlmCache(context, self._costs)
        self.tool = ToolCache(context)
        self.session = SessionStore(context)
        self._discovery = (
            Discovery(self._backend, options.name, options.discovery.heartbeat_interval_s)
            if options.discovery.enabled
            else None
        )
        self._started_at = now_iso()
        self._upkeep: asyncio.Task[None] | None = None
        self._closed = False
        with contextlib.suppress(RuntimeError):  # no running loop: start on first use instead
            asyncio.get_running_loop()
            self._ensure_upkeep()

    @property
    def client(self) -> Any:
        return self._backend.client

    @property
    def cost_table(self) -> CostTable:
        return self._costs

    # ── stats ────────────────────────────────────────────────────────────────

    async def stats(self) -> AgentCacheStats:
        """Counters of every instance of this cache (this process's buffered counts flushed first)."""
        with self.telemetry.span("agent_cache.stats"):
            await self._stats.flush()
            raw = await self._backend.command("HGETALL", self.keys.stats)
            return parse_stats(raw or {}, self.tool.effective_ttl)

    async def tool_effectiveness(self) -> list[ToolEffectivenessEntry]:
        """Per-tool hit rate, dollars saved and a TTL recommendation, biggest savings first."""
        return tool_effectiveness(await self.stats())

    async def flush(self) -> int:
        """Delete this cache's entries, indexes and stats (not its TTL config); returns keys deleted."""
        with self.telemetry.span("agent_cache.flush") as span:
            await self._stats.flush()
            keep = {self.keys.config, self.keys.tool_policies}
            batch: list[str] = []
            deleted = 0
            async for key in self._backend.scan(self.keys.scan_pattern()):
                if key not in keep:
                    batch.append(key)
                if len(batch) >= 500:
                    deleted += await self._backend.delete_many(batch)
                    batch = []
            deleted += await self._backend.delete_many(batch)
            self.session.forget_threads()
            span.set_attribute("cache.deleted_count", deleted)
            return deleted

    # ── lifecycle ────────────────────────────────────────────────────────────

    def _ensure_upkeep(self) -> None:
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = self._upkeep
        if task is None or task.done() or task.get_loop() is not loop:
            self._upkeep = loop.create_task(self._run_upkeep(), name=f"agent-cache upkeep {self.name}")

    async def _run_upkeep(self) -> None:
        interval = max(0.05, self.options.stats_flush_interval_s)
        heartbeat_every = self.options.discovery.heartbeat_interval_s
        next_heartbeat = next_policy_refresh = 0.0
        if self._discovery is not None:
            try:
                await self._discovery.check_collision()
            except ConfigurationError as exc:
                log.error("agent-cache %s: discovery disabled: %s", self.name, exc)
                self._discovery = None
            except AgentCacheError as exc:
                log.warning("agent-cache %s: could not read the discovery registry: %s", self.name, exc)
        # valkey-py may turn a cancellation mid-command into a ConnectionError, so the loop also
        # watches the closed flag instead of relying on CancelledError alone.
        while not self._closed:
            now = time.monotonic()
            if now >= next_policy_refresh:
                next_policy_refresh = now + _POLICY_REFRESH_S
                await self._attempt("refresh tool policies", self.tool.refresh_policies())
            if self._discovery is not None and now >= next_heartbeat:
                next_heartbeat = now + heartbeat_every
                await self._attempt("write the discovery heartbeat", self._discovery.beat(self._metadata()))
            await asyncio.sleep(interval)
            await self._attempt("flush stats counters", self._stats.flush())

    async def _attempt(self, what: str, operation: Any) -> None:
        """Upkeep must outlive a Valkey outage: log and go on."""
        try:
            await operation
        except AgentCacheError as exc:
            if self._closed:
                return  # close() cancelled this mid-command; the error is an artifact of that
            log.warning("agent-cache %s: could not %s: %s", self.name, what, exc)

    def _metadata(self) -> dict[str, Any]:
        return build_metadata(
            name=self.name,
            tier_ttls={tier: self._ttl.tier_ttl(tier) for tier in TIERS},
            tool_policy_names=self.tool.list_policy_names(),
            has_cost_table=bool(self.options.cost_table),
            uses_default_cost_table=self.options.use_default_cost_table,
            started_at=self._started_at,
        )

    async def close(self) -> None:
        """Flush counters, stop upkeep and remove the heartbeat. The client stays open (it is yours)."""
        self._closed = True
        if self._upkeep is not None:
            self._upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._upkeep
            self._upkeep = None
        try:
            await self._stats.flush()
            if self._discovery is not None:
                await self._discovery.stop()
        except AgentCacheError as exc:  # counts stay buffered; a later close() retries them
            log.warning("agent-cache %s: could not flush counters or remove the heartbeat: %s", self.name, exc)

    shutdown = close  # the reference package's name

    async def __aenter__(self) -> Self:
        self._ensure_upkeep()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
