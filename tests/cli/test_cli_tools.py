"""``agent-cache tools``: the library's recommendation per tool and the concrete TTL change it suggests."""

from __future__ import annotations

import json

import pytest

from agent_cache.commands.tools import suggest
from tests.cli.conftest import Populated
from tests.cli.running import agent_cache


@pytest.mark.parametrize(
    ("recommendation", "hit_rate", "ttl", "calls", "expected"),
    [
        ("increase_ttl", 0.9, 300, 100, ("increase_ttl", 600, "TTL 5m -> 10m")),
        ("increase_ttl", 0.95, 2400, 100, ("increase_ttl", 3600, "TTL 40m -> 1h")),  # capped at an hour
        ("optimal", 0.6, 300, 100, ("keep", 300, "keep")),
        ("optimal", 0.9, 7200, 100, ("keep", 7200, "keep")),
        ("decrease_ttl_or_disable", 0.05, 300, 100, ("disable", None, "disable (cacheable: false)")),
        ("decrease_ttl_or_disable", 0.25, 300, 100, ("decrease_ttl", 150, "TTL 5m -> 150s")),
        ("decrease_ttl_or_disable", 0.3, 90, 100, ("decrease_ttl", 60, "TTL 90s -> 1m")),  # not below a minute
        ("decrease_ttl_or_disable", 0.3, 60, 100, ("disable", None, "disable (cacheable: false)")),
        ("decrease_ttl_or_disable", 0.3, None, 100, ("set_ttl", 3600, "TTL none -> 1h")),
        ("increase_ttl", 0.9, 300, 19, ("wait", 300, "wait: 19 calls < --min-calls 20")),
    ],
)
def test_suggestion_rule(
    recommendation: str, hit_rate: float, ttl: int | None, calls: int, expected: tuple[str, int | None, str]
) -> None:
    advice = suggest(recommendation, hit_rate, ttl, calls, min_calls=20)  # type: ignore[arg-type]
    assert (advice.action, advice.ttl, advice.text) == expected


def test_json_has_a_recommendation_and_a_suggestion_per_tool(populated: Populated) -> None:
    done = agent_cache("tools", "--url", populated.url, "--name", populated.name, "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["tool"]: row for row in json.loads(done.stdout)}
    summary = {tool: (r["recommendation"], r["action"], r["ttl"], r["suggested_ttl"]) for tool, r in rows.items()}
    assert summary == {
        "get_weather": ("increase_ttl", "increase_ttl", 600, 1200),
        "lookup_order": ("optimal", "keep", 300, None),
        "lookup_customer": ("decrease_ttl_or_disable", "decrease_ttl", 300, 150),
        "search": ("decrease_ttl_or_disable", "disable", 300, None),
        "rare_tool": ("optimal", "wait", 300, None),
    }
    assert next(iter(rows)) == "get_weather"  # biggest savings first, as tool_effectiveness() orders them
    assert rows["get_weather"]["calls"] == 30 and rows["get_weather"]["cost_saved"] == pytest.approx(0.27)


def test_min_calls_and_the_table(populated: Populated) -> None:
    done = agent_cache("tools", "--url", populated.url, "--name", populated.name, "--min-calls", "1")
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert "TTL 10m -> 20m" in lines["get_weather"] and "increase_ttl" in lines["get_weather"]
    assert "disable (cacheable: false)" in lines["search"]
    assert "wait" not in lines["rare_tool"]  # one call each way is enough with --min-calls 1


def test_no_tool_counters_exit_3(populated: Populated) -> None:
    done = agent_cache("tools", "--url", populated.url, "--name", "other_cache", "--json")
    assert done.returncode == 3
    assert json.loads(done.stdout) == []
    assert "no tool has been looked up" in done.stderr
