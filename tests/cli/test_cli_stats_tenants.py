"""``agent-cache stats --tenants`` and ``per_tenant`` in ``--json``: the counters of lookups made inside
``cache.tenant(...)``, read from the stats hash every instance flushes into."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from valkey.asyncio import Valkey

from agent_cache import LlmStoreOptions, ToolStoreOptions
from tests.cli.conftest import make_cache
from tests.cli.running import agent_cache

pytestmark = pytest.mark.valkey

NAME = "tenant_bot"


@pytest.fixture
async def with_tenants(valkey_client: Valkey, valkey_url: str) -> AsyncIterator[str]:
    """Tenant ``acme``: 2 LLM hits, 1 miss, $0.0135 saved; tenant ``b:c`` (a separator in the name): a tool hit and
    miss, $0.01 saved; one untenanted lookup, counted for the cache only."""
    await valkey_client.flushall()
    params = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    async with make_cache(valkey_client, NAME) as cache:
        await cache.llm.check(params)
        with cache.tenant("acme"):
            assert not (await cache.llm.check(params)).hit
            await cache.llm.store(params, "hello", LlmStoreOptions(tokens={"input": 1000, "output": 200}))
            for _ in range(2):
                assert (await cache.llm.check(params)).hit
        with cache.tenant("b:c"):
            assert not (await cache.tool.check("search", {"q": 1})).hit
            await cache.tool.store("search", {"q": 1}, "[]", ToolStoreOptions(cost=0.01))
            assert (await cache.tool.check("search", {"q": 1})).hit
    yield valkey_url


def test_json_has_a_row_per_tenant(with_tenants: str) -> None:
    done = agent_cache("stats", "--url", with_tenants, "--name", NAME, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["llm"]["misses"] == 2  # the untenanted miss is the cache's, not a tenant's
    assert list(report["per_tenant"]) == ["acme", "b:c"]
    acme = report["per_tenant"]["acme"]
    assert acme["llm"] == {"hits": 2, "misses": 1, "hit_rate": pytest.approx(2 / 3)}
    assert acme["tool"] == {"hits": 0, "misses": 0, "hit_rate": 0.0}
    assert acme["cost_saved_micros"] == 9000 and acme["cost_saved"] == pytest.approx(0.009)
    assert report["per_tenant"]["b:c"]["tool"]["hits"] == 1
    assert report["per_tenant"]["b:c"]["cost_saved_micros"] == 10_000


def test_tenants_table_only_when_asked(with_tenants: str) -> None:
    plain = agent_cache("stats", "--url", with_tenants, "--name", NAME)
    assert plain.returncode == 0, plain.stderr
    assert "2 tenants counted: --tenants shows a row for each" in plain.stdout
    assert not any(line.split()[:1] == ["acme"] for line in plain.stdout.splitlines())
    shown = agent_cache("stats", "--url", with_tenants, "--name", NAME, "--tenants")
    assert shown.returncode == 0, shown.stderr
    rows = [line.split() for line in shown.stdout.splitlines()]
    assert ["acme", "2", "1", "66.7%", "0", "0", "$0.0090"] in rows
    assert ["b:c", "0", "0", "—", "1", "1", "$0.0100"] in rows
    assert "tenants counted" not in shown.stdout
