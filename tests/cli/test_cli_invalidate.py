"""``agent-cache invalidate``: dry-run counts from the indexes, then exactly those entries go."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from valkey.asyncio import Valkey

from agent_cache._keys import KeyLayout
from agent_cache.adapters.langgraph import BetterDBSaver
from tests.cli.conftest import Populated, make_cache
from tests.cli.running import agent_cache

KEYS = KeyLayout("support_bot")
CONFIG: Any = {"configurable": {"thread_id": "user-42", "checkpoint_ns": ""}}


async def count(client: Valkey, pattern: str) -> int:
    return len([key async for key in client.scan_iter(match=pattern, count=1000)])


def invalidate(populated: Populated, *args: str) -> tuple[int, dict[str, object]]:
    done = agent_cache("invalidate", "--url", populated.url, "--name", populated.name, "--json", *args)
    assert done.returncode in (0, 3), done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--tool", "get_weather"], 3),
        (["--tool", "search"], 0),  # looked up, never stored
        (["--model", "gpt-4o"], 3),
        (["--model", "claude-sonnet-4-5"], 2),
        (["--thread", "user-42"], 2),
        (["--thread", "user-42", "--tenant", "acme"], 1),
    ],
)
async def test_dry_run_counts_and_deletes_nothing(
    populated: Populated, valkey_client: Valkey, args: list[str], expected: int
) -> None:
    before = await valkey_client.dbsize()
    code, report = invalidate(populated, *args, "--dry-run")
    assert report["would_delete"] == expected and report["dry_run"] is True
    assert code == (0 if expected else 3)
    assert await valkey_client.dbsize() == before


async def test_a_tool_goes_and_nothing_else(populated: Populated, valkey_client: Valkey) -> None:
    code, report = invalidate(populated, "--tool", "lookup_customer")
    assert (code, report) == (0, {"name": "support_bot", "tool": "lookup_customer", "dry_run": False, "deleted": 3})
    assert await count(valkey_client, "support_bot:tool:{lookup_customer}:*") == 0
    assert await count(valkey_client, "support_bot:tool:{get_weather}:*") == 3
    assert await valkey_client.exists(KEYS.tool_index("lookup_customer")) == 0
    assert await valkey_client.exists(KEYS.stats) == 1  # stats and policies stay
    code, report = invalidate(populated, "--tool", "lookup_customer")
    assert (code, report["deleted"]) == (3, 0)  # nothing left to do


async def test_a_model_goes_across_tenants(populated: Populated, valkey_client: Valkey) -> None:
    code, report = invalidate(populated, "--model", "gpt-4o")
    assert (code, report["deleted"]) == (0, 3)
    assert await count(valkey_client, "support_bot:llm:*") == 2  # the claude answers


async def test_a_thread_of_one_tenant(populated: Populated, valkey_client: Valkey) -> None:
    code, report = invalidate(populated, "--thread", "user-42", "--tenant", "acme")
    assert (code, report["deleted"]) == (0, 1)
    assert await count(valkey_client, "support_bot:session:{user-42}:*") == 2  # the untenanted thread stays
    code, report = invalidate(populated, "--thread", "user-42")
    assert (code, report["deleted"]) == (0, 2)
    assert await count(valkey_client, "support_bot:session:*") == 1  # user-7


async def test_expired_index_members_are_not_counted(populated: Populated, valkey_client: Valkey) -> None:
    await valkey_client.zadd(KEYS.tool_index("get_weather"), {"expired-entry": 1})  # expired in 1970
    _, report = invalidate(populated, "--tool", "get_weather", "--dry-run")
    assert report["would_delete"] == 3


def test_table_output_and_usage_errors(populated: Populated) -> None:
    done = agent_cache("invalidate", "--url", populated.url, "--name", populated.name, "--model", "gpt-4o", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "would delete 3 cached answers of model 'gpt-4o' from cache support_bot"
    for args in (["--tool", "a", "--model", "b"], [], ["--tool", "a", "--tenant", "acme"]):
        done = agent_cache("invalidate", "--url", populated.url, *args)
        assert done.returncode == 2, args


async def test_a_field_kept_alive_by_reads_past_its_recorded_expiry_is_counted(
    populated: Populated, valkey_client: Valkey
) -> None:
    index, prefix = KEYS.session_index("user-7"), KEYS.session_prefix("user-7")
    members = await valkey_client.zrange(index, 0, -1)
    await valkey_client.zadd(index, {member: 1 for member in members})  # as if reads slid them since
    assert await valkey_client.exists(*(prefix + member.decode() for member in members)) == len(members)
    _, report = invalidate(populated, "--thread", "user-7", "--dry-run")
    assert report["would_delete"] == len(members)


async def test_a_tenants_thread_goes_with_its_checkpoints(populated: Populated, valkey_client: Valkey) -> None:
    async with make_cache(valkey_client) as cache:
        saver = BetterDBSaver(cache)
        for tenant in ("acme", "globex"):
            with cache.tenant(tenant):
                await saver.aput(CONFIG, empty_checkpoint(), {}, {})
    _, dry = invalidate(populated, "--thread", "user-42", "--tenant", "acme", "--dry-run")
    code, report = invalidate(populated, "--thread", "user-42", "--tenant", "acme")
    assert (code, report["deleted"]) == (0, dry["would_delete"]) == (0, 3)  # a field, the checkpoints' two keys
    assert await count(valkey_client, "support_bot:checkpoint:{acme:user-42}:*") == 0
    assert await count(valkey_client, "support_bot:checkpoint:{globex:user-42}:*") == 2
