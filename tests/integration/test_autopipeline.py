"""Auto-pipelined reads: concurrent hits share round trips, each still gets exactly its own answer or error."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache import AgentCache, BackendTimeoutError, TierDefaults, ValkeyCommandError
from agent_cache._backend import Backend
from agent_cache._breaker import CircuitBreaker
from tests.integration.conftest import MakeCache
from tests.servers import RoundTripCounter

pytestmark = pytest.mark.valkey


async def test_concurrent_reads_share_round_trips_and_each_gets_its_own_value(
    counted_client: tuple[Valkey, RoundTripCounter],
) -> None:
    client, counter = counted_client
    for i in range(0, 200, 2):  # every other key exists
        await client.set(f"k{i}", f"v{i}")
    backend = Backend(client, timeout_s=5.0)
    counter.reset()
    values = await asyncio.gather(*(backend.get(f"k{i}") for i in range(200)))
    assert values == [f"v{i}".encode() if i % 2 == 0 else None for i in range(200)]
    assert counter.count < 20, f"200 concurrent reads took {counter.count} round trips"
    counter.reset()
    assert await backend.get("k0") == b"v0"  # idle: a read goes at once, as its own command
    assert counter.count == 1


async def test_an_error_in_a_batch_is_that_reads_alone(backend_client: Any) -> None:
    await backend_client.hset("a-hash", "f", "v")
    await backend_client.set("a-string", "v")
    backend = Backend(backend_client, timeout_s=5.0)
    outcomes = await asyncio.gather(
        *(backend.get("a-hash" if i == 7 else "a-string") for i in range(30)), return_exceptions=True
    )
    assert isinstance(outcomes[7], ValkeyCommandError) and "WRONGTYPE" in str(outcomes[7])
    assert outcomes[:7] + outcomes[8:] == [b"v"] * 29


async def test_sliding_reads_across_threads_and_slots(make_cache: MakeCache) -> None:
    cache = make_cache(tier_defaults={"session": TierDefaults(ttl=600)})
    for t in range(40):
        await cache.session.set(f"thread-{t}", "f", f"value-{t}")
    for _ in range(3):
        values = await asyncio.gather(*(cache.session.get(f"thread-{t}", "f") for t in range(40)))
        assert values == [f"value-{t}" for t in range(40)]


async def test_reads_queued_behind_a_stalled_one_time_out_and_the_pipeline_recovers(
    valkey_server_factory: Callable[..., Any],
) -> None:
    server = valkey_server_factory()
    client = Valkey.from_url(server.url)
    cache = AgentCache(client=client, name="ap", reliability={"timeout_s": 0.3, "breaker_threshold": 10_000})
    await cache.llm.store({"model": "m", "messages": []}, "answer")
    server.pause()
    try:
        results = await asyncio.gather(*(cache.llm.check({"model": "m", "messages": []}) for _ in range(20)))
        assert all(not r.hit and r.error is not None and r.error.startswith("timeout") for r in results)
    finally:
        server.resume()
    results = await asyncio.gather(*(cache.llm.check({"model": "m", "messages": []}) for _ in range(20)))
    assert all(r.hit and r.response == "answer" for r in results)
    await cache.close()
    await client.aclose()


async def test_a_stalled_read_is_a_timeout_for_the_caller(valkey_server_factory: Callable[..., Any]) -> None:
    server = valkey_server_factory()
    client = Valkey.from_url(server.url)
    backend = Backend(client, timeout_s=0.3, breaker=CircuitBreaker(threshold=1000))
    await backend.get("warm")  # the connection is open
    server.pause()
    try:
        outcomes = await asyncio.gather(*(backend.get("k") for _ in range(5)), return_exceptions=True)
    finally:
        server.resume()
    assert all(isinstance(outcome, BackendTimeoutError) for outcome in outcomes), outcomes
    assert await asyncio.gather(*(backend.get("k") for _ in range(5))) == [None] * 5
    await client.aclose()


async def test_writes_go_in_one_round_trip_and_their_errors_still_raise(backend_client: Any) -> None:
    from agent_cache._scripts import KEY_INDEX_ADD

    backend = Backend(backend_client, timeout_s=5.0)
    index_add = Backend.script_command(KEY_INDEX_ADD, ("{t}:index",), ("{t}:a", 60))
    await backend_client.script_flush()  # the script must be sent again as EVAL (NOSCRIPT)
    await backend.write([("SET", ("{t}:a", "1")), index_add])
    assert await backend_client.get("{t}:a") == b"1"
    assert await backend_client.zrange("{t}:index", 0, -1) == [b"{t}:a"]
    await backend_client.hset("{t}:hash", "f", "v")
    with pytest.raises(ValkeyCommandError, match="WRONGTYPE"):
        await backend.write([("SET", ("{t}:b", "2")), ("INCR", ("{t}:hash",))])
    assert await backend_client.get("{t}:b") == b"2"  # the commands before it ran
    # Many at once: past the four in flight, each write goes as a pipeline of its own, still in order.
    await asyncio.gather(
        *(backend.write([("SET", (f"{{t}}:k{i}", i)), ("APPEND", (f"{{t}}:k{i}", "x"))]) for i in range(40))
    )
    assert await backend_client.mget([f"{{t}}:k{i}" for i in range(40)]) == [f"{i}x".encode() for i in range(40)]
