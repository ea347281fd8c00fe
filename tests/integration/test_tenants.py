"""Tenants on every server kind: no (tenant, thread) pair shares keys with another, checkpoints included.

Thread ``x`` of tenant ``acme`` and the untenanted thread ``acme:x`` used to be the same keys, and the LangGraph
saver ignored the tenant altogether (tenants shared checkpoints; ``destroy_thread`` left them behind).
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from agent_cache import AgentCache
from agent_cache.adapters.langgraph import BetterDBSaver
from tests.integration.conftest import MakeCache

pytestmark = pytest.mark.valkey


async def test_a_tenants_thread_and_the_untenanted_thread_of_the_joined_name_are_apart(
    cache: AgentCache, backend_client: Any
) -> None:
    await cache.session.set("acme:x", "f", "untenanted")
    with cache.tenant("acme"):
        await cache.session.set("x", "f", "acme's")
        assert await cache.session.get("x", "f") == "acme's"
        assert await cache.session.get_all("x") == {"f": "acme's"}
    with cache.tenant("acme:x"):  # and the other way round: tenant 'acme:x' has no thread 'x'... of 'acme'
        assert await cache.session.get_all("x") == {}
    assert await cache.session.get("acme:x", "f") == "untenanted"
    assert await cache.session.get_all("acme:x") == {"f": "untenanted"}
    # Untenanted keys are what they always were; the tenant is a segment of its own in the hash tag.
    assert await backend_client.get("t:session:{acme%3Ax}:f") == b"untenanted"
    assert await backend_client.get("t:session:{acme:x}:f") == b"acme's"
    with cache.tenant("acme"):
        assert await cache.session.destroy_thread("x") == 1
    assert await cache.session.get("acme:x", "f") == "untenanted"


async def test_every_session_operation_stays_inside_its_tenant(cache: AgentCache) -> None:
    for tenant in ("a", "b:c", "{t}"):
        with cache.tenant(tenant):
            await cache.session.set("thread", "f", tenant)
            await cache.session.set("thread", "g", tenant)
    with cache.tenant("b:c"):
        assert await cache.session.touch("thread", ttl=60) == 2
        assert await cache.session.delete("thread", "g") is True
        assert await cache.session.scan_fields_by_prefix("thread", "") == {"f": "b:c"}
    with cache.tenant("a"):
        assert await cache.session.get_all("thread") == {"f": "a", "g": "a"}
        assert await cache.session.destroy_thread("thread") == 2
    with cache.tenant("{t}"):
        assert await cache.session.get_all("thread") == {"f": "{t}", "g": "{t}"}
    assert await cache.session.get_all("thread") == {}


def _echo(state: MessagesState) -> dict[str, list[BaseMessage]]:
    said = [m.content for m in state["messages"] if isinstance(m, HumanMessage)]
    return {"messages": [AIMessage(f"heard {said}")]}


def _graph(saver: BetterDBSaver) -> Any:
    builder = StateGraph(MessagesState)
    builder.add_node("agent", _echo)
    builder.add_edge(START, "agent")
    builder.add_edge("agent", END)
    return builder.compile(checkpointer=saver)


async def test_the_saver_keeps_each_tenants_checkpoints_and_destroy_thread_removes_them(
    make_cache: MakeCache,
) -> None:
    cache = make_cache()
    saver = BetterDBSaver(cache)
    graph = _graph(saver)
    config = {"configurable": {"thread_id": "x"}}
    for tenant in ("acme", "globex"):
        with cache.tenant(tenant):
            await graph.ainvoke({"messages": [HumanMessage(f"I am {tenant}")]}, config)
    with cache.tenant("acme"):
        state = await graph.ainvoke({"messages": [HumanMessage("again")]}, config)
        assert [m.content for m in state["messages"] if isinstance(m, HumanMessage)] == ["I am acme", "again"]
    assert await saver.aget_tuple(config) is None  # no tenant is a scope of its own
    with cache.tenant("acme:x"), pytest.raises(StopAsyncIteration):
        await anext(saver.alist({"configurable": {"thread_id": "x"}}))

    with cache.tenant("acme"):
        assert await cache.session.destroy_thread("x") > 0
        assert await saver.aget_tuple(config) is None
    with cache.tenant("globex"):
        remaining = await saver.aget_tuple(config)
        assert remaining is not None
        assert remaining.checkpoint["channel_values"]["messages"][0].content == "I am globex"


async def test_delete_for_runs_deletes_only_the_calling_tenants_threads(make_cache: MakeCache) -> None:
    cache = make_cache()
    saver = BetterDBSaver(cache)
    graph = _graph(saver)
    run = "6d1c4f0e-0000-4000-8000-000000000001"
    for tenant in ("acme", "globex"):
        with cache.tenant(tenant):
            config = {"configurable": {"thread_id": "x"}, "metadata": {"run_id": run}}
            await graph.ainvoke({"messages": [HumanMessage("hi")]}, config)
    with cache.tenant("acme"):
        await saver.adelete_for_runs([run])
        assert await saver.aget_tuple({"configurable": {"thread_id": "x"}}) is None
    with cache.tenant("globex"):
        assert await saver.aget_tuple({"configurable": {"thread_id": "x"}}) is not None
