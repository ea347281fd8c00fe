"""Connection options from the spec against real servers: a Valkey Cluster, and TLS with a CA and a client
certificate taken from Secrets (Debian's redis-server 7, which is built with TLS)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache._local_server import pick_port
from agent_cache.config import read_config
from agent_cache.embedded import EmbeddedCluster, EmbeddedValkey
from tests.operator.conftest import Kube, OperatorProcess, agentcache, condition, eventually, secret
from tests.servers import REDIS7_BINARY, cluster_client

pytestmark = [pytest.mark.k8s, pytest.mark.valkey]


async def _ready(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    body = await kube.aget("agentcaches", name, namespace)
    return body if condition(body, "Ready").get("status") == "True" else None


@pytest.mark.cluster
async def test_a_valkey_cluster(
    kube: Kube, namespace: str, valkey_cluster: EmbeddedCluster, operator: Callable[..., OperatorProcess]
) -> None:
    operator()
    host, port = valkey_cluster.startup_nodes[0]
    await kube.aapply(
        agentcache("clustered", {"host": host, "port": port, "cluster": True}, tiers={"llm": {"ttl": 42}}), namespace
    )
    body = await eventually(lambda: _ready(kube, namespace, "clustered"), what="Ready on the cluster")
    client = cluster_client(valkey_cluster.startup_nodes)
    try:
        applied = await read_config(client, "clustered")
        assert applied is not None and applied.version == body["status"]["configVersion"]
        assert applied.config.tiers == {"llm": 42}
    finally:
        await client.aclose()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(directory: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (EC keys: fast)."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-ca",
             cwd=directory)  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, extra in (("server", ["-extfile", "server.ext"]), ("client", [])):
        _openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", *extra, cwd=directory)  # fmt: skip


@pytest.fixture
def tls_server(tmp_path: Path, valkey_server_factory: Callable[..., EmbeddedValkey]) -> tuple[EmbeddedValkey, int]:
    """redis-server 7 with a plain port (for the test's own client) and a TLS port that requires client certs."""
    if not Path(REDIS7_BINARY).exists():
        pytest.skip(f"{REDIS7_BINARY} is absent: apt-get install -y --no-install-recommends redis-server")
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is absent")
    _certificates(tmp_path)
    tls_port = pick_port(set())
    server = valkey_server_factory(
        binary=REDIS7_BINARY,
        args=[
            "--tls-port", str(tls_port),
            "--tls-cert-file", str(tmp_path / "server.crt"),
            "--tls-key-file", str(tmp_path / "server.key"),
            "--tls-ca-cert-file", str(tmp_path / "ca.crt"),
            "--tls-auth-clients", "yes",
        ],
    )  # fmt: skip
    return server, tls_port


@pytest.mark.redis
async def test_mutual_tls_with_the_ca_and_client_certificate_from_secrets(
    kube: Kube, namespace: str, tmp_path: Path, tls_server: tuple[EmbeddedValkey, int],
    operator: Callable[..., OperatorProcess],
) -> None:  # fmt: skip
    server, tls_port = tls_server
    operator()
    await kube.aapply(secret("valkey-ca", **{"ca.crt": (tmp_path / "ca.crt").read_text()}), namespace)
    client_tls = secret(
        "client-tls",
        **{"tls.crt": (tmp_path / "client.crt").read_text(), "tls.key": (tmp_path / "client.key").read_text()},
    )
    client_tls["type"] = "kubernetes.io/tls"
    await kube.aapply(client_tls, namespace)
    valkey = {
        "host": "127.0.0.1",
        "port": tls_port,
        "tls": {"enabled": True, "caSecretRef": {"name": "valkey-ca"}, "certSecretRef": {"name": "client-tls"}},
    }
    await kube.aapply(agentcache("secure", valkey, defaultTTL=321), namespace)
    await eventually(lambda: _ready(kube, namespace, "secure"), what="Ready over mutual TLS")
    async with Valkey(host=server.host, port=server.port) as plain:  # the same server's plain port
        applied = await read_config(plain, "secure")
    assert applied is not None and applied.config.default_ttl == 321

    # Without the client certificate the server refuses the handshake: reported, not crashed.
    await kube.akubectl(
        "patch", "agentcache", "secure", "-n", namespace, "--type=json",
        "-p", '[{"op": "remove", "path": "/spec/valkey/tls/certSecretRef"}]',
    )  # fmt: skip

    async def refused() -> bool:
        body = await kube.aget("agentcaches", "secure", namespace)
        synced = condition(body, "ConfigSynced")
        return synced.get("reason") == "TLSHandshakeFailed" and "spec.valkey.tls" in synced.get("message", "")

    await eventually(refused, what="the handshake failure is reported")
