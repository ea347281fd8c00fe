"""A Valkey with known contents, written through the library, for the ``agent-cache`` subcommands to read.

Cache ``support_bot`` (tool tier TTL 300 s in code, ``get_weather`` policy 600 s):

=================  =====  ======  ========================================================
tool               hits   misses  what ``tools`` should say
=================  =====  ======  ========================================================
get_weather        27     3       90 %, TTL 600 → increase_ttl, TTL 10m -> 20m; $0.27 saved
lookup_order       12     8       60 % → optimal, keep
lookup_customer    5      15      25 %, TTL 300 → decrease, TTL 5m -> 150s
search             0      25      0 % → disable
rare_tool          1      1       2 calls → wait (under --min-calls 20)
=================  =====  ======  ========================================================

LLM: three gpt-4o answers and two claude-sonnet-4-5 answers, each read back once, plus one miss. Sessions:
thread ``user-42`` with two fields, the same thread id of tenant ``acme`` with one, thread ``user-7`` with one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import (
    AgentCache,
    AgentCacheOptions,
    AgentCacheStats,
    LlmStoreOptions,
    ReliabilityOptions,
    TelemetryOptions,
    TierDefaults,
    ToolPolicy,
    ToolStoreOptions,
)

NAME = "support_bot"
TOOL_CALLS = {  # tool: (hits, misses)
    "get_weather": (27, 3),
    "lookup_order": (12, 8),
    "lookup_customer": (5, 15),
    "search": (0, 25),
    "rare_tool": (1, 1),
}


def make_cache(client: Valkey, name: str = NAME, reliability: ReliabilityOptions | None = None) -> AgentCache:
    return AgentCache(
        AgentCacheOptions(
            client=client,
            name=name,
            tier_defaults={"tool": TierDefaults(ttl=300), "llm": TierDefaults(ttl=3600)},
            telemetry=TelemetryOptions(registry=CollectorRegistry()),
            reliability=reliability or ReliabilityOptions(),
        )
    )


async def populate(cache: AgentCache) -> None:
    await cache.tool.set_policy("get_weather", ToolPolicy(ttl=600))
    for tool, (hits, misses) in TOOL_CALLS.items():
        stored = min(hits, 3) if hits else 0
        for i in range(stored):
            await cache.tool.store(tool, {"i": i}, f'{{"answer": {i}}}', ToolStoreOptions(cost=0.01))
        for n in range(hits):
            assert (await cache.tool.check(tool, {"i": n % stored})).hit
        for n in range(misses):
            assert not (await cache.tool.check(tool, {"miss": n})).hit
    for model, count in (("gpt-4o", 3), ("claude-sonnet-4-5", 2)):
        for i in range(count):
            params = {"model": model, "messages": [{"role": "user", "content": f"question {i}"}]}
            await cache.llm.store(params, f"answer {i}", LlmStoreOptions(tokens={"input": 1000, "output": 500}))
            assert (await cache.llm.check(params)).hit
    assert not (await cache.llm.check({"model": "gpt-4o", "messages": [{"role": "user", "content": "new"}]})).hit
    await cache.session.set("user-42", "intent", "book_flight")
    await cache.session.set("user-42", "lang", "bg")
    await cache.session.set("user-7", "intent", "refund")
    with cache.tenant("acme"):
        await cache.session.set("user-42", "intent", "upgrade")


@dataclass(frozen=True)
class Populated:
    url: str
    name: str
    stats: AgentCacheStats
    """What the library itself reports, for comparison with the command's output."""


@pytest.fixture
async def populated(valkey_client: Valkey, valkey_url: str) -> AsyncIterator[Populated]:
    """The shared server, emptied, with cache ``support_bot`` written as the module docstring says; the cache
    is closed (no heartbeat) before the test runs its commands."""
    async with make_cache(valkey_client) as cache:
        await populate(cache)
        stats = await cache.stats()
    yield Populated(valkey_url, NAME, stats)
