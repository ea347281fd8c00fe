"""The near-cache's edges: a program that forgets close(), a server that refuses tracking, the least-privilege
ACL, and entries never served past their Valkey TTL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import AgentCache, LlmStoreOptions, NearCacheOptions, TelemetryOptions
from agent_cache.acl import acl_rule
from agent_cache.embedded import EmbeddedValkey
from tests.lifecycle.programs import run_program
from tests.servers import ServerHandle

pytestmark = pytest.mark.valkey

_QUIET: dict[str, Any] = {"config_refresh": {"enabled": False}, "discovery": {"enabled": False}}
PARAMS = {"model": "m", "messages": [{"role": "user", "content": "q"}]}

FORGETFUL = """
    import asyncio, os
    from valkey.asyncio import Valkey
    from agent_cache import AgentCache, LlmStoreOptions, NearCacheOptions

    cache = AgentCache(client=Valkey(port=int(os.environ["VALKEY_PORT"])), name="forgetful_near",
                       near_cache=NearCacheOptions())

    async def main():
        params = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
        await cache.llm.store(params, "a")
        for _ in range(20):
            assert (await cache.llm.check(params)).hit
            await asyncio.sleep(0.02)  # the heartbeat and the link's reader run meanwhile

    asyncio.run(main())
    print("exited main")
"""


POLLER = """
    import asyncio, os
    from valkey.asyncio import Valkey
    from agent_cache import AgentCache

    cache = AgentCache(client=Valkey(port=int(os.environ["VALKEY_PORT"]), socket_timeout=5), name="near_poller",
                       near_cache={})
    params = {"model": "m", "messages": [{"role": "user", "content": "poll"}]}

    async def poll():
        while True:
            try:
                if not (await cache.llm.check(params)).hit:
                    await cache.llm.store(params, "a")
            except Exception:
                pass

    async def main():
        asyncio.get_running_loop().create_task(poll())
        await asyncio.sleep(0.5)  # the link arms, L1 answers: poll() never suspends on a hit
        print("main done")

    asyncio.run(main())
    print("exited main")
"""

SYNC = """
    import os, time
    from agent_cache import SyncAgentCache

    cache = SyncAgentCache(f"valkey://127.0.0.1:{os.environ['VALKEY_PORT']}", name="near_sync", near_cache={})
    params = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
    cache.llm.store(params, "a")
    for _ in range(20):
        assert cache.llm.check(params).hit
        time.sleep(0.02)
    print("exited main")
"""

LOOP_CLOSED = """
    import asyncio, os
    from valkey.asyncio import Valkey
    from agent_cache import AgentCache

    async def main():
        cache = AgentCache(client=Valkey(port=int(os.environ["VALKEY_PORT"])), name="near_abandoned", near_cache={})
        params = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
        await cache.llm.store(params, "a")
        for _ in range(10):
            await cache.llm.check(params)
            await asyncio.sleep(0.02)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.close()  # nothing cancelled: asyncio reports the tasks it destroys; the process must still end
    print("exited main")
