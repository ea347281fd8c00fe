"""The near-cache never serves an invalidated answer: another process writes, then tells us, and we read at once.

Process A (a second client and cache on its own thread and event loop) overwrites, invalidates, deletes or
flushes; the moment its call returns, process B (this test's cache, near-cache on) checks the same request.
B's answer must be exactly what A left in Valkey — thousands of times, also while B's invalidation link is
killed and while Valkey restarts. A test that saw no L1 hits would prove nothing, so each asserts B's L1
served most of its warm reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from valkey.asyncio import Valkey, ValkeyCluster

from agent_cache import AgentCache, NearCacheOptions
from agent_cache._near_cache import SilentListener
from agent_cache.embedded import EmbeddedValkey
from tests.nearcache.writers import WriterThread
from tests.servers import ServerHandle

pytestmark = pytest.mark.valkey

_QUIET = {"config_refresh": {"enabled": False}, "discovery": {"enabled": False}}
_KEYS = 6
_TIME_BOUND_S = 40.0


class L1Counter(SilentListener):
    """Counts L1 lookups as they happen (the telemetry listener reports them in batches)."""

    def __init__(self) -> None:
        self.hits = self.misses = 0

    def near_lookup(self, hit: bool, count: int = 1) -> None:
        if hit:
            self.hits += count
        else:
            self.misses += count


def counted(cache: AgentCache) -> L1Counter:
    counter = L1Counter()
    cache._near.listener = counter  # type: ignore[union-attr]
    return counter


def llm_params(i: int) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": f"question {i % _KEYS}"}]}


def tool_args(i: int) -> dict[str, Any]:
    return {"city": f"city {i % _KEYS}"}


Op = Callable[[AgentCache, Any], Awaitable[Any]]


def operation(i: int, tier: str) -> tuple[str, Op]:
    """What A does in round ``i``, returning what a reader must see afterwards (None: a miss)."""
    version = f"v{i}"
    params, args = llm_params(i), tool_args(i)

    async def overwrite(cache: AgentCache, client: Any) -> str:
        if tier == "llm":
            await cache.llm.store(params, version)
        else:
            await cache.tool.store("weather", args, version)
        return version

    async def invalidate(cache: AgentCache, client: Any) -> None:
        if tier == "llm":
            await cache.llm.invalidate_by_model("m")
        else:
            await cache.tool.invalidate("weather", args)

    async def raw_delete(cache: AgentCache, client: Any) -> None:
        key = cache.llm.key(params) if tier == "llm" else cache.tool._entry_key("weather", args)[2]
        await client.delete(key)
        await client.pttl(key)  # a plain client's write is settled by its next reply (agent-cache's own do this)

    async def flush(cache: AgentCache, client: Any) -> None:
        await cache.flush()

    async def flushall(cache: AgentCache, client: Any) -> None:
        if isinstance(client, ValkeyCluster):
            await client.flushall(target_nodes=ValkeyCluster.PRIMARIES)
            await client.execute_command("PING", target_nodes=ValkeyCluster.PRIMARIES)
        else:
            await client.flushall()
            await client.ping()

    if i % 97 == 0:
        return "flush", flush
    if i % 61 == 0:
        return "flushall", flushall
    if tier == "llm" and i % 31 == 2:
        return "invalidate", invalidate  # invalidate_by_model: every LLM entry
    kind = ("overwrite", "overwrite", "invalidate" if tier == "tool" else "overwrite", "overwrite", "raw_delete")[i % 5]
    return kind, {"overwrite": overwrite, "invalidate": invalidate, "raw_delete": raw_delete}[kind]


async def read(cache: AgentCache, tier: str, i: int) -> tuple[bool, str | None]:
    if tier == "llm":
        result = await cache.llm.check(llm_params(i))
        return result.hit, result.response
    tool = await cache.tool.check("weather", tool_args(i))
    return tool.hit, tool.response


async def rounds(
    reader: AgentCache,
    writer: WriterThread,
    count: int,
    *,
    tier: str,
    disrupt: Callable[[int], Awaitable[None]] | None = None,
) -> tuple[int, list[str]]:
    """Run up to ``count`` rounds (or the time bound); returns (rounds run, stale reads)."""
    stale: list[str] = []
    truth: dict[int, str | None] = {}
    deadline = time.monotonic() + _TIME_BOUND_S
    done = 0
    for i in range(count):
        if time.monotonic() > deadline:
            break
        await read(reader, tier, i)  # warm: the entry enters B's L1 (a hit there from the next round on)
        if disrupt is not None:
            await disrupt(i)
        kind, op = operation(i, tier)
        expected = await writer.call(op)
        if kind in ("flush", "flushall") or (kind == "invalidate" and tier == "llm"):
            truth = {}
        truth[i % _KEYS] = expected
        hit, response = await read(reader, tier, i)  # at once: A has just told us it is done
        if (expected is None and hit) or (hit and response != expected):
            stale.append(f"round {i} after {kind}: expected {expected!r}, got {response!r}")
        done += 1
        if expected is None:  # put a value back for the next rounds to hold in L1
            await writer.call(_restore(tier, i))
    return done, stale


def _restore(tier: str, i: int) -> Op:
    async def store(cache: AgentCache, client: Any) -> str:
        if tier == "llm":
            await cache.llm.store(llm_params(i), f"r{i}")
        else:
            await cache.tool.store("weather", tool_args(i), f"r{i}")
        return f"r{i}"

    return store


def make_writer(url: str, make_client: Callable[[], Any] | None = None) -> WriterThread:
    def make() -> tuple[AgentCache, Any]:
        client = Valkey.from_url(url) if make_client is None else make_client()
        cache = AgentCache(
            client=client, name="coherence", reliability={"on_error": "raise"}, near_cache=NearCacheOptions(), **_QUIET
        )
        return cache, client

    return WriterThread(make)


@pytest.fixture
async def pair(valkey_server: ServerHandle) -> AsyncIterator[tuple[AgentCache, WriterThread]]:
    client = Valkey.from_url(valkey_server.url)
    await client.flushall()
    reader = AgentCache(client=client, name="coherence", near_cache=NearCacheOptions(), **_QUIET)
    writer = make_writer(valkey_server.url)
    try:
        yield reader, writer
    finally:
        writer.close()
        await reader.close()
        await client.aclose()


@pytest.mark.parametrize("tier", ["llm", "tool"])
async def test_write_then_signal_then_read_is_never_stale(pair: tuple[AgentCache, WriterThread], tier: str) -> None:
    reader, writer = pair
    l1 = counted(reader)
    done, stale = await rounds(reader, writer, 3000, tier=tier)
    assert stale == []
    assert done >= 200
    reader._near.report_lookups()  # type: ignore[union-attr]
    assert l1.hits >= done // 2, f"L1 served {l1.hits} of {done} warm reads: the test proved nothing"


async def test_invalidation_link_killed_is_never_stale(pair: tuple[AgentCache, WriterThread]) -> None:
    """Every few rounds A kills B's invalidation link (and tracked readers), then writes, then signals."""
    reader, writer = pair
    l1 = counted(reader)

    async def kill_links(i: int) -> None:
        if i % 50 == 25:

            async def kill(cache: AgentCache, client: Any) -> None:
                await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")

            await writer.call(kill)

    done, stale = await rounds(reader, writer, 2000, tier="llm", disrupt=kill_links)
    assert stale == []
    reader._near.report_lookups()  # type: ignore[union-attr]
    assert l1.hits >= done // 4, f"L1 served {l1.hits} of {done} warm reads"


