"""The MemoryPolicy condition on the emulator: a Valkey that refuses writes once full (noeviction with a limit) is
reported, with a Warning Event, without making the cache unready; fixing the policy clears it; a Valkey user without
INFO leaves it Unknown and everything else working."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache.acl import acl_rule
from tests.operator.conftest import Kube, OperatorProcess, agentcache, condition, eventually, secret

pytestmark = [pytest.mark.k8s, pytest.mark.valkey]


def memory_condition(kube: Kube, namespace: str, name: str, status: str, reason: str) -> Callable[[], Any]:
    async def check() -> dict[str, Any] | None:
        body = await kube.aget("agentcache", name, namespace)
        found = condition(body, "MemoryPolicy")
        return body if (found.get("status"), found.get("reason")) == (status, reason) else None

    return check


async def test_noeviction_is_reported_and_clears_once_the_policy_evicts(
    kube: Kube,
    namespace: str,
    valkey_server_factory: Callable[..., Any],  # before operator: the server outlives the operator's cleanup
    operator: Callable[..., OperatorProcess],
) -> None:
    server = valkey_server_factory(args=["--maxmemory", "64mb", "--maxmemory-policy", "noeviction"])
    operator()
    await kube.aapply(agentcache("full-bot", {"host": server.host, "port": server.port}), namespace)

    body = await eventually(
        memory_condition(kube, namespace, "full-bot", "False", "NoEviction"), what="MemoryPolicy=False NoEviction"
    )
    message = condition(body, "MemoryPolicy")["message"]
    assert "noeviction" in message and "64 MiB" in message and f"{server.host}:{server.port}" in message
    assert "allkeys-lru" in message  # says what to do
    assert condition(body, "Ready")["status"] == "True"  # a warning, not an outage
    events = await kube.events(namespace)
    assert any(e["reason"] == "NoEviction" and e["type"] == "Warning" for e in events)

    admin = Valkey.from_url(server.url)
    try:
        await admin.config_set("maxmemory-policy", "allkeys-lru")
    finally:
        await admin.aclose()
    body = await eventually(
        memory_condition(kube, namespace, "full-bot", "True", "EvictsWhenFull"), what="MemoryPolicy=True"
    )
    assert "allkeys-lru" in condition(body, "MemoryPolicy")["message"]


async def test_a_valkey_user_without_info_leaves_the_condition_unknown(
    kube: Kube,
    namespace: str,
    valkey_server_factory: Callable[..., Any],  # before operator: the server outlives the operator's cleanup
    operator: Callable[..., OperatorProcess],
) -> None:
    server = valkey_server_factory()
    admin = Valkey.from_url(server.url)
    try:
        rule = [*acl_rule("no-info").split(), "-info"]  # the cache's least-privilege rule, without INFO
        await admin.execute_command("ACL", "SETUSER", "op", "on", ">s3cret", *rule)
    finally:
        await admin.aclose()
    operator()
    await kube.aapply(secret("valkey-user", username="op", password="s3cret"), namespace)
    valkey = {
        "host": server.host,
        "port": server.port,
        "usernameSecretRef": {"name": "valkey-user", "key": "username"},
        "passwordSecretRef": {"name": "valkey-user", "key": "password"},
    }
    await kube.aapply(agentcache("no-info", valkey), namespace)

    body = await eventually(
        memory_condition(kube, namespace, "no-info", "Unknown", "InfoUnavailable"), what="MemoryPolicy=Unknown"
    )
    assert "info" in condition(body, "MemoryPolicy")["message"]
    assert condition(body, "ConfigSynced")["status"] == "True"
    assert condition(body, "Ready")["status"] == "True"
    assert "stats" in body["status"]  # the live stats were read all the same
