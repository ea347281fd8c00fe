"""The test servers are real and the fixtures do what the rest of the suite relies on."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import valkey.exceptions
from valkey.asyncio import Valkey
from valkey.asyncio.cluster import ValkeyCluster

from agent_cache.embedded import EmbeddedCluster, EmbeddedServerError, EmbeddedValkey
from tests.servers import (
    AnyClient,
    RoundTripCounter,
    cluster_client,
    commands_delta,
    server_command_counts,
)

Factory = Callable[..., EmbeddedValkey]


async def test_standalone_server_answers_ping_set_get(valkey_client: Valkey) -> None:
    assert await valkey_client.ping() is True
    assert await valkey_client.set(b"k", b"v") is True
    assert await valkey_client.get(b"k") == b"v"


async def test_every_backend_client_starts_empty_and_counts_commands(backend_client: AnyClient) -> None:
    assert await backend_client.dbsize() == 0
    before = await server_command_counts(backend_client)
    await backend_client.set(b"k", b"v")
    assert await backend_client.get(b"k") == b"v"
    after = await server_command_counts(backend_client)
    assert commands_delta(before, after) == {"set": 1, "get": 1}


async def test_restart_keeps_the_port_and_empties_the_server(valkey_server_factory: Factory) -> None:
    server = valkey_server_factory()
    port = server.port
    async with Valkey.from_url(server.url) as client:
        await client.set(b"k", b"v")
    server.kill()
    assert not server.is_running
    server.restart()
    assert server.port == port
    async with Valkey.from_url(server.url) as client:
        assert await client.get(b"k") is None  # persistence is off


async def test_paused_server_stalls_clients_until_resumed(valkey_server_factory: Factory) -> None:
    server = valkey_server_factory()
    client = Valkey.from_url(server.url, socket_timeout=0.2)
    try:
        assert await client.ping() is True
        server.pause()
        with pytest.raises(valkey.exceptions.TimeoutError):
            await client.ping()
        server.resume()
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_password_and_extra_server_args(valkey_server_factory: Factory) -> None:
    server = valkey_server_factory(password="p@ss word", args=["--maxmemory", "10mb"])
    anonymous = Valkey(host=server.host, port=server.port)
    authenticated = Valkey.from_url(server.url, decode_responses=True)
    try:
        with pytest.raises(valkey.exceptions.AuthenticationError):
            await anonymous.ping()
        assert await authenticated.config_get("maxmemory") == {"maxmemory": str(10 * 1024 * 1024)}
    finally:
        await anonymous.aclose()
        await authenticated.aclose()


def test_a_server_that_cannot_start_reports_its_log() -> None:
    with pytest.raises(EmbeddedServerError, match="no-such-option"):
        EmbeddedValkey(args=["--no-such-option", "1"]).start()


async def test_cluster_shows_three_primaries_and_three_replicas(valkey_cluster: EmbeddedCluster) -> None:
    client = cluster_client(valkey_cluster.startup_nodes)
    try:
        await client.initialize()
        assert len(client.get_primaries()) == 3
        assert len(client.get_replicas()) == 3
        assert await client.set(b"{user:1}:k", b"v") is True
    finally:
        await client.aclose()
    # A second client (fresh discovery from one node's URL) reads what the first one wrote.
    reader = ValkeyCluster.from_url(valkey_cluster.url)
    try:
        assert await reader.get(b"{user:1}:k") == b"v"
    finally:
        await reader.aclose()
    assert sorted(valkey_cluster.node_roles().values()) == ["primary"] * 3 + ["replica"] * 3


async def test_redis7_server_is_redis_7(redis7_server: EmbeddedValkey) -> None:
    client = Valkey.from_url(redis7_server.url, decode_responses=True)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    assert str(info["redis_version"]).startswith("7.")
    assert "valkey_version" not in info


async def test_round_trips_one_per_command_and_one_per_pipeline(
    counted_client: tuple[Valkey, RoundTripCounter],
) -> None:
    client, counter = counted_client
    await client.get(b"missing")
    assert counter.count == 1
    counter.reset()
    async with client.pipeline(transaction=False) as pipe:
        pipe.set(b"a", b"1")
        pipe.get(b"a")
        pipe.delete(b"a")
        assert await pipe.execute() == [True, b"1", 1]
    assert counter.count == 1


async def test_round_trips_in_a_cluster_client(valkey_cluster: EmbeddedCluster) -> None:
    counter = RoundTripCounter()
    client = counter.cluster_client(valkey_cluster.startup_nodes)
    try:
        await client.initialize()
        counter.reset()
        await client.set(b"k", b"v")
        await client.get(b"k")
        assert counter.count == 2
        assert counter.handshakes > 0  # the first command to the key's primary opened a connection
    finally:
        await client.aclose()
