"""StorageOptions.compress_above_bytes (1 KB by default): large LLM/tool entries stored compressed (binary, read as
bytes whatever the client's decode_responses); everything else unchanged."""

from __future__ import annotations

import asyncio
import base64
import zlib
from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache import (
    AgentCache,
    ConfigurationError,
    LlmStoreOptions,
    StorageOptions,
    TelemetryOptions,
    ToolStoreOptions,
)
from agent_cache._codec import BASE64_MARKER, COMPRESSED_MARKER
from tests.integration.conftest import MakeCache, Observed

pytestmark = pytest.mark.valkey

PARAMS = {"model": "m1", "messages": [{"role": "user", "content": "summarise the design"}]}
LONG = "Valkey keeps the answer; the agent skips the model call and saves the tokens. " * 40
COMPRESS = StorageOptions(compress_above_bytes=1024)


async def test_large_llm_entries_are_stored_compressed_and_read_back(
    make_cache: MakeCache, backend_client: Any, observed: Observed
) -> None:
    cache = make_cache(name="z", storage=COMPRESS)
    key = await cache.llm.store(PARAMS, LONG, LlmStoreOptions(tokens={"input": 10, "output": 20}, metadata={"id": 7}))
    raw = await backend_client.get(key)
    assert raw.startswith(COMPRESSED_MARKER) and len(raw) < len(LONG) / 3
    result = await cache.llm.check(PARAMS)
    assert result.hit and result.response == LONG
    assert (result.input_tokens, result.output_tokens, result.metadata) == (10, 20, {"id": 7})
    written = observed.metric("agent_cache_stored_bytes_total", cache_name="z", tier="llm")
    assert written == len(raw)  # the bytes actually written


async def test_small_entries_stay_plain_json(make_cache: MakeCache, backend_client: Any) -> None:
    cache = make_cache(name="z", storage=COMPRESS)
    key = await cache.llm.store(PARAMS, "short")
    assert (await backend_client.get(key)).startswith(b'{"response":"short"')
    key = await cache.tool.store("w", {"c": 1}, "sunny")
    assert (await backend_client.get(key)).startswith(b'{"response":"sunny"')


async def test_tool_entries_are_compressed_too(make_cache: MakeCache, backend_client: Any) -> None:
    cache = make_cache(name="z", storage=COMPRESS)
    key = await cache.tool.store("search", {"q": "valkey"}, LONG, ToolStoreOptions(cost=0.25))
    assert (await backend_client.get(key)).startswith(COMPRESSED_MARKER)
    result = await cache.tool.check("search", {"q": "valkey"})
    assert result.hit and result.response == LONG
    assert (await cache.stats()).per_tool["search"].cost_saved_micros == 250_000
    assert await cache.tool.invalidate_by_tool("search") == 1


async def test_instances_without_compression_read_compressed_entries(make_cache: MakeCache) -> None:
    writer = make_cache(name="shared", storage=COMPRESS)
    reader = make_cache(name="shared", storage=StorageOptions(compress_above_bytes=None))  # reads them anyway
    await writer.llm.store(PARAMS, LONG)
    await reader.llm.store({**PARAMS, "seed": 1}, LONG)  # and writes plain JSON the writer reads
    assert (await reader.llm.check(PARAMS)).response == LONG
    assert (await writer.llm.check({**PARAMS, "seed": 1})).response == LONG


async def test_a_damaged_compressed_entry_is_a_miss_and_is_deleted(make_cache: MakeCache, backend_client: Any) -> None:
    cache = make_cache(name="z", storage=COMPRESS)
    key = await cache.llm.store(PARAMS, LONG)
    await backend_client.set(key, COMPRESSED_MARKER + b"garbage")
    assert not (await cache.llm.check(PARAMS)).hit
    assert await backend_client.exists(key) == 0


async def test_compression_is_on_by_default_and_clients_that_decode_to_str_read_it(valkey_url: str) -> None:
    text_client = Valkey.from_url(valkey_url, decode_responses=True)
    bytes_client = Valkey.from_url(valkey_url, decode_responses=False)
    try:
        writer = AgentCache(client=text_client, name="z", telemetry=TelemetryOptions())
        reader = AgentCache(client=bytes_client, name="z", telemetry=TelemetryOptions())
        key = await writer.llm.store(PARAMS, LONG)
        assert (await bytes_client.get(key)).startswith(COMPRESSED_MARKER)  # binary, written by a str client
        assert (await writer.llm.check(PARAMS)).response == LONG
        assert (await reader.llm.check(PARAMS)).response == LONG
        # Concurrent hits share pipelined round trips: those replies are bytes too.
        many = await asyncio.gather(*(writer.llm.check(PARAMS) for _ in range(40)))
        assert all(result.response == LONG for result in many)
        await writer.session.set("t", "f", "é")  # session values still come back as the text stored
        assert await writer.session.get("t", "f") == await reader.session.get("t", "f") == "é"
        await writer.close()
        await reader.close()
    finally:
        await text_client.aclose()
        await bytes_client.aclose()


async def test_entries_compressed_as_base64_by_earlier_versions_are_hits(
    make_cache: MakeCache, backend_client: Any
) -> None:
    cache = make_cache(name="z", storage=COMPRESS)
    key = await cache.llm.store(PARAMS, LONG, LlmStoreOptions(tokens={"input": 10, "output": 20}))
    envelope = zlib.decompress((await backend_client.get(key))[2:])
    await backend_client.set(key, BASE64_MARKER + base64.b64encode(zlib.compress(envelope)))
    result = await cache.llm.check(PARAMS)
    assert result.hit and result.response == LONG and result.output_tokens == 20


@pytest.mark.parametrize(
    "storage",
    [StorageOptions(compress_above_bytes=-1), StorageOptions(compress_above_bytes=1024, compression_level=0)],
)
async def test_bad_compression_options_are_rejected(valkey_client: Any, storage: StorageOptions) -> None:
    with pytest.raises(ConfigurationError, match="storage"):
        AgentCache(client=valkey_client, name="z", storage=storage, telemetry=TelemetryOptions())
