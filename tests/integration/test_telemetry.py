"""Prometheus metrics and OpenTelemetry spans produced by real operations."""

from __future__ import annotations

from typing import Any

import pytest

from agent_cache import LlmStoreOptions, ModelCost, ToolPolicy, ToolStoreOptions
from agent_cache.telemetry import LATENCY_BUCKETS, SPANS
from tests.integration.conftest import MakeCache, Observed

pytestmark = pytest.mark.valkey

SECRET_PROMPT = "my password is hunter2"
PARAMS = {"model": "m1", "messages": [{"role": "user", "content": SECRET_PROMPT}]}


async def test_metrics_count_requests_cost_bytes_and_latency(make_cache: MakeCache, observed: Observed) -> None:
    cache = make_cache(name="met", cost_table={"m1": ModelCost(input_per_1k=1.0, output_per_1k=2.0)})
    await cache.llm.check(PARAMS)
    await cache.llm.store(PARAMS, "answer", LlmStoreOptions(tokens={"input": 100, "output": 50}))
    await cache.llm.check(PARAMS)
    await cache.tool.store("w", {"c": 1}, "r", ToolStoreOptions(cost=0.5))
    await cache.tool.check("w", {"c": 1})
    await cache.session.set("t", "f", "12345")
    m = observed.metric
    assert m("agent_cache_requests_total", cache_name="met", tier="llm", result="miss", tool_name="") == 1
    assert m("agent_cache_requests_total", cache_name="met", tier="llm", result="hit", tool_name="") == 1
    assert m("agent_cache_requests_total", cache_name="met", tier="tool", result="hit", tool_name="w") == 1
    assert m("agent_cache_cost_saved_total", cache_name="met", tier="llm", model="m1", tool_name="") == pytest.approx(
        0.2
    )
    assert m("agent_cache_cost_saved_total", cache_name="met", tier="tool", model="", tool_name="w") == 0.5
    assert m("agent_cache_tool_ttl_seconds", cache_name="met", tool_name="w") == 0  # no TTL anywhere
    await cache.tool.set_policy("w", ToolPolicy(ttl=600))
    await cache.tool.store("w", {"c": 2}, "r")
    assert m("agent_cache_tool_ttl_seconds", cache_name="met", tool_name="w") == 600
    assert m("agent_cache_stored_bytes_total", cache_name="met", tier="session") == 5
    assert m("agent_cache_active_sessions", cache_name="met") == 1
    await cache.session.destroy_thread("t")
    assert m("agent_cache_active_sessions", cache_name="met") == 0
    count = m("agent_cache_operation_duration_seconds_count", cache_name="met", tier="llm", operation="check")
    assert count == 2
    # the first bucket resolves tens of microseconds, not the reference's 1 ms floor
    assert LATENCY_BUCKETS[0] <= 0.00001


async def test_two_caches_share_one_registry(make_cache: MakeCache, observed: Observed) -> None:
    first, second = make_cache(name="one"), make_cache(name="two")
    await first.llm.check(PARAMS)
    await second.llm.check(PARAMS)
    for name in ("one", "two"):
        assert (
            observed.metric("agent_cache_requests_total", cache_name=name, tier="llm", result="miss", tool_name="") == 1
        )


async def test_spans_carry_the_documented_attributes_and_never_the_prompt(cache: Any, observed: Observed) -> None:
    await cache.llm.check(PARAMS)
    await cache.llm.store(PARAMS, "answer")
    await cache.llm.check(PARAMS)
    await cache.tool.store("w", {"secret_arg": SECRET_PROMPT}, "r")
    await cache.tool.check("w", {"secret_arg": SECRET_PROMPT})
    await cache.session.set("t", "f", "v")
    await cache.session.get("t", "f")
    await cache.session.get_all("t")
    await cache.session.touch("t", ttl=30)
    await cache.session.destroy_thread("t")
    await cache.tool.invalidate_by_tool("w")
    await cache.llm.invalidate_by_model("m1")
    await cache.llm.clear()
    finished = observed.exporter.get_finished_spans()
    seen = {span.name for span in finished}
    for name, attributes in SPANS.items():
        for span in observed.spans(name):
            assert set(attributes) <= set(span.attributes or {}), name
    called = {
        f"agent_cache.{op}"
        for op in (
            "llm.check",
            "llm.store",
            "llm.invalidate_by_model",
            "llm.clear",
            "tool.check",
            "tool.store",
            "tool.invalidate_by_tool",
            "session.set",
            "session.get",
            "session.get_all",
            "session.touch",
            "session.destroy_thread",
        )
    }
    assert called <= seen
    hits = [s.attributes["cache.hit"] for s in observed.spans("agent_cache.llm.check") if s.attributes]
    assert hits == [False, True]
    for span in finished:
        assert SECRET_PROMPT not in repr(dict(span.attributes or {}))
