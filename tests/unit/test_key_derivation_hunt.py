"""Hunting wrong hits in key derivation: pure functions, no server.

Each adapter's ``prepare_params`` is fed one order conversation whose tool arguments and tool result are generated
user data, built from the very names adapters are tempted to strip (``id``, ``state``, ``metadata``, ``usage``,
``type``, ``timestamp``...). Two conversations whose user data differs must never share a key. The header rule and
the lone-surrogate error are checked here too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agent_cache import SerializationError, _keys
from agent_cache._keys import answer_headers, canonical_json, llm_hash, tool_hash
from agent_cache.adapters import anthropic, llamaindex, openai, openai_agents, openai_responses, pydantic_ai

# ─── Generated user data made of the names adapters strip ────────────────────

STRIPPED_NAMES = (
    "id",
    "state",
    "metadata",
    "usage",
    "type",
    "kind",
    "timestamp",
    "run_id",
    "status",
    "provider_details",
    "part_kind",
    "tool_kind",
    "identifier",
    "role",
    "content",
    "data",
)
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)
_leaves = st.none() | st.booleans() | st.integers(-3, 3) | _text
_names = st.sampled_from(STRIPPED_NAMES) | _text
user_data = st.dictionaries(
    _names,
    st.recursive(_leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_names, inner, max_size=3)),
    max_size=4,
)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)  # equal data, equal text: only a real difference may split a key


async def _openai_chat(args: Any, result: Any) -> Any:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_order", "arguments": _json(args)}}
    messages = [
        {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": _json(result)},
    ]
    return await openai.prepare_params({"model": "gpt-4o", "messages": messages})


def _items(args: Any, result: Any) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Where is my order?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_order", "arguments": _json(args)},
        {"type": "function_call_output", "call_id": "call_1", "output": _json(result)},
    ]


async def _openai_responses(args: Any, result: Any) -> Any:
    return await openai_responses.prepare_params({"model": "gpt-5", "input": _items(args, result)})


async def _openai_agents(args: Any, result: Any) -> Any:
    return await openai_agents.prepare_params("gpt-5", "Answer briefly.", _items(args, result))  # type: ignore[arg-type]


async def _anthropic(args: Any, result: Any) -> Any:
    messages = [
        {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_order", "input": args}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": _json(result)}]},
    ]
    return await anthropic.prepare_params({"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": messages})


async def _llamaindex(args: Any, result: Any) -> Any:
    from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock

    messages = [
        ChatMessage(role="user", content="Where is my order?"),
        ChatMessage(
            role="assistant", blocks=[ToolCallBlock(tool_call_id="call_1", tool_name="get_order", tool_kwargs=args)]
        ),
        ChatMessage(role="tool", content=_json(result), additional_kwargs={"tool_call_id": "call_1"}),
    ]
    return await llamaindex.prepare_params(messages, model="gpt-4o")


async def _pydantic_ai(args: Any, result: Any) -> Any:
    from pydantic_ai.messages import ModelRequest, ModelResponse, ToolCallPart, ToolReturnPart, UserPromptPart

    messages = [
        ModelRequest(parts=[UserPromptPart("Where is my order?")]),
        ModelResponse(parts=[ToolCallPart("get_order", args, tool_call_id="call_1")]),
        ModelRequest(parts=[ToolReturnPart("get_order", result, tool_call_id="call_1")]),
    ]
    return await pydantic_ai.prepare_params(messages, "gpt-4o", system="openai")


async def _raw(args: Any, result: Any) -> Any:
    return {
        "model": "gpt-4o",
        "messages": [
            {"role": "assistant", "tool_calls": [{"id": "call_1", "name": "get_order", "args": args}]},
            {"role": "tool", "tool_call_id": "call_1", "content": result},
        ],
    }


ADAPTERS: dict[str, Callable[[Any, Any], Awaitable[Any]]] = {
    "openai chat": _openai_chat,
    "openai responses": _openai_responses,
    "openai-agents": _openai_agents,
    "anthropic": _anthropic,
    "llamaindex": _llamaindex,
    "pydantic-ai": _pydantic_ai,
    "llm.check params": _raw,
}


def _key(adapter: str, args: Any, result: Any) -> str:
    return llm_hash(asyncio.run(ADAPTERS[adapter](args, result)))


@pytest.mark.parametrize("adapter", list(ADAPTERS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=user_data, second=user_data, where=st.sampled_from(["args", "result"]))
def test_different_user_data_never_shares_a_key(adapter: str, first: Any, second: Any, where: str) -> None:
    assume(canonical_json(first) != canonical_json(second))
    same = {"id": 1001, "state": "shipped"}
    if where == "args":
        assert _key(adapter, first, same) != _key(adapter, second, same)
    else:
        assert _key(adapter, same, first) != _key(adapter, same, second)


@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_the_order_ids_of_the_issue_never_share_a_key(adapter: str) -> None:
    shipped = _key(adapter, {"id": 1001}, {"id": 1001, "state": "shipped"})
    assert shipped != _key(adapter, {"id": 2002}, {"id": 1001, "state": "shipped"})
    assert shipped != _key(adapter, {"id": 1001}, {"id": 2002, "state": "cancelled"})
    assert shipped == _key(adapter, {"id": 1001}, {"state": "shipped", "id": 1001})  # same data, any order


# ─── Headers ──────────────────────────────────────────────────────────────────

BASE = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}
TRANSPORT = [
    "Authorization",
    "Proxy-Authorization",
    "x-api-key",
    "api-key",
    "Cookie",
    "traceparent",
    "tracestate",
    "baggage",
    "sentry-trace",
    "X-Request-Id",
    "X-Client-Request-Id",
    "Idempotency-Key",
    "User-Agent",
    "X-Stainless-Retry-Count",
    "X-Stainless-Timeout",
    "x-b3-traceid",
    "x-datadog-trace-id",
    "X-Amzn-Trace-Id",
    "OpenAI-Organization",
    "OpenAI-Project",
    "Helicone-Auth",
    "x-portkey-api-key",
    "cf-aig-authorization",
]
FEATURES = ["anthropic-beta", "Anthropic-Version", "OpenAI-Beta", "x-portkey-provider", "x-gateway-route", "x-custom"]


@pytest.mark.parametrize("name", TRANSPORT)
def test_credentials_tracing_and_plumbing_headers_stay_out_of_the_key(name: str) -> None:
    assert llm_hash({**BASE, "extra_headers": {name: "value-1"}}) == llm_hash(BASE)
    assert llm_hash({**BASE, "extra_headers": {name: "value-1"}}) == llm_hash({**BASE, "extra_headers": {name: "2"}})


@pytest.mark.parametrize("name", FEATURES)
def test_every_other_header_is_part_of_the_key(name: str) -> None:
    with_header = llm_hash({**BASE, "extra_headers": {name: "files-api-2025-04-14"}})
    assert with_header != llm_hash(BASE)
    assert with_header != llm_hash({**BASE, "extra_headers": {name: "context-1m-2025-08-07"}})
    assert with_header == llm_hash({**BASE, "extra_headers": {name.upper(): "files-api-2025-04-14"}})  # any case
    noisy = {name: "files-api-2025-04-14", "traceparent": "00-1-2-01", "Authorization": "Bearer k"}
    assert with_header == llm_hash({**BASE, "extra_headers": noisy})


def test_header_names_are_compared_in_lower_case_and_repeats_are_joined() -> None:
    assert answer_headers({"Anthropic-Beta": "a", "Authorization": "x"}) == {"anthropic-beta": "a"}
    assert answer_headers({"Anthropic-Beta": "a", "anthropic-beta": "b"}) == {"anthropic-beta": "a, b"}
    assert answer_headers({"X-Request-Id": "1"}) is None


async def test_adapters_keep_feature_headers_and_drop_credentials_from_their_params() -> None:
    request = {**BASE, "max_tokens": 8, "extra_headers": {"anthropic-beta": "b1", "x-api-key": "secret"}}
    params = await anthropic.prepare_params(request)
    assert params["extra_headers"] == {"anthropic-beta": "b1"}  # the secret never reaches params (or logs)
    only_noise = await openai.prepare_params({**BASE, "extra_headers": {"Authorization": "Bearer k"}})
    assert "extra_headers" not in only_noise


# ─── Lone surrogates ──────────────────────────────────────────────────────────


@pytest.fixture(params=["orjson", "stdlib"])
def encoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "stdlib":
        monkeypatch.setattr(_keys, "_orjson_dumps", None)
    elif _keys._orjson_dumps is None:
        pytest.skip("orjson is not installed")
    return str(request.param)


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({**BASE, "messages": [{"role": "user", "content": "caf\udce9"}]}, r"params\.messages\[0\]\.content"),
        ({**BASE, "tools": [{"name": "t", "schema": {"\ud800": 1}}]}, r"params\.tools\[0\]\.schema key"),
        ({**BASE, "temperature": 1e-9, "stop": ["\udfff"]}, r"params\.stop\[0\]"),  # the slow route too
    ],
)
def test_a_lone_surrogate_is_a_serialization_error_naming_its_path(params: Any, path: str, encoder: str) -> None:
    with pytest.raises(SerializationError, match=path + ".* holds a lone surrogate"):
        llm_hash(params)
    with pytest.raises(SerializationError, match=r"args\[0\] holds a lone surrogate"):
        tool_hash(["\ud800"])
    assert llm_hash({**BASE, "messages": [{"role": "user", "content": "caf\u00e9 \U0001f600"}]})  # real text is fine


# ─── LlamaIndexPrepareOptions, as the reference takes it ──────────────────────


async def test_llamaindex_options_take_the_model_and_sampling_parameters() -> None:
    from llama_index.core.base.llms.types import ChatMessage

    messages = [ChatMessage(role="user", content="hi")]
    options = llamaindex.LlamaIndexPrepareOptions(model="gpt-4o", temperature=0.2, top_p=0.9, max_tokens=50)
    from_options = await llamaindex.prepare_params(messages, options)
    from_keywords = await llamaindex.prepare_params(messages, model="gpt-4o", temperature=0.2, top_p=0.9, max_tokens=50)
    assert from_options == from_keywords
    assert from_options["model"] == "gpt-4o" and from_options["temperature"] == 0.2
    assert await llamaindex.prepare_params(messages, options, model="gpt-4o") == from_options
    with pytest.raises(ValueError, match="model is given twice"):
        await llamaindex.prepare_params(messages, options, model="gpt-5")
    with pytest.raises(ValueError, match="needs a model"):
        await llamaindex.prepare_params(messages)


# ─── Tool descriptions: a value the key refuses is an error, never left out ──


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("description", "Look up an order \ud800", r"description holds a lone surrogate"),
        ("params_json_schema", {"type": "object", "default": float("nan")}, r"params_json_schema\.default is nan"),
    ],
)
def test_a_tool_field_the_key_refuses_is_an_error_not_left_out(field: str, value: Any, message: str) -> None:
    from agents import FunctionTool

    async def invoke(context: Any, arguments: str) -> str:
        return arguments

    spec: dict[str, Any] = {"description": "Look up an order", "params_json_schema": {"type": "object"}, field: value}
    tool = FunctionTool(name="get_order", on_invoke_tool=invoke, **spec)
    params = asyncio.run(openai_agents.prepare_params("gpt-5", None, "hi", tools=[tool]))
    with pytest.raises(SerializationError, match=message):
        llm_hash(params)  # skipping the field would let two different tools share a key


def test_request_headers_override_client_defaults_as_the_sdks_send_them() -> None:
    from anthropic import omit

    from agent_cache.adapters._caching import sent_headers

    defaults = {"anthropic-beta": "a", "X-Gateway-Route": "eu"}
    assert sent_headers(defaults, {"Anthropic-Beta": "b"}) == {"X-Gateway-Route": "eu", "Anthropic-Beta": "b"}
    assert sent_headers(defaults, {"anthropic-beta": omit}) == {"X-Gateway-Route": "eu"}  # removed, as sent
    assert sent_headers(defaults, None) == defaults
    assert sent_headers({}, {"x": "1"}) == {"x": "1"}


# ─── LlamaIndex dict messages: nothing silently left out ──────────────────────


def _reference_conversation(order_id: int, state: str) -> list[dict[str, Any]]:
    """Messages in the reference's dict form: tool calls and results under ``options``."""
    call = {"id": "call_1", "name": "get_order", "input": json.dumps({"id": order_id})}
    result = {"id": "call_1", "result": json.dumps({"id": order_id, "state": state})}
    return [
        {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "content": "", "options": {"tool_call": call}},
        {"role": "user", "content": "", "options": {"tool_result": result}},
    ]


async def test_llamaindex_dict_messages_in_the_reference_form_keep_tool_calls_and_results() -> None:
    async def key(order_id: int, state: str) -> str:
        return llm_hash(await llamaindex.prepare_params(_reference_conversation(order_id, state), model="gpt-4o"))

    shipped = await key(1001, "shipped")
    assert shipped != await key(2002, "shipped")  # the call's input
    assert shipped != await key(1001, "cancelled")  # the tool's result
    assert shipped == await key(1001, "shipped")


async def test_llamaindex_dict_message_fields_a_chat_message_cannot_hold_are_an_error() -> None:
    with pytest.raises(ValueError, match=r"messages\[1\] has fields .*\['name'\]"):
        await llamaindex.prepare_params(
            [{"role": "user", "content": "hi"}, {"role": "user", "content": "x", "name": "b"}], model="m"
        )
    with pytest.raises(ValueError, match=r"messages\[0\]\.options"):
        await llamaindex.prepare_params([{"role": "user", "content": "hi", "options": {"cache": True}}], model="m")
