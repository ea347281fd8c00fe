"""Cancellation at every await: each public coroutine, cancelled after k turns of the event loop for
k = 0, 1, 2 ... until it completes before the cancellation arrives.

After each cancellation: the coroutine ended with ``CancelledError`` (not another exception, not a normal
return that swallowed it), callers running beside it on the same cache got their answers (nobody was
cancelled who did not ask to be, no reply went to the wrong caller), no task it started is left behind,
no lock is held (the stats flush and a single-flight lease both still work), and the cache still works.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import AgentCache, Computed, TelemetryOptions, ToolPolicy

pytestmark = pytest.mark.valkey

MAX_TURNS = 600  # a safety stop; every operation here completes within far fewer turns
BYSTANDERS = 6  # more than the auto-pipeline's sends in flight, so some of them share a batch
SETTLE_LIMIT_S = 30.0  # bounds a wait for tasks that should end at once; only a leak reaches it

BYSTANDER_PARAMS = {"model": "m", "messages": [{"role": "user", "content": "bystander"}]}
VICTIM_PARAMS = {"model": "m", "messages": [{"role": "user", "content": "victim"}]}

Operation = Callable[[AgentCache], Awaitable[Any]]


def new_cache(client: Valkey, **options: Any) -> AgentCache:
    options.setdefault("telemetry", TelemetryOptions(registry=CollectorRegistry()))
    options.setdefault("reliability", {"on_error": "raise"})  # an error must show, not become a miss
    return AgentCache(client=client, name="cancel", **options)


@pytest.fixture
async def cache(valkey_client: Valkey) -> AsyncIterator[AgentCache]:
    cache = new_cache(valkey_client)
    await cache.llm.store(BYSTANDER_PARAMS, "bystander answer")
    await cache.llm.store(VICTIM_PARAMS, "victim answer")
    await cache.tool.store("weather", {"city": "Sofia"}, '{"t": 21}')
    await cache.session.set("thread", "field", "value")
    yield cache
    await cache.close()


async def computed_slowly() -> Computed:
    for _ in range(5):
        await asyncio.sleep(0)
    return Computed("fresh", tokens={"input": 1, "output": 1})


async def tool_computed_slowly() -> str:
    for _ in range(5):
        await asyncio.sleep(0)
    return "fresh"


OPERATIONS: dict[str, Operation] = {
    "llm.check hit": lambda c: c.llm.check(VICTIM_PARAMS),
    "llm.check miss": lambda c: c.llm.check({"model": "m", "messages": [{"role": "user", "content": "none"}]}),
    "llm.store": lambda c: c.llm.store(VICTIM_PARAMS, "victim answer"),
    "llm.store_multipart": lambda c: c.llm.store_multipart(VICTIM_PARAMS, [{"type": "text", "text": "victim answer"}]),
    "llm.get_or_compute": lambda c: c.llm.get_or_compute(
        {"model": "m", "messages": [{"role": "user", "content": "computed"}]}, computed_slowly
    ),
    "llm.invalidate_by_model": lambda c: c.llm.invalidate_by_model("other-model"),
    "tool.check": lambda c: c.tool.check("weather", {"city": "Sofia"}),
    "tool.store": lambda c: c.tool.store("weather", {"city": "Sofia"}, '{"t": 21}'),
    "tool.get_or_compute": lambda c: c.tool.get_or_compute("weather", {"city": "Varna"}, tool_computed_slowly),
    "tool.set_policy": lambda c: c.tool.set_policy("weather", ToolPolicy(ttl=600)),
    "tool.refresh_policies": lambda c: c.tool.refresh_policies(),
    "tool.invalidate": lambda c: c.tool.invalidate("weather", {"city": "Plovdiv"}),
    "tool.invalidate_by_tool": lambda c: c.tool.invalidate_by_tool("other_tool"),
    "session.get": lambda c: c.session.get("thread", "field"),
    "session.set": lambda c: c.session.set("thread", "field", "value"),
    "session.get_all": lambda c: c.session.get_all("thread"),
    "session.delete": lambda c: c.session.delete("thread", "absent"),
    "session.destroy_thread": lambda c: c.session.destroy_thread("other-thread"),
    "session.touch": lambda c: c.session.touch("thread"),
    "stats": lambda c: c.stats(),
    "tool_effectiveness": lambda c: c.tool_effectiveness(),
}


async def bystander(cache: AgentCache) -> str | None:
    return (await cache.llm.check(BYSTANDER_PARAMS)).response


def extra_tasks(baseline: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t not in baseline and t is not asyncio.current_task() and not t.done()}


async def assert_nothing_left_behind(baseline: set[asyncio.Task[Any]], what: str) -> None:
    """Tasks the operation started (auto-pipeline batches, lock releases) may finish their step; none may stay."""
    while extra := extra_tasks(baseline):  # a task that ends may start another (a batch's follower)
        _, stuck = await asyncio.wait(extra, timeout=SETTLE_LIMIT_S)
        assert not stuck, f"{what}: tasks left behind: {stuck}"


async def cancel_after(turns: int, start: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any] | None:
    """Start ``start()`` as a task, let the loop turn ``turns`` times, cancel it and wait for it.

    None when it completed before the cancellation (so every earlier point has been tried)."""
    victim = asyncio.ensure_future(start())
    for _ in range(turns):
        await asyncio.sleep(0)
    if victim.done():
        victim.result()  # it must have succeeded
        return None
    victim.cancel()
    try:
        await victim
    except asyncio.CancelledError:
        current = asyncio.current_task()
        assert current is not None and current.cancelling() == 0, "the test's own task was cancelled"
    else:
        raise AssertionError(f"cancelled after {turns} turns, it returned {victim.result()!r}: cancellation lost")
    assert victim.cancelled()
    return victim


async def assert_cancellable_everywhere(
    cache: AgentCache, client: Valkey, name: str, start: Callable[[], Awaitable[Any]]
) -> int:
    """Returns how many cancellation points were tried."""
    for turns in range(MAX_TURNS):
        baseline = set(asyncio.all_tasks())
        bystanders = [asyncio.ensure_future(bystander(cache)) for _ in range(BYSTANDERS)]
        cancelled = await cancel_after(turns, start)
        answers = await asyncio.gather(*bystanders, return_exceptions=True)
        assert answers == ["bystander answer"] * BYSTANDERS, f"{name} cancelled after {turns} turns: {answers}"
        await assert_nothing_left_behind(baseline, f"{name} cancelled after {turns} turns")
        if cancelled is None:
            return turns
        async with asyncio.timeout(SETTLE_LIMIT_S):  # a lock left held would make these wait for ever
            await cache.stats()
            assert (await cache.session.get("thread", "field")) == "value"
        leases = await client.keys("*:lock")
        assert leases == [], f"{name} cancelled after {turns} turns left a single-flight lease behind"
    raise AssertionError(f"{name} never completed within {MAX_TURNS} turns")


@pytest.mark.parametrize("name", sorted(OPERATIONS))
async def test_cancelling_at_every_await(cache: AgentCache, valkey_client: Valkey, name: str) -> None:
    operation = OPERATIONS[name]
    tried = await assert_cancellable_everywhere(cache, valkey_client, name, lambda: operation(cache))
    assert tried > 0  # at least one cancellation landed inside the operation


async def test_cancelling_flush_at_every_await(cache: AgentCache, valkey_client: Valkey) -> None:
    # flush() deletes the entries the bystanders read: put them back before each try.
    for turns in range(MAX_TURNS):
        await cache.llm.store(BYSTANDER_PARAMS, "bystander answer")
        await cache.session.set("thread", "field", "value")
        baseline = set(asyncio.all_tasks())
        cancelled = await cancel_after(turns, cache.flush)
        await assert_nothing_left_behind(baseline, f"flush cancelled after {turns} turns")
        async with asyncio.timeout(SETTLE_LIMIT_S):
            await cache.stats()
        if cancelled is None:
            assert turns > 0
            return
    raise AssertionError("flush never completed")


@pytest.mark.parametrize("method", ["close", "ensure_discovery_ready"])
async def test_cancelling_lifecycle_calls_at_every_await(valkey_client: Valkey, method: str) -> None:
    for turns in range(MAX_TURNS):
        baseline = set(asyncio.all_tasks())
        victim_cache = new_cache(valkey_client, discovery={"heartbeat_interval_ms": 60_000})
        await victim_cache.session.set("thread", "field", "value")  # upkeep and watcher are running now
        cancelled = await cancel_after(turns, getattr(victim_cache, method))
        async with asyncio.timeout(SETTLE_LIMIT_S):
            await victim_cache.close()  # a close after a cancelled one (or a second close) completes
        await assert_nothing_left_behind(baseline, f"{method} cancelled after {turns} turns")
        if cancelled is None:
            assert turns > 0
            return
    raise AssertionError(f"{method} never completed")
