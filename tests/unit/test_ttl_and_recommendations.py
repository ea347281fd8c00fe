"""TTL precedence and the tool recommendation rule — pure functions."""

from __future__ import annotations

import pytest

from agent_cache import TierDefaults
from agent_cache._errors import AgentCacheUsageError
from agent_cache._ttl import TtlPolicy, validate_ttl
from agent_cache.stats import parse_stats, recommend


def test_llm_and_session_precedence() -> None:
    policy = TtlPolicy.from_options(10, {"llm": TierDefaults(ttl=20)})
    assert policy.resolve("llm", 5) == 5
    assert policy.resolve("llm", None) == 20
    assert policy.resolve("session", None) == 10
    policy.live_tiers = {"llm": 30}
    assert policy.resolve("llm", None) == 30  # the platform's config beats code defaults
    assert policy.resolve("llm", 5) == 5  # a per-call value always wins
    assert TtlPolicy.from_options(None, {}).resolve("llm", None) is None


def test_tool_precedence() -> None:
    policy = TtlPolicy.from_options(10, {"tool": TierDefaults(ttl=20)})
    assert policy.resolve("tool", 1, 2) == 1
    assert policy.resolve("tool", None, 2) == 2
    assert policy.resolve("tool", None, None) == 20


def test_invalid_ttls() -> None:
    for bad in (0, -1, 1.5, "10", True):
        with pytest.raises(AgentCacheUsageError, match="ttl"):
            validate_ttl(bad)
    assert validate_ttl(60.0) == 60
    with pytest.raises(AgentCacheUsageError, match=r"unknown tier\(s\) \['llms'\]"):
        TtlPolicy.from_options(None, {"llms": TierDefaults(ttl=1)})


@pytest.mark.parametrize(
    ("rate", "ttl", "expected"),
    [
        (0.85, 300, "increase_ttl"),
        (0.85, 3600, "optimal"),
        (0.85, None, "optimal"),
        (0.8, 300, "optimal"),
        (0.4, 300, "optimal"),
        (0.39, 300, "decrease_ttl_or_disable"),
        (0.0, None, "decrease_ttl_or_disable"),
    ],
)
def test_recommendation_thresholds(rate: float, ttl: int | None, expected: str) -> None:
    assert recommend(rate, ttl) == expected


def test_parse_stats_decodes_tool_names() -> None:
    raw = {b"llm:hits": b"3", b"tool:a%3Ab:hits": b"2", b"tool:a%3Ab:misses": b"2", b"cost_saved_micros": b"7"}
    stats = parse_stats(raw, lambda tool: 60)
    assert stats.llm.hits == 3 and stats.cost_saved_micros == 7
    assert stats.per_tool["a:b"].hit_rate == 0.5 and stats.per_tool["a:b"].ttl == 60
