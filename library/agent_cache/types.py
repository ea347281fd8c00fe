"""Public option, result and stats types (the reference package's names and fields, plus ours)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NotRequired, Required, TypedDict, TypeVar

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider
    from prometheus_client import CollectorRegistry

Tier = Literal["llm", "tool", "session"]
Recommendation = Literal["increase_ttl", "optimal", "decrease_ttl_or_disable"]

# ─── Content blocks (store_multipart) ─────────────────────────────────────────


class CacheControlHint(TypedDict, total=False):
    type: Required[Literal["ephemeral"]]
    ttl: Literal["5m", "1h"]


class BlockHints(TypedDict, total=False):
    anthropicCacheControl: CacheControlHint


class TextBlock(TypedDict):
    type: Literal["text"]
    text: str
    hints: NotRequired[BlockHints]


class BinaryBlock(TypedDict):
    type: Literal["binary"]
    kind: Literal["image", "audio", "document"]
    mediaType: str
    ref: str
    detail: NotRequired[Literal["auto", "low", "high", "original"]]
    filename: NotRequired[str]
    hints: NotRequired[BlockHints]


class ToolCallBlock(TypedDict):
    type: Literal["tool_call"]
    id: str
    name: str
    args: Any
    hints: NotRequired[BlockHints]


class ToolResultBlock(TypedDict):
    type: Literal["tool_result"]
    toolCallId: str
    content: list[TextBlock | BinaryBlock]
    isError: NotRequired[bool]
    hints: NotRequired[BlockHints]


class ReasoningBlock(TypedDict):
    type: Literal["reasoning"]
    text: str
    opaqueSignature: NotRequired[str]
    redacted: NotRequired[bool]
    hints: NotRequired[BlockHints]


ContentBlock = TextBlock | BinaryBlock | ToolCallBlock | ToolResultBlock | ReasoningBlock

# ─── LLM request parameters ───────────────────────────────────────────────────


class LlmCacheMessage(TypedDict, total=False):
    role: Required[str]
    content: Required[str | list[ContentBlock] | None]
    toolCallId: str
    name: str


class ToolDefinition(TypedDict, total=False):
    type: str
    function: dict[str, Any]
    name: str


# Every key of an LLM request takes part in the cache key unless it is transport-only
# (see agent_cache._keys.TRANSPORT_ONLY_PARAMS), so this is a plain dict, not the reference's TypedDict of a few.
LlmCacheParams = dict[str, Any]

# ─── Configuration ────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class ModelCost:
    """Price of a model in dollars per 1,000 tokens."""

    input_per_1k: float
    output_per_1k: float


@dataclass(frozen=True)
class TierDefaults:
    ttl: int | None = None


@dataclass
class TelemetryOptions:
    tracer_name: str = "@betterdb/agent-cache"
    metrics_prefix: str = "agent_cache"
    registry: CollectorRegistry | None = None
    """prometheus_client registry; None uses prometheus_client's default REGISTRY."""
    tracer_provider: TracerProvider | None = None
    """OpenTelemetry tracer provider; None uses the global one (a no-op until the host app sets one)."""
    max_names: int = 100
    """Distinct tenants, tool names and model names (each kind apart) this instance counts under their own name in
    metric labels and the stats hash; later new ones are counted as ``other``, so invented names cannot explode
    cardinality."""


@dataclass
class DiscoveryOptions:
    """Registration in ``__betterdb:caches`` and a heartbeat key, so BetterDB Monitor can list live caches."""

    enabled: bool = True
    heartbeat_interval_ms: int = 30_000
    include_tool_policies: bool = True


@dataclass
class ConfigRefreshOptions:
    """Live config (``{name}:__config``, written by the operator or ``agent-cache config apply``).

    A change is applied within about a second of its pub/sub announcement; the interval re-read is the
    safety net for a missed message.
    """

    enabled: bool = True
    interval_ms: int = 30_000
    subscribe: bool = True


@dataclass
class ReliabilityOptions:
    """How the cache behaves when Valkey is slow or down, and limits on what it stores."""

    timeout_s: float | None = 1.0
    """Per-command timeout: a paused or unreachable server costs at most this, never a hang."""
    on_error: Literal["fail_open", "raise"] = "fail_open"
    """LLM and tool tiers: ``fail_open`` answers a miss / skips the store (the error is on the result, in
    ``agent_cache_errors_total`` and on the span); ``raise`` raises. The session tier always raises."""
    breaker_threshold: int = 5
    """Consecutive unavailable/timeout failures that open the circuit (then calls fail at once)."""
    breaker_cooldown_s: float = 5.0
    """How long the circuit stays open before one probe call is let through."""
    max_entry_bytes: int | None = 8 * 1024 * 1024
    """LLM/tool entries above this are not stored (counted as ``too_large``); session writes raise."""
    lock_lease_s: float = 30.0
    """get_or_compute: how long a computing caller holds the lock before others may take over."""


