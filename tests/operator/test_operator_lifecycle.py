"""An AgentCache's life as a platform team sees it: kubectl apply → live config → status → update → delete."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache import AgentCache, AgentCacheOptions, ConfigRefreshOptions, LlmStoreOptions, TierDefaults
from agent_cache.config import read_config
from tests.operator.conftest import Kube, OperatorProcess, agentcache, condition, eventually
from tests.servers import ServerHandle

pytestmark = [pytest.mark.k8s, pytest.mark.valkey]

PARAMS = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}


async def ttl_of_new_llm_entry(cache: AgentCache, client: Valkey, content: str) -> int:
    key = await cache.llm.store({**PARAMS, "messages": [{"role": "user", "content": content}]}, "answer")
    return int(await client.ttl(key))


async def test_apply_sync_observe_update_delete(
    kube: Kube,
    namespace: str,
    operator: Callable[..., OperatorProcess],
    valkey_server: ServerHandle,
    valkey_client: Valkey,
) -> None:
    op = operator()
    # An agent already runs with its code default (LLM entries live 60 s) before the platform declares the cache.
    cache = AgentCache(
        AgentCacheOptions(
            client=valkey_client,
            name="support-bot",
            tier_defaults={"llm": TierDefaults(ttl=60)},
            config_refresh=ConfigRefreshOptions(interval_ms=1000),
        )
    )
    try:
        assert 55 <= await ttl_of_new_llm_entry(cache, valkey_client, "before") <= 60
        resource = agentcache(
            "support-bot",
            {"host": valkey_server.host, "port": valkey_server.port},
            tiers={"llm": {"ttl": 3000}, "tool": {"ttl": 300}},
            toolPolicies={"get_weather": {"ttl": 600}, "send_email": {"cacheable": False}},
            costOverrides={"gpt-4o": {"inputPer1k": 1.0, "outputPer1k": 2.0}},
        )
        await kube.aapply(resource, namespace)

        body = await eventually(lambda: _ready(kube, namespace, "support-bot"), what="the AgentCache becomes Ready")
        version = body["status"]["configVersion"]
        assert body["status"]["prefix"] == "support-bot"
        assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
        assert condition(body, "ConfigSynced")["reason"] == "Applied"

        applied = await read_config(valkey_client, "support-bot")
        assert applied is not None and applied.version == version
        assert applied.source == f"operator:{namespace}/support-bot"
        assert await valkey_client.hgetall("support-bot:__tool_policies") == {
            b"get_weather": b'{"ttl": 600}',
            b"send_email": b'{"cacheable": false}',
        }

        # The running agent picks the platform's TTLs up within seconds, without a restart.
        await eventually(lambda: cache.live_config.version == version, what="the library applies the config")
        assert 2990 <= await ttl_of_new_llm_entry(cache, valkey_client, "after") <= 3000
        assert (await cache.tool.check("send_email", {"to": "a"})).hit is False

        # Traffic: one miss, then two hits priced with the override (1000 in + 1000 out tokens = $3 each).
        await cache.llm.store(PARAMS, "hi!", LlmStoreOptions(tokens={"input": 1000, "output": 1000}))
        for _ in range(2):
            assert (await cache.llm.check(PARAMS)).hit
        assert not (await cache.llm.check({**PARAMS, "model": "other"})).hit
        await cache.stats()  # flush the counters

        async def stats_reported() -> dict[str, Any] | None:
            current = await kube.aget("agentcaches", "support-bot", namespace)
            stats = ((current or {}).get("status") or {}).get("stats") or {}
            instances = ((current or {}).get("status") or {}).get("instances") or {}
            ok = stats.get("costSavedDollars") == 6.0 and instances.get("current", 0) >= 1
            return current if ok else None

        body = await eventually(stats_reported, what="live stats in the status")  # refreshed every 5 resyncs
        assert body["status"]["stats"]["llmHitRate"] == pytest.approx(2 / 3, abs=1e-3)
        assert "llmHits" not in body["status"]["stats"]  # counters are Prometheus'; the status has what kubectl shows
        assert body["status"]["instances"] == {"total": 1, "current": 1}

        # What a user sees: the printer columns.
        table = (await kube.akubectl("get", "agentcaches", "-n", namespace)).stdout
        header, row = table.splitlines()[:2]
        assert header.split()[:6] == ["NAME", "READY", "PREFIX", "LLM", "HIT", "RATE"]
        cells = row.split()
        assert cells[:4] == ["support-bot", "True", "support-bot", "0.6667"]
        saved = header.index("SAVED $")
        assert row[saved:].split()[0] == "6", table  # dollars saved (the tool rate is blank: no tool lookups)
        wide = (await kube.akubectl("get", "agentcaches", "-n", namespace, "-o", "wide")).stdout
        assert "INSTANCES" in wide.splitlines()[0]

        # Update: a new TTL reaches the agent; the status follows the new generation.
        await kube.akubectl(
            "patch", "agentcache", "support-bot", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"tiers": {"llm": {"ttl": 1234}}}}),
        )  # fmt: skip

        async def new_version() -> dict[str, Any] | None:
            current = await _ready(kube, namespace, "support-bot")
            if current and current["status"].get("configVersion") != version:
                return current
            return None

        body = await eventually(new_version, what="the new config version")
        assert body["status"]["observedGeneration"] == body["metadata"]["generation"] == 2
        new = body["status"]["configVersion"]
        await eventually(lambda: cache.live_config.version == new, what="the library applies the new config")
        assert 1200 <= await ttl_of_new_llm_entry(cache, valkey_client, "updated") <= 1234

        # The dashboards ConfigMap is owned by the AgentCache.
        config_map = await kube.aget("configmap", "agentcache-support-bot-dashboards", namespace)
        assert config_map is not None
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
        assert any(name.endswith(".json") for name in config_map["data"])

        reasons = {event["reason"] for event in await kube.events(namespace)}
        assert {"ConfigApplied", "Created", "Ready"} <= reasons

        assert "managed_caches" in op.liveness()  # Kopf's /healthz answers with our probe (cached by Kopf)
        metrics = op.metrics()
        assert 'agent_cache_operator_reconciles_total{result="success",trigger="create"}' in metrics
        assert "agent_cache_operator_managed_caches 1.0" in metrics
        assert "agent_cache_operator_reconcile_duration_seconds_bucket" in metrics

        # Delete: the config leaves Valkey (the agent falls back to its code defaults), the children go too.
        await kube.akubectl("delete", "agentcache", "support-bot", "-n", namespace, "--wait=true", "--timeout=30s")
        assert await read_config(valkey_client, "support-bot") is None
        await asyncio.sleep(1.5)  # longer than a resync interval: a resync in flight must not write it back
        assert await read_config(valkey_client, "support-bot") is None
        assert await kube.aget("configmap", "agentcache-support-bot-dashboards", namespace) is None
        await eventually(lambda: cache.live_config.version is None, what="the library drops the config")
        assert 55 <= await ttl_of_new_llm_entry(cache, valkey_client, "deleted") <= 60
        stored = [key async for key in valkey_client.scan_iter(match="support-bot:llm:*")]
        assert stored, "deletionPolicy Retain keeps the cached data"
        await eventually(lambda: "agent_cache_operator_managed_caches 0.0" in op.metrics(), what="gauge drops")
    finally:
        await cache.close()


async def _ready(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    body = await kube.aget("agentcaches", name, namespace)
    return body if condition(body, "Ready").get("status") == "True" else None


async def test_deletion_policy_delete_removes_the_data(
    kube: Kube, namespace: str, operator: Callable[..., OperatorProcess], valkey_server: ServerHandle,
    valkey_client: Valkey,
) -> None:  # fmt: skip
    operator()
    cache = AgentCache(AgentCacheOptions(client=valkey_client, name="scratch"))
    try:
        await cache.llm.store(PARAMS, "x")
        await cache.tool.store("search", {"q": 1}, "r")
        await cache.stats()
    finally:
        await cache.close()
    await kube.aapply(
        agentcache("scratch", {"host": valkey_server.host, "port": valkey_server.port}, deletionPolicy="Delete"),
        namespace,
    )
    await eventually(lambda: _ready(kube, namespace, "scratch"), what="Ready")
    await kube.akubectl("delete", "agentcache", "scratch", "-n", namespace, "--wait=true", "--timeout=30s")
    assert [key async for key in valkey_client.scan_iter(match="scratch:*")] == []
    reasons = {event["reason"] for event in await kube.events(namespace)}
    assert {"ConfigDeleted", "DataDeleted"} <= reasons
    await asyncio.sleep(0)
