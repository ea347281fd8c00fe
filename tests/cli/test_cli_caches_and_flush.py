"""``agent-cache caches`` (the discovery registry) and ``agent-cache flush`` (with its confirmation)."""

from __future__ import annotations

import asyncio
import json

import pytest
from valkey.asyncio import Valkey

from agent_cache.config import CacheConfig, apply_config
from tests.cli.conftest import Populated, make_cache
from tests.cli.running import agent_cache, run_in_pty, strip_ansi


async def test_caches_lists_every_registered_cache_with_liveness(populated: Populated, valkey_client: Valkey) -> None:
    await valkey_client.hset("__betterdb:caches", "faq", json.dumps({"type": "semantic_cache", "prefix": "faq"}))
    version = await apply_config(valkey_client, "billing", CacheConfig(default_ttl=60), "test")
    async with make_cache(valkey_client, "billing") as running:
        await running.llm.check({"model": "gpt-4o", "messages": []})
        await running.stats()  # flushed: one miss recorded
        await running.live_config.refresh()  # applies the config and reports its version
        for _ in range(200):  # its upkeep writes the registry entry and the heartbeat as it starts
            if await valkey_client.exists("__betterdb:heartbeat:billing"):
                break
            await asyncio.sleep(0.05)
        done = await asyncio.to_thread(agent_cache, "caches", "--url", populated.url, "--json")
        table = await asyncio.to_thread(agent_cache, "caches", "--url", populated.url)
    assert done.returncode == 0, done.stderr
    caches = {entry["name"]: entry for entry in json.loads(done.stdout)}
    assert set(caches) == {"billing", "faq", "support_bot"}
    billing, stopped = caches["billing"], caches["support_bot"]
    assert billing["alive"] is True and billing["last_beat"] is not None
    assert (billing["instances"], billing["instances_on_config"], billing["config_version"]) == (1, 1, version)
    assert billing["llm"] == {"hits": 0, "misses": 1, "hit_rate": 0.0}
    assert stopped["alive"] is False and stopped["instances"] == 0 and stopped["cost_saved"] > 0
    assert caches["faq"]["type"] == "semantic_cache" and "llm" not in caches["faq"]

    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines() if line.strip()}
    assert rows["support_bot"][:3] == ["support_bot", "none", "0"]
    assert rows["billing"][1] == "alive"


@pytest.mark.valkey
def test_caches_with_an_empty_registry_exits_3() -> None:
    done = agent_cache("caches", "--json")  # the embedded server
    assert done.returncode == 3
    assert json.loads(done.stdout) == []
    assert "no cache is registered" in done.stderr


async def keys_of(client: Valkey, name: str) -> set[str]:
    return {key.decode() async for key in client.scan_iter(match=f"{name}:*", count=1000)}


async def test_flush_refuses_without_a_terminal_or_yes(populated: Populated, valkey_client: Valkey) -> None:
    before = await keys_of(valkey_client, "support_bot")
    done = agent_cache("flush", "--url", populated.url, "--name", "support_bot", stdin="y\n")
    assert done.returncode == 2
    assert "refusing to flush without confirmation" in done.stderr and "--yes" in done.stderr
    assert await keys_of(valkey_client, "support_bot") == before


async def test_flush_yes_deletes_this_cache_only(populated: Populated, valkey_client: Valkey) -> None:
    await valkey_client.set("support_bot_2:llm:x", "another cache whose name starts the same way")
    await apply_config(valkey_client, "support_bot", CacheConfig(default_ttl=60), "test")
    done = agent_cache("flush", "--url", populated.url, "--name", "support_bot", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deleted"] > 20
    # The platform's config and the application's tool policies stay.
    assert await keys_of(valkey_client, "support_bot") == {"support_bot:__config", "support_bot:__tool_policies"}
    assert await valkey_client.get("support_bot_2:llm:x") is not None
    again = agent_cache("flush", "--url", populated.url, "--name", "support_bot", "--yes")
    assert again.returncode == 3 and "nothing to flush" in again.stderr


@pytest.mark.parametrize(("answer", "code"), [("n\n", 1), ("y\n", 0)])
async def test_flush_asks_on_a_terminal(populated: Populated, valkey_client: Valkey, answer: str, code: int) -> None:
    before = await keys_of(valkey_client, "support_bot")
    returned, raw = await asyncio.to_thread(
        run_in_pty, "flush", "--url", populated.url, "--name", "support_bot", answer=("[y/N]", answer)
    )
    screen = strip_ansi(raw)
    assert returned == code, screen
    assert f"Flush cache 'support_bot' on {populated.url}" in screen
    after = await keys_of(valkey_client, "support_bot")
    if code:
        assert "aborted: nothing was deleted" in screen and after == before
    else:
        assert "flushed cache support_bot: deleted" in screen and after == {"support_bot:__tool_policies"}


def test_flush_requires_a_name() -> None:
    done = agent_cache("flush", "--yes")
    assert done.returncode == 2 and "--name" in done.stderr
