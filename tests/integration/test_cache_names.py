"""Colon-separated cache names (``myapp:prod``, the Redis idiom) on every server kind.

Names are used as they are, so a cache ``fl`` and a cache ``fl:x`` share the ``fl:`` start of their keys: the
layout keeps them apart (every key continues with a key family, which no name segment after a ':' may be) and
``flush`` of one never touches the other, though both scan ``fl:*``.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent_cache import AgentCache, AgentCacheUsageError, LlmStoreOptions, ToolStoreOptions
from agent_cache._keys import KeyLayout
from tests.integration.conftest import MakeCache

pytestmark = pytest.mark.valkey

PARAMS = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


async def _fill(cache: AgentCache) -> None:
    await cache.llm.store(PARAMS, f"answer of {cache.name}", LlmStoreOptions(tokens={"input": 1, "output": 1}))
    await cache.tool.store("get_weather", {"city": "Sofia"}, f"weather of {cache.name}", ToolStoreOptions(cost=0.1))
    await cache.session.set("thread", "f", f"state of {cache.name}")
    with cache.tenant("acme"):
        await cache.session.set("thread", "f", f"acme state of {cache.name}")
    assert (await cache.llm.check(PARAMS)).hit
    await cache.stats()  # flushes the counters into {name}:__stats


async def _keys_of(client: Any, pattern: str) -> set[str]:
    return {key.decode() async for key in client.scan_iter(match=pattern, count=1000)}


async def _all_keys(client: Any) -> set[str]:
    return await _keys_of(client, "*")


async def test_colon_names_work_and_every_key_belongs_to_exactly_one_cache(
    make_cache: MakeCache, backend_client: Any
) -> None:
    names = ("fl", "fl:x", "fl:x:y", "flx")
    caches = [make_cache(name=name) for name in names]
    for cache in caches:
        await _fill(cache)
    for cache in caches:
        assert (await cache.llm.check(PARAMS)).response == f"answer of {cache.name}"
        assert (await cache.tool.check("get_weather", {"city": "Sofia"})).response == f"weather of {cache.name}"
        assert await cache.session.get("thread", "f") == f"state of {cache.name}"
    keys = {key for key in await _all_keys(backend_client) if not key.startswith("__betterdb:")}
    for key in keys:
        owners = [name for name in names if KeyLayout(name).owns(key)]
        assert len(owners) == 1, (key, owners)
    assert any(key.startswith("fl:x:y:session:") for key in keys)


async def test_flush_of_fl_leaves_fl_x_untouched_and_the_other_way_round(
    make_cache: MakeCache, backend_client: Any
) -> None:
    parent, child, grandchild = make_cache(name="fl"), make_cache(name="fl:x"), make_cache(name="fl:x:y")
    for cache in (parent, child, grandchild):
        await _fill(cache)
    child_keys = {k for k in await _all_keys(backend_client) if KeyLayout("fl:x").owns(k)}
    grandchild_keys = {k for k in await _all_keys(backend_client) if KeyLayout("fl:x:y").owns(k)}
    assert await parent.flush() > 0
    after = await _all_keys(backend_client)
    assert child_keys <= after and grandchild_keys <= after
    assert (await child.llm.check(PARAMS)).hit
    assert await child.session.get("thread", "f") == "state of fl:x"
    assert not {k for k in after if KeyLayout("fl").owns(k)} - {"fl:__config", "fl:__tool_policies"}
    assert await child.flush() > 0
    assert grandchild_keys <= await _all_keys(backend_client)


async def test_a_name_whose_segment_is_a_key_family_is_refused(make_cache: MakeCache) -> None:
    for name in ("fl:llm", "fl:session", "fl:x:tool", "fl:checkpoint"):
        with pytest.raises(AgentCacheUsageError, match="cannot follow a ':'"):
            make_cache(name=name)
    for name in ("fl:", "fl::x", "fl:_x", "a b", "{fl}", "fl*"):
        with pytest.raises(AgentCacheUsageError, match="cache name"):
            make_cache(name=name)