async def test_valkey_restarted_is_never_stale(valkey_server_factory: Callable[..., EmbeddedValkey]) -> None:
    server = valkey_server_factory()
    client = Valkey.from_url(server.url)
    reader = AgentCache(client=client, name="coherence", near_cache={"max_entries": 100}, **_QUIET)
    writer = make_writer(server.url)
    l1 = counted(reader)
    restarts = 0

    async def restart(i: int) -> None:
        nonlocal restarts
        if i % 40 == 39:
            await asyncio.to_thread(server.restart)  # empty again: every L1 copy is now wrong
            restarts += 1

    try:
        stale: list[str] = []
        for i in range(200):
            await read(reader, "llm", i)
            await restart(i)
            _, op = operation(i, "llm")
            expected = await _call_retrying(writer, op)
            hit, response = await read(reader, "llm", i)
            if (expected is None and hit) or (hit and response != expected):
                stale.append(f"round {i}: expected {expected!r}, got {response!r}")
            if expected is None:
                await _call_retrying(writer, _restore("llm", i))
        assert stale == []
        assert restarts == 5
        reader._near.report_lookups()  # type: ignore[union-attr]
        assert l1.hits >= 50
    finally:
        writer.close()
        await reader.close()
        await client.aclose()


async def _call_retrying(writer: WriterThread, op: Op) -> Any:
    """The writer's first commands after a restart may meet its dead connections: retry like an app would."""
    for attempt in range(50):
        try:
            return await writer.call(op)
        except Exception:
            if attempt == 49:
                raise
            await asyncio.sleep(0.05)
    return None
