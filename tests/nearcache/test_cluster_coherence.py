"""Near-cache coherence on a real 3+3 Valkey Cluster: tracking per primary, keys routed to their slot's node,
and a primary failed over while a writer and a reader go on (see ``test_coherence`` for the protocol)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from valkey.asyncio import Valkey, ValkeyCluster

from agent_cache import AgentCache, NearCacheOptions
from agent_cache.embedded import EmbeddedCluster
from tests.nearcache.test_coherence import counted, make_writer, rounds
from tests.nearcache.writers import WriterThread
from tests.servers import cluster_client, flush_all_primaries

pytestmark = [pytest.mark.valkey, pytest.mark.cluster]

_QUIET: dict[str, Any] = {"config_refresh": {"enabled": False}, "discovery": {"enabled": False}}


async def _pair(cluster: EmbeddedCluster) -> tuple[AgentCache, WriterThread, ValkeyCluster]:
    client = cluster_client(cluster.startup_nodes)
    await flush_all_primaries(client)
    reader = AgentCache(client=client, name="coherence", near_cache=NearCacheOptions(), **_QUIET)
    writer = make_writer("", lambda: cluster_client(cluster.startup_nodes))
    return reader, writer, client


@pytest.fixture
async def cluster_pair(valkey_cluster: EmbeddedCluster) -> AsyncIterator[tuple[AgentCache, WriterThread]]:
    reader, writer, client = await _pair(valkey_cluster)
    try:
        yield reader, writer
    finally:
        writer.close()
        await reader.close()
        await client.aclose()


@pytest.mark.parametrize("tier", ["llm", "tool"])
async def test_cluster_write_then_signal_then_read_is_never_stale(
    cluster_pair: tuple[AgentCache, WriterThread], tier: str
) -> None:
    reader, writer = cluster_pair
    l1 = counted(reader)
    done, stale = await rounds(reader, writer, 2000, tier=tier)
    assert stale == []
    assert done >= 200
    reader._near.report_lookups()  # type: ignore[union-attr]
    assert l1.hits >= done // 3, f"L1 served {l1.hits} of {done} warm reads: the test proved nothing"


async def _fail_over(cluster: EmbeddedCluster) -> None:
    """CLUSTER FAILOVER on one replica; returns once the cluster sees it as a primary."""
    roles = cluster.node_roles()
    replica = next(port for port, role in sorted(roles.items()) if role == "replica")
    admin = Valkey(port=replica)
    try:
        await admin.execute_command("CLUSTER", "FAILOVER")
        deadline = time.monotonic() + 30
        while cluster.node_roles().get(replica) != "primary":
            if time.monotonic() > deadline:
                raise AssertionError(f"replica {replica} never became a primary")
            await asyncio.sleep(0.05)
    finally:
        await admin.aclose()


async def test_primary_failed_over_is_never_stale() -> None:
    """A private cluster: three failovers in the middle of the rounds; the writer follows MOVED, the reader must
    never answer from the old primary's tracking what the new primary has since overwritten."""
    with EmbeddedCluster() as cluster:
        reader, writer, client = await _pair(cluster)
        l1 = counted(reader)
        failovers = 0

        async def fail_over(i: int) -> None:
            nonlocal failovers
            if i % 150 == 100 and failovers < 3:
                await asyncio.to_thread(lambda: None)
                await _fail_over(cluster)
                failovers += 1

        try:
            done, stale = await rounds(reader, writer, 600, tier="llm", disrupt=fail_over)
        finally:
            writer.close()
            await reader.close()
            await client.aclose()
        assert stale == []
        assert failovers == 3
        assert l1.hits >= done // 4
