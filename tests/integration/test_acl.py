"""``acl_rule()`` is exact: every public operation, the LangGraph saver and the LangChain cache included, runs as
that user — and the user reaches neither other applications' keys nor those of cache ``{name}:<more>``.

Fail-open paths would hide a NOPERM, so besides ``on_error="raise"`` the server's ``ACL LOG`` must stay empty.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration
from langgraph.graph import END, START, MessagesState, StateGraph
from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import (
    AgentCache,
    DiscoveryOptions,
    LlmStoreOptions,
    NearCacheOptions,
    ReliabilityOptions,
    TelemetryOptions,
    ToolPolicy,
    ToolStoreOptions,
)
from agent_cache.acl import acl_rule
from agent_cache.adapters.langchain import BetterDBLlmCache
from agent_cache.adapters.langgraph import BetterDBSaver
from agent_cache.config import CacheConfig, apply_config
from tests.cli.running import agent_cache

pytestmark = pytest.mark.valkey

NAME = "acl:prod"
PARAMS = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def _reply(state: MessagesState) -> dict[str, list[BaseMessage]]:
    return {"messages": [AIMessage(f"turn {len(state['messages'])}")]}


def _graph(saver: BetterDBSaver) -> Any:
    builder = StateGraph(MessagesState)
    builder.add_node("agent", _reply)
    builder.add_edge(START, "agent")
    builder.add_edge("agent", END)
    return builder.compile(checkpointer=saver)


async def _least_privilege_user(server: Any, name: str = NAME) -> tuple[Valkey, Valkey]:
    """An admin client, and one logged in as the user ``acl_rule(name)`` describes (the ACL LOG emptied first)."""
    admin = Valkey.from_url(server.url)
    await admin.execute_command("ACL", "SETUSER", "agent", "on", ">s3cret", *acl_rule(name).split())
    await admin.execute_command("ACL", "LOG", "RESET")
    return admin, Valkey.from_url(server.url, username="agent", password="s3cret")


async def _tiers(cache: AgentCache) -> None:
    await cache.llm.check(PARAMS)
    await cache.llm.store(PARAMS, "x", LlmStoreOptions(tokens={"input": 1, "output": 1}))
    assert (await cache.llm.check(PARAMS)).hit
    assert (await cache.llm.get_or_compute({**PARAMS, "seed": 1}, _computed)).response == "computed"
    await cache.tool.set_policy("t", ToolPolicy(ttl=60))
    await cache.tool.store("t", {"a": 1}, "r", ToolStoreOptions(cost=0.1))
    assert (await cache.tool.check("t", {"a": 1})).hit
    assert (await cache.tool.get_or_compute("t", {"a": 3}, _computed)).response == "computed"
    await cache.tool.refresh_policies()
    assert await cache.tool.invalidate("t", {"a": 1}) is True
    assert await cache.tool.invalidate_by_tool("t") >= 1
    with cache.tenant("acme"):
        await cache.session.set("th", "f", "v", ttl=60)
        assert await cache.session.get("th", "f") == "v"
        assert await cache.session.get_all("th") == {"f": "v"}
        assert await cache.session.scan_fields_by_prefix("th", "f") == {"f": "v"}
        assert await cache.session.touch("th", ttl=120) == 1
        assert await cache.session.delete("th", "f")
        await cache.session.set("th", "g", "v")
        assert await cache.session.destroy_thread("th") == 1
    cache.session.reset_tracker()
    assert await cache.llm.invalidate_by_model("gpt-4o") >= 1
    await cache.llm.clear()
    assert (await cache.stats()).llm.hits == 1
    assert await cache.tool_effectiveness() is not None


async def _computed() -> str:
    return "computed"


async def _langgraph(cache: AgentCache) -> None:
    saver = BetterDBSaver(cache)
    graph = _graph(saver)
    with cache.tenant("acme"):
        config: Any = {"configurable": {"thread_id": "u1"}, "metadata": {"run_id": "run-1"}}
        await graph.ainvoke({"messages": [HumanMessage("hi")]}, config)
        await graph.ainvoke({"messages": [HumanMessage("again")]}, config)
        latest = await saver.aget_tuple(config)
        assert latest is not None
        assert len([item async for item in saver.alist(config)]) >= 2
        await saver.aput_writes(latest.config, [("messages", "w")], "task-1")
        await saver.acopy_thread("u1", "u2")
        await saver.aprune(["u2"])
        await saver.aprune(["u2"], strategy="delete")
        await saver.adelete_for_runs(["run-1"])
        await graph.ainvoke({"messages": [HumanMessage("hi")]}, {"configurable": {"thread_id": "u3"}})
        await saver.adelete_thread("u3")


async def _langchain(cache: AgentCache) -> None:
    adapter = BetterDBLlmCache(cache)
    llm_string = '[("model_name", "gpt-4o"), ("temperature", 0)]'
    assert await adapter.alookup("hi", llm_string) is None
    await adapter.aupdate("hi", llm_string, [ChatGeneration(message=AIMessage("hello"))])
    assert await adapter.alookup("hi", llm_string) is not None
    await adapter.aclear()


async def test_every_public_operation_runs_as_the_least_privilege_user(
    valkey_server_factory: Callable[..., Any],
) -> None:
    server = valkey_server_factory()
    admin, client = await _least_privilege_user(server)
    cache = AgentCache(
        client=client,
        name=NAME,
        telemetry=TelemetryOptions(registry=CollectorRegistry()),
        reliability=ReliabilityOptions(on_error="raise"),  # fail-open must not hide a NOPERM
        stats_flush_interval_s=0.05,
    )
    try:
        await cache.ensure_discovery_ready()
        await _tiers(cache)
        await _langgraph(cache)
        await _langchain(cache)
        version = await apply_config(client, NAME, CacheConfig.from_spec({"defaultTTL": 60}), "test")
        for _ in range(100):  # the subscription applies it
            if cache.live_config.version == version:
                break
            await asyncio.sleep(0.05)
        assert cache.live_config.version == version
        await cache.flush()
        await asyncio.sleep(0.2)  # a few upkeep rounds: stats flush, heartbeat, config re-read
    finally:
        await cache.close()
    assert await admin.execute_command("ACL", "LOG") == []
    await client.aclose()
    await admin.aclose()


async def test_the_user_reaches_no_other_cache_not_even_one_named_under_its_own(
    valkey_server_factory: Callable[..., Any],
) -> None:
    server = valkey_server_factory()
    admin, client = await _least_privilege_user(server, "fl")
    for other in ("fl:x:__stats", "fl:x:llm:" + "a" * 64, "other_app:secret", "flx:__stats"):
        await admin.set(other, "x")
    for forbidden in (
        ("GET", "fl:x:__stats"),
        ("GET", "fl:x:llm:" + "a" * 64),
        ("GET", "other_app:secret"),
        ("GET", "flx:__stats"),
        ("KEYS", "*"),
        ("FLUSHALL",),
        ("CONFIG", "GET", "*"),
        ("PUBLISH", "fl:x:__config:changed", "1"),
    ):
        with pytest.raises(Exception, match=r"NOPERM|permission"):
            await client.execute_command(*forbidden)
    assert await client.get("fl:__stats") is None  # its own keys: allowed
    await client.aclose()
    await admin.aclose()


async def test_the_near_cache_runs_as_the_least_privilege_user(valkey_server_factory: Callable[..., Any]) -> None:
    server = valkey_server_factory()
    admin, client = await _least_privilege_user(server)
    cache = AgentCache(
        client=client,
        name=NAME,
        telemetry=TelemetryOptions(registry=CollectorRegistry()),
        reliability=ReliabilityOptions(on_error="raise"),
        near_cache=NearCacheOptions(),
        discovery=DiscoveryOptions(enabled=False),
    )
    try:
        await cache.llm.store(PARAMS, "x")
        for _ in range(3):
            assert (await cache.llm.check(PARAMS)).hit
        await cache.tool.store("t", {"a": 1}, "r")
        for _ in range(3):
            assert (await cache.tool.check("t", {"a": 1})).hit
        await admin.delete(cache.llm.key(PARAMS))  # an invalidation arrives on the tracking connection
        await asyncio.sleep(0.2)
        await cache.llm.check(PARAMS)
    finally:
        await cache.close()
    assert await admin.execute_command("ACL", "LOG") == []
    await client.aclose()
    await admin.aclose()


async def test_the_cli_runs_as_the_least_privilege_user(valkey_server_factory: Callable[..., Any]) -> None:
    server = valkey_server_factory()
    admin, client = await _least_privilege_user(server)
    cache = AgentCache(client=client, name=NAME, telemetry=TelemetryOptions(registry=CollectorRegistry()))
    await cache.ensure_discovery_ready()
    await _tiers(cache)
    await cache.llm.store(PARAMS, "x")
    await cache.tool.store("t", {"a": 1}, "r")
    with cache.tenant("acme"):
        await cache.session.set("th", "f", "v")
    await cache.close()
    await admin.execute_command("ACL", "LOG", "RESET")
    url = server.url.replace("://", "://agent:s3cret@", 1)
    target = ["--url", url, "--name", NAME]
    for command in (
        ["stats", *target],
        ["tools", *target],
        ["caches", "--url", url],
        ["config", "show", *target],
        ["invalidate", *target, "--tool", "t", "--dry-run"],
        ["invalidate", *target, "--tool", "t"],
        ["invalidate", *target, "--model", "gpt-4o"],
        ["invalidate", *target, "--thread", "th", "--tenant", "acme"],
        ["flush", *target, "--yes"],
    ):
        done = agent_cache(*command)
        assert done.returncode in (0, 3), (command, done.stderr)
        if command[0] == "config":  # export, then import the same entries back over them
            exported = agent_cache("export", *target)
            assert exported.returncode == 0 and exported.stdout, exported.stderr
            imported = agent_cache("import", *target, "-f", "-", "--overwrite", stdin=exported.stdout)
            assert imported.returncode == 0, imported.stderr
    assert await admin.execute_command("ACL", "LOG") == []
    await client.aclose()
    await admin.aclose()
