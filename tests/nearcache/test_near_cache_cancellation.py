"""Cancellation at every await with the near-cache on (the harness of ``tests/lifecycle/test_cancel_every_await``):
the L1 path, the tracked read of a miss and the settling round trip of a store all end with CancelledError,
leave no task and no pending read behind, and never disturb bystanders reading through L1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from valkey.asyncio import Valkey

import tests.lifecycle.test_cancel_every_await as harness
from agent_cache import AgentCache, NearCacheOptions

pytestmark = pytest.mark.valkey

NAMES = [
    "llm.check hit",
    "llm.check miss",
    "llm.store",
    "llm.invalidate_by_model",
    "tool.check",
    "tool.store",
    "tool.invalidate",
    "tool.invalidate_by_tool",
]


@pytest.fixture
async def near(valkey_client: Valkey) -> AsyncIterator[AgentCache]:
    cache = harness.new_cache(valkey_client, near_cache=NearCacheOptions())
    await cache.llm.store(harness.BYSTANDER_PARAMS, "bystander answer")
    await cache.llm.store(harness.VICTIM_PARAMS, "victim answer")
    await cache.tool.store("weather", {"city": "Sofia"}, '{"t": 21}')
    await cache.session.set("thread", "field", "value")
    key = cache.llm.key(harness.BYSTANDER_PARAMS)
    for _ in range(100):  # tracking armed, the bystanders' entry in L1
        await cache.llm.check(harness.BYSTANDER_PARAMS)
        if cache._near is not None and cache._near.lookup(key) is not None:
            break
        await asyncio.sleep(0.01)
    yield cache
    await cache.close()


@pytest.mark.parametrize("name", NAMES)
async def test_cancelling_with_the_near_cache(near: AgentCache, valkey_client: Valkey, name: str) -> None:
    operation: Any = harness.OPERATIONS[name]
    tried = await harness.assert_cancellable_everywhere(near, valkey_client, name, lambda: operation(near))
    assert near._near is not None and near._near._inflight == {}  # no read left marked pending
    if name != "llm.check hit":  # an L1 hit never suspends: nothing to cancel inside it
        assert tried > 0
