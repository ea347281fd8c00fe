"""Fixtures for the operator's tests: a Kubernetes API, kubectl, the operator as a real process, real Valkey servers.

The Kubernetes API is the in-process emulator (``emulator.py``) unless ``KUBECONFIG`` is set, in which case the same
tests run against that cluster (``scripts/kind-e2e.sh`` creates one with kind). Either way the tests act as a user
does — ``kubectl apply/patch/get/delete`` — and the operator runs as the ``agent-cache-operator`` command, out of the
cluster, with short intervals (resync 1 s, retries from 0.2 s), so it reaches the loopback Valkey servers of the test
session. Each test gets its own namespace and its own operator process watching only that namespace.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent_cache._local_server import pick_port
from agent_cache_operator.crd import API_VERSION, build_crd
from agent_cache_operator.kube import ALLOW_ANNOTATION
from tests.operator.emulator import EmulatorThread, write_kubeconfig

BIN = Path(sys.executable).parent
KUBECTL = shutil.which("kubectl", path=str(BIN)) or shutil.which("kubectl")
OPERATOR = shutil.which("agent-cache-operator", path=str(BIN))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "kube" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.k8s)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


# ── the Kubernetes API and kubectl ─────────────────────────────────────────────


@dataclass
class Kube:
    """A cluster for the tests: the emulator, or a real one (``real``) from ``KUBECONFIG``."""

    kubeconfig: Path
    real: bool
    emulator: EmulatorThread | None = None

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        result = subprocess.run(
            [KUBECTL, *args], input=input, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    async def akubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.kubectl, *args, input=input, check=check)

    def apply_args(self) -> list[str]:
        # The emulator serves no OpenAPI document for client-side validation; a real server validates strictly.
        return ["apply", "--validate=false"] if not self.real else ["apply", "--validate=strict"]

    def apply(self, manifest: dict[str, Any], namespace: str | None = None, check: bool = True) -> Any:
        args = [*self.apply_args(), "-f", "-"] + (["-n", namespace] if namespace else [])
        return self.kubectl(*args, input=json.dumps(manifest), check=check)

    async def aapply(self, manifest: dict[str, Any], namespace: str | None = None, check: bool = True) -> Any:
        return await asyncio.to_thread(self.apply, manifest, namespace, check)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        result = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise AssertionError(f"kubectl get {kind} {name} failed:\n{result.stderr}")
        body: dict[str, Any] = json.loads(result.stdout)
        return body

    async def aget(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.get, kind, name, namespace)

    async def events(self, namespace: str) -> list[dict[str, Any]]:
        result = await self.akubectl("get", "events", "-n", namespace, "-o", "json")
        items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
        return items


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: run scripts/install-k8s-tools.sh")
    if OPERATOR is None:
        pytest.skip('the agent-cache-operator command is not installed: pip install -e ".[dev]"')
    configured = os.environ.get("KUBECONFIG")
    if configured:
        cluster = Kube(Path(configured), real=True)
        cluster.apply(build_crd())
        cluster.kubectl("wait", "--for=condition=established", "crd/agentcaches.agentcache.dev", "--timeout=60s")
        yield cluster
        return
    thread = EmulatorThread().start()
    kubeconfig = tmp_path_factory.mktemp("kube") / "kubeconfig"
    write_kubeconfig(kubeconfig, thread.url)
    cluster = Kube(kubeconfig, real=False, emulator=thread)
    try:
        cluster.apply(build_crd())
        yield cluster
    finally:
        thread.stop()


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = f"acop-{uuid.uuid4().hex[:8]}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    if kube.real:
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


# ── the operator ─────────────────────────────────────────────────────────────


@dataclass
class OperatorProcess:
    """``agent-cache-operator`` watching one namespace (or all, on a cluster of its own); restartable; its log is kept
    for assertions."""

    kube: Kube
    namespace: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    all_namespaces: bool = False
    peering: str | None = None  # a Kopf peering object to join (as the chart runs it); None: --standalone
    process: subprocess.Popen[bytes] | None = None
    liveness_port: int = 0
    metrics_port: int = 0

    def start(self) -> OperatorProcess:
        self.liveness_port = pick_port(set())
        self.metrics_port = pick_port({self.liveness_port})
        assert OPERATOR is not None
        command = [
            OPERATOR,
            *(["--peering", self.peering] if self.peering else ["--standalone"]),
            *(["--all-namespaces"] if self.all_namespaces else ["--namespace", self.namespace]),
            "--bind-address",
            "127.0.0.1",
            "--liveness-port",
            str(self.liveness_port),
            "--metrics-port",
            str(self.metrics_port),
            "--verbose",
        ]
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kube.kubeconfig),
            "AGENT_CACHE_OPERATOR_RESYNC_SECONDS": "1",
            "AGENT_CACHE_OPERATOR_RETRY_BASE_SECONDS": "0.2",
            "AGENT_CACHE_OPERATOR_RETRY_MAX_SECONDS": "1",
            "AGENT_CACHE_OPERATOR_DELETE_RETRIES": "3",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._wait_live()
        return self

    def _wait_live(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the operator exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the operator did not become live within {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, *, kill: bool = False) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:
            text: str = reply.read().decode()
        return text

    def liveness(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=5) as reply:
            body: dict[str, Any] = json.loads(reply.read().decode() or "{}")
        return body


@pytest.fixture
def operator(
    kube: Kube, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., OperatorProcess]]:
    """``operator()`` starts the operator for this test's namespace (once); ``operator(env={...})`` adds settings."""
    started: list[OperatorProcess] = []

    def start(env: dict[str, str] | None = None) -> OperatorProcess:
        handle = OperatorProcess(kube, namespace, tmp_path / f"operator-{len(started)}.log", env=env or {})
        started.append(handle)
        return handle.start()

    yield start
    # Let the operator release its finalizers before it goes away (a real cluster keeps the namespace otherwise).
    running = [handle for handle in started if handle.process is not None]
    if running:
        kube.kubectl("delete", "agentcaches", "--all", "-n", namespace, "--wait=true", "--timeout=30s", check=False)
    for handle in started:
        handle.stop()
    if request.node.stash.get(_FAILED, False):
        for handle in started:
            sys.stderr.write(f"\n----- operator log ({handle.log_path}) -----\n{handle.log()[-20000:]}\n")


# ── resources and waiting ────────────────────────────────────────────────────


def agentcache(name: str, valkey: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "AgentCache",
        "metadata": {"name": name},
        "spec": {"valkey": valkey, **spec},
    }


def secret(name: str, *, allow: str | None = "*", **values: str) -> dict[str, Any]:
    """A Secret; ``allow`` is its opt-in annotation (which AgentCaches may use it), None for none."""
    metadata: dict[str, Any] = {"name": name}
    if allow is not None:
        metadata["annotations"] = {ALLOW_ANNOTATION: allow}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque", "stringData": values}


def condition(body: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for entry in ((body or {}).get("status") or {}).get("conditions") or []:
        if entry.get("type") == kind:
            return dict(entry)
    return {}


async def eventually(check: Callable[[], Any], within: float = 30.0, interval: float = 0.2, what: str = "") -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail with the last value after ``within``
    seconds (a deadline for polling, never a timing assertion)."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {within}s: {what or check}; last value: {last!r}")
        await asyncio.sleep(interval)
