"""Counting one LLM or tool lookup everywhere it is counted, with every name bounded.

A lookup's outcome goes to the stats hash (the tier's counters, the tool's, and the tenant's when a
``cache.tenant(...)`` scope is active) and to Prometheus (requests, dollars saved, and their per-tenant twins).
Tool names, model names and tenants pass through a :class:`CardinalityLimiter` each before they become a label or
a field, so names an LLM invents cannot grow the stats hash or the number of series without bound.

Stats-hash fields (BetterDB Monitor's family kept as is): ``llm:hits``, ``tool:hits``, ``tool:{tool}:hits`` ...;
per tenant ``tenant:{tenant}:llm:hits``, ``tenant:{tenant}:llm:misses``, ``tenant:{tenant}:tool:hits``,
``tenant:{tenant}:tool:misses`` and ``tenant:{tenant}:cost_saved_micros`` (names percent-encoded as in keys).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from .._cardinality import DEFAULT_MAX_NAMES, CardinalityLimiter
from .._keys import decode_segment, tool_stat_field
from ..stats import StatsBuffer, tenant_stat_field
from ..telemetry import Telemetry


def cost_micros(cost: Any) -> int:
    """A stored entry's cost in whole micro-dollars (0 when absent or not a positive number)."""
    if isinstance(cost, int | float) and not isinstance(cost, bool) and cost > 0:
        return round(cost * 1_000_000)
    return 0


class _TenantFields:
    __slots__ = ("cost_saved", "label", "llm_hits", "llm_misses", "tool_hits", "tool_misses")

    def __init__(self, encoded: str) -> None:
        self.label = decode_segment(encoded)  # the tenant as given, for the Prometheus label
        self.llm_hits = tenant_stat_field(encoded, "llm:hits")
        self.llm_misses = tenant_stat_field(encoded, "llm:misses")
        self.tool_hits = tenant_stat_field(encoded, "tool:hits")
        self.tool_misses = tenant_stat_field(encoded, "tool:misses")
        self.cost_saved = tenant_stat_field(encoded, "cost_saved_micros")


class LookupAccounting:
    """The counters of one cache instance's LLM and tool lookups; see the module docstring."""

    def __init__(
        self, stats: StatsBuffer, telemetry: Telemetry, tenant: ContextVar[str], max_names: int = DEFAULT_MAX_NAMES
    ) -> None:
        self._stats = stats
        self._telemetry = telemetry
        self._tenant = tenant
        self.tools = CardinalityLimiter(max_names)
        self.models = CardinalityLimiter(max_names)
        self.tenants = CardinalityLimiter(max_names)
        # Keyed by admitted names only, so each holds at most max_names + 1 entries.
        self._tool_fields: dict[str, tuple[str, str, str]] = {}
        self._tenant_fields: dict[str, _TenantFields] = {}

    def _tenant_now(self) -> _TenantFields | None:
        encoded = self._tenant.get()
        if not encoded:
            return None
        encoded = self.tenants.admit(encoded)  # "other" encodes to itself
        fields = self._tenant_fields.get(encoded)
        if fields is None:
            fields = self._tenant_fields[encoded] = _TenantFields(encoded)
        return fields

    def llm(self, hit: bool, model: Any, cost: Any) -> None:
        """One LLM lookup's outcome; ``model`` labels the dollars saved on a hit."""
        stats, telemetry = self._stats, self._telemetry
        telemetry.request("llm", hit)
        tenant = self._tenant_now()
        if tenant is not None:
            telemetry.tenant_request("llm", hit, tenant.label)
        if not hit:
            stats.add("llm:misses")
            if tenant is not None:
                stats.add(tenant.llm_misses)
            return
        stats.add("llm:hits")
        if tenant is not None:
            stats.add(tenant.llm_hits)
        micros = cost_micros(cost)
        if micros:
            stats.add("cost_saved_micros", micros)
            telemetry.cost_saved("llm", float(cost), model=self.models.admit(str(model)))
            if tenant is not None:
                stats.add(tenant.cost_saved, micros)
                telemetry.tenant_cost_saved("llm", float(cost), tenant.label)

    def tool(self, hit: bool, tool_name: str, cost: Any) -> None:
        """One tool lookup's outcome: the tier's, the tool's and the tenant's counters."""
        stats, telemetry = self._stats, self._telemetry
        label = self.tools.admit(tool_name)
        fields = self._tool_fields.get(label)
        if fields is None:
            fields = self._tool_fields[label] = (
                tool_stat_field(label, "hits"),
                tool_stat_field(label, "misses"),
                tool_stat_field(label, "cost_saved_micros"),
            )
        telemetry.request("tool", hit, label)
        tenant = self._tenant_now()
        if tenant is not None:
            telemetry.tenant_request("tool", hit, tenant.label)
        if not hit:
            stats.add("tool:misses")
            stats.add(fields[1])
            if tenant is not None:
                stats.add(tenant.tool_misses)
            return
        stats.add("tool:hits")
        stats.add(fields[0])
        if tenant is not None:
            stats.add(tenant.tool_hits)
        micros = cost_micros(cost)
        if micros:
            stats.add("cost_saved_micros", micros)
            stats.add(fields[2], micros)
            telemetry.cost_saved("tool", float(cost), tool_name=label)
            if tenant is not None:
                stats.add(tenant.cost_saved, micros)
                telemetry.tenant_cost_saved("tool", float(cost), tenant.label)

    def tool_ttl(self, tool_name: str, ttl: int | None) -> None:
        """The TTL of the latest result stored for a tool (the gauge is per admitted tool, or ``other``)."""
        self._telemetry.tool_ttl(self.tools.admit(tool_name), ttl)
