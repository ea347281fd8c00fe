"""Bad and hostile input: a clear error or a safe outcome, and nothing already stored is lost."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agent_cache import AgentCacheUsageError, LlmStoreOptions, SerializationError, ToolStoreOptions
from tests.reliability.conftest import make_cache

pytestmark = pytest.mark.valkey

PARAMS = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"x": value}
    return value


async def test_unhashable_inputs_are_clear_errors_and_leave_stored_entries_alone(valkey_client: Any) -> None:
    cache = make_cache(valkey_client)
    await cache.llm.store(PARAMS, "kept")
    await cache.tool.store("t", {"a": 1}, "kept")
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    bad_inputs = [
        ({**PARAMS, "temperature": float("inf")}, "NaN and infinity"),
        ({**PARAMS, "messages": [{"content": object()}]}, "not JSON-serializable"),
        ({**PARAMS, "tools": _nested(5000)}, "nested too deeply"),
        ({**PARAMS, "metadata_x": cyclic}, "nested too deeply"),
        ({**PARAMS, "logit_bias": {1: 2}}, "object keys must be strings"),
    ]
    for params, message in bad_inputs:
        with pytest.raises(SerializationError, match=message):
            await cache.llm.check(params)
        with pytest.raises(SerializationError, match=message):
            await cache.llm.store(params, "x")
    with pytest.raises(SerializationError, match="nested too deeply"):
        await cache.tool.check("t", _nested(5000))
    assert (await cache.llm.check(PARAMS)).response == "kept"
    assert (await cache.tool.check("t", {"a": 1})).response == "kept"
    await cache.close()


async def test_entries_over_the_size_limit_are_skipped_and_counted(valkey_client: Any) -> None:
    registry = CollectorRegistry()
    cache = make_cache(valkey_client, registry, max_entry_bytes=10_000)
    await cache.llm.store(PARAMS, "small")
    await cache.llm.store(PARAMS, "x" * 20_000)  # too big: skipped, the small one stays
    await cache.tool.store("t", {}, "y" * 20_000, ToolStoreOptions(cost=1))
    assert (await cache.llm.check(PARAMS)).response == "small"
    assert (await cache.tool.check("t", {})).hit is False
    too_large = registry.get_sample_value(
        "agent_cache_errors_total", {"cache_name": "rel", "tier": "llm", "operation": "store", "error": "too_large"}
    )
    assert too_large == 1
    await cache.session.set("s", "f", "kept")
    with pytest.raises(AgentCacheUsageError, match="over max_entry_bytes=10000; nothing was written"):
        await cache.session.set("s", "f", "z" * 20_000)
    assert await cache.session.get("s", "f") == "kept"
    await cache.close()


@pytest.mark.parametrize(
    "stored",
    [b"", b"{", b'{"response": 42}', b"[]", b'{"resp', "\u00ff".encode("latin-1"), b'{"response": "ok"'],
)
async def test_malformed_or_truncated_entries_are_misses_removed_and_counted(valkey_client: Any, stored: bytes) -> None:
    registry = CollectorRegistry()
    cache = make_cache(valkey_client, registry)
    key = await cache.llm.store(PARAMS, "x", LlmStoreOptions(tokens={"input": 1, "output": 1}))
    tool_key = await cache.tool.store("t", {}, "x")
    await valkey_client.set(key, stored)
    await valkey_client.set(tool_key, stored)
    assert (await cache.llm.check(PARAMS)).hit is False
    assert (await cache.tool.check("t", {})).hit is False
    assert await valkey_client.exists(key, tool_key) == 0
    for tier in ("llm", "tool"):
        labels = {"cache_name": "rel", "tier": tier, "operation": "check", "error": "corrupt"}
        assert registry.get_sample_value("agent_cache_errors_total", labels) == 1
    await cache.close()


async def test_tenants_never_read_each_others_entries(valkey_client: Any) -> None:
    cache = make_cache(valkey_client)
    with cache.tenant("acme"):
        await cache.llm.store(PARAMS, "acme's answer")
        await cache.tool.store("crm_lookup", {"id": 7}, "acme's customer")
        await cache.session.set("thread-1", "intent", "acme intent")
    with cache.tenant("globex"):
        assert (await cache.llm.check(PARAMS)).hit is False
        assert (await cache.tool.check("crm_lookup", {"id": 7})).hit is False
        assert await cache.session.get("thread-1", "intent") is None
        assert await cache.session.get_all("thread-1") == {}
        assert await cache.session.destroy_thread("thread-1") == 0
    assert (await cache.llm.check(PARAMS)).hit is False  # no tenant is a scope of its own
    with cache.tenant("acme"):
        assert (await cache.llm.check(PARAMS)).response == "acme's answer"
        assert await cache.session.get_all("thread-1") == {"intent": "acme intent"}
    with cache.tenant("a:b"), pytest.raises(AgentCacheUsageError):
        await cache.session.get("", "f")
    await cache.close()
