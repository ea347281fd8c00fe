"""Stampede protection: concurrent misses compute once — in one process, across processes, after a crash."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agent_cache import (
    AgentCache,
    Computed,
    ConfigRefreshOptions,
    DiscoveryOptions,
    ReliabilityOptions,
    TelemetryOptions,
)
from tests.reliability.conftest import make_cache

pytestmark = pytest.mark.valkey

WORKER = str(Path(__file__).with_name("flight_worker.py"))
PARAMS = {"model": "gpt-4o", "messages": [{"role": "user", "content": "expensive"}]}


async def test_concurrent_misses_in_one_process_call_the_llm_once(valkey_client: Any) -> None:
    registry = CollectorRegistry()
    cache = make_cache(valkey_client, registry)
    calls = 0

    async def compute() -> Computed:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        return Computed("answer", tokens={"input": 10, "output": 20})

    results = await asyncio.gather(*(cache.llm.get_or_compute(PARAMS, compute) for _ in range(50)))
    assert calls == 1
    assert {r.response for r in results} == {"answer"}
    assert (await cache.llm.check(PARAMS)).hit
    local = registry.get_sample_value(
        "agent_cache_coalesced_total", {"cache_name": "rel", "tier": "llm", "outcome": "local"}
    )
    assert local == 49
    await cache.close()


def _spawn(url: str, calls: int, lease_s: float, compute_s: float) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, WORKER, url, str(calls), str(lease_s), str(compute_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def test_fifty_misses_across_two_processes_compute_once(valkey_server: Any) -> None:
    import valkey

    raw = valkey.Valkey.from_url(valkey_server.url)
    raw.flushall()
    workers = [_spawn(valkey_server.url, 25, 10.0, 0.5) for _ in range(2)]
    outputs = [w.communicate(timeout=60) for w in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        assert json.loads(out) == ["computed"] * 25
    assert int(raw.get("flight:computations")) == 1
    raw.close()


def test_waiters_take_over_when_the_lock_holder_dies(valkey_server: Any) -> None:
    import valkey

    raw = valkey.Valkey.from_url(valkey_server.url)
    raw.flushall()
    holder = _spawn(valkey_server.url, 1, 1.0, 60.0)  # computes "forever" while holding a 1 s lease
    deadline = time.monotonic() + 10
    while int(raw.get("flight:computations") or 0) == 0:
        assert time.monotonic() < deadline, "the holder never started computing"
        time.sleep(0.02)
    waiter = _spawn(valkey_server.url, 5, 1.0, 0.1)
    holder.kill()
    holder.communicate()
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert json.loads(out) == ["computed"] * 5
    assert int(raw.get("flight:computations")) == 2  # the dead holder's attempt + one take-over
    raw.close()


async def test_cached_decorator_returns_the_tools_json_and_calls_it_once(valkey_client: Any) -> None:
    cache = make_cache(valkey_client)
    calls: list[tuple[str, str]] = []

    @cache.tool.cached("get_weather", ttl=600, cost=0.01)
    async def get_weather(city: str, units: str = "metric") -> dict[str, Any]:
        calls.append((city, units))
        await asyncio.sleep(0.05)
        return {"city": city, "temp": 21, "units": units}

    first = await asyncio.gather(*(get_weather("Sofia") for _ in range(10)))
    again = await get_weather(city="Sofia", units="metric")  # same bound arguments, other spelling
    other = await get_weather("Varna")
    assert first == [{"city": "Sofia", "temp": 21, "units": "metric"}] * 10 and again == first[0]
    assert other["city"] == "Varna"
    assert calls == [("Sofia", "metric"), ("Varna", "metric")]
    stats = await cache.stats()
    assert stats.per_tool["get_weather"].cost_saved_micros == 10_000
    await cache.close()


async def test_get_or_compute_keeps_the_callers_store_options(valkey_client: Any) -> None:
    from agent_cache import LlmStoreOptions

    cache = make_cache(valkey_client)

    async def compute() -> str:
        return "answer"

    options = LlmStoreOptions(ttl=123, metadata={"id": "resp-1"})
    result = await cache.llm.get_or_compute(PARAMS, compute, options)
    assert 100 < await valkey_client.ttl(result.key) <= 123
    assert (await cache.llm.check(PARAMS)).metadata == {"id": "resp-1"}
    await cache.close()


async def test_get_or_compute_derives_the_key_once_for_its_lookups_and_store(
    valkey_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent_cache.tiers.llm as llm_tier
    import agent_cache.tiers.tool as tool_tier

    derived: list[str] = []
    for module, name in ((llm_tier, "llm_hash"), (tool_tier, "tool_hash")):
        real = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda value, scope="", real=real, name=name: derived.append(name) or real(value, scope)
        )
    cache = make_cache(valkey_client, CollectorRegistry())

    async def compute() -> str:
        return "answer"

    missed = await cache.llm.get_or_compute(PARAMS, compute)  # lookup, lock, lookup again, store
    hit = await cache.llm.get_or_compute(PARAMS, compute)
    assert (missed.hit, hit.hit, hit.response, hit.key) == (False, True, "answer", missed.key)
    tool_missed = await cache.tool.get_or_compute("search", {"q": "x"}, compute)
    tool_hit = await cache.tool.get_or_compute("search", {"q": "x"}, compute)
    assert (tool_missed.hit, tool_hit.hit, tool_hit.key) == (False, True, tool_missed.key)
    assert derived == ["llm_hash", "llm_hash", "tool_hash", "tool_hash"]  # one per call
    await cache.close()


async def _joined() -> None:
    for _ in range(3):
        await asyncio.sleep(0)  # tasks just created run to their first await: they have joined the flight


async def test_a_cancelled_leader_takes_no_follower_with_it(backend_client: Any) -> None:
    cache = make_cache(backend_client)
    started = asyncio.Event()
    calls = 0

    async def compute() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await asyncio.Event().wait()  # the leader's computation only ends by cancellation
        return "answer"

    leader = asyncio.create_task(cache.llm.get_or_compute(PARAMS, compute))
    await started.wait()
    followers = [asyncio.create_task(cache.llm.get_or_compute(PARAMS, compute)) for _ in range(3)]
    await _joined()
    leader.cancel()
    results = await asyncio.gather(*followers)  # raises CancelledError if a follower went with the leader
    assert [r.response for r in results] == ["answer"] * 3
    assert calls == 2  # the cancelled computation, and one follower's that took over
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert await backend_client.exists(f"{cache.llm.key(PARAMS)}:lock") == 0
    await cache.close()


async def test_a_cancelled_follower_leaves_the_leader_and_the_others_alone(valkey_client: Any) -> None:
    cache = make_cache(valkey_client)
    release = asyncio.Event()
    calls = 0

    async def compute() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "answer"

    tasks = [asyncio.create_task(cache.tool.get_or_compute("search", {"q": 1}, compute)) for _ in range(3)]
    await _joined()
    tasks[1].cancel()
    await _joined()
    release.set()
    first, second, third = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(second, asyncio.CancelledError)
    assert not isinstance(first, BaseException) and not isinstance(third, BaseException)
    assert (first.response, third.response, calls) == ("answer", "answer", 1)
    await cache.close()


async def test_a_cancelled_leader_in_another_process_leaves_every_waiter_running(valkey_server: Any) -> None:
    from valkey.asyncio import Valkey

    client = Valkey.from_url(valkey_server.url)
    await client.flushall()
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        *(WORKER, valkey_server.url, "3", "60", "0.05", "cancel-leader"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert worker.stdin is not None and worker.stdout is not None
    try:
        for expected in (b"ready", b"computing"):
            assert (await asyncio.wait_for(worker.stdout.readline(), 30)).strip() == expected
        waiter = AgentCache(  # the worker's cache: same name, same key for the same tool call
            client=client,
            name="flight",
            telemetry=TelemetryOptions(registry=CollectorRegistry()),
            discovery=DiscoveryOptions(enabled=False),
            config_refresh=ConfigRefreshOptions(enabled=False),
            reliability=ReliabilityOptions(lock_lease_s=60),
        )

        async def compute() -> str:
            await client.incr("flight:computations")
            return "computed"

        waiting = asyncio.create_task(waiter.tool.get_or_compute("slow_tool", {"q": 1}, compute))
        await asyncio.sleep(0.1)  # it polls: the worker's leader holds the lock
        assert not waiting.done()
        worker.stdin.write(b"cancel\n")
        await worker.stdin.drain()
        result = await asyncio.wait_for(waiting, 30)  # a hang guard: the lease (60 s) must not be waited out
        out, err = await asyncio.wait_for(worker.communicate(), 30)
        assert worker.returncode == 0, err.decode()
        assert json.loads(out) == {"followers": ["computed"] * 3, "leader_cancelled": True}
        assert result.response == "computed"
        assert int(await client.get("flight:computations")) == 2  # the cancelled one + one take-over
        await waiter.close()
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
        await client.aclose()


async def test_waiting_for_another_process_counts_one_outcome_per_call(valkey_client: Any) -> None:
    registry = CollectorRegistry()
    computing = make_cache(valkey_client)  # two instances of one cache, as two processes: their own flights
    waiting = make_cache(valkey_client, registry)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        started.set()
        await release.wait()
        return "answer"

    first = asyncio.create_task(computing.tool.get_or_compute("search", {"q": 1}, slow))
    await started.wait()  # it holds the lock
    second = asyncio.create_task(waiting.tool.get_or_compute("search", {"q": 1}, slow))
    await asyncio.sleep(0.3)  # the waiter polls the cache several times meanwhile
    release.set()
    computed, waited = await asyncio.gather(first, second)
    assert (computed.hit, waited.hit, waited.response) == (False, True, "answer")
    await computing.stats()  # flushes its counters
    stats = await waiting.stats()
    assert (stats.tool.hits, stats.tool.misses) == (1, 1)
    assert (stats.per_tool["search"].hits, stats.per_tool["search"].misses) == (1, 1)
    requests = {
        result: registry.get_sample_value(
            "agent_cache_requests_total", {"cache_name": "rel", "tier": "tool", "result": result, "tool_name": "search"}
        )
        for result in ("hit", "miss")
    }
    assert requests == {"hit": 1, "miss": None}  # the waiter's one request, a hit
    await computing.close()
    await waiting.close()


async def test_callers_that_join_a_flight_count_one_outcome_each(valkey_client: Any) -> None:
    cache = make_cache(valkey_client)

    async def compute() -> Computed:
        await asyncio.sleep(0.05)
        return Computed("answer", tokens={"input": 10, "output": 20})

    await asyncio.gather(*(cache.llm.get_or_compute(PARAMS, compute) for _ in range(4)))
    stats = await cache.stats()
    assert (stats.llm.hits, stats.llm.misses) == (0, 4)  # four requests, none found in the cache
    assert (await cache.llm.get_or_compute(PARAMS, compute)).hit
    stats = await cache.stats()
    assert (stats.llm.hits, stats.llm.misses) == (1, 4)
    await cache.close()


@pytest.mark.parametrize("tier", ["llm", "tool"])
async def test_cancelling_the_leader_at_any_await_leaves_the_followers_their_answer(
    backend_client: Any, tier: str
) -> None:
    registry = CollectorRegistry()
    cache = make_cache(backend_client, registry, lock_lease_s=3)

    async def compute() -> str:
        await asyncio.sleep(0)
        return "answer"

    for turns in range(40):  # cancel the leader after 0, 1, 2... turns of the loop: at each of its awaits in turn
        params = {**PARAMS, "seed": turns}

        def call(params: dict[str, Any] = params) -> Any:
            if tier == "llm":
                return cache.llm.get_or_compute(params, compute)
            return cache.tool.get_or_compute("search", params, compute)

        alone = asyncio.create_task(call({**params, "alone": True}))
        for _ in range(turns):
            await asyncio.sleep(0)
        alone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await alone
        assert await backend_client.keys("*:lock") == [], turns  # a lock it took is free again at once

        leader = asyncio.create_task(call())
        await asyncio.sleep(0)
        followers = [asyncio.create_task(call()) for _ in range(2)]
        for _ in range(turns):
            await asyncio.sleep(0)
        leader.cancel()
        results = await asyncio.gather(*followers)  # a CancelledError here: a follower went with the leader
        assert [r.response for r in results] == ["answer", "answer"], turns
        try:
            assert (await leader).response == "answer"  # it had finished before the cancel
        except asyncio.CancelledError:
            pass  # never another exception in its place
        assert (await call()).hit, turns
    assert await backend_client.keys("*:lock") == []  # every lock released
    fallbacks = registry.get_sample_value(
        "agent_cache_coalesced_total", {"cache_name": "rel", "tier": tier, "outcome": "fallback"}
    )
    assert fallbacks is None  # and at once: nobody waited out a lease a cancelled leader left behind
    await cache.close()
