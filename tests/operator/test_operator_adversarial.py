"""Resources written to make the operator misbehave: a confused deputy, Secrets gone before the resource, API errors
during deletion. Each test fails on the defect it hunts (an operator that reads any Secret and sends it anywhere; a
deletion that reports success and leaves the config behind)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache import AgentCache, AgentCacheOptions
from agent_cache.config import read_config
from agent_cache.embedded import EmbeddedValkey
from agent_cache_operator.kube import ALLOW_ANNOTATION
from tests.operator.conftest import Kube, OperatorProcess, agentcache, condition, eventually, secret

pytestmark = [pytest.mark.k8s, pytest.mark.valkey]

PASSWORD = "deputy-must-not-send-this-7f3a"


class Listener:
    """A TCP server on loopback standing in for a host an attacker controls: it records every connection and every
    byte received, and refuses whatever it is sent."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = b""
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                self.received += data
                writer.write(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
                await writer.drain()
        writer.close()

    async def __aenter__(self) -> Listener:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    async with Listener() as server:
        yield server


def metric(op: OperatorProcess, name: str, **labels: str) -> float:
    """One sample of the operator's metrics (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    match = re.search(rf"^agent_cache_operator_{name}\{{{re.escape(wanted)}\}} (\S+)$", op.metrics(), re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def wait_for_resyncs(op: OperatorProcess, result: str, count: int = 2) -> None:
    """Let ``count`` more timer resyncs end with ``result`` (the operator had its chances to misbehave)."""
    start = metric(op, "reconciles_total", result=result, trigger="timer")
    await eventually(
        lambda: metric(op, "reconciles_total", result=result, trigger="timer") >= start + count,
        what=f"{count} resyncs ending in {result}",
    )


def has_condition(kube: Kube, namespace: str, name: str, kind: str, status: str, reason: str) -> Any:
    async def check() -> dict[str, Any] | None:
        body = await kube.aget("agentcaches", name, namespace)
        entry = condition(body, kind)
        return body if (entry.get("status"), entry.get("reason")) == (status, reason) else None

    return check


async def gone(kube: Kube, namespace: str, name: str) -> bool:
    return await kube.aget("agentcaches", name, namespace) is None


async def warnings(kube: Kube, namespace: str, reason: str) -> list[str]:
    return [e["message"] for e in await kube.events(namespace) if e["reason"] == reason and e["type"] == "Warning"]


# ── the confused deputy ──────────────────────────────────────────────────────


async def test_a_secret_without_the_opt_in_is_never_read_nor_sent_to_the_host(
    kube: Kube, namespace: str, operator: Callable[..., OperatorProcess], listener: Listener
) -> None:
    """Someone who may create AgentCaches but not read Secrets points one at a host they run, naming a Secret of the
    namespace: the operator must neither read the Secret's data nor connect to the host."""
    op = operator()
    await kube.aapply(secret("db-credentials", allow=None, password=PASSWORD), namespace)
    valkey = {"host": "127.0.0.1", "port": listener.port, "passwordSecretRef": {"name": "db-credentials"}}
    await kube.aapply(agentcache("deputy", valkey), namespace)

    body = await eventually(
        has_condition(kube, namespace, "deputy", "ConfigSynced", "False", "SecretNotAllowed"), what="SecretNotAllowed"
    )
    message = condition(body, "ConfigSynced")["message"]
    assert "spec.valkey.passwordSecretRef" in message and "'db-credentials'" in message
    assert f'{ALLOW_ANNOTATION}: "deputy"' in message  # says how to opt in
    assert condition(body, "Ready")["reason"] == "SecretNotAllowed"
    assert any("db-credentials" in m for m in await warnings(kube, namespace, "SecretNotAllowed"))
    await wait_for_resyncs(op, "secret_not_allowed")
    assert listener.connections == 0
    if kube.emulator is not None:  # the data never left the API server: the operator read metadata only
        reads = kube.emulator.call(lambda api: api.reads_of("secrets", namespace, "db-credentials"))
        by_operator = {how for agent, how in reads if agent != "kubectl"}  # kubectl apply reads what it applies
        assert by_operator == {"metadata"}, reads

    # An opt-in for another AgentCache is no opt-in for this one.
    await kube.aapply(secret("db-credentials", allow="billing, other", password=PASSWORD), namespace)
    await wait_for_resyncs(op, "secret_not_allowed")
    assert listener.connections == 0

    # The Secret's owner opts in for this AgentCache: now, and only now, the password goes to the host it names.
    await kube.aapply(secret("db-credentials", allow="billing, deputy", password=PASSWORD), namespace)
    await eventually(lambda: PASSWORD.encode() in listener.received, what="the AUTH after the opt-in")
    await eventually(
        has_condition(kube, namespace, "deputy", "ConfigSynced", "False", "AuthenticationFailed"),
        what="the host's refusal reported",
    )
    assert PASSWORD not in op.log()


# ── Secrets gone before the resource ─────────────────────────────────────────


async def ready_with_data(
    kube: Kube, namespace: str, name: str, server: EmbeddedValkey, client: Valkey, **spec: Any
) -> None:
    """An AgentCache with a password from an opted-in Secret, Ready, and an agent's entry under its prefix."""
    await kube.aapply(secret(f"{name}-auth", password=PASSWORD), namespace)
    valkey = {"host": server.host, "port": server.port, "passwordSecretRef": {"name": f"{name}-auth"}}
    await kube.aapply(agentcache(name, valkey, **spec), namespace)
    await eventually(has_condition(kube, namespace, name, "Ready", "True", "Ready"), what=f"{name} Ready")
    cache = AgentCache(AgentCacheOptions(client=client, name=name))
    try:
        await cache.llm.store({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "hello")
    finally:
        await cache.close()


@pytest.fixture
async def guarded(valkey_server_factory: Callable[..., EmbeddedValkey]) -> AsyncIterator[tuple[EmbeddedValkey, Valkey]]:
    server = valkey_server_factory(password=PASSWORD)
    client = Valkey(host=server.host, port=server.port, password=PASSWORD)
    try:
        yield server, client
    finally:
        await client.aclose()


async def keys(client: Valkey, prefix: str) -> list[bytes]:
    return [key async for key in client.scan_iter(match=f"{prefix}:*")]


async def test_secret_deleted_first_the_cleanup_uses_the_connection_of_the_last_sync(
    kube: Kube, namespace: str, operator: Callable[..., OperatorProcess], guarded: tuple[EmbeddedValkey, Valkey]
) -> None:
    """What a namespace deletion does: the Secret may go before the AgentCache. The cleanup still happens."""
    server, client = guarded
    operator()
    await ready_with_data(kube, namespace, "scratch", server, client, deletionPolicy="Delete")
    await kube.akubectl("delete", "secret", "scratch-auth", "-n", namespace)
    await kube.akubectl("delete", "agentcache", "scratch", "-n", namespace, "--wait=true", "--timeout=30s")
    assert await read_config(client, "scratch") is None
    assert await keys(client, "scratch") == []
    reasons = {event["reason"] for event in await kube.events(namespace)}
    assert {"ConfigDeleted", "DataDeleted"} <= reasons
    assert not reasons & {"CleanupSkipped", "CleanupAbandoned"}


async def test_credentials_gone_after_a_restart_hold_the_finalizer_until_they_are_back(
    kube: Kube, namespace: str, operator: Callable[..., OperatorProcess], guarded: tuple[EmbeddedValkey, Valkey]
) -> None:
    server, client = guarded
    op = operator(env={"AGENT_CACHE_OPERATOR_DELETE_RETRIES": "1000"})
    await ready_with_data(kube, namespace, "held", server, client)
    op.stop()  # a restarted operator remembers no connection
    await kube.akubectl("delete", "secret", "held-auth", "-n", namespace)
    op.start()
    await kube.akubectl("delete", "agentcache", "held", "-n", namespace, "--wait=false")

    body = await eventually(
        has_condition(kube, namespace, "held", "Ready", "False", "CleanupBlocked"), what="CleanupBlocked"
    )
    message = condition(body, "Ready")["message"]
    assert "'held-auth'" in message and f"{server.host}:{server.port}" in message and "prefix held" in message
    assert await warnings(kube, namespace, "CleanupBlocked")
    assert await read_config(client, "held") is not None  # nothing claimed, nothing lost

    await kube.aapply(secret("held-auth", password=PASSWORD), namespace)  # restored (say, by GitOps)
    await eventually(lambda: gone(kube, namespace, "held"), what="the deletion completes")
    assert await read_config(client, "held") is None
    assert await keys(client, "held")  # deletionPolicy Retain keeps the entries


async def test_a_withdrawn_opt_in_blocks_the_cleanup_then_gives_up_loudly(
    kube: Kube, namespace: str, operator: Callable[..., OperatorProcess], guarded: tuple[EmbeddedValkey, Valkey]
) -> None:
    """The Secret's owner withdrew the opt-in: the operator must not use the credentials, not even the ones it still
    holds. It holds the finalizer for the documented number of attempts, then lets the resource go — and says what
    it left behind, in an Event and in the metrics."""
    server, client = guarded
    op = operator(env={"AGENT_CACHE_OPERATOR_DELETE_RETRIES": "2"})
    await ready_with_data(kube, namespace, "revoked", server, client)
    await kube.aapply(secret("revoked-auth", allow=None, password=PASSWORD), namespace)
    await eventually(
        has_condition(kube, namespace, "revoked", "Ready", "False", "SecretNotAllowed"), what="the withdrawal seen"
    )
    await kube.akubectl("delete", "agentcache", "revoked", "-n", namespace, "--wait=true", "--timeout=30s")

    (abandoned,) = await warnings(kube, namespace, "CleanupAbandoned")
    assert "the config of prefix revoked" in abandoned and f"{server.host}:{server.port}" in abandoned
    assert "'revoked-auth'" in abandoned
    assert await warnings(kube, namespace, "CleanupBlocked")
    assert metric(op, "reconciles_total", result="cleanup_abandoned", trigger="delete") == 1
    assert metric(op, "reconcile_failures_total", reason="CleanupAbandoned") == 1
    assert await read_config(client, "revoked") is not None  # truthfully left behind, as reported


async def test_a_spec_broken_after_its_config_was_written_still_gets_cleaned_up(
    kube: Kube, namespace: str, operator: Callable[..., OperatorProcess], guarded: tuple[EmbeddedValkey, Valkey]
) -> None:
    """A bad TTL (possible where nothing validates, e.g. without CEL) must not leave the config behind on deletion:
    the deletion needs only spec.valkey, the prefix and the policy."""
    if kube.real:
        pytest.skip("a real API server rejects the broken spec")
    server, client = guarded
    operator()
    await ready_with_data(kube, namespace, "broken", server, client, deletionPolicy="Delete")
    bad = {"spec": {"tiers": {"llm": {"ttl": -5}}}}
    await kube.akubectl("patch", "agentcache", "broken", "-n", namespace, "--type=merge", "-p", json.dumps(bad))
    await eventually(
        has_condition(kube, namespace, "broken", "Ready", "False", "InvalidSpec"), what="the spec is invalid"
    )
    await kube.akubectl("delete", "agentcache", "broken", "-n", namespace, "--wait=true", "--timeout=30s")
    assert await read_config(client, "broken") is None
    assert await keys(client, "broken") == []
    reasons = {event["reason"] for event in await kube.events(namespace)}
    assert {"ConfigDeleted", "DataDeleted"} <= reasons


# ── API errors during deletion ───────────────────────────────────────────────


async def test_api_errors_during_delete_are_retried_not_taken_for_success(
    kube: Kube, namespace: str, operator: Callable[..., OperatorProcess], guarded: tuple[EmbeddedValkey, Valkey]
) -> None:
    if kube.emulator is None:
        pytest.skip("faults are injected into the emulator")
    emulator = kube.emulator
    server, client = guarded
    op = operator(env={"AGENT_CACHE_OPERATOR_DELETE_RETRIES": "1000"})
    # Two resources, one fault each (a failure of one step must not hide behind a retry caused by the other).
    await ready_with_data(kube, namespace, "flaky", server, client, deletionPolicy="Delete")
    await ready_with_data(kube, namespace, "sticky", server, client)
    op.stop()  # a restarted operator must read the Secrets again: that is where the errors strike
    dashboards = "agentcache-sticky-dashboards"
    emulator.call(lambda api: api.inject_fault("GET", "secrets", "flaky-auth", status=500, times=2))
    emulator.call(lambda api: api.inject_fault("DELETE", "configmaps", dashboards, status=503, times=2))
    for name in ("flaky", "sticky"):
        await kube.akubectl("delete", "agentcache", name, "-n", namespace, "--wait=false")
    op.start()

    for name in ("flaky", "sticky"):
        await eventually(lambda name=name: gone(kube, namespace, name), what=f"the deletion of {name} completes")
    assert emulator.call(lambda api: [fault.times for fault in api.faults]) == [0, 0]  # every error did strike
    assert await read_config(client, "flaky") is None
    assert await keys(client, "flaky") == []
    assert await read_config(client, "sticky") is None
    assert await kube.aget("configmap", dashboards, namespace) is None  # no garbage collector in the emulator
    blocked = await warnings(kube, namespace, "CleanupBlocked")
    assert any("HTTP 500" in message for message in blocked), blocked
    reasons = {event["reason"] for event in await kube.events(namespace)}
    assert not reasons & {"CleanupSkipped", "CleanupAbandoned"}
