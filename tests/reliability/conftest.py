"""Helpers for fault tests: caches on private servers that the tests kill, pause and restart."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import AgentCache, ConfigRefreshOptions, DiscoveryOptions, ReliabilityOptions, TelemetryOptions


def make_cache(client: Any, registry: CollectorRegistry | None = None, **reliability: Any) -> AgentCache:
    reliability.setdefault("timeout_s", 0.3)
    reliability.setdefault("breaker_cooldown_s", 0.2)
    return AgentCache(
        client=client,
        name="rel",
        telemetry=TelemetryOptions(registry=registry or CollectorRegistry()),
        discovery=DiscoveryOptions(enabled=False),
        config_refresh=ConfigRefreshOptions(enabled=False),
        reliability=ReliabilityOptions(**reliability),
    )


@pytest.fixture
async def client_factory() -> AsyncIterator[Callable[[str], Valkey]]:
    """Clients with short socket timeouts (so a dead server is noticed quickly), closed afterwards."""
    clients: list[Valkey] = []

    def factory(url: str) -> Valkey:
        client = Valkey.from_url(url, socket_connect_timeout=0.3, socket_timeout=0.5)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()
