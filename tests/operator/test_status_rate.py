"""The status is not a metrics store: a resync with traffic in between writes nothing until the stats interval has
passed, and then only what ``kubectl get`` shows. Runs the reconciler in-process (a clock the test moves) against the
Kubernetes API and a real Valkey."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import AgentCache, AgentCacheOptions
from agent_cache_operator.children import default_bundle
from agent_cache_operator.connection import ClientCache
from agent_cache_operator.kube import KubeApi
from agent_cache_operator.metrics import OperatorMetrics
from agent_cache_operator.reconcile import Reconciler
from tests.operator.conftest import Kube, agentcache
from tests.servers import ServerHandle

pytestmark = [pytest.mark.k8s, pytest.mark.valkey]

PARAMS = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
INTERVAL = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def kube_api(kube: Kube) -> AsyncIterator[KubeApi]:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kube.kubeconfig), client_configuration=configuration)
    api = KubeApi(client.ApiClient(configuration))
    yield api
    api.close()


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """What the status patch does to the object (JSON merge patch)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value


async def test_resyncs_do_not_write_changing_stats_until_the_interval_passes(
    kube: Kube, namespace: str, kube_api: KubeApi, valkey_server: ServerHandle, valkey_client: Valkey
) -> None:
    await kube.aapply(agentcache("busy", {"host": valkey_server.host, "port": valkey_server.port}), namespace)
    body = await kube.aget("agentcaches", "busy", namespace)
    assert body is not None
    body.setdefault("status", {})["stats"] = {"llmHits": 7, "costSavedMicros": 1}  # an older operator's counters
    clock, clients = Clock(), ClientCache()
    metrics = OperatorMetrics(CollectorRegistry())
    reconciler = Reconciler(kube_api, clients, default_bundle(), metrics, stats_interval_s=INTERVAL, clock=clock)
    cache = AgentCache(AgentCacheOptions(client=valkey_client, name="busy"))
    try:
        first = await reconciler.sync(body)
        assert first.failure is None
        merge(body["status"], first.status)
        assert body["status"]["stats"] == {"costSavedDollars": 0.0}  # the counters are gone, and no rate yet
        assert "instances" in first.status

        await cache.llm.store(PARAMS, "hello")
        for _ in range(4):  # traffic between every resync: the numbers move, the status does not
            assert (await cache.llm.check(PARAMS)).hit
            await cache.stats()
            clock.now += INTERVAL / 5
            result = await reconciler.sync(body)
            assert result.failure is None and result.status == {}, result.status
            merge(body["status"], result.status)

        clock.now += INTERVAL / 5  # the interval has passed: the figures kubectl shows are refreshed
        result = await reconciler.sync(body)
        assert result.status["stats"] == {"llmHitRate": 1.0, "costSavedDollars": 0.0}
        assert set(result.status) <= {"stats", "instances"}
    finally:
        await cache.close()
        await clients.close()
        metrics.stop()
