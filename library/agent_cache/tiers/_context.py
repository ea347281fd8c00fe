"""What every tier shares: the backend, the key layout, counters, telemetry, TTL sources and the
reliability policy (fail-open, size limit, tenant scope)."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field

from opentelemetry.trace import Span

from .._backend import Backend
from .._cardinality import DEFAULT_MAX_NAMES, validate_max_names
from .._codec import pack_entry
from .._errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    CorruptEntryError,
    UnencodableTextError,
)
from .._keys import KeyLayout, decode_segment
from .._near_cache import NearCache
from .._ttl import TtlPolicy
from ..stats import StatsBuffer
from ..telemetry import OperationTimer, Telemetry
from ._accounting import LookupAccounting
from ._control import CacheControl, effective

log = logging.getLogger("agent_cache")


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, BackendTimeoutError):
        return "timeout"
    if isinstance(exc, BackendUnavailableError):
        return "unavailable"
    if isinstance(exc, CorruptEntryError):
        return "corrupt"
    if isinstance(exc, BackendError):
        return "command"
    return "usage"


@dataclass
class TierContext:
    backend: Backend
    keys: KeyLayout
    stats: StatsBuffer
    telemetry: Telemetry
    ttl: TtlPolicy
    fail_open: bool = True
    """LLM and tool tiers: a Valkey failure is a miss (check) or a skipped write (store), not an error."""
    max_entry_bytes: int | None = None
    lock_lease_s: float = 30.0
    compress_above: int | None = None
    """LLM and tool entries whose JSON exceeds this many bytes are stored compressed (None: never)."""
    compression_level: int = 6
    near: NearCache | None = None
    """The in-process L1 for LLM and tool entries (None: off): look up first, read through it on a miss."""
    tenant: ContextVar[str] = field(default_factory=lambda: ContextVar("agent_cache_tenant", default=""))
    """The tenant scope (encoded) of the current task: see ``AgentCache.tenant``."""
    control: ContextVar[CacheControl | None] = field(
        default_factory=lambda: ContextVar("agent_cache_control", default=None)
    )
    """The cache control scope of the current task: see ``AgentCache.control``."""
    max_names: int = DEFAULT_MAX_NAMES
    """Distinct tenants, tools and models counted under their own name (``TelemetryOptions.max_names``)."""
    accounting: LookupAccounting = field(init=False, repr=False)
    """Counts LLM and tool lookups (stats hash, metrics, per tenant) with names bounded by ``max_names``."""
    _timers: dict[tuple[str, str], OperationTimer] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        validate_max_names(self.max_names, "telemetry.max_names")
        self.accounting = LookupAccounting(self.stats, self.telemetry, self.tenant, self.max_names)

    @property
    def scope(self) -> str:
        """The encoded tenant ("" without one), mixed into LLM/tool key hashes so tenants never share entries."""
        return self.tenant.get()

    @property
    def tenant_name(self) -> str | None:
        """The tenant as given to ``cache.tenant(...)`` (None without one): a segment of its threads' keys."""
        scope = self.tenant.get()
        return decode_segment(scope) if scope else None

    def control_now(self, call: CacheControl | None) -> CacheControl | None:
        """The control a call runs under: the scope's merged with the call's own (None: none at all)."""
        return effective(self.control.get(), call)

    def bypassed(self, tier: str, reason: str) -> None:
        """Count a lookup or store skipped on purpose (a cache control or a policy)."""
        self.telemetry.bypass(tier, reason)

    def measured(self, tier: str, operation: str) -> AbstractContextManager[None]:
        """Time an operation into the duration histogram and count its failures by kind."""
        timer = self._timers.get((tier, operation))
        if timer is None:
            timer = self._timers[(tier, operation)] = self.telemetry.timer(tier, operation, error_kind)
        return timer()

    def failed_open(self, tier: str, operation: str, exc: BackendError, span: Span) -> str:
        """Record a Valkey failure the caller is shielded from; returns the text for ``result.error``."""
        kind = error_kind(exc)
        self.telemetry.error(tier, operation, kind)
        if span.is_recording():
            span.record_exception(exc)
            span.set_attribute("cache.error", kind)
        log.debug("agent-cache %s: %s.%s failed open: %s", self.keys.name, tier, operation, exc)
        return f"{kind}: {exc}"

    def unkeyable(self, tier: str, operation: str, exc: UnencodableTextError) -> str:
        """A request whose text has no UTF-8 form has no key: under fail-open a lookup is a miss (counted as an
        error of kind ``unencodable``), as for an outage; otherwise ``exc`` is raised. Returns ``result.error``."""
        if not self.fail_open:
            raise exc
        self.telemetry.error(tier, operation, "unencodable")
        log.debug("agent-cache %s: %s.%s failed open: %s", self.keys.name, tier, operation, exc)
        return f"unencodable: {exc}"

    def pack(self, value: str, size: int) -> tuple[str | bytes, int]:
        """What to write for an entry's JSON (compressed above the threshold) and its size in bytes."""
        return pack_entry(value, size, self.compress_above, self.compression_level)

    def too_large(self, tier: str, operation: str, size: int, span: Span) -> bool:
        """True (and counted) when an entry exceeds ``max_entry_bytes``."""
        if self.max_entry_bytes is None or size <= self.max_entry_bytes:
            return False
        self.telemetry.error(tier, operation, "too_large")
        span.set_attribute("cache.skipped", "too_large")
        return True