@dataclass
class StorageOptions:
    """How LLM and tool entries are written to Valkey (session values are always stored as given)."""

    compress_above_bytes: int | None = 1024
    """zlib-compress LLM/tool entries whose JSON is larger than this many bytes (stored binary behind a
    marker; the library reads entries as bytes, so clients with ``decode_responses=True`` read them too);
    ``None`` never compresses. Entries at or below the threshold, or that would not shrink, stay plain JSON,
    readable with ``valkey-cli``. Compressed and plain entries mix freely: changing this later leaves every
    entry readable."""
    compression_level: int = 6
    """zlib level, 1 (fastest) to 9 (smallest)."""


@dataclass
class NearCacheOptions:
    """The in-process near-cache (L1) for LLM and tool entries, kept coherent by Valkey's client tracking.

    Off unless ``AgentCacheOptions.near_cache`` is set. A repeated request is answered from memory, never
    with an entry another process overwrote, invalidated or flushed (see docs/near-cache.md)."""

    max_entries: int = 10_000
    """Entries kept at most (least recently used go first)."""
    max_bytes: int = 64 * 2**20
    """Memory kept at most: stored bytes plus key and bookkeeping per entry."""
    max_ttl_s: float | None = None
    """Serve an entry from memory at most this long after reading it (None: until its Valkey TTL)."""

    def __post_init__(self) -> None:
        for name in ("max_entries", "max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigurationError(f"near_cache.{name} must be a positive integer, got {value!r}")
        ttl = self.max_ttl_s
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
            raise ConfigurationError(f"near_cache.max_ttl_s must be a positive number of seconds or None, got {ttl!r}")


@dataclass
class AnalyticsOptions:
    """Accepted so that code written for betterdb-agent-cache starts unchanged; nothing reads it.

    agent-cache sends no product analytics and has no phone-home code: whatever these fields say, no event
    leaves the process. ``disabled`` therefore defaults to True, which describes what happens.
    """

    disabled: bool = True
    stats_interval_s: float = 300.0


@dataclass
class AgentCacheOptions:
    # The reference package's fields come first and in its order, so positional arguments mean the same.
    client: Any
    """A ``valkey.asyncio.Valkey`` or ``valkey.asyncio.cluster.ValkeyCluster`` (also redis-py's asyncio clients)."""
    name: str = "betterdb_ac"
    default_ttl: int | None = None
    tier_defaults: dict[str, TierDefaults] = field(default_factory=dict)
    cost_table: dict[str, ModelCost] = field(default_factory=dict)
    use_default_cost_table: bool = True
    telemetry: TelemetryOptions = field(default_factory=TelemetryOptions)
    analytics: AnalyticsOptions = field(default_factory=AnalyticsOptions)
    """The reference package's analytics switch, accepted and ignored: agent-cache never phones home."""
    config_refresh: ConfigRefreshOptions = field(default_factory=ConfigRefreshOptions)
    discovery: DiscoveryOptions = field(default_factory=DiscoveryOptions)
    reliability: ReliabilityOptions = field(default_factory=ReliabilityOptions)
    storage: StorageOptions = field(default_factory=StorageOptions)
    stats_flush_interval_s: float = 1.0
    """Counters are buffered in-process (so a hit is one round trip) and flushed this often, and on close()."""
    near_cache: NearCacheOptions | None = None
    """An in-process L1 for LLM and tool entries (None: off). ``NearCacheOptions()`` or a dict of its fields."""

    def __post_init__(self) -> None:
        # Every option group may also be given as a plain dict of its fields (from YAML, env, a config file).
        self.telemetry = _options(self.telemetry, TelemetryOptions, "telemetry")
        self.discovery = _options(self.discovery, DiscoveryOptions, "discovery")
        self.config_refresh = _options(self.config_refresh, ConfigRefreshOptions, "config_refresh")
        self.reliability = _options(self.reliability, ReliabilityOptions, "reliability")
        self.storage = _options(self.storage, StorageOptions, "storage")
        self.analytics = _options(self.analytics, AnalyticsOptions, "analytics")
        if self.near_cache is not None:
            self.near_cache = _options(self.near_cache, NearCacheOptions, "near_cache")
        self.tier_defaults = {
            tier: _options(defaults, TierDefaults, f"tier_defaults[{tier!r}]")
            for tier, defaults in _mapping(self.tier_defaults, "tier_defaults").items()
        }
        self.cost_table = {
            model: _options(cost, ModelCost, f"cost_table[{model!r}]")
            for model, cost in _mapping(self.cost_table, "cost_table").items()
        }


_Options = TypeVar("_Options")


def _mapping(value: Any, what: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{what} must be a dict, got {type(value).__name__}")
    return value


def _options(value: Any, cls: type[_Options], what: str) -> _Options:
    """``value`` as a ``cls``: itself, or built from a dict of ``cls``'s fields (unknown names are an error)."""
    if isinstance(value, cls):
        return value
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{what} must be a {cls.__name__} or a dict with keys {names}, got {type(value).__name__}"
        )
    unknown = sorted(str(key) for key in value if key not in names)
    if unknown:
        raise ConfigurationError(f"{what} has unknown option(s) {unknown}; valid: {names}")
    return cls(**value)


@dataclass(frozen=True)
class ToolPolicy:
    ttl: int | None = None
    cacheable: bool = True
    """False: the tool is never cached (check is a miss without a round trip, store does nothing)."""


@dataclass
class LlmStoreOptions:
    ttl: int | None = None
    tokens: dict[str, int] | None = None
    """``{"input": N, "output": N}``: priced from the cost table; the saving is counted on every later hit."""
    metadata: dict[str, Any] | None = None
    """JSON-able response metadata (ids, finish reason...) returned as ``LlmCacheResult.metadata`` on a hit."""
    finish_reason: str | None = None
    """Why the model stopped (``stop``, ``length``, ``content_filter``...): checked against the model policy's
    ``cache_finish_reasons`` and recorded as ``metadata["finish"]`` (unless the metadata has one). Without it the
    metadata's ``finish`` is used; an answer with neither counts as ``stop``."""


@dataclass
class ToolStoreOptions:
    ttl: int | None = None
    cost: float | None = None
    """What one real call of the tool costs, in dollars; counted as saved on every hit."""


# ─── Results ──────────────────────────────────────────────────────────────────


@dataclass
class LlmCacheResult:
    hit: bool
    tier: str = "llm"
    response: str | None = None
    content_blocks: list[ContentBlock] | None = None
    key: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    metadata: dict[str, Any] | None = None
    error: str | None = None
    """Set when Valkey failed and the cache answered a miss instead of raising (fail-open)."""


@dataclass
class ToolCacheResult:
    hit: bool
    tool_name: str = ""
    tier: str = "tool"
    response: str | None = None
    key: str | None = None
    error: str | None = None
    """Set when Valkey failed and the cache answered a miss instead of raising (fail-open)."""


# ─── Stats ────────────────────────────────────────────────────────────────────


def _rate(hits: int, misses: int) -> float:
    total = hits + misses
    return hits / total if total else 0.0


@dataclass
class TierStats:
    hits: int
    misses: int

    @property
    def total(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        return _rate(self.hits, self.misses)


@dataclass
class SessionStats:
    reads: int
    writes: int


@dataclass
class ToolStats:
    hits: int
    misses: int
    ttl: int | None
    cost_saved_micros: int

    @property
    def hit_rate(self) -> float:
        return _rate(self.hits, self.misses)


@dataclass
class TenantStats:
    """One tenant's LLM and tool lookups (made inside ``cache.tenant(...)``) and the dollars its hits saved."""

    llm: TierStats
    tool: TierStats
    cost_saved_micros: int

    @property
    def cost_saved(self) -> float:
        return self.cost_saved_micros / 1_000_000


@dataclass
class AgentCacheStats:
    llm: TierStats
    tool: TierStats
    session: SessionStats
    cost_saved_micros: int
    per_tool: dict[str, ToolStats]
    per_tenant: dict[str, TenantStats] = field(default_factory=dict)
    """Per tenant (as given to ``cache.tenant``); past ``TelemetryOptions.max_names`` tenants the rest are ``other``."""

    @property
    def cost_saved(self) -> float:
        """Dollars saved by hits."""
        return self.cost_saved_micros / 1_000_000


@dataclass
class ToolEffectivenessEntry:
    tool: str
    hit_rate: float
    cost_saved: float
    recommendation: Recommendation
