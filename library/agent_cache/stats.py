"""Hit/miss counters in the ``{name}:__stats`` hash, and what they say about each tool.

Counters are buffered in-process and flushed with one pipelined round trip at least once a second and on
close, so a cache hit costs one round trip, not two or three. A flush that fails puts its counts back,
so no increment is lost; ``stats()`` flushes first, so it reflects every completed operation of this
process. Field names are BetterDB Monitor's: ``llm:hits``, ``tool:{t}:hits``, ``cost_saved_micros`` ...; the
per-tenant family is ours: ``tenant:{t}:llm:hits``, ``tenant:{t}:tool:misses``, ``tenant:{t}:cost_saved_micros`` ...
(tools and tenants beyond a cache's ``max_names`` are counted as ``other``: see ``_cardinality``).
"""

from __future__ import annotations

import re
import uuid
from collections import Counter as _Counter
from collections.abc import Callable, Mapping

from ._backend import Backend, as_text
from ._keys import decode_segment
from ._loop_lock import LoopLock
from ._scripts import FLUSH_STATS
from .types import (
    AgentCacheStats,
    Recommendation,
    SessionStats,
    TenantStats,
    TierStats,
    ToolEffectivenessEntry,
    ToolStats,
)

INCREASE_TTL_ABOVE = 0.8
DISABLE_BELOW = 0.4
LONG_TTL_SECONDS = 3600

_MARKER_TTL_S = 3600  # how long a retried batch is recognised as already applied
_TOOL_FIELD = re.compile(r"tool:([^:]+):(hits|misses|cost_saved_micros)")
_TENANT_FIELD = re.compile(r"tenant:([^:]+):(llm:hits|llm:misses|tool:hits|tool:misses|cost_saved_micros)")


def tenant_stat_field(encoded_tenant: str, counter: str) -> str:
    """Per-tenant field of the stats hash, ``tenant:{tenant}:{counter}`` (the tenant percent-encoded)."""
    return f"tenant:{encoded_tenant}:{counter}"


MAX_PENDING_FIELDS = 10_000
"""Distinct fields the buffer holds while flushes fail (one per tier counter, three per tool, five per tenant): past
it, increments of new fields are dropped and counted, so a long outage with ever new tool names cannot grow the
process."""


class StatsBuffer:
    """In-process counter deltas waiting to be added to the stats hash.

    Each flush sends a numbered batch through a script that applies a batch id once; a batch whose
    outcome is unknown (timeout, dropped connection, a refused write) is retried with the same id, so
    counts are neither lost nor doubled. Only one batch is ever waiting for a retry: new increments add
    up beside it, so an outage costs memory per distinct field, not per flush attempt.
    """

    def __init__(
        self,
        backend: Backend,
        stats_key: str,
        on_pending: Callable[[], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self._backend = backend
        self._key = stats_key
        self._pending: _Counter[str] = _Counter()
        self._unsent: tuple[str, _Counter[str]] | None = None  # a batch of unknown outcome, retried as is
        self._on_pending = on_pending
        self._on_dropped = on_dropped
        if on_dropped is not None:
            on_dropped(0)  # the drop counter exists (at 0) from the start: dashboards and alerts see "none dropped"
        self._flushing = LoopLock()  # one flush at a time, in whichever loop uses the cache

    def add(self, field: str, amount: int = 1) -> None:
        pending = self._pending
        if not pending and self._on_pending is not None:
            self._on_pending()  # make sure a flusher is running in this loop
        if field not in pending and len(pending) >= MAX_PENDING_FIELDS:
            if self._on_dropped is not None:
                self._on_dropped(1)
            return
        pending[field] += amount

    @property
    def pending(self) -> int:
        """Distinct fields waiting to be written (in the batch being retried and beside it)."""
        return len(self._pending) + (len(self._unsent[1]) if self._unsent is not None else 0)

    async def flush(self) -> None:
        async with self._flushing.held():
            if self._unsent is not None:
                await self._send(*self._unsent)
                self._unsent = None
            if self._pending:
                self._unsent = (uuid.uuid4().hex, self._pending)
                self._pending = _Counter()
                await self._send(*self._unsent)
                self._unsent = None

    async def _send(self, batch_id: str, batch: _Counter[str]) -> None:
        marker = f"{self._key}:{{{self._key}}}:flushed:{batch_id}"  # same slot, same prefix (ACLs)
        args: list[str | int] = [_MARKER_TTL_S]
        for field, amount in batch.items():
            args += [field, amount]
        await self._backend.run_script(FLUSH_STATS, (self._key, marker), args)


def parse_stats(raw: Mapping[bytes | str, bytes | str], tool_ttl: Callable[[str], int | None]) -> AgentCacheStats:
    fields = {as_text(k): int(as_text(v)) for k, v in raw.items()}
    per_tool: dict[str, ToolStats] = {}
    for name, value in fields.items():
        match = _TOOL_FIELD.fullmatch(name)
        if match is None:
            continue
        tool = decode_segment(match.group(1))
        entry = per_tool.get(tool)
        if entry is None:
            entry = per_tool[tool] = ToolStats(hits=0, misses=0, ttl=tool_ttl(tool), cost_saved_micros=0)
        setattr(entry, match.group(2), value)
    return AgentCacheStats(
        llm=TierStats(hits=fields.get("llm:hits", 0), misses=fields.get("llm:misses", 0)),
        tool=TierStats(hits=fields.get("tool:hits", 0), misses=fields.get("tool:misses", 0)),
        session=SessionStats(reads=fields.get("session:reads", 0), writes=fields.get("session:writes", 0)),
        cost_saved_micros=fields.get("cost_saved_micros", 0),
        per_tool=dict(sorted(per_tool.items())),
        per_tenant=_per_tenant(fields),
    )


def _per_tenant(fields: Mapping[str, int]) -> dict[str, TenantStats]:
    per_tenant: dict[str, TenantStats] = {}
    for name, value in fields.items():
        match = _TENANT_FIELD.fullmatch(name)
        if match is None:
            continue
        tenant = decode_segment(match.group(1))
        entry = per_tenant.get(tenant)
        if entry is None:
            entry = per_tenant[tenant] = TenantStats(llm=TierStats(0, 0), tool=TierStats(0, 0), cost_saved_micros=0)
        counter = match.group(2)
        if counter == "cost_saved_micros":
            entry.cost_saved_micros = value
        else:
            tier, outcome = counter.split(":")
            setattr(entry.llm if tier == "llm" else entry.tool, outcome, value)
    return dict(sorted(per_tenant.items()))


def recommend(hit_rate: float, ttl: int | None) -> Recommendation:
    """The reference's rule: >80% with a TTL under an hour → increase; 40-80% → optimal; <40% → reduce."""
    if hit_rate > INCREASE_TTL_ABOVE:
        return "increase_ttl" if ttl is not None and ttl < LONG_TTL_SECONDS else "optimal"
    if hit_rate >= DISABLE_BELOW:
        return "optimal"
    return "decrease_ttl_or_disable"


def tool_effectiveness(stats: AgentCacheStats) -> list[ToolEffectivenessEntry]:
    entries = [
        ToolEffectivenessEntry(
            tool=tool,
            hit_rate=s.hit_rate,
            cost_saved=s.cost_saved_micros / 1_000_000,
            recommendation=recommend(s.hit_rate, s.ttl),
        )
        for tool, s in stats.per_tool.items()
    ]
    entries.sort(key=lambda e: (-e.cost_saved, e.tool))
    return entries
