"""BetterDBSaver under a real ``StateGraph``: history survives turns, messages survive as objects.

The reference saver JSON-dumped checkpoints, silently dropped the LangChain messages and so forgot the
conversation on turn 2. Here a ``MessagesState`` graph runs two turns on one thread — async with an
``AgentCache`` and sync with a ``SyncAgentCache`` — and the second turn must see the first.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph

from agent_cache import AgentCache, AgentCacheUsageError, SyncAgentCache, TierDefaults
from agent_cache._backend import Backend
from agent_cache.adapters import _checkpoint_scripts as scripts
from agent_cache.adapters.langgraph import BetterDBSaver
from tests.frameworks.conftest import CACHE_NAME, telemetry
from tests.servers import commands_delta, server_command_counts


def remembering_agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
    """A deterministic chat model: answers from everything the conversation said so far."""
    said = [m.content for m in state["messages"] if isinstance(m, HumanMessage)]
    names = [text.removeprefix("I am ") for text in said if isinstance(text, str) and text.startswith("I am ")]
    if said[-1] == "Who am I?":
        reply = f"You are {names[-1]}." if names else "I don't know you."
    else:
        reply = f"Hello {names[-1]}!" if names else "Hello!"
    return {"messages": [AIMessage(reply, additional_kwargs={"turn": len(said)})]}


def build_graph(saver: BetterDBSaver) -> CompiledStateGraph[Any, Any, Any, Any]:
    builder = StateGraph(MessagesState)
    builder.add_node("agent", remembering_agent)
    builder.add_edge(START, "agent")
    builder.add_edge("agent", END)
    return builder.compile(checkpointer=saver)


def contents(messages: list[BaseMessage]) -> list[str | list[Any]]:
    return [m.content for m in messages]


async def test_second_turn_sees_the_first_async(agent_cache: AgentCache) -> None:
    graph = build_graph(BetterDBSaver(agent_cache))
    config = {"configurable": {"thread_id": "user:42"}}

    await graph.ainvoke({"messages": [HumanMessage("I am Ada")]}, config)
    result = await graph.ainvoke({"messages": [HumanMessage("Who am I?")]}, config)

    assert contents(result["messages"]) == ["I am Ada", "Hello Ada!", "Who am I?", "You are Ada."]
    assert all(isinstance(m, BaseMessage) for m in result["messages"])
    assert result["messages"][3].additional_kwargs == {"turn": 2}
    other = await graph.ainvoke({"messages": [HumanMessage("Who am I?")]}, {"configurable": {"thread_id": "user:4"}})
    assert contents(other["messages"]) == ["Who am I?", "I don't know you."]


def test_second_turn_sees_the_first_sync(sync_cache: SyncAgentCache) -> None:
    graph = build_graph(BetterDBSaver(sync_cache))
    config = {"configurable": {"thread_id": "user:42"}}

    graph.invoke({"messages": [HumanMessage("I am Ada")]}, config)
    result = graph.invoke({"messages": [HumanMessage("Who am I?")]}, config)

    assert contents(result["messages"]) == ["I am Ada", "Hello Ada!", "Who am I?", "You are Ada."]
    state = graph.get_state(config)
    assert contents(state.values["messages"]) == contents(result["messages"])
    history = list(graph.get_state_history(config))
    assert [snapshot.metadata["step"] for snapshot in history if snapshot.metadata] == [4, 3, 2, 1, 0, -1]


async def test_messages_keep_their_type_and_fields(agent_cache: AgentCache) -> None:
    graph = build_graph(BetterDBSaver(agent_cache))
    config = {"configurable": {"thread_id": "t"}}
    call = {"name": "get_weather", "args": {"city": "Sofia"}, "id": "call_1", "type": "tool_call"}
    seeded = [
        HumanMessage("I am Ada", id="h1"),
        AIMessage("", tool_calls=[call], usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}),
        ToolMessage("21°C", tool_call_id="call_1"),
    ]
    await graph.aupdate_state(config, {"messages": seeded})

    state = await graph.aget_state(config)
    restored = state.values["messages"]
    assert [type(m) for m in restored] == [HumanMessage, AIMessage, ToolMessage]
    assert restored[0].id == "h1"
    assert restored[1].tool_calls == [call]
    assert restored[1].usage_metadata == {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    assert restored[2].tool_call_id == "call_1"


async def test_destroy_thread_removes_checkpoints_and_session(agent_cache: AgentCache) -> None:
    saver = BetterDBSaver(agent_cache)
    graph = build_graph(saver)
    config = {"configurable": {"thread_id": "doomed"}}
    await graph.ainvoke({"messages": [HumanMessage("I am Ada")]}, config)
    await graph.ainvoke({"messages": [HumanMessage("I am Bob")]}, {"configurable": {"thread_id": "kept"}})
    await agent_cache.session.set("doomed", "intent", "book")

    deleted = await agent_cache.session.destroy_thread("doomed")

    assert deleted == 3  # the session field, and the thread's two checkpoint keys
    assert await saver.aget_tuple(config) is None
    assert [t async for t in saver.alist(config)] == []
    assert (await graph.aget_state(config)).values == {}
    assert await agent_cache.session.get("doomed", "intent") is None
    kept = await graph.aget_state({"configurable": {"thread_id": "kept"}})
    assert contents(kept.values["messages"]) == ["I am Bob", "Hello Bob!"]
    # The thread starts over cleanly.
    again = await graph.ainvoke({"messages": [HumanMessage("Who am I?")]}, config)
    assert contents(again["messages"]) == ["Who am I?", "I don't know you."]


async def test_thread_ttl_follows_the_session_tier_or_the_option(backend_client: Any) -> None:
    cache = AgentCache(
        client=backend_client, name=CACHE_NAME, telemetry=telemetry(), tier_defaults={"session": TierDefaults(ttl=900)}
    )
    try:
        for thread, saver, expected in (
            ("follows-session", BetterDBSaver(cache), 900),
            ("explicit", BetterDBSaver(cache, ttl=60), 60),
            ("forever", BetterDBSaver(cache, ttl=None), None),
        ):
            await build_graph(saver).ainvoke(
                {"messages": [HumanMessage("hi")]}, {"configurable": {"thread_id": thread}}
            )
            prefix = cache.keys.checkpoint_prefix(thread)
            for key in (prefix + "data", prefix + "order", cache.keys.checkpoint_index(thread)):
                ttl_ms = await backend_client.pttl(key)
                if expected is None:
                    assert ttl_ms == -1, key
                else:
                    assert 0 < ttl_ms <= expected * 1000, key
    finally:
        await cache.close()


async def test_thread_ids_that_look_alike_stay_apart(agent_cache: AgentCache) -> None:
    graph = build_graph(BetterDBSaver(agent_cache))
    for thread in ("a", "a:b", "a%3Ab", "{a}", "a b"):
        await graph.ainvoke({"messages": [HumanMessage(f"I am {thread}")]}, {"configurable": {"thread_id": thread}})
    for thread in ("a", "a:b", "a%3Ab", "{a}", "a b"):
        state = await graph.aget_state({"configurable": {"thread_id": thread}})
        assert contents(state.values["messages"]) == [f"I am {thread}", f"Hello {thread}!"]


async def test_subgraph_namespaces_are_kept_apart(agent_cache: AgentCache) -> None:
    inner = StateGraph(MessagesState)
    inner.add_node("agent", remembering_agent)
    inner.add_edge(START, "agent")
    outer = StateGraph(MessagesState)
    outer.add_node("inner", inner.compile())
    outer.add_edge(START, "inner")
    saver = BetterDBSaver(agent_cache)
    graph = outer.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "nested"}}

    await graph.ainvoke({"messages": [HumanMessage("I am Ada")]}, config)
    result = await graph.ainvoke({"messages": [HumanMessage("Who am I?")]}, config)

    assert contents(result["messages"])[-1] == "You are Ada."
    root = [t async for t in saver.alist({"configurable": {"thread_id": "nested", "checkpoint_ns": ""}})]
    everything = [t async for t in saver.alist({"configurable": {"thread_id": "nested"}})]
    assert root and all(t.config["configurable"]["checkpoint_ns"] == "" for t in root)
    assert len(everything) >= len(root)


async def test_sync_methods_need_the_sync_facade(agent_cache: AgentCache) -> None:
    saver = BetterDBSaver(agent_cache)
    with pytest.raises(AgentCacheUsageError, match="SyncAgentCache"):
        saver.get_tuple({"configurable": {"thread_id": "t"}})


async def test_reads_run_one_script_and_never_scan(agent_cache: AgentCache, backend_client: Any) -> None:
    saver = BetterDBSaver(agent_cache)
    graph = build_graph(saver)
    config = {"configurable": {"thread_id": "t"}}
    await graph.ainvoke({"messages": [HumanMessage("I am Ada")]}, config)
    await saver.aget_tuple(config)  # scripts are loaded on every node by now
    [_ async for _ in saver.alist(config, limit=1)]
    pipe = backend_client.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"unrelated:{i}", "x")
    await pipe.execute()

    before = await server_command_counts(backend_client)
    for _ in range(5):
        assert await saver.aget_tuple(config) is not None
    assert len([t async for t in saver.alist(config)]) == 3
    delta = commands_delta(before, await server_command_counts(backend_client))

    assert delta.pop("evalsha") == 6  # one script call per read (and per page of a list)
    assert set(delta) <= {"hget", "hmget", "zrangebylex", "zrevrangebylex"}, delta  # indexed reads only


def test_sync_threads_of_two_tenants_are_apart(sync_cache: SyncAgentCache) -> None:
    graph = build_graph(BetterDBSaver(sync_cache))
    config = {"configurable": {"thread_id": "user:42"}}
    for name in ("Ada", "Bob"):
        with sync_cache.tenant(name.lower()):
            graph.invoke({"messages": [HumanMessage(f"I am {name}")]}, config)
    for name in ("Ada", "Bob"):
        with sync_cache.tenant(name.lower()):
            result = graph.invoke({"messages": [HumanMessage("Who am I?")]}, config)
            assert contents(result["messages"])[-1] == f"You are {name}."
    assert graph.get_state(config).values == {}  # no tenant: a thread of its own, never written
    with sync_cache.tenant("ada"):
        assert sync_cache.session.destroy_thread("user:42") > 0
        assert graph.get_state(config).values == {}
    with sync_cache.tenant("bob"):
        assert len(graph.get_state(config).values["messages"]) == 4


RUN = "6d1c4f0e-0000-4000-8000-000000000002"


async def put_of_run(saver: BetterDBSaver, thread_id: str, run_id: str = RUN) -> None:
    await saver.aput(
        {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}, empty_checkpoint(), {"run_id": run_id}, {}
    )


async def holds_run(saver: BetterDBSaver, thread_id: str, run_id: str = RUN) -> bool:
    return bool([t async for t in saver.alist({"configurable": {"thread_id": thread_id}}, filter={"run_id": run_id})])


def put_during(monkeypatch: pytest.MonkeyPatch, script: Any, when: str, put: Any) -> list[bool]:
    """Run ``put`` once, just before or just after the first call of ``script``: a put landing mid-delete."""
    real_run_script = Backend.run_script
    done: list[bool] = []

    async def run_script(self: Backend, called: Any, keys: Any, args: Any) -> Any:
        if called is script and not done and when == "before":
            done.append(True)
            await put()
        result = await real_run_script(self, called, keys, args)
        if called is script and not done and when == "after":
            done.append(True)
            await put()
        return result

    monkeypatch.setattr(Backend, "run_script", run_script)
    return done


async def assert_every_checkpoint_of_the_run_is_listed(
    saver: BetterDBSaver, cache: AgentCache, backend_client: Any
) -> None:
    listed = {
        m if isinstance(m, str) else m.decode()
        for m in await backend_client.smembers(cache.keys.checkpoint_run_index(RUN))
    }
    for thread_id in ("t1", "t2"):
        if await holds_run(saver, thread_id):
            assert thread_id in listed, f"{thread_id} holds a checkpoint of the run but fell out of the run's index"


@pytest.mark.parametrize(
    ("thread_id", "when", "writer"),
    [("t2", "before", "same"), ("t1", "before", "same"), ("t1", "after", "same"), ("t1", "after", "other")],
    ids=["new thread", "before", "after", "after, another process"],
)
async def test_delete_for_runs_never_unlists_a_checkpoint_stored_meanwhile(
    agent_cache: AgentCache,
    backend_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    thread_id: str,
    when: str,
    writer: str,
) -> None:
    saver = BetterDBSaver(agent_cache)
    writing = saver if writer == "same" else BetterDBSaver(agent_cache)  # another process: its own memory of runs
    await put_of_run(writing, "t1")
    done = put_during(monkeypatch, scripts.DELETE_RUNS, when, lambda: put_of_run(writing, thread_id))

    await saver.adelete_for_runs([RUN])

    assert done
    await assert_every_checkpoint_of_the_run_is_listed(saver, agent_cache, backend_client)
    monkeypatch.undo()
    await saver.adelete_for_runs([RUN])
    assert not await holds_run(saver, "t1") and not await holds_run(saver, "t2")


async def test_delete_thread_never_unlists_a_checkpoint_stored_meanwhile(
    agent_cache: AgentCache, backend_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    saver = BetterDBSaver(agent_cache)
    await put_of_run(saver, "t1")
    done = put_during(monkeypatch, scripts.DELETE_THREAD, "after", lambda: put_of_run(saver, "t1"))

    await saver.adelete_thread("t1")

    assert done and await holds_run(saver, "t1")
    await assert_every_checkpoint_of_the_run_is_listed(saver, agent_cache, backend_client)
    monkeypatch.undo()
    await saver.adelete_for_runs([RUN])
    assert not await holds_run(saver, "t1")
