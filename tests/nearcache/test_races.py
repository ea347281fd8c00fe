"""Races a naive near-cache loses: an invalidation that arrives while the read is in flight, a read
cancelled mid-flight, many concurrent readers of one key while it is overwritten."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache import AgentCache, NearCacheOptions
from agent_cache._tracking import TrackedReader
from tests.servers import ServerHandle

pytestmark = pytest.mark.valkey

_QUIET: dict[str, Any] = {"config_refresh": {"enabled": False}, "discovery": {"enabled": False}}
PARAMS = {"model": "m", "messages": [{"role": "user", "content": "q"}]}


@pytest.fixture
async def near_cache(valkey_server: ServerHandle) -> AsyncIterator[tuple[AgentCache, Valkey]]:
    client = Valkey.from_url(valkey_server.url)
    other = Valkey.from_url(valkey_server.url)
    await client.flushall()
    cache = AgentCache(client=client, name="races", near_cache=NearCacheOptions(), **_QUIET)
    try:
        yield cache, other
    finally:
        await cache.close()
        await client.aclose()
        await other.aclose()


async def _armed(cache: AgentCache) -> None:
    """Read until tracking is armed (the first read of a node arms it in the background)."""
    key = cache.llm.key(PARAMS)
    for _ in range(200):
        await cache.llm.check(PARAMS)
        if cache._near is not None and cache._near.lookup(key) is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the near-cache never armed")


async def test_invalidation_while_the_read_is_in_flight_keeps_the_reply_out_of_l1(
    near_cache: tuple[AgentCache, Valkey], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, other = near_cache
    key = cache.llm.key(PARAMS)
    await cache.llm.store(PARAMS, "old")
    await _armed(cache)
    cache._near.drop(key)  # type: ignore[union-attr]  # the next check reads from Valkey again
    send = TrackedReader.request

    def request_then_overwrite(self: TrackedReader, *commands: tuple[str | int, ...]) -> Any:
        reply = send(self, *commands)
        if commands[0] != ("GET", key):
            return reply

        async def overwritten_in_flight() -> Any:
            replies = await reply  # the server has answered "old" and tracks the key for us ...
            await other.set(key, b'{"response":"new","model":"m"}')  # ... then another process overwrites it
            await other.pttl(key)  # and has heard back: its invalidation has reached our socket
            return replies

        return asyncio.ensure_future(overwritten_in_flight())

    monkeypatch.setattr(TrackedReader, "request", request_then_overwrite)
    assert (await cache.llm.check(PARAMS)).response == "old"  # what Valkey held when it was read
    monkeypatch.undo()
    assert cache._near.lookup(key) is None  # type: ignore[union-attr]  # but it never entered L1
    assert (await cache.llm.check(PARAMS)).response == "new"


async def test_cancelled_reads_leave_nothing_pending(near_cache: tuple[AgentCache, Valkey]) -> None:
    cache, _ = near_cache
    await cache.llm.store(PARAMS, "answer")
    await _armed(cache)
    near = cache._near
    assert near is not None
    for steps in range(1, 6):  # cancel after 1..5 loop iterations: before, during and after the round trip
        near.drop(cache.llm.key(PARAMS))
        task = asyncio.create_task(cache.llm.check(PARAMS))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        assert near._inflight == {}
    assert (await cache.llm.check(PARAMS)).response == "answer"


async def test_concurrent_readers_during_overwrites_end_on_the_last_value(
    near_cache: tuple[AgentCache, Valkey],
) -> None:
    """64 tasks read one key while another client overwrites it 200 times; once the writes stop (and settle),
    every reader sees the last value, from L1 or Valkey."""
    cache, other = near_cache
    await cache.llm.store(PARAMS, "v0")
    await _armed(cache)
    key = cache.llm.key(PARAMS)
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            await cache.llm.check(PARAMS)
            await asyncio.sleep(0)

    readers = [asyncio.create_task(reader()) for _ in range(64)]
    for i in range(1, 201):
        await other.set(key, f'{{"response":"v{i}","model":"m"}}'.encode())
        await other.pttl(key)
        await asyncio.sleep(0)
    stop.set()
    await asyncio.gather(*readers)
    answers = {(await cache.llm.check(PARAMS)).response for _ in range(20)}
    assert answers == {"v200"}
