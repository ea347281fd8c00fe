"""The per-command timeout behaves like asyncio.timeout(): it ends a stalled command with BackendTimeoutError,
and leaves every other cancellation — the caller's own, an outer timeout's — exactly as it was."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache import AgentCache, BackendTimeoutError
from tests.reliability.conftest import make_cache

pytestmark = pytest.mark.valkey


@pytest.fixture
async def paused(valkey_server_factory: Callable[..., Any]) -> AsyncIterator[tuple[Any, Valkey]]:
    """A server that stops answering once the test has warmed its client up (socket timeout 5 s)."""
    server = valkey_server_factory()
    client = Valkey.from_url(server.url)
    yield server, client
    server.resume()
    await client.aclose()


async def _stalled(cache: AgentCache, server: Any) -> None:
    await cache.session.set("t", "f", "v")
    await cache.session.get("t", "f")  # the script is loaded, the connection is open
    server.pause()


async def test_a_stalled_command_times_out_and_leaves_no_cancellation_behind(paused: tuple[Any, Valkey]) -> None:
    server, client = paused
    cache = make_cache(client, timeout_s=0.2, breaker_threshold=100)
    await _stalled(cache, server)
    task = asyncio.current_task()
    assert task is not None
    with pytest.raises(BackendTimeoutError, match="did not answer"):
        await cache.session.get("t", "f")
    assert task.cancelling() == 0
    await asyncio.sleep(0.01)  # a leftover cancellation would surface here
    server.resume()
    assert await cache.session.get("t", "f") == "v"
    await cache.close()


async def test_cancelling_a_waiting_call_is_a_cancellation_not_a_timeout(paused: tuple[Any, Valkey]) -> None:
    server, client = paused
    cache = make_cache(client, timeout_s=5.0, breaker_threshold=100)
    await _stalled(cache, server)
    waiting = asyncio.create_task(cache.session.get("t", "f"))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert cache.backend.breaker.state == "closed"  # a cancellation says nothing about the server
    server.resume()
    await cache.close()


async def test_an_outer_timeout_stays_the_callers(paused: tuple[Any, Valkey]) -> None:
    server, client = paused
    cache = make_cache(client, timeout_s=5.0, breaker_threshold=100)
    await _stalled(cache, server)
    with pytest.raises(TimeoutError) as raised:
        async with asyncio.timeout(0.1):
            await cache.session.get("t", "f")
    assert not isinstance(raised.value, BackendTimeoutError)
    server.resume()
    await cache.close()


async def test_the_shorter_of_two_timeouts_wins(paused: tuple[Any, Valkey]) -> None:
    server, client = paused
    cache = make_cache(client, timeout_s=0.2, breaker_threshold=100)
    await _stalled(cache, server)
    async with asyncio.timeout(10):
        result = await cache.llm.check({"model": "m", "messages": []})  # fail-open: a miss, not an error
    assert not result.hit and result.error is not None and result.error.startswith("timeout")
    server.resume()
    await cache.close()


async def test_every_one_of_many_concurrent_stalled_commands_times_out(paused: tuple[Any, Valkey]) -> None:
    server, client = paused
    cache = make_cache(client, timeout_s=0.2, breaker_threshold=1000)
    await _stalled(cache, server)
    outcomes = await asyncio.gather(*(cache.session.get("t", "f") for _ in range(50)), return_exceptions=True)
    assert all(isinstance(outcome, BackendTimeoutError) for outcome in outcomes), outcomes
    server.resume()
    assert await cache.session.get("t", "f") == "v"
    await cache.close()