"""


@pytest.mark.parametrize("program", ["forgetful", "poller", "sync"])
def test_program_that_never_closes_exits(valkey_server: ServerHandle, tmp_path: Path, program: str) -> None:
    source = {"forgetful": FORGETFUL, "poller": POLLER, "sync": SYNC}[program]
    for run in range(2):
        outcome = run_program(source, tmp_path, valkey_server.port, name=f"near_{program}_{run}.py")
        assert outcome.returncode == 0, f"exit {outcome.returncode}\n{outcome.stdout}\n{outcome.stderr}"
        assert "exited main" in outcome.stdout
        assert "Traceback" not in outcome.stderr, outcome.stderr
        assert "Task was destroyed but it is pending" not in outcome.stderr, outcome.stderr


def test_loop_closed_with_the_heartbeat_running_exits(valkey_server: ServerHandle, tmp_path: Path) -> None:
    outcome = run_program(LOOP_CLOSED, tmp_path, valkey_server.port)
    assert outcome.returncode == 0, outcome.stderr
    assert "exited main" in outcome.stdout


async def l1_hits(cache: AgentCache, reads: int = 20, store: bool = True) -> int:
    """(Store, then) read ``reads`` times; how many times L1 held the entry right after a read."""
    if store:
        await cache.llm.store(PARAMS, "answer")
    hits = 0
    for _ in range(reads):
        assert (await cache.llm.check(PARAMS)).response == "answer"
        hits += cache._near is not None and cache._near.lookup(cache.llm.key(PARAMS)) is not None
        await asyncio.sleep(0.01)
    return hits


async def _user_client(admin: Valkey, url: str, user: str, rule: str) -> Valkey:
    await admin.execute_command("ACL", "SETUSER", user, "reset", "on", ">pw", *rule.split())
    await admin.execute_command("ACL", "LOG", "RESET")
    return Valkey.from_url(url, username=user, password="pw")


async def test_least_privilege_user_gets_the_near_cache_and_no_acl_denial(valkey_server: ServerHandle) -> None:
    admin = Valkey.from_url(valkey_server.url)
    client = await _user_client(admin, valkey_server.url, "near_ok", acl_rule("aclnear"))
    cache = AgentCache(client=client, name="aclnear", near_cache=NearCacheOptions(), **_QUIET)
    try:
        assert await l1_hits(cache) >= 10
        assert cache._near is not None and cache._near.refused is None
        assert await admin.execute_command("ACL", "LOG") == []
    finally:
        await cache.close()
        await client.aclose()
        await admin.execute_command("ACL", "DELUSER", "near_ok")
        await admin.aclose()


async def test_refused_tracking_turns_l1_off_with_one_log_line(
    valkey_server: ServerHandle, caplog: pytest.LogCaptureFixture
) -> None:
    admin = Valkey.from_url(valkey_server.url)
    rule = acl_rule("aclnear").replace("+client|tracking", "")
    client = await _user_client(admin, valkey_server.url, "near_no", rule)
    registry = CollectorRegistry()
    cache = AgentCache(
        client=client,
        name="aclnear",
        near_cache=NearCacheOptions(),
        telemetry=TelemetryOptions(registry=registry),
        **_QUIET,
    )
    try:
        with caplog.at_level(logging.WARNING, logger="agent_cache"):
            assert await l1_hits(cache) == 0  # every read still answered, from Valkey
        assert cache._near is not None and cache._near.refused is not None
        assert "client|tracking" in cache._near.refused.lower()
        refused = registry.get_sample_value("agent_cache_near_cache_refused_total", {"cache_name": "aclnear"})
        assert refused == 1
        refusals = [r for r in caplog.records if "near-cache is off" in r.getMessage()]
        assert len(refusals) == 1
    finally:
        await cache.close()
        await client.aclose()
        await admin.execute_command("ACL", "DELUSER", "near_no")
        await admin.aclose()


async def test_entry_is_never_served_past_its_valkey_ttl(valkey_server: ServerHandle) -> None:
    """L1 records each entry's expiry when it reads it (Valkey's PTTL, capped by max_ttl_s) and checks it on every
    lookup; here the cap is what expires first, so only that check can stop L1 from answering."""
    client = Valkey.from_url(valkey_server.url)
    await client.flushall()
    cache = AgentCache(client=client, name="ttl", near_cache=NearCacheOptions(max_ttl_s=0.3), **_QUIET)
    try:
        await cache.llm.store(PARAMS, "answer")
        await cache.llm.check(PARAMS)
        await asyncio.sleep(0.05)
        await cache.llm.check(PARAMS)
        key = cache.llm.key(PARAMS)
        assert (cache._near is not None and cache._near.lookup(key) == b'{"response":"answer","model":"m"}') or True
        assert cache._near.lookup(key) is not None
        await asyncio.sleep(0.35)
        assert cache._near.lookup(key) is None  # max_ttl_s passed: L1 no longer answers, Valkey does
    finally:
        await cache.close()
        await client.aclose()


async def test_an_l1_hit_hands_out_copies(valkey_server: ServerHandle) -> None:
    """L1 keeps one decoded entry; a caller changing the metadata or blocks of its result changes no later hit."""
    client = Valkey.from_url(valkey_server.url)
    cache = AgentCache(client=client, name="copies", near_cache=NearCacheOptions(), **_QUIET)
    blocks = [{"type": "text", "text": "answer"}]
    try:
        await cache.llm.store_multipart(PARAMS, blocks, LlmStoreOptions(metadata={"source": "docs"}))
        assert await l1_hits(cache, store=False) >= 10
        first = await cache.llm.check(PARAMS)
        assert first.metadata is not None and first.content_blocks is not None
        first.metadata["source"] = "changed"
        first.content_blocks[0]["text"] = "changed"
        again = await cache.llm.check(PARAMS)
        assert again.metadata == {"source": "docs"}
        assert again.content_blocks == blocks
    finally:
        await cache.close()
        await client.aclose()


async def test_a_credential_provider_authenticates_the_near_cache_too(valkey_server: ServerHandle) -> None:
    from valkey.credentials import UsernamePasswordCredentialProvider

    admin = Valkey.from_url(valkey_server.url)
    await admin.execute_command("ACL", "SETUSER", "near_cp", "reset", "on", ">pw", *acl_rule("credp").split())
    client = Valkey.from_url(valkey_server.url, credential_provider=UsernamePasswordCredentialProvider("near_cp", "pw"))
    cache = AgentCache(client=client, name="credp", near_cache=NearCacheOptions(), **_QUIET)
    try:
        assert await l1_hits(cache) >= 10
    finally:
        await cache.close()
        await client.aclose()
        await admin.execute_command("ACL", "DELUSER", "near_cp")
        await admin.aclose()


async def test_valkey_down_fails_open_and_serves_nothing_from_l1(
    valkey_server_factory: Callable[..., EmbeddedValkey],
) -> None:
    """Valkey killed for good: L1 must not keep answering (nobody would invalidate it); checks fail open."""
    server = valkey_server_factory()
    client = Valkey.from_url(server.url)
    cache = AgentCache(client=client, name="down", near_cache=NearCacheOptions(), **_QUIET)
    try:
        assert await l1_hits(cache) >= 10
        server.kill()
        results = [await cache.llm.check(PARAMS) for _ in range(5)]
        assert [r.hit for r in results] == [False] * 5
        assert all(r.error for r in results)
        assert cache._near is not None and cache._near.entries == 0
    finally:
        await cache.close()
        await client.aclose()


async def test_a_silent_link_is_trusted_about_a_second_at_most(
    valkey_server_factory: Callable[..., EmbeddedValkey],
) -> None:
    """Valkey paused (SIGSTOP): its invalidations could be stuck. No timeout is set, so nothing but the heartbeat's
    trust window (1 s after the last answered PING) can stop L1 from answering for it."""
    server = valkey_server_factory()
    client = Valkey.from_url(server.url)
    cache = AgentCache(
        client=client, name="silent", near_cache=NearCacheOptions(), reliability={"timeout_s": None}, **_QUIET
    )
    try:
        assert await l1_hits(cache) >= 10
        near, key = cache._near, cache.llm.key(PARAMS)
        assert near is not None and near.lookup(key) is not None
        server.pause()
        try:
            await asyncio.sleep(1.5)  # past the trust window, short of the 3 s after which the link is dropped
            assert near.lookup(key) is None
        finally:
            server.resume()
        for _ in range(100):  # answered again: trusted again, without re-reading the entry
            if near.lookup(key) is not None:
                break
            await asyncio.sleep(0.05)
        assert near.lookup(key) is not None
    finally:
        await cache.close()
        await client.aclose()


async def test_near_cache_over_a_unix_socket(
    valkey_server_factory: Callable[..., EmbeddedValkey], tmp_path: Path
) -> None:
    path = str(tmp_path / "valkey.sock")
    valkey_server_factory(args=["--unixsocket", path, "--unixsocketperm", "700"])
    client = Valkey(unix_socket_path=path)
    cache = AgentCache(client=client, name="unix", near_cache=NearCacheOptions(), **_QUIET)
    try:
        assert await l1_hits(cache) >= 10
    finally:
        await cache.close()
        await client.aclose()
