"""Faults a platform team meets: Valkey down or restarted, a wrong password, a bad spec, a flush behind the
operator's back, an operator restart — each reported in the status and Events, each recovered from unattended."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache.config import read_config
from agent_cache.embedded import EmbeddedValkey
from tests.operator.conftest import Kube, OperatorProcess, agentcache, condition, eventually, secret

pytestmark = [pytest.mark.k8s, pytest.mark.valkey]


def has_condition(kube: Kube, namespace: str, name: str, kind: str, status: str, reason: str | None = None) -> Any:
    async def check() -> dict[str, Any] | None:
        body = await kube.aget("agentcaches", name, namespace)
        entry = condition(body, kind)
        if entry.get("status") == status and (reason is None or entry.get("reason") == reason):
            return body
        return None

    return check


async def test_valkey_down_at_create_then_started(
    kube: Kube, namespace: str, valkey_server_factory: Callable[..., EmbeddedValkey],
    operator: Callable[..., OperatorProcess],
) -> None:  # fmt: skip
    server = valkey_server_factory()
    server.kill()  # the port is known; nothing listens there
    operator()
    await kube.aapply(agentcache("late", {"host": server.host, "port": server.port}), namespace)
    body = await eventually(
        has_condition(kube, namespace, "late", "ConfigSynced", "False", "ValkeyUnavailable"), what="ValkeyUnavailable"
    )
    message = condition(body, "ConfigSynced")["message"]
    assert f"{server.host}:{server.port}" in message
    assert condition(body, "Ready")["status"] == "False"
    assert condition(body, "DashboardsReady")["status"] == "True"  # Kubernetes-side work does not wait for Valkey

    server.restart()
    body = await eventually(has_condition(kube, namespace, "late", "Ready", "True"), what="recovery")
    async with Valkey(host=server.host, port=server.port) as client:
        applied = await read_config(client, "late")
    assert applied is not None and applied.version == body["status"]["configVersion"]
    events = await kube.events(namespace)
    assert any(e["reason"] == "ValkeyUnavailable" and e["type"] == "Warning" for e in events)


async def test_valkey_restart_loses_the_config_and_the_operator_reasserts_it(
    kube: Kube, namespace: str, valkey_server_factory: Callable[..., EmbeddedValkey],
    operator: Callable[..., OperatorProcess],
) -> None:  # fmt: skip
    server = valkey_server_factory()  # no persistence: a restart comes back empty
    operator()
    await kube.aapply(agentcache("volatile", {"host": server.host, "port": server.port}, defaultTTL=77), namespace)
    body = await eventually(has_condition(kube, namespace, "volatile", "Ready", "True"), what="Ready")
    version = body["status"]["configVersion"]

    server.kill()
    server.restart()
    async with Valkey(host=server.host, port=server.port) as client:

        async def reasserted() -> bool:
            applied = await read_config(client, "volatile")
            return applied is not None and applied.version == version

        await eventually(reasserted, what="the config is back after the restart")
        # Flushed behind the operator's back: the next resync puts it back, and says so.
        await client.flushall()
        await eventually(reasserted, what="the config is back after FLUSHALL")
    events = await kube.events(namespace)
    assert any(e["reason"] == "ConfigReasserted" for e in events)


async def test_wrong_password_is_reported_and_fixed_by_the_secret(
    kube: Kube, namespace: str, valkey_server_factory: Callable[..., EmbeddedValkey],
    operator: Callable[..., OperatorProcess],
) -> None:  # fmt: skip
    right, wrong = "correct-horse-battery-staple", "hunter2-wrong-password"
    server = valkey_server_factory(password=right)
    op = operator()
    await kube.aapply(secret("valkey-auth", password=wrong), namespace)
    resource = agentcache(
        "guarded", {"host": server.host, "port": server.port, "passwordSecretRef": {"name": "valkey-auth"}}
    )
    await kube.aapply(resource, namespace)
    body = await eventually(
        has_condition(kube, namespace, "guarded", "ConfigSynced", "False", "AuthenticationFailed"),
        what="AuthenticationFailed",
    )
    assert "passwordSecretRef" in condition(body, "ConfigSynced")["message"]

    await kube.aapply(secret("valkey-auth", password=right), namespace)  # rotated in place: no spec change
    await eventually(has_condition(kube, namespace, "guarded", "Ready", "True"), what="recovery after the fix")

    # Nothing from the Secret is ever logged, evented or put in status.
    everything = json.dumps(await kube.aget("agentcaches", "guarded", namespace)) + json.dumps(
        await kube.events(namespace)
    )
    for value in (right, wrong):
        assert value not in everything
        assert value not in op.log()


async def test_malformed_spec_gets_a_condition_an_event_and_no_retry_storm(
    kube: Kube, namespace: str, operator: Callable[..., OperatorProcess], valkey_server: Any,
) -> None:  # fmt: skip
    op = operator()
    valkey = {"host": valkey_server.host, "port": valkey_server.port}
    bad = agentcache("broken", valkey, tiers={"llm": {"ttl": -5}})
    result = await kube.aapply(bad, namespace, check=False)
    if kube.real:
        # A real API server enforces the CRD's CEL rule before the operator ever sees the resource.
        assert result.returncode != 0 and "must be a positive number of seconds" in result.stderr
        return
    body = await eventually(
        has_condition(kube, namespace, "broken", "ConfigSynced", "False", "InvalidSpec"), what="InvalidSpec"
    )
    assert "spec.tiers.llm.ttl" in condition(body, "ConfigSynced")["message"]
    assert condition(body, "Ready")["reason"] == "InvalidSpec"
    events = await kube.events(namespace)
    warnings = [e for e in events if e["reason"] == "InvalidSpec"]
    assert warnings and warnings[0]["type"] == "Warning" and "spec.tiers.llm.ttl" in warnings[0]["message"]
    assert warnings[0]["involvedObject"]["name"] == "broken"

    # PermanentError: the change handler is not retried; resyncs re-check quietly (no new Event each time).
    await eventually(lambda: op.metrics().count('trigger="timer"') > 0, what="a few resyncs")
    metrics = op.metrics()
    assert 'agent_cache_operator_reconciles_total{result="invalid_spec",trigger="create"} 1.0' in metrics
    assert len([e for e in await kube.events(namespace) if e["reason"] == "InvalidSpec"]) == 1

    # Fixing the spec recovers.
    await kube.akubectl(
        "patch", "agentcache", "broken", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"tiers": {"llm": {"ttl": 5}}}}),
    )  # fmt: skip
    await eventually(has_condition(kube, namespace, "broken", "Ready", "True"), what="recovery")


async def test_a_missing_secret_is_an_invalid_spec_until_the_secret_appears(
    kube: Kube, namespace: str, valkey_server_factory: Callable[..., EmbeddedValkey],
    operator: Callable[..., OperatorProcess],
) -> None:  # fmt: skip
    server = valkey_server_factory(password="s3cret-value")
    operator()
    valkey = {"host": server.host, "port": server.port, "passwordSecretRef": {"name": "not-yet", "key": "pw"}}
    await kube.aapply(agentcache("waiting", valkey), namespace)
    body = await eventually(
        has_condition(kube, namespace, "waiting", "ConfigSynced", "False", "InvalidSpec"), what="InvalidSpec"
    )
    message = condition(body, "ConfigSynced")["message"]
    assert "spec.valkey.passwordSecretRef" in message and "not-yet" in message
    # GitOps often applies the Secret after the resource: the resync picks it up.
    await kube.aapply(secret("not-yet", pw="s3cret-value"), namespace)
    await eventually(has_condition(kube, namespace, "waiting", "Ready", "True"), what="recovery")


async def test_operator_restart_resyncs_idempotently(
    kube: Kube, namespace: str, operator: Callable[..., OperatorProcess], valkey_server: Any, valkey_client: Valkey,
) -> None:  # fmt: skip
    op = operator()
    valkey = {"host": valkey_server.host, "port": valkey_server.port}
    await kube.aapply(agentcache("steady", valkey, defaultTTL=100), namespace)
    body = await eventually(has_condition(kube, namespace, "steady", "Ready", "True"), what="Ready")
    first = await valkey_client.hgetall("steady:__config")

    op.restart()  # nothing changed meanwhile: nothing is rewritten
    await eventually(lambda: 'trigger="resume"' in op.metrics(), what="the resume handler ran")
    await eventually(lambda: 'trigger="timer"' in op.metrics(), what="a resync ran")
    assert await valkey_client.hgetall("steady:__config") == first  # same updated_at: no write at all
    applied_events = [e for e in await kube.events(namespace) if e["reason"] == "ConfigApplied"]
    assert len(applied_events) == 1

    op.stop(kill=True)  # crash; the spec changes while no operator runs
    await kube.akubectl(
        "patch", "agentcache", "steady", "-n", namespace, "--type=merge", "-p", '{"spec": {"defaultTTL": 200}}'
    )
    op.start()

    async def updated() -> bool:
        applied = await read_config(valkey_client, "steady")
        return applied is not None and applied.config.default_ttl == 200

    await eventually(updated, what="the change made while the operator was down")
    body = await eventually(has_condition(kube, namespace, "steady", "Ready", "True"), what="Ready again")
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]


async def test_two_resources_cannot_share_a_prefix_on_one_valkey(
    kube: Kube, namespace: str, operator: Callable[..., OperatorProcess], valkey_server: Any, valkey_client: Valkey,
) -> None:  # fmt: skip
    operator()
    valkey = {"host": valkey_server.host, "port": valkey_server.port}
    await kube.aapply(agentcache("first", valkey, prefix="shared", defaultTTL=10), namespace)
    await eventually(has_condition(kube, namespace, "first", "Ready", "True"), what="the first is Ready")
    await kube.aapply(agentcache("second", valkey, prefix="shared", defaultTTL=20), namespace)
    body = await eventually(
        has_condition(kube, namespace, "second", "ConfigSynced", "False", "PrefixConflict"), what="PrefixConflict"
    )
    assert f"{namespace}/first" in condition(body, "ConfigSynced")["message"]
    applied = await read_config(valkey_client, "shared")
    assert applied is not None and applied.config.default_ttl == 10  # the first one's config stands

    # When the first goes away, the second takes over at its next resync.
    await kube.akubectl("delete", "agentcache", "first", "-n", namespace, "--wait=true", "--timeout=30s")
    await eventually(has_condition(kube, namespace, "second", "Ready", "True"), what="the second takes over")
    applied = await read_config(valkey_client, "shared")
    assert applied is not None and applied.config.default_ttl == 20
