"""Caches for the framework adapters on the real servers of ``tests/conftest.py``.

``agent_cache`` is an async :class:`AgentCache` on the test's event loop (standalone, cluster, Redis 7);
``sync_cache`` is a :class:`SyncAgentCache` on the same kinds of server, whose client lives on the
facade's own loop — what LangChain's and LangGraph's sync methods run on. Both start from an empty
server and use a private metrics registry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agent_cache import AgentCache, SyncAgentCache, TelemetryOptions
from agent_cache.embedded import EmbeddedCluster
from tests.servers import ServerHandle, cluster_client, flush_all_primaries

CACHE_NAME = "fw"


def telemetry() -> TelemetryOptions:
    return TelemetryOptions(registry=CollectorRegistry())


def open_sync_cache(server: ServerHandle | EmbeddedCluster, **options: Any) -> SyncAgentCache:
    options.setdefault("name", CACHE_NAME)
    options.setdefault("telemetry", telemetry())
    if isinstance(server, EmbeddedCluster):
        nodes = server.startup_nodes
        return SyncAgentCache(client_factory=lambda: cluster_client(nodes), **options)
    return SyncAgentCache(server.url, **options)


@pytest.fixture
async def agent_cache(backend_client: Any) -> AsyncIterator[AgentCache]:
    cache = AgentCache(client=backend_client, name=CACHE_NAME, telemetry=telemetry())
    yield cache
    await cache.close()


@pytest.fixture
def sync_cache(backend_target: Any) -> Iterator[SyncAgentCache]:
    cache = open_sync_cache(backend_target.server)
    try:
        cache.run(lambda c: flush_all_primaries(c.client))
        yield cache
    finally:
        cache.close()


@pytest.fixture
def standalone_sync_cache(valkey_server: ServerHandle) -> Iterator[SyncAgentCache]:
    cache = open_sync_cache(valkey_server)
    try:
        cache.run(lambda c: flush_all_primaries(c.client))
        yield cache
    finally:
        cache.close()
