"""``agent-cache top``: rates from counter deltas (pure), and the live view in a real pseudo-terminal."""

from __future__ import annotations

import asyncio

import pytest
from valkey.asyncio import Valkey

from agent_cache import AgentCacheStats, SessionStats, TierStats, ToolStats
from agent_cache.commands.top import rates
from agent_cache.config import CacheConfig, apply_config
from tests.cli.conftest import Populated, make_cache
from tests.cli.running import agent_cache, run_in_pty, strip_ansi


def reading(llm: tuple[int, int], tool: dict[str, tuple[int, int, int]], saved: int, reads: int = 0) -> AgentCacheStats:
    per_tool = {name: ToolStats(hits, misses, 300, micros) for name, (hits, misses, micros) in tool.items()}
    return AgentCacheStats(
        llm=TierStats(*llm),
        tool=TierStats(sum(t.hits for t in per_tool.values()), sum(t.misses for t in per_tool.values())),
        session=SessionStats(reads=reads, writes=0),
        cost_saved_micros=saved,
        per_tool=per_tool,
    )


def test_rates_are_counter_deltas_over_the_interval() -> None:
    before = reading((10, 10), {"search": (5, 5, 0), "weather": (100, 0, 1_000_000)}, 2_000_000, reads=7)
    after = reading((40, 20), {"search": (5, 5, 0), "weather": (110, 10, 1_100_000)}, 2_500_000, reads=27)
    now = rates(before, after, seconds=2.0)
    assert now.llm_per_s == 20.0 and now.llm_hit_rate == 0.75  # 40 lookups, 30 hits in 2 s
    assert now.tool_per_s == 10.0 and now.tool_hit_rate == 0.5
    assert now.session_reads_per_s == 10.0
    assert now.saved_per_hour == pytest.approx(0.5 / 2 * 3600)  # $0.50 in 2 s
    weather, search = now.tools
    assert (weather.tool, weather.calls_per_s, weather.hit_rate) == ("weather", 10.0, 0.5)
    assert weather.saved_per_hour == pytest.approx(0.1 / 2 * 3600)
    assert (search.calls_per_s, search.hit_rate, search.calls_total) == (0.0, None, 10)  # idle: no rate to show


def test_a_counter_reset_between_readings_counts_from_zero() -> None:
    before = reading((50, 50), {"weather": (10, 0, 100)}, 100)
    after = reading((1, 0), {}, 0)
    now = rates(before, after, seconds=1.0)
    assert (now.llm_per_s, now.tool_per_s, now.saved_per_hour) == (1.0, 0.0, 0.0)


@pytest.mark.valkey
async def test_live_view_in_a_terminal(populated: Populated, valkey_client: Valkey) -> None:
    config = CacheConfig.from_spec({"tiers": {"tool": {"ttl": 120}}})
    version = await apply_config(valkey_client, populated.name, config, "test")
    async with make_cache(valkey_client) as running:  # one live instance, reporting the version it applied
        await running.live_config.refresh()
        code, raw = await asyncio.to_thread(
            run_in_pty,
            "top",
            "--url",
            populated.url,
            "--name",
            populated.name,
            "--interval",
            "0.2",
            "--iterations",
            "2",
        )
        instance = running.live_config.instance_id
    assert code == 0, raw
    screen = strip_ansi(raw)
    assert "\x1b[" in raw  # a terminal: styles and cursor movement
    assert raw.rstrip().endswith("\x1b[?25h")  # the cursor is shown again at the end
    assert f"agent-cache top · cache {populated.name} on {populated.url}" in screen
    assert "Traffic (measuring…)" in screen and "Traffic (last" in screen  # totals first, then rates
    assert "get_weather" in screen and "lookup_customer" in screen
    assert f"Instances: 1 live · config version {version} from test" in screen
    assert instance in screen and f"{version} ✓" in screen


@pytest.mark.valkey
def test_on_a_pipe_it_prints_plain_frames(populated: Populated) -> None:
    done = agent_cache(
        "top", "--url", populated.url, "--name", populated.name, "--interval", "0.1", "--iterations", "3"
    )
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    assert done.stdout.count("agent-cache top · cache support_bot") == 3
    assert "Instances: 0 live · no live config (code defaults)" in done.stdout
    tools_table = done.stdout.rsplit("Top tools (of 5)", 1)[1]
    assert tools_table.index("get_weather") < tools_table.index("search")  # idle: busiest in total first


def test_iterations_and_interval_are_checked() -> None:
    for args in (["--iterations", "0"], ["--interval", "0.01"], ["--interval", "soon"]):
        done = agent_cache("top", *args)
        assert done.returncode == 2
        assert "error: argument" in done.stderr
