"""The bound on distinct tenants, tool names and model names: the first N pass, every later one is ``other``."""

from __future__ import annotations

import threading

import pytest

from agent_cache._cardinality import DEFAULT_MAX_NAMES, OTHER, CardinalityLimiter
from agent_cache._errors import ConfigurationError
from agent_cache.stats import parse_stats, tenant_stat_field


def test_the_first_n_names_pass_and_every_later_new_one_is_other() -> None:
    limiter = CardinalityLimiter(3)
    assert [limiter.admit(n) for n in ("a", "b", "a", "c", "d", "b", "e")] == ["a", "b", "a", "c", OTHER, "b", OTHER]
    assert limiter.admitted == {"a", "b", "c"}


def test_ten_thousand_invented_names_give_at_most_n_plus_one_values() -> None:
    limiter = CardinalityLimiter()
    seen = {limiter.admit(f"tool_{i}") for i in range(10_000)}
    assert len(seen) == DEFAULT_MAX_NAMES + 1
    assert OTHER in seen and len(limiter.admitted) == DEFAULT_MAX_NAMES


def test_a_limit_of_zero_counts_every_name_as_other() -> None:
    limiter = CardinalityLimiter(0)
    assert {limiter.admit(n) for n in ("a", "b", "other")} == {OTHER}


@pytest.mark.parametrize("limit", [-1, True, 2.5, "10", None])
def test_a_limit_that_is_not_a_whole_number_is_refused_by_name(limit: object) -> None:
    with pytest.raises(ConfigurationError, match=r"max_names must be a whole number of names, 0 or more, got"):
        CardinalityLimiter(limit)  # type: ignore[arg-type]


def test_threads_offering_new_names_at_once_never_pass_more_than_n() -> None:
    limiter = CardinalityLimiter(50)
    start = threading.Barrier(8)
    results: list[set[str]] = [set() for _ in range(8)]

    def offer(k: int) -> None:
        start.wait()
        for i in range(2_000):
            results[k].add(limiter.admit(f"t{k}_{i}"))

    threads = [threading.Thread(target=offer, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(limiter.admitted) == 50
    assert len(set().union(*results)) == 51


def test_tenant_fields_parse_into_per_tenant_rows_and_leave_monitors_fields_alone() -> None:
    raw = {
        "llm:hits": b"5",
        "tool:hits": b"1",
        "tool:get%3Aweather:hits": b"1",
        tenant_stat_field("acme", "llm:hits"): b"3",
        tenant_stat_field("acme", "llm:misses"): b"1",
        tenant_stat_field("b%3Ac", "tool:hits"): b"1",
        tenant_stat_field("b%3Ac", "cost_saved_micros"): b"2500",
        "tenant:acme:session:reads": b"9",  # not a tenant counter: ignored, not a crash
    }
    stats = parse_stats(raw, lambda _tool: None)
    assert list(stats.per_tool) == ["get:weather"]  # a tenant field is never read as a tool
    assert stats.llm.hits == 5 and stats.tool.hits == 1
    assert list(stats.per_tenant) == ["acme", "b:c"]
    acme, bc = stats.per_tenant["acme"], stats.per_tenant["b:c"]
    assert (acme.llm.hits, acme.llm.misses, acme.tool.total, acme.cost_saved_micros) == (3, 1, 0, 0)
    assert (bc.tool.hits, bc.llm.total, bc.cost_saved) == (1, 0, 0.0025)


def test_stats_without_tenant_fields_have_an_empty_per_tenant() -> None:
    assert parse_stats({"llm:hits": "1"}, lambda _tool: None).per_tenant == {}
