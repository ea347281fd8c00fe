"""The ``AgentCache`` facade: three tiers behind one Valkey client, plus stats, discovery and upkeep.

Upkeep runs in background tasks of the event loop the cache is used from: one flushes buffered counters
every ``stats_flush_interval_s``, re-reads the live config and tool policies and beats the discovery
heartbeat; the other applies announced config changes (see ``_live_config``).
It starts on first use (or at construction inside a running loop) and ``close()`` ends it after a
final flush. Nothing here talks to Valkey directly — that is the backend's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Iterator
from types import TracebackType
from typing import Any, Self

from ._backend import Backend
from ._breaker import CircuitBreaker
from ._cancellation import current_cancelling, raise_if_cancel_requested
from ._discovery import Discovery, build_metadata, now_iso
from ._errors import AgentCacheError, AgentCacheUsageError, ConfigurationError
from ._keys import KeyLayout, encode_segment
from ._live_config import LiveConfig
from ._memory import MemoryWatch
from ._near_cache import NearCache
from ._near_switch import NearCacheSwitch, l1_entry
from ._ttl import TIERS, TtlPolicy
from .config import CacheConfig
from .cost import CostTable
from .stats import StatsBuffer, parse_stats, tool_effectiveness
from .telemetry import Telemetry
from .tiers._context import TierContext
from .tiers._control import ControlScope, control_from
from .tiers._model_policy import model_policies_key, owned_model_policies_key
from .tiers.llm import LlmCache
from .tiers.session import SessionStore
from .tiers.tool import ToolCache, owned_policies_key
from .types import AgentCacheOptions, AgentCacheStats, NearCacheOptions, ToolEffectivenessEntry

log = logging.getLogger("agent_cache")

_STOP_GRACE_S = 5.0
_LAST_FLUSH_S = 1.0


def _validate_storage(compress_above: int | None, level: int) -> None:
    if compress_above is None:
        return
    if isinstance(compress_above, bool) or not isinstance(compress_above, int) or compress_above < 0:
        raise ConfigurationError(
            f"storage.compress_above_bytes must be a non-negative number of bytes or None, got {compress_above!r}"
        )
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 9:
        raise ConfigurationError(f"storage.compression_level must be 1-9, got {level!r}")


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
        reliability = options.reliability
        if reliability.on_error not in ("fail_open", "raise"):
            raise ConfigurationError(
                f"reliability.on_error must be 'fail_open' or 'raise', got {reliability.on_error!r}"
            )
        self._backend = Backend(
            options.client,
            timeout_s=reliability.timeout_s,
            breaker=CircuitBreaker(reliability.breaker_threshold, reliability.breaker_cooldown_s),
        )
        storage = options.storage
        _validate_storage(storage.compress_above_bytes, storage.compression_level)
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
        self._stats = StatsBuffer(
            self._backend, self.keys.stats, on_pending=self._ensure_upkeep, on_dropped=self.telemetry.stats_dropped
        )
        context = TierContext(
            self._backend,
            self.keys,
            self._stats,
            self.telemetry,
            self._ttl,
            fail_open=reliability.on_error == "fail_open",
            max_entry_bytes=reliability.max_entry_bytes,
            lock_lease_s=reliability.lock_lease_s,
            compress_above=storage.compress_above_bytes,
            compression_level=storage.compression_level,
            max_names=telemetry_options.max_names,
        )
        # The near-cache: the code's near_cache option, switched by a live config's nearCache (see _near_switch).
        self._near_switch = NearCacheSwitch(
            options.near_cache, self._make_near, lambda near: setattr(context, "near", near)
        )
        self._tenant = context.tenant
        self._control = context.control
        self.llm = LlmCache(context, self._costs)
        self.tool = ToolCache(context)
        self.session = SessionStore(context)
        self._heartbeat_s = options.discovery.heartbeat_interval_ms / 1000
        self._discovery = (
            Discovery(self._backend, options.name, self._heartbeat_s) if options.discovery.enabled else None
        )
        self.live_config = LiveConfig(self._backend, options.name, self.telemetry, self._apply_config)
        # Valkey's memory and eviction figures, every 10 s or every stats flush if that is longer (see _memory).
        self._memory = MemoryWatch(self._backend, self.telemetry, options.name, options.stats_flush_interval_s)
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._started_at = now_iso()
        self._upkeep: asyncio.Task[None] | None = None
        self._discovery_settled: asyncio.Future[None] | None = None  # set once upkeep has registered
        self._discovery_error: ConfigurationError | None = None
        self._closed = False
        with contextlib.suppress(RuntimeError):  # no running loop: start on first use instead
            asyncio.get_running_loop()
            self._ensure_upkeep()

    @contextlib.contextmanager
    def tenant(self, tenant: str) -> Iterator[None]:
        """Scope every operation in this block (and the tasks it starts) to ``tenant``.

        Tenants never read each other's LLM/tool entries or session threads; the cache's stats count them all,
        and ``stats().per_tenant`` and the ``tenant_*`` metrics count each tenant (up to ``max_names`` of them).
        ``with cache.tenant("acme"): await cache.llm.check(params)``
        """
        token = self._tenant.set(encode_segment(tenant, "tenant"))
        try:
            yield
        finally:
            self._tenant.reset(token)

    def control(self, **flags: bool) -> ControlScope:
        """Apply a cache control to every LLM and tool call in this block (and the tasks it starts), including
        the calls adapters and frameworks make: ``no_cache``, ``no_store``, ``refresh``, ``only_if_cached``.

        ``with cache.control(refresh=True): ...`` or ``async with``. Nested blocks add up; an unknown name is a
        ``TypeError``, a contradiction (``only_if_cached`` with ``refresh``) an ``AgentCacheUsageError``.
        """
        return ControlScope(self._control, control_from(flags))

    @property
    def backend(self) -> Backend:
        """The Valkey backend (for framework adapters that store their own structures)."""
        return self._backend

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
            if not self.tool.policies_loaded:
                # Upkeep loads the live config and policies in the background: load them now, so a tool's
                # TTL (and its recommendation) never depends on which ran first. Bad data is upkeep's to report.
                with contextlib.suppress(AgentCacheUsageError, ConfigurationError):
                    if self.options.config_refresh.enabled:
                        await self.live_config.refresh()
                    await self.tool.refresh_policies()
                    await self.llm.refresh_model_policies()
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
            keep = {self.keys.config, self.keys.tool_policies, owned_policies_key(self.keys)}
            keep |= {model_policies_key(self.keys), owned_model_policies_key(self.keys)}
            batch: list[str] = []
            deleted = 0
            # The pattern of `fl` also matches the keys of a cache named `fl:x`: only this cache's own keys go.
            async with contextlib.aclosing(self._backend.scan(self.keys.scan_pattern())) as keys:
                async for key in keys:
                    if key not in keep and self.keys.owns(key):
                        batch.append(key)
                    if len(batch) >= 500:
                        deleted += await self._backend.delete_many(batch)
                        batch = []
            deleted += await self._backend.delete_many(batch)
            if self._near is not None:
                self._near.drop_all()
                await self._near.settle()
            self.session.reset_tracker()
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
        if task is not None and task.get_loop() is loop and (not task.done() or task.cancelled()):
            return  # running, or cancelled by this loop's shutdown: a new task would outlive the loop
        self._stopping = asyncio.Event()
        settled = self._discovery_settled = loop.create_future()
        self._upkeep = loop.create_task(self._run_upkeep(settled), name=f"agent-cache upkeep {self.name}")
        refresh = self.options.config_refresh
        watcher = self._watcher
        running = watcher is not None and watcher.get_loop() is loop and not watcher.done()
        if refresh.enabled and refresh.subscribe and not running:  # an upkeep restarted: still one watcher
            self._watcher = loop.create_task(
                self.live_config.watch(lambda: self._closed), name=f"agent-cache config {self.name}"
            )

    async def _apply_config(self, config: CacheConfig | None) -> None:
        """Swap in a live config (None: back to the code's defaults) — all of it or none of it."""
        # An outage raises here, and nothing below changes. A malformed policy (the hash is shared with Monitor
        # and the reference package) keeps its previous value and is reported; the rest of the config applies.
        for what, refresh in (("tool", self.tool.refresh_policies), ("model", self.llm.refresh_model_policies)):
            try:
                await refresh()
            except AgentCacheUsageError as exc:
                self.telemetry.config_refresh_failed()
                log.warning("agent-cache %s: skipped a malformed %s policy: %s", self.name, what, exc)
        overrides = {**self.options.cost_table, **(config.cost_overrides if config else {})}
        costs = CostTable(overrides, use_default=self.options.use_default_cost_table)
        self._ttl.live_tiers = dict(config.tiers) if config else {}
        self._ttl.live_default = config.default_ttl if config else None
        self.tool.use_live_policies(config.tool_policies if config else {})
        self.llm.use_live_model_policies(config.model_policies if config else {})
        self.llm.use_cost_table(costs)
        await self._near_switch.apply(config.near_cache if config else None)

    def _make_near(self, options: NearCacheOptions) -> NearCache:
        return NearCache(
            self._backend,
            max_entries=options.max_entries,
            max_bytes=options.max_bytes,
            max_ttl_s=options.max_ttl_s,
            listener=self.telemetry,
            decode=l1_entry,
        )

    @property
    def _near(self) -> NearCache | None:
        """The near-cache in use now (None: off)."""
        return self._near_switch.current

    async def _run_upkeep(self, discovery_settled: asyncio.Future[None]) -> None:
        """Flush counters every interval; re-read config and policies, beat the heartbeat less often.

        Ends on close() or on cancellation (the loop's shutdown when nobody called close()), never
        turning the CancelledError into anything else (see ``_attempt``).
        """
        try:
            await self._upkeep_loop(discovery_settled)
        except asyncio.CancelledError:
            if not self._closed:  # the loop is shutting down and nobody called close(): keep the counts
                await self._last_flush()
            raise
        finally:
            if not discovery_settled.done():  # ensure_discovery_ready() must not wait for an ended upkeep
                discovery_settled.set_result(None)

    async def _last_flush(self) -> None:
        """One bounded try to write the buffered counts before the loop goes (``asyncio.run`` without close)."""
        with contextlib.suppress(AgentCacheError, TimeoutError):
            async with asyncio.timeout(_LAST_FLUSH_S):
                await self._stats.flush()

    async def _upkeep_loop(self, discovery_settled: asyncio.Future[None]) -> None:
        interval = max(0.05, self.options.stats_flush_interval_s)
        refresh = self.options.config_refresh
        refresh_every = max(1.0, refresh.interval_ms / 1000)
        next_heartbeat = next_refresh = 0.0
        if self._discovery is not None:
            try:
                await self._discovery.check_collision()
            except ConfigurationError as exc:
                log.error("agent-cache %s: discovery disabled: %s", self.name, exc)
                self._discovery, self._discovery_error = None, exc
            except AgentCacheError as exc:
                self._raise_if_cancelled(exc)
                log.warning("agent-cache %s: could not read the discovery registry: %s", self.name, exc)
        # valkey-py may turn a cancellation mid-command into a ConnectionError, so the loop also
        # watches the closed flag instead of relying on CancelledError alone.
        while not self._closed:
            now = time.monotonic()
            if now >= next_refresh:
                next_refresh = now + refresh_every
                # Policies are re-read with the live config off too: set_policy reaches every instance. A newly
                # applied config has just re-read them (and reported a malformed one): not twice in one cycle.
                version = self.live_config.version
                if not refresh.enabled or (
                    await self._attempt("re-read the live config", self.live_config.refresh())
                    and self.live_config.version == version
                ):
                    await self._attempt("re-read tool policies", self.tool.refresh_policies())
                    await self._attempt("re-read model policies", self.llm.refresh_model_policies())
            if now >= next_heartbeat:
                next_heartbeat = now + self._heartbeat_s
                if refresh.enabled:
                    await self._attempt("report the applied config", self.live_config.report())
                if self._discovery is not None and not await self._attempt(
                    "write the discovery heartbeat", self._discovery.beat(self._metadata())
                ):
                    self.telemetry.discovery_write_failed()
                if not discovery_settled.done():
                    discovery_settled.set_result(None)
            # An event, not a sleep: close() must not wait a whole interval. asyncio.timeout, not wait_for:
            # Python 3.11's wait_for can lose a cancellation that arrives as the event is set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._stopping.wait()
            await self._attempt("flush stats counters", self._stats.flush())
            if not self._closed:
                await self._attempt("read Valkey's memory figures", self._memory.read_if_due(time.monotonic()))

    @staticmethod
    def _raise_if_cancelled(error: BaseException) -> None:
        """Upkeep's own task was cancelled and a client made ``error`` of it: end, as asked."""
        task, _ = current_cancelling()
        raise_if_cancel_requested(task, 0, error)  # nobody but the loop's shutdown cancels upkeep

    async def _attempt(self, what: str, operation: Awaitable[Any]) -> bool:
        """Upkeep must outlive a Valkey outage and bad data: log, count, go on. True if it worked.
        A cancellation is never caught here, whatever shape a client gave it."""
        try:
            await operation
        except AgentCacheError as exc:
            self._raise_if_cancelled(exc)
            if self._closed:
                return False  # close() cancelled this mid-command; the error is an artifact of that
            if isinstance(exc, AgentCacheUsageError | ConfigurationError):
                self.telemetry.config_refresh_failed()
            log.warning("agent-cache %s: could not %s: %s", self.name, what, exc)
            return False
        except Exception:  # a defect must not end upkeep for good (no more flushes, heartbeats or refreshes)
            if self._closed:
                return False
            log.exception("agent-cache %s: could not %s", self.name, what)
            return False
        return True

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
        """Flush counters, stop upkeep, remove the heartbeat and give the connections kept for commands back to
        the client's pool. The client stays open (it is yours)."""
        self._closed = True
        self._stopping.set()
        loop = asyncio.get_running_loop()
        tasks = {task for task in (self._upkeep, self._watcher) if task is not None and task.get_loop() is loop}
        try:
            await self.live_config.stop_watching()
            if tasks:
                # Let them finish the command in flight: cancelling mid-command drops connections.
                _, stuck = await asyncio.wait(tasks, timeout=_STOP_GRACE_S)
                for task in stuck:
                    task.cancel()
                if stuck:
                    await asyncio.wait(stuck)  # their CancelledError stays in them; close()'s own would not
        except asyncio.CancelledError:
            for task in tasks:  # close() itself was cancelled: leave no upkeep behind
                task.cancel()
            raise
        self._upkeep = self._watcher = None
        try:
            await self._stats.flush()
            if self._discovery is not None:
                await self._discovery.stop()
            if self.options.config_refresh.enabled:
                await self.live_config.forget()
        except AgentCacheError as exc:  # counts stay buffered; a later close() retries them
            log.warning("agent-cache %s: could not flush counters or remove the heartbeat: %s", self.name, exc)
        await self._near_switch.close()
        await self._backend.close()

    shutdown = close  # the reference package's name

    async def ensure_discovery_ready(self) -> None:
        """Wait until this instance has registered with discovery (its registry entry and first heartbeat
        written, or tried: a Valkey outage is logged and counted, not raised), starting upkeep if needed.

        Raises the :class:`ConfigurationError` that disabled discovery when the cache's name is registered
        as another kind of cache on this Valkey. Returns at once when discovery is disabled or the cache
        is closed. Registration happens without this call; it is for callers that must know it happened.
        """
        if self._discovery_error is not None:
            raise self._discovery_error
        if not self.options.discovery.enabled or self._closed:
            return
        self._ensure_upkeep()
        settled = self._discovery_settled
        if settled is not None and settled.get_loop() is asyncio.get_running_loop():
            await asyncio.shield(settled)  # shared with the upkeep: a cancelled caller must not cancel it
        if self._discovery_error is not None:
            raise self._discovery_error

    async def __aenter__(self) -> Self:
        self._ensure_upkeep()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
