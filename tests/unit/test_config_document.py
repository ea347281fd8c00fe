"""The config document (the config part of an AgentCache spec) — pure."""

from __future__ import annotations

import pytest

from agent_cache import ConfigurationError, ModelCost, ToolPolicy
from agent_cache.config import CacheConfig


def test_round_trip_and_stable_version() -> None:
    spec = {
        "defaultTTL": 60,
        "tiers": {"tool": {"ttl": 30}, "llm": {"ttl": 3600}},
        "toolPolicies": {"b": {"cacheable": False}, "a": {"ttl": 5}},
        "costOverrides": {"m": {"inputPer1k": 0.5, "outputPer1k": 1}},
        "valkey": {"url": "ignored by the config"},
    }
    config = CacheConfig.from_spec(spec)
    assert config.tiers == {"tool": 30, "llm": 3600}
    assert config.tool_policies == {"a": ToolPolicy(ttl=5), "b": ToolPolicy(cacheable=False)}
    assert config.cost_overrides == {"m": ModelCost(0.5, 1.0)}
    assert CacheConfig.from_spec(config.to_spec()) == config
    reordered = dict(reversed(list(spec.items())))
    assert CacheConfig.from_spec(reordered).version == config.version
    assert CacheConfig.from_spec({**spec, "defaultTTL": 61}).version != config.version


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"defaultTTL": 0}, r"spec\.defaultTTL must be a positive"),
        ({"tiers": {"llms": {"ttl": 1}}}, r"spec\.tiers\.llms is not a tier"),
        ({"tiers": {"llm": {"ttl": "1h"}}}, r"spec\.tiers\.llm\.ttl must be a positive"),
        ({"toolPolicies": {"t": {"cacheable": "no"}}}, r"spec\.toolPolicies\.t\.cacheable must be true or false"),
        ({"costOverrides": {"m": {"inputPer1k": -1, "outputPer1k": 1}}}, r"spec\.costOverrides\.m\.inputPer1k"),
        ({"toolPolicies": ["t"]}, r"spec\.toolPolicies must be a mapping"),
    ],
)
def test_errors_name_the_field(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        CacheConfig.from_spec(spec)


def test_unknown_fields_inside_the_config_keys_are_found_by_path() -> None:
    from agent_cache.config import unknown_config_fields

    spec = {
        "tiers": {"llm": {"tll": 5}, "tool": {"ttl": 5}},
        "toolPolicies": {"send_email": {"cachable": False, "ttl": 5}, "a:b": {"cacheable": True}},
        "costOverrides": {"gpt-4o": {"inputPer1k": 1, "outputPer1K": 2}},
        "valkey": {"anything": "the operator's"},
    }
    assert unknown_config_fields(spec) == [
        "spec.tiers.llm.tll",
        "spec.toolPolicies.send_email.cachable",
        "spec.costOverrides.gpt-4o.outputPer1K",
    ]
    assert unknown_config_fields({"tiers": "not a mapping", "toolPolicies": {"t": None}}) == []
