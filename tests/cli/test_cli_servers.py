"""The subcommands where caches run: a Valkey Cluster, a TLS-only Redis 7, a least-privilege ACL user."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache.acl import acl_rule
from agent_cache.embedded import EmbeddedCluster
from tests.cli.conftest import TOOL_CALLS, Populated, make_cache, populate
from tests.cli.running import agent_cache
from tests.servers import REDIS7_BINARY, cluster_client, flush_all_primaries, free_port


@pytest.fixture
async def cluster_url(valkey_cluster: EmbeddedCluster) -> AsyncIterator[str]:
    client = cluster_client(valkey_cluster.startup_nodes, decode_responses=False)
    await flush_all_primaries(client)
    async with make_cache(client) as cache:
        await populate(cache)
    await client.aclose()
    host, port = valkey_cluster.startup_nodes[0]
    yield f"valkey://{host}:{port}"


def test_stats_invalidate_and_flush_on_a_cluster(cluster_url: str) -> None:
    stats = agent_cache("stats", "--url", cluster_url, "--cluster", "--name", "support_bot", "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["tool"]["misses"] == sum(misses for _, misses in TOOL_CALLS.values())

    dry = agent_cache("invalidate", "--url", cluster_url, "--cluster", "--name", "support_bot", "--model", "gpt-4o",
                      "--dry-run", "--json")  # fmt: skip
    assert json.loads(dry.stdout)["would_delete"] == 3, dry.stderr
    gone = agent_cache("invalidate", "--url", cluster_url, "--cluster", "--name", "support_bot", "--thread", "user-42",
                       "--json")  # fmt: skip
    assert json.loads(gone.stdout)["deleted"] == 2, gone.stderr

    flush = agent_cache("flush", "--url", cluster_url, "--cluster", "--name", "support_bot", "--yes", "--json")
    assert flush.returncode == 0, flush.stderr
    after = agent_cache("stats", "--url", cluster_url, "--cluster", "--name", "support_bot")
    assert after.returncode == 3  # the counters went with the flush, on every primary


@pytest.fixture
def tls_server(valkey_server_factory: Callable[..., Any], tls_files: dict[str, str]) -> tuple[Any, int, Path]:
    """Redis 7 with a TLS port whose certificate a private CA signed: (server, TLS port, CA file)."""
    server_pem, ca_pem = Path(tls_files["server"]), Path(tls_files["ca"])
    tls_port = free_port()
    server = valkey_server_factory(
        binary=REDIS7_BINARY,
        args=["--tls-port", str(tls_port), "--tls-cert-file", str(server_pem), "--tls-key-file", str(server_pem),
              "--tls-ca-cert-file", str(ca_pem), "--tls-auth-clients", "no"],
    )  # fmt: skip
    return server, tls_port, ca_pem


@pytest.mark.redis
async def test_rediss_with_a_private_ca(tls_server: tuple[Any, int, Path]) -> None:
    server, tls_port, ca_pem = tls_server
    from valkey.asyncio import Valkey

    client = Valkey.from_url(server.url)
    async with make_cache(client) as cache:
        await populate(cache)
    await client.aclose()

    url = f"rediss://127.0.0.1:{tls_port}"
    trusted = agent_cache("stats", "--url", url, "--tls-ca-file", str(ca_pem), "--name", "support_bot", "--json")
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout)["llm"]["hits"] == 5
    untrusted = agent_cache("stats", "--url", url, "--name", "support_bot", "--timeout", "5")
    assert untrusted.returncode == 2
    assert untrusted.stderr.startswith(f"error: cannot reach Valkey at {url}")


async def test_per_cache_commands_run_as_the_caches_least_privilege_user(
    populated: Populated, valkey_client: Valkey, tmp_path: Path
) -> None:
    """Everything but `caches` works with the ACL of agent_cache.acl.acl_rule(name): no command outside it."""
    await valkey_client.execute_command("ACL", "SETUSER", "bot_cli", "on", ">pw", *acl_rule("support_bot").split())
    resource = tmp_path / "agentcache.yaml"
    await asyncio.to_thread(
        resource.write_text, "kind: AgentCache\nmetadata: {name: support_bot}\nspec: {defaultTTL: 60}\n"
    )
    connection = ("--url", populated.url.replace("valkey://", "valkey://bot_cli@"), "--password-env", "PW")
    commands = [
        ["stats", "--name", "support_bot"],
        ["tools", "--name", "support_bot"],
        ["top", "--name", "support_bot", "--iterations", "1"],
        ["invalidate", "--name", "support_bot", "--tool", "get_weather", "--dry-run"],
        ["invalidate", "--name", "support_bot", "--thread", "user-7"],
        ["config", "apply", "-f", str(resource), "--wait", "1"],
        ["config", "diff", "-f", str(resource)],
        ["config", "show", "--name", "support_bot"],
        ["flush", "--name", "support_bot", "--yes"],
    ]
    try:
        for command in commands:
            done = await asyncio.to_thread(agent_cache, *command, *connection, env={"PW": "pw"})
            assert done.returncode == 0, (command, done.stderr)
    finally:
        await valkey_client.execute_command("ACL", "DELUSER", "bot_cli")


def test_rediss_against_a_plain_port_says_tls_may_be_the_cause(valkey_url: str) -> None:
    url = valkey_url.replace("valkey://", "rediss://")
    done = agent_cache("stats", "--url", url, "--timeout", "2")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot reach Valkey at {url}"), done.stderr
    assert "if this port serves plain connections, use valkey:// or redis://" in lines[0]


@pytest.mark.redis
def test_a_plain_url_against_a_tls_port_says_tls_may_be_the_cause(tls_server: tuple[Any, int, Path]) -> None:
    _, tls_port, _ = tls_server
    done = agent_cache("stats", "--url", f"valkey://127.0.0.1:{tls_port}", "--timeout", "2")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "if this port expects TLS, use rediss://" in lines[0], done.stderr
