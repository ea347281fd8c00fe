"""The near-cache over TLS (Debian's redis-server 7, built with TLS): the invalidation link and tracked reads use
the client's own TLS settings, L1 answers, and another client's overwrite reaches it."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache import AgentCache, NearCacheOptions
from tests.servers import REDIS7_BINARY

pytestmark = [pytest.mark.valkey, pytest.mark.redis]

_QUIET: dict[str, Any] = {"config_refresh": {"enabled": False}, "discovery": {"enabled": False}}
PARAMS = {"model": "m", "messages": [{"role": "user", "content": "q"}]}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    if not os.path.exists(REDIS7_BINARY):
        pytest.skip(f"{REDIS7_BINARY} (Debian redis-server, built with TLS) is not installed")
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    files = {"ca": tmp_path / "ca.pem", "server": tmp_path / "server.pem", "client": tmp_path / "client.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(files["server"]))
    ca.issue_cert("agent-cache-client").private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    return {name: str(path) for name, path in files.items()}


@pytest.mark.parametrize("mutual", [False, True], ids=["server-auth", "mutual-tls"])
async def test_near_cache_over_tls(
    valkey_server_factory: Callable[..., Any], tls_files: dict[str, str], mutual: bool
) -> None:
    port = _free_port()
    valkey_server_factory(
        binary=REDIS7_BINARY,
        args=[
            "--tls-port", str(port),
            "--tls-cert-file", tls_files["server"],
            "--tls-key-file", tls_files["server"],
            "--tls-ca-cert-file", tls_files["ca"],
            "--tls-auth-clients", "yes" if mutual else "no",
        ],
    )  # fmt: skip
    files = {"ssl_certfile": tls_files["client"], "ssl_keyfile": tls_files["client"]} if mutual else {}
    url = f"rediss://127.0.0.1:{port}"
    client = Valkey.from_url(url, ssl_ca_certs=tls_files["ca"], **files)
    other = Valkey.from_url(url, ssl_ca_certs=tls_files["ca"], **files)
    cache = AgentCache(client=client, name="tls", near_cache=NearCacheOptions(), **_QUIET)
    try:
        await cache.llm.store(PARAMS, "old")
        key = cache.llm.key(PARAMS)
        near = cache._near
        assert near is not None
        for _ in range(100):
            assert (await cache.llm.check(PARAMS)).response == "old"
            if near.lookup(key) is not None:
                break
            await asyncio.sleep(0.02)
        assert near.lookup(key) is not None, f"L1 never answered over TLS (refused: {near.refused})"
        await other.set(key, b'{"response":"new","model":"m"}')
        await other.pttl(key)  # settled: its invalidation has left the server
        assert (await cache.llm.check(PARAMS)).response == "new"
    finally:
        await cache.close()
        await client.aclose()
        await other.aclose()
