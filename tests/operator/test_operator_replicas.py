"""Two operator replicas against one Kubernetes API: exactly one reconciles, the other takes over when it stops.

Both run as the chart runs them (peering on, ``--peering NAME``, priority ``auto``), as real ``agent-cache-operator``
processes watching one namespace, so they share a KopfPeering there. What each replica did is read from its own
``/metrics``: the standby's reconcile counter stays at zero while the leader's grows with every resync.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Iterator
from pathlib import Path

import pytest
from scripts.bundle_gen.chart import kopf_peering_crd
from valkey.asyncio import Valkey

from agent_cache._local_server import pick_port
from agent_cache.config import read_config
from tests.operator.conftest import _FAILED, OPERATOR, Kube, agentcache, condition, eventually
from tests.servers import ServerHandle

pytestmark = [pytest.mark.k8s, pytest.mark.valkey]

PEERING = "agent-cache-operator"
RECONCILES = re.compile(r"^agent_cache_operator_reconciles_total\{[^}]*\} (\S+)$", re.MULTILINE)


class Replica:
    """One ``agent-cache-operator`` process with peering, as a pod of the chart's Deployment runs it."""

    def __init__(
        self, kube: Kube, namespace: str, log_path: Path, *, priority: str = "auto", lifetime: int = 60
    ) -> None:
        self.log_path = log_path
        self.liveness_port = pick_port(set())
        self.metrics_port = pick_port({self.liveness_port})
        assert OPERATOR is not None
        command = [OPERATOR, "--namespace", namespace, "--peering", PEERING, "--priority", priority, "--verbose"]
        command += ["--bind-address", "127.0.0.1", "--liveness-port", str(self.liveness_port)]
        command += ["--metrics-port", str(self.metrics_port), "--peering-lifetime", str(lifetime)]
        env = {
            **os.environ,
            "KUBECONFIG": str(kube.kubeconfig),
            "AGENT_CACHE_OPERATOR_RESYNC_SECONDS": "1",
            "AGENT_CACHE_OPERATOR_RETRY_BASE_SECONDS": "0.2",
            "AGENT_CACHE_OPERATOR_RETRY_MAX_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("POD_ID", None)  # Kopf's peer identity; each process makes its own
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def wait_live(self, timeout: float = 30.0) -> Replica:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the operator exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"the operator did not become live within {timeout}s:\n{self.log()[-4000:]}")

    def reconciles(self) -> float:
        """Reconciliations this process ran (every trigger and result): 0 for a replica that never worked."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        return sum(float(value) for value in RECONCILES.findall(text))

    def stop(self, *, kill: bool = False) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def replicas(kube: Kube, namespace: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[list[Replica]]:
    """The KopfPeering the chart creates in a watched namespace (and its CRD); the test starts the replicas."""
    kube.apply(kopf_peering_crd(namespaced=True))
    if kube.real:
        kube.kubectl("wait", "--for=condition=established", "crd/kopfpeerings.kopf.dev", "--timeout=60s")
    kube.apply({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}}, namespace)
    started: list[Replica] = []
    yield started
    if any(replica.process.poll() is None for replica in started):
        kube.kubectl("delete", "agentcaches", "--all", "-n", namespace, "--wait=true", "--timeout=30s", check=False)
    for replica in started:
        replica.stop()
    if request.node.stash.get(_FAILED, False):
        for replica in started:
            sys.stderr.write(f"\n----- operator log ({replica.log_path}) -----\n{replica.log()[-20000:]}\n")


def _peers(kube: Kube, namespace: str) -> dict[str, dict[str, object]]:
    body = kube.get("kopfpeerings", PEERING, namespace) or {}
    return dict(body.get("status") or {})


async def test_one_of_two_replicas_reconciles_and_the_other_takes_over(
    kube: Kube,
    namespace: str,
    replicas: list[Replica],
    tmp_path: Path,
    valkey_server: ServerHandle,
    valkey_client: Valkey,
) -> None:
    leader = Replica(kube, namespace, tmp_path / "leader.log").wait_live()
    replicas.append(leader)
    await eventually(lambda: len(_peers(kube, namespace)) == 1, what="the first replica announces itself")
    standby = Replica(kube, namespace, tmp_path / "standby.log").wait_live()
    replicas.append(standby)
    peers = await eventually(lambda: _peers(kube, namespace) if len(_peers(kube, namespace)) == 2 else None)
    priorities = [int(str(peer["priority"])) for peer in peers.values()]
    assert len(set(priorities)) == 2, f"the replicas must not share a priority: {peers}"

    valkey = {"host": valkey_server.host, "port": valkey_server.port}
    await kube.aapply(agentcache("replicated", valkey, tiers={"llm": {"ttl": 100}}), namespace)

    async def ready() -> bool:
        return condition(await kube.aget("agentcaches", "replicated", namespace), "Ready").get("status") == "True"

    await eventually(ready, what="the AgentCache becomes Ready")
    # The leader keeps reconciling (a timer every resync second); the standby does nothing meanwhile.
    done = leader.reconciles()
    await eventually(lambda: leader.reconciles() >= done + 3, what="three more reconciliations by the leader")
    assert standby.reconciles() == 0, standby.log()[-4000:]
    applied = await read_config(valkey_client, "replicated")
    assert applied is not None and applied.config.tiers["llm"] == 100

    # The leader stops (a rollout, a node drain): it leaves the peering and the standby takes over at once.
    leader.stop()
    await kube.akubectl(
        "patch", "agentcache", "replicated", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"tiers": {"llm": {"ttl": 200}}}}),
    )  # fmt: skip

    async def updated() -> bool:
        config = await read_config(valkey_client, "replicated")
        return config is not None and config.config.tiers["llm"] == 200

    await eventually(updated, what="the standby pushes the changed spec")
    assert standby.reconciles() > 0
    await eventually(ready, what="the AgentCache stays Ready under the new leader")
    assert list(_peers(kube, namespace)) == [next(iter(peers.keys() - {_own_identity(leader, peers)}))]


def _own_identity(replica: Replica, peers: dict[str, dict[str, object]]) -> str:
    """The peer entry of ``replica``: Kopf logs its identity nowhere stable, so match by its logged priority."""
    logged = re.search(r"peering priority (-?\d+)", replica.log())
    assert logged is not None, replica.log()[-2000:]
    (identity,) = [name for name, peer in peers.items() if str(peer["priority"]) == logged.group(1)]
    return identity


async def test_a_killed_leader_is_replaced_when_its_peering_lifetime_runs_out(
    kube: Kube,
    namespace: str,
    replicas: list[Replica],
    tmp_path: Path,
    valkey_server: ServerHandle,
    valkey_client: Valkey,
) -> None:
    """A leader killed outright (node lost, OOM) leaves no goodbye: the standby waits out its --peering-lifetime."""
    leader = Replica(kube, namespace, tmp_path / "leader.log", lifetime=3).wait_live()
    replicas.append(leader)
    await eventually(lambda: len(_peers(kube, namespace)) == 1, what="the first replica announces itself")
    standby = Replica(kube, namespace, tmp_path / "standby.log", lifetime=3).wait_live()
    replicas.append(standby)
    await eventually(lambda: len(_peers(kube, namespace)) == 2, what="both replicas in the peering")
    valkey = {"host": valkey_server.host, "port": valkey_server.port}
    await kube.aapply(agentcache("crashed", valkey, tiers={"llm": {"ttl": 100}}), namespace)

    async def config_ttl() -> int | None:
        config = await read_config(valkey_client, "crashed")
        return config.config.tiers.get("llm") if config is not None else None

    await eventually(lambda: _equals(config_ttl(), 100), what="the leader pushes the config")
    assert standby.reconciles() == 0

    leader.stop(kill=True)
    await kube.akubectl(
        "patch", "agentcache", "crashed", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"tiers": {"llm": {"ttl": 300}}}}),
    )  # fmt: skip
    await eventually(lambda: _equals(config_ttl(), 300), what="the standby takes over after the lifetime")
    assert standby.reconciles() > 0


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected
