"""Session tier behaviour on every server kind."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent_cache import AgentCacheUsageError, TierDefaults
from agent_cache._keys import encode_segment
from tests.integration.conftest import MakeCache, Observed
from tests.servers import commands_delta, server_command_counts

pytestmark = pytest.mark.valkey


async def test_set_get_delete(cache: Any) -> None:
    assert await cache.session.get("t1", "intent") is None
    await cache.session.set("t1", "intent", "book_flight")
    assert await cache.session.get("t1", "intent") == "book_flight"
    assert await cache.session.delete("t1", "intent") is True
    assert await cache.session.delete("t1", "intent") is False
    assert await cache.session.get_all("t1") == {}


async def test_get_all_returns_only_that_thread(cache: Any) -> None:
    await cache.session.set("a", "x", "1")
    await cache.session.set("a", "y", "2")
    await cache.session.set("a:b", "z", "3")
    await cache.session.set("ab", "w", "4")
    assert await cache.session.get_all("a") == {"x": "1", "y": "2"}
    assert await cache.session.get_all("a:b") == {"z": "3"}


ODD_PAIRS = [
    ("a:b", "c"),
    ("a", "b:c"),
    ("a", "b"),
    ("a%3Ab", "c"),
    ("*", "?"),
    ("{x}", "}{"),
    ("ünï", "🙂"),
    ("a b", "\n"),
]


async def test_any_thread_and_field_round_trip_without_collision(cache: Any) -> None:
    for thread, field in ODD_PAIRS:
        await cache.session.set(thread, field, f"{thread}|{field}")
    for thread, field in ODD_PAIRS:
        assert await cache.session.get(thread, field) == f"{thread}|{field}"
    for thread in {t for t, _ in ODD_PAIRS}:
        expected = {f: f"{t}|{f}" for t, f in ODD_PAIRS if t == thread}
        assert await cache.session.get_all(thread) == expected
        assert await cache.session.destroy_thread(thread) == len(expected)


async def test_ttl_precedence_and_sliding_reads(make_cache: MakeCache, backend_client: Any) -> None:
    cache = make_cache(default_ttl=1000, tier_defaults={"session": TierDefaults(ttl=100)})
    await cache.session.set("t", "f", "v", ttl=5)
    key = cache.keys.session_prefix("t") + "f"
    assert 0 < await backend_client.ttl(key) <= 5
    assert await cache.session.get("t", "f") == "v"  # slides to the tier TTL
    assert 90 < await backend_client.ttl(key) <= 100
    await backend_client.expire(key, 5)
    assert await cache.session.get_all("t") == {"f": "v"}
    assert 90 < await backend_client.ttl(key) <= 100


async def _assert_index_outlives_its_fields(cache: Any, client: Any, thread: str) -> None:
    prefix, index = cache.keys.session_keys(thread)
    index_ttl = await client.pttl(index)
    for member in await client.zrange(index, 0, -1):
        field_ttl = await client.pttl(prefix + member.decode())
        if index_ttl != -1:  # an index without expiry outlives anything
            assert field_ttl != -1 and index_ttl >= field_ttl, f"{member!r} lives {field_ttl} ms, index {index_ttl}"


async def test_the_thread_index_outlives_every_field_whatever_reads_and_writes_do(
    make_cache: MakeCache, backend_client: Any
) -> None:
    cache = make_cache(name="s", tier_defaults={"session": TierDefaults(ttl=100)})
    other_process = make_cache(name="s", tier_defaults={"session": TierDefaults(ttl=100)})
    steps = [
        lambda: cache.session.set("t", "short", "v", ttl=5),
        lambda: cache.session.get("t", "short"),  # slides the field to 100 s
        lambda: other_process.session.get("t", "short"),
        lambda: cache.session.set("t", "kept", "v", ttl=3600),
        lambda: cache.session.get("t", "short"),  # never shortens the index below "kept"
        lambda: other_process.session.touch("t", ttl=10),
        lambda: cache.session.get("t", "kept"),
        lambda: cache.session.get_all("t"),
        lambda: other_process.session.destroy_thread("t"),
        lambda: other_process.session.set("t", "again", "v", ttl=1),  # recreated by another process
        lambda: cache.session.get("t", "again"),  # this one still trusts what it saw before
    ]
    for step in steps:
        await step()
        await _assert_index_outlives_its_fields(cache, backend_client, "t")
    assert 100 < await backend_client.ttl(cache.keys.session_index("t"))  # twice the sliding TTL, at least


async def test_a_field_slid_past_its_recorded_expiry_is_not_pruned(make_cache: MakeCache, backend_client: Any) -> None:
    cache = make_cache(tier_defaults={"session": TierDefaults(ttl=100)})
    await cache.session.set("t", "slid", "v", ttl=1)
    assert await cache.session.get("t", "slid") == "v"  # now lives 100 s; its index score still says 1 s
    await asyncio.sleep(1.2)
    await cache.session.set("t", "other", "v")  # prunes candidates whose score passed: "slid" is alive
    assert await cache.session.get_all("t") == {"slid": "v", "other": "v"}
    assert await cache.session.destroy_thread("t") == 2


async def test_sliding_reads_and_fields_without_expiry(make_cache: MakeCache, backend_client: Any) -> None:
    no_ttl = make_cache(name="s")
    sliding = make_cache(name="s", tier_defaults={"session": TierDefaults(ttl=100)})
    await no_ttl.session.set("t", "forever", "v")
    await sliding.session.set("t", "slid", "v")
    index = sliding.keys.session_index("t")
    assert await sliding.session.get("t", "slid") == "v"
    assert await backend_client.ttl(index) == -1  # "forever" never expires, so neither does its index
    assert await sliding.session.get("t", "forever") == "v"  # now it expires in 100 s: the index gets an expiry
    assert 100 < await backend_client.ttl(index) <= 200
    await _assert_index_outlives_its_fields(sliding, backend_client, "t")
    assert await no_ttl.session.get_all("t") == {"forever": "v", "slid": "v"}


async def test_touch_refreshes_every_field(make_cache: MakeCache, backend_client: Any) -> None:
    cache = make_cache(tier_defaults={"session": TierDefaults(ttl=300)})
    for field in ("a", "b", "c"):
        await cache.session.set("t", field, "v", ttl=5)
    assert await cache.session.touch("t") == 3
    for field in ("a", "b", "c"):
        assert 290 < await backend_client.ttl(cache.keys.session_prefix("t") + field) <= 300


async def test_expired_fields_leave_the_index(make_cache: MakeCache, backend_client: Any) -> None:
    cache = make_cache()
    await cache.session.set("t", "short", "v", ttl=1)
    await cache.session.set("t", "long", "v", ttl=60)
    await asyncio.sleep(1.2)
    assert await cache.session.get_all("t") == {"long": "v"}
    index = cache.keys.session_index("t")
    assert await backend_client.zcard(index) == 1
    assert 50 < await backend_client.ttl(index) <= 60  # no sliding TTL: the index expires with its last field


async def test_destroy_thread_counts_fields(cache: Any) -> None:
    for i in range(5):
        await cache.session.set("t", f"f{i}", "v")
    assert await cache.session.destroy_thread("t") == 5
    assert await cache.session.get_all("t") == {}
    assert await cache.session.destroy_thread("t") == 0


async def test_bad_input_errors(cache: Any) -> None:
    with pytest.raises(AgentCacheUsageError, match="thread id must not be empty"):
        await cache.session.set("", "f", "v")
    with pytest.raises(AgentCacheUsageError, match="session value must be a string"):
        await cache.session.set("t", "f", 42)
    with pytest.raises(AgentCacheUsageError, match="ttl must be a positive"):
        await cache.session.set("t", "f", "v", ttl=-5)


async def test_a_field_whose_index_was_evicted_is_still_read_and_slid(
    make_cache: MakeCache, backend_client: Any
) -> None:
    writer = make_cache(name="s", tier_defaults={"session": TierDefaults(ttl=100)})
    reader = make_cache(name="s", tier_defaults={"session": TierDefaults(ttl=100)})
    await writer.session.set("t", "f", "v", ttl=5)
    await backend_client.delete(writer.keys.session_index("t"))  # as maxmemory eviction might
    for _ in range(2):
        assert await reader.session.get("t", "f") == "v"
    assert 90 < await backend_client.ttl(writer.keys.session_prefix("t") + "f") <= 100
    assert await backend_client.exists(writer.keys.session_index("t")) == 0  # nothing half-built


async def test_scan_fields_by_prefix_reads_matching_fields_without_sliding_them(
    make_cache: MakeCache, backend_client: Any
) -> None:
    cache = make_cache(tier_defaults={"session": TierDefaults(ttl=100)})
    fields = {"writes:c1|t|0": "a", "writes:c1|t|1": "b", "writes:c10|t|0": "c", "writes:c": "d", "w%:*|": "e"}
    for field, value in fields.items():
        await cache.session.set("th", field, value, ttl=5)
    await cache.session.set("other", "writes:c1|t|0", "elsewhere", ttl=5)
    await backend_client.delete(cache.keys.session_prefix("th") + encode_segment("writes:c1|t|1"))  # gone: not listed
    before = await server_command_counts(backend_client)
    assert await cache.session.scan_fields_by_prefix("th", "writes:c1|") == {"writes:c1|t|0": "a"}
    assert await cache.session.scan_fields_by_prefix("th", "w%:*") == {"w%:*|": "e"}
    ran = commands_delta(before, await server_command_counts(backend_client))
    assert "scan" not in ran and "keys" not in ran  # the thread's index, not the keyspace
    everything = {k: v for k, v in fields.items() if k != "writes:c1|t|1"}
    assert await cache.session.scan_fields_by_prefix("th", "") == everything
    assert await cache.session.scan_fields_by_prefix("nobody", "writes:") == {}
    for field in everything:  # nothing slid to the tier's 100 s
        assert 0 < await backend_client.ttl(cache.keys.session_prefix("th") + encode_segment(field)) <= 5
    with pytest.raises(AgentCacheUsageError, match="field_prefix must be a string"):
        await cache.session.scan_fields_by_prefix("th", None)


async def test_reset_tracker_zeroes_this_processs_active_sessions(cache: Any, observed: Observed) -> None:
    for thread in ("a", "b", "c"):
        await cache.session.set(thread, "f", "v")
    assert observed.metric("agent_cache_active_sessions", cache_name="t") == 3
    cache.session.reset_tracker()
    assert observed.metric("agent_cache_active_sessions", cache_name="t") == 0
    await cache.session.set("a", "f", "v")  # seen again: counted again
    assert observed.metric("agent_cache_active_sessions", cache_name="t") == 1
    assert await cache.session.get_all("a") == {"f": "v"}  # state is untouched
