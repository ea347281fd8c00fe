"""Option groups may be dataclasses or plain dicts; anything else is a clear error naming the option."""

from __future__ import annotations

from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache import (
    AgentCacheOptions,
    AnalyticsOptions,
    ConfigurationError,
    ModelCost,
    ReliabilityOptions,
    StorageOptions,
    TierDefaults,
)


def test_dicts_become_the_option_dataclasses() -> None:
    options = AgentCacheOptions(
        client=Valkey(),
        tier_defaults={"llm": {"ttl": 3600}, "tool": TierDefaults(ttl=60)},
        cost_table={"my-model": {"input_per_1k": 0.001, "output_per_1k": 0.002}},
        reliability={"timeout_s": 0.5, "on_error": "raise"},
        storage={"compress_above_bytes": 1024},
    )
    assert options.tier_defaults == {"llm": TierDefaults(ttl=3600), "tool": TierDefaults(ttl=60)}
    assert options.cost_table == {"my-model": ModelCost(input_per_1k=0.001, output_per_1k=0.002)}
    assert options.reliability == ReliabilityOptions(timeout_s=0.5, on_error="raise")
    assert options.storage == StorageOptions(compress_above_bytes=1024)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"reliability": {"timeout": 1}}, r"reliability has unknown option\(s\) \['timeout'\]; valid: \['timeout_s'"),
        ({"tier_defaults": {"llm": 3600}}, r"tier_defaults\['llm'\] must be a TierDefaults or a dict with keys"),
        ({"tier_defaults": [("llm", 1)]}, r"tier_defaults must be a dict, got list"),
        ({"storage": "zlib"}, r"storage must be a StorageOptions or a dict with keys \['compress_above_bytes'"),
        ({"cost_table": {"m": {"input": 1}}}, r"cost_table\['m'\] has unknown option\(s\) \['input'\]"),
        ({"analytics": {"opt_out": True}}, r"analytics has unknown option\(s\) \['opt_out'\]"),
    ],
)
def test_a_wrong_option_group_names_what_was_wrong(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AgentCacheOptions(client=Valkey(), **options)


def test_the_reference_analytics_switch_is_accepted_in_either_form() -> None:
    # betterdb-agent-cache users who turned its analytics off must still start; nothing reads the value.
    assert AgentCacheOptions(client=Valkey(), analytics=AnalyticsOptions(disabled=True)).analytics.disabled
    options = AgentCacheOptions(client=Valkey(), analytics={"disabled": False, "stats_interval_s": 0})
    assert options.analytics == AnalyticsOptions(disabled=False, stats_interval_s=0)
    assert AgentCacheOptions(client=Valkey()).analytics.disabled  # the default says what happens: nothing is sent


def test_positional_options_mean_what_they_meant_in_the_reference() -> None:
    client = Valkey()
    options = AgentCacheOptions(client, "app", 60, {}, {}, False, {}, AnalyticsOptions(), {"interval_ms": 5000})
    assert (options.name, options.default_ttl, options.use_default_cost_table) == ("app", 60, False)
    assert options.config_refresh.interval_ms == 5000
