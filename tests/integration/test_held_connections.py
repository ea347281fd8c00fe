"""Single commands on the connections the auto-pipeline keeps: each reply is its own command's, whatever happened to
the connection before (killed, timed out mid-reply, closed), and the pool gets them back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from valkey.asyncio import BlockingConnectionPool, ConnectionPool, Valkey

from agent_cache import BackendTimeoutError, ValkeyCommandError
from agent_cache._backend import Backend
from agent_cache._breaker import CircuitBreaker
from agent_cache._held_connections import HeldConnections

pytestmark = pytest.mark.valkey


async def _connections(admin: Valkey) -> int:
    return len(await admin.client_list(_type="normal"))


async def test_sequential_reads_reuse_one_kept_connection_and_close_gives_it_back(valkey_url: str) -> None:
    pool = ConnectionPool.from_url(valkey_url)
    client = Valkey.from_pool(pool)
    admin = Valkey.from_url(valkey_url)
    try:
        await client.set("k", "v")
        backend = Backend(client, timeout_s=5.0)
        assert await backend.get("k") == b"v"
        opened = await _connections(admin)
        assert [await backend.get("k") for _ in range(50)] == [b"v"] * 50
        assert await _connections(admin) == opened  # the kept connection, not one per read
        assert len(pool._in_use_connections) == 1  # kept out of the pool...
        await backend.close()
        assert not pool._in_use_connections  # ...until given back
        assert await client.get("k") == b"v" and await _connections(admin) == opened
    finally:
        await admin.aclose()
        await client.aclose()


async def test_a_connection_the_server_closed_while_idle_is_replaced_for_the_same_read(valkey_url: str) -> None:
    client = Valkey.from_url(valkey_url)
    admin = Valkey.from_url(valkey_url)
    try:
        await client.set("k", "v")
        backend = Backend(client, timeout_s=5.0, breaker=CircuitBreaker(threshold=1))
        assert await backend.get("k") == b"v"
        await admin.client_kill_filter(_type="normal", skipme=True)  # a server restart, an idle timeout
        assert await backend.get("k") == b"v"  # not an error: the read went again on a new connection
        assert backend.breaker.allow()  # and counted no failure
    finally:
        await admin.aclose()
        await client.aclose()


async def test_after_a_read_timed_out_mid_reply_the_next_reads_get_their_own_values(
    valkey_server_factory: Callable[..., Any],
) -> None:
    server = valkey_server_factory()
    client = Valkey.from_url(server.url)
    try:
        for i in range(5):
            await client.set(f"k{i}", f"v{i}")
        backend = Backend(client, timeout_s=0.3, breaker=CircuitBreaker(threshold=1000))
        assert await backend.get("k0") == b"v0"
        server.pause()
        try:
            with pytest.raises(BackendTimeoutError):
                await backend.get("k1")  # its reply arrives after the resume, on a connection closed for it
        finally:
            server.resume()
        assert [await backend.get(f"k{i}") for i in range(5)] == [f"v{i}".encode() for i in range(5)]
    finally:
        await client.aclose()


def test_clients_whose_own_read_path_must_be_kept_get_no_kept_connections(valkey_url: str) -> None:
    assert HeldConnections.for_client(Valkey.from_url(valkey_url)) is not None
    assert HeldConnections.for_client(Valkey.from_url(valkey_url, single_connection_client=True)) is None
    blocking = Valkey.from_pool(BlockingConnectionPool.from_url(valkey_url, max_connections=4))
    assert HeldConnections.for_client(blocking) is None  # others would wait on connections kept idle
    assert HeldConnections.for_client(object()) is None  # e.g. a cluster client: routed by the client


async def test_without_a_backend_deadline_the_clients_socket_timeout_still_bounds_a_read(
    valkey_server_factory: Callable[..., Any],
) -> None:
    server = valkey_server_factory()
    pool = ConnectionPool.from_url(server.url, socket_timeout=0.3)
    client = Valkey.from_pool(pool)
    try:
        bounded = Backend(client, timeout_s=5.0)
        assert await bounded.get("k") is None
        (kept,) = pool._in_use_connections
        assert kept.socket_timeout is None  # the backend's deadline bounds its reads: no second timer
        await bounded.close()
        assert kept.socket_timeout == 0.3  # the pool gets its connection back as it gave it
        unbounded = Backend(client, timeout_s=None, breaker=CircuitBreaker(threshold=1000))
        assert await unbounded.get("k") is None
        server.pause()
        try:
            with pytest.raises(BackendTimeoutError):
                await unbounded.get("k")  # valkey-py's socket timeout, not a hang
        finally:
            server.resume()
        assert await unbounded.get("k") is None
    finally:
        await client.aclose()


async def test_an_error_reply_keeps_the_connection(valkey_url: str) -> None:
    pool = ConnectionPool.from_url(valkey_url)
    client = Valkey.from_pool(pool)
    try:
        await client.hset("a-hash", "f", "v")
        backend = Backend(client, timeout_s=5.0)
        assert await backend.get("absent") is None
        (kept,) = pool._in_use_connections
        with pytest.raises(ValkeyCommandError, match="WRONGTYPE"):
            await backend.get("a-hash")
        assert kept.is_connected and pool._in_use_connections == {kept}  # read whole: nothing to reconnect
        assert await backend.get("absent") is None
    finally:
        await client.aclose()
