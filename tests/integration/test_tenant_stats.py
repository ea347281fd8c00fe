"""Per-tenant stats and the bound on distinct names, on every server kind.

Lookups made inside ``cache.tenant(...)`` are counted per tenant in the stats hash (``tenant:{t}:llm:hits`` ...) and
in ``agent_cache_tenant_*`` metrics, beside the cache's own counters, which stay exactly BetterDB Monitor's. Tenants,
tool names and model names past ``TelemetryOptions.max_names`` are counted as ``other``, so names an LLM invents
cannot grow the stats hash or the metric series without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import (
    AgentCache,
    DiscoveryOptions,
    LlmStoreOptions,
    ReliabilityOptions,
    TelemetryOptions,
    ToolStoreOptions,
)
from agent_cache._errors import ConfigurationError
from agent_cache.types import ModelCost
from tests.integration.conftest import MakeCache, Observed
from tests.servers import ServerHandle

pytestmark = pytest.mark.valkey


def _params(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def _label_values(registry: CollectorRegistry, metric: str, label: str) -> set[str]:
    return {
        sample.labels[label]
        for family in registry.collect()
        for sample in family.samples
        if sample.name == metric and sample.labels.get("cache_name") == "t"
    }


async def _stats_hash(client: Any) -> dict[str, int]:
    raw = await client.hgetall("t:__stats")
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


async def test_hits_misses_and_savings_are_counted_per_tenant(
    cache: AgentCache, observed: Observed, backend_client: Any
) -> None:
    params = _params("gpt-4o", "Hi")
    tokens = LlmStoreOptions(tokens={"input": 1000, "output": 200})  # $0.0045 of gpt-4o
    await cache.llm.check(params)  # untenanted: in the cache's totals only
    for tenant in ("acme", "b:c"):
        with cache.tenant(tenant):
            assert not (await cache.llm.check(params)).hit
            await cache.llm.store(params, f"{tenant}'s answer", tokens)
            assert (await cache.llm.check(params)).hit
    with cache.tenant("b:c"):
        assert (await cache.llm.check(params)).hit
        assert not (await cache.tool.check("get_weather", {"city": "Oslo"})).hit
        await cache.tool.store("get_weather", {"city": "Oslo"}, "sunny", ToolStoreOptions(cost=0.002))
        assert (await cache.tool.check("get_weather", {"city": "Oslo"})).hit

    stats = await cache.stats()
    assert (stats.llm.hits, stats.llm.misses, stats.tool.hits, stats.tool.misses) == (3, 3, 1, 1)
    assert stats.cost_saved_micros == 3 * 4500 + 2000
    assert list(stats.per_tenant) == ["acme", "b:c"]
    acme, bc = stats.per_tenant["acme"], stats.per_tenant["b:c"]
    assert (acme.llm.hits, acme.llm.misses, acme.tool.total, acme.cost_saved_micros) == (1, 1, 0, 4500)
    assert (bc.llm.hits, bc.llm.misses, bc.tool.hits, bc.tool.misses) == (2, 1, 1, 1)
    assert bc.cost_saved_micros == 2 * 4500 + 2000 and bc.cost_saved == pytest.approx(0.011)
    # The hash: Monitor's fields as they always were, the tenant family beside them (names encoded as in keys).
    fields = await _stats_hash(backend_client)
    assert fields["llm:hits"] == 3 and fields["tool:get_weather:hits"] == 1
    assert fields["tenant:b%3Ac:llm:hits"] == 2 and fields["tenant:acme:cost_saved_micros"] == 4500

    requests = "agent_cache_tenant_requests_total"
    assert observed.metric(requests, cache_name="t", tier="llm", result="hit", tenant="b:c") == 2
    assert observed.metric(requests, cache_name="t", tier="llm", result="miss", tenant="acme") == 1
    assert observed.metric(requests, cache_name="t", tier="tool", result="miss", tenant="b:c") == 1
    saved = "agent_cache_tenant_cost_saved_total"
    assert observed.metric(saved, cache_name="t", tier="llm", tenant="acme") == pytest.approx(0.0045)
    assert observed.metric(saved, cache_name="t", tier="tool", tenant="b:c") == pytest.approx(0.002)
    # Summing the existing metrics still gives the cache's totals: no tenant label was added to them.
    assert observed.metric("agent_cache_requests_total", cache_name="t", tier="llm", result="hit", tool_name="") == 3


async def test_get_or_compute_counts_its_outcome_for_the_callers_tenant(cache: AgentCache) -> None:
    async def compute() -> str:
        return '{"temp": 21}'

    with cache.tenant("acme"):
        await cache.tool.get_or_compute("get_weather", {"city": "Oslo"}, compute)
        await cache.tool.get_or_compute("get_weather", {"city": "Oslo"}, compute)
    row = (await cache.stats()).per_tenant["acme"]
    assert (row.tool.hits, row.tool.misses) == (1, 1)


async def test_ten_thousand_invented_tool_names_give_at_most_n_plus_one_labels_and_fields(
    make_cache: MakeCache, observed: Observed, backend_client: Any
) -> None:
    cache = make_cache(
        telemetry=TelemetryOptions(registry=observed.registry, max_names=5),
        # A lookup that timed out on a loaded machine would be an error, not a miss: make it raise instead.
        reliability=ReliabilityOptions(timeout_s=30, on_error="raise"),
    )
    for start in range(0, 10_000, 500):
        await asyncio.gather(*(cache.tool.check(f"invented_{i}", {"q": i}) for i in range(start, start + 500)))
    for i in (0, 1, 9_999):  # stores set the TTL gauge: bounded the same way
        await cache.tool.store(f"invented_{i}", {"q": i}, "result", ToolStoreOptions(ttl=60, cost=0.001))
        assert (await cache.tool.check(f"invented_{i}", {"q": i})).hit

    stats = await cache.stats()
    kept = set(stats.per_tool) - {"other"}  # which five depends on the order lookups complete in (cluster)
    assert len(kept) == 5 and kept <= {f"invented_{i}" for i in range(10_000)} and "other" in stats.per_tool
    assert stats.tool.misses == 10_000 and stats.tool.hits == 3
    assert sum(s.misses for s in stats.per_tool.values()) == 10_000
    assert stats.per_tool["other"].misses == 10_000 - 5
    assert sum(s.hits for s in stats.per_tool.values()) == 3
    assert sum(s.cost_saved_micros for s in stats.per_tool.values()) == 3000
    tool_fields = {name for name in await _stats_hash(backend_client) if name.count(":") == 2}
    assert len(tool_fields) <= 3 * 6
    for metric in ("agent_cache_requests_total", "agent_cache_cost_saved_total"):
        assert _label_values(observed.registry, metric, "tool_name") - {""} <= kept | {"other"}
    ttl_labels = _label_values(observed.registry, "agent_cache_tool_ttl_seconds", "tool_name")
    assert ttl_labels <= kept | {"other"} and 1 <= len(ttl_labels) <= 3


async def test_invented_models_and_tenants_are_bounded_too(make_cache: MakeCache, observed: Observed) -> None:
    models = [f"model-{i}" for i in range(30)]
    cache = make_cache(
        telemetry=TelemetryOptions(registry=observed.registry, max_names=3),
        cost_table={m: ModelCost(input_per_1k=1.0, output_per_1k=0.0) for m in models},
        use_default_cost_table=False,
    )
    for i, model in enumerate(models):
        with cache.tenant(f"tenant-{i}"):
            await cache.llm.store(_params(model, "q"), "a", LlmStoreOptions(tokens={"input": 1000, "output": 0}))
            assert (await cache.llm.check(_params(model, "q"))).hit
    assert _label_values(observed.registry, "agent_cache_cost_saved_total", "model") == {
        "model-0",
        "model-1",
        "model-2",
        "other",
    }
    assert _label_values(observed.registry, "agent_cache_tenant_requests_total", "tenant") == {
        "tenant-0",
        "tenant-1",
        "tenant-2",
        "other",
    }
    stats = await cache.stats()
    assert list(stats.per_tenant) == ["other", "tenant-0", "tenant-1", "tenant-2"]
    assert stats.per_tenant["other"].llm.hits == 27 and stats.per_tenant["other"].cost_saved_micros == 27_000_000
    assert stats.llm.hits == 30 and stats.cost_saved_micros == 30_000_000


@pytest.mark.parametrize("bad", [-1, "100", True])
def test_a_bad_max_names_is_refused_naming_the_option(make_cache: MakeCache, observed: Observed, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"telemetry\.max_names must be a whole number"):
        make_cache(telemetry=TelemetryOptions(registry=observed.registry, max_names=bad))


# Names that collide in naive layouts (separators, braces, escapes), the overflow's own name, and unicode.
_NAMES = st.one_of(
    st.sampled_from(("other", "a", "a:b", "a%3Ab", "{t}")), st.text(alphabet="ab:{}%é", min_size=1, max_size=3)
)
_CALLS = st.lists(st.tuples(st.one_of(st.just(""), _NAMES), _NAMES, st.booleans()), min_size=1, max_size=25)


def _model_rows(
    calls: list[tuple[str, str, bool]], limit: int
) -> tuple[dict[str, Counter[str]], dict[str, Counter[str]]]:
    """The documented semantics: the first ``limit`` distinct names (in the order they are first counted) keep
    their own row, every later one is counted as ``other`` (which a real name ``other`` shares)."""
    kept: dict[str, list[str]] = {"tool": [], "tenant": []}

    def label(kind: str, name: str) -> str:
        if name not in kept[kind] and len(kept[kind]) < limit:
            kept[kind].append(name)
        return name if name in kept[kind] else "other"

    tools: dict[str, Counter[str]] = {}
    tenants: dict[str, Counter[str]] = {}
    for tenant, tool, hit in calls:
        outcome = "hits" if hit else "misses"
        tools.setdefault(label("tool", tool), Counter())[outcome] += 1
        if tenant:
            tenants.setdefault(label("tenant", tenant), Counter())[outcome] += 1
    return tools, tenants


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=_CALLS)
def test_rows_follow_the_first_n_names_model_whatever_the_names(
    valkey_server: ServerHandle, calls: list[tuple[str, str, bool]]
) -> None:
    limit = 2

    async def run() -> tuple[Any, set[str], set[str]]:
        client = Valkey.from_url(valkey_server.url)
        await client.delete("model_stats:__stats")
        registry = CollectorRegistry()
        cache = AgentCache(
            client=client,
            name="model_stats",
            telemetry=TelemetryOptions(registry=registry, max_names=limit),
            discovery=DiscoveryOptions(enabled=False),
        )
        try:
            for n, (tenant, tool, hit) in enumerate(calls):
                with cache.tenant(tenant) if tenant else contextlib.nullcontext():
                    if hit:
                        await cache.tool.store(tool, {"n": n}, "r")
                    assert (await cache.tool.check(tool, {"n": n})).hit is hit
            stats = await cache.stats()
        finally:
            await cache.flush()
            await cache.close()
            await client.aclose()
        samples = [s for family in registry.collect() for s in family.samples]
        tool_labels = {s.labels["tool_name"] for s in samples if s.name == "agent_cache_requests_total"}
        tenant_labels = {s.labels["tenant"] for s in samples if s.name == "agent_cache_tenant_requests_total"}
        return stats, tool_labels, tenant_labels

    stats, tool_labels, tenant_labels = asyncio.run(run())
    tools, tenants = _model_rows(calls, limit)
    assert {t: Counter(hits=s.hits, misses=s.misses) for t, s in stats.per_tool.items()} == tools
    assert {t: Counter(hits=s.tool.hits, misses=s.tool.misses) for t, s in stats.per_tenant.items()} == tenants
    assert tool_labels == set(tools) and len(tool_labels) <= limit + 1
    assert tenant_labels == set(tenants) and len(tenant_labels) <= limit + 1
