"""The near-cache over TLS (Debian's redis-server 7, built with TLS): the invalidation link and tracked reads use
the client's own TLS settings, L1 answers, and another client's overwrite reaches it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache import AgentCache, NearCacheOptions
from tests.servers import REDIS7_BINARY, free_port

pytestmark = [pytest.mark.valkey, pytest.mark.redis]

_QUIET: dict[str, Any] = {"config_refresh": {"enabled": False}, "discovery": {"enabled": False}}
PARAMS = {"model": "m", "messages": [{"role": "user", "content": "q"}]}


@pytest.mark.parametrize("mutual", [False, True], ids=["server-auth", "mutual-tls"])
async def test_near_cache_over_tls(
    valkey_server_factory: Callable[..., Any], tls_files: dict[str, str], mutual: bool
) -> None:
    port = free_port()
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
