"""TLS connections and a least-privilege ACL user, against real servers."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache import BackendError, LlmStoreOptions, ToolPolicy, ToolStoreOptions
from agent_cache.acl import acl_rule
from agent_cache.config import CacheConfig, apply_config
from tests.reliability.conftest import make_cache
from tests.servers import REDIS7_BINARY, free_port

pytestmark = pytest.mark.valkey

PARAMS = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


async def _exercise_every_operation(cache: Any) -> None:
    await cache.llm.check(PARAMS)
    await cache.llm.store(PARAMS, "x", LlmStoreOptions(tokens={"input": 1, "output": 1}))
    assert (await cache.llm.check(PARAMS)).hit
    await cache.tool.set_policy("t", ToolPolicy(ttl=60))
    await cache.tool.store("t", {"a": 1}, "r", ToolStoreOptions(cost=0.1))
    assert (await cache.tool.check("t", {"a": 1})).hit
    await cache.tool.refresh_policies()
    await cache.session.set("th", "f", "v", ttl=60)
    assert await cache.session.get("th", "f") == "v"
    assert await cache.session.get_all("th") == {"f": "v"}
    assert await cache.session.touch("th", ttl=120) == 1
    assert await cache.session.delete("th", "f")
    await cache.session.set("th", "g", "v")
    assert await cache.session.destroy_thread("th") == 1
    assert await cache.tool.invalidate("t", {"a": 1}) is True
    await cache.tool.store("t", {"a": 2}, "r")
    assert await cache.tool.invalidate_by_tool("t") == 1
    assert await cache.llm.invalidate_by_model("gpt-4o") == 1
    stats = await cache.stats()
    assert stats.llm.hits == 1 and stats.tool.hits == 1
    assert await cache.tool_effectiveness()
    assert (await cache.llm.get_or_compute(PARAMS, _compute)).response == "computed"
    await cache.flush()


async def _compute() -> str:
    return "computed"


async def test_a_least_privilege_acl_user_can_run_everything(valkey_server_factory: Callable[..., Any]) -> None:
    server = valkey_server_factory()
    admin = Valkey.from_url(server.url)
    await admin.execute_command("ACL", "SETUSER", "agent", "on", ">s3cret", *acl_rule("rel").split())
    await admin.set("other_app:secret", "x")
    client = Valkey.from_url(server.url, username="agent", password="s3cret")
    cache = make_cache(client, on_error="raise")  # fail-open must not hide a NOPERM
    await _exercise_every_operation(cache)
    version = await apply_config(client, "rel", CacheConfig.from_spec({"defaultTTL": 60}), "test")
    await cache.live_config.refresh()
    assert cache.live_config.version == version
    await cache.close()
    for forbidden in (("KEYS", "*"), ("FLUSHALL",), ("CONFIG", "GET", "*"), ("GET", "other_app:secret")):
        with pytest.raises(Exception, match=r"NOPERM|permission"):
            await client.execute_command(*forbidden)
    assert await admin.get("other_app:secret") == b"x"
    await client.aclose()
    await admin.aclose()


@pytest.mark.redis
@pytest.mark.parametrize("mutual", [False, True], ids=["server-auth", "mutual-tls"])
async def test_tls_connections(
    valkey_server_factory: Callable[..., Any], tls_files: dict[str, str], mutual: bool
) -> None:
    tls_port = free_port()
    valkey_server_factory(
        binary=REDIS7_BINARY,
        args=[
            "--tls-port", str(tls_port),
            "--tls-cert-file", tls_files["server"],
            "--tls-key-file", tls_files["server"],
            "--tls-ca-cert-file", tls_files["ca"],
            "--tls-auth-clients", "yes" if mutual else "no",
        ],
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{tls_port}"
    client_files = {"ssl_certfile": tls_files["client"], "ssl_keyfile": tls_files["client"]} if mutual else {}
    client = Valkey.from_url(url, ssl_ca_certs=tls_files["ca"], **client_files)
    cache = make_cache(client, on_error="raise")
    await _exercise_every_operation(cache)
    await cache.close()
    await client.aclose()

    untrusted = Valkey.from_url(url, ssl_cert_reqs=ssl.CERT_REQUIRED)  # the system CAs don't know ours
    with pytest.raises(BackendError):
        await make_cache(untrusted, on_error="raise").llm.check(PARAMS)
    await untrusted.aclose()
    if mutual:
        anonymous = Valkey.from_url(url, ssl_ca_certs=tls_files["ca"])
        with pytest.raises(BackendError):
            await make_cache(anonymous, on_error="raise").session.get("t", "f")
        await anonymous.aclose()


async def test_a_wrong_password_is_an_authentication_error(valkey_server_factory: Callable[..., Any]) -> None:
    from agent_cache import BackendAuthenticationError

    server = valkey_server_factory(password="right")
    client = Valkey.from_url(f"valkey://127.0.0.1:{server.port}", password="wrong")
    with pytest.raises(BackendAuthenticationError, match="refused the credentials"):
        await make_cache(client).session.get("t", "f")
    await client.aclose()
