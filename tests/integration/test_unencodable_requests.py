"""Text with no UTF-8 form (a lone surrogate, e.g. from a file decoded with surrogateescape or a model's output)
cannot be part of a key. It comes from data, not from the calling code, so a lookup treats it like an outage:
a miss with ``error`` under fail-open (the default), the error itself under ``on_error="raise"``."""

from __future__ import annotations

import pytest

from agent_cache import SerializationError, ToolPolicy
from agent_cache._errors import UnencodableTextError
from tests.integration.conftest import MakeCache, Observed

LONE = "caf\udce9"  # "café" read as latin-1 bytes with surrogateescape
PARAMS = {"model": "gpt-4o", "messages": [{"role": "user", "content": LONE}]}


def errors(observed: Observed, tier: str, operation: str) -> float:
    return observed.metric(
        "agent_cache_errors_total", cache_name="t", tier=tier, operation=operation, error="unencodable"
    )


async def test_an_llm_lookup_is_a_miss_and_get_or_compute_answers_uncached(
    make_cache: MakeCache, observed: Observed
) -> None:
    cache = make_cache()
    found = await cache.llm.check(PARAMS)
    assert (found.hit, found.key) == (False, None)
    assert found.error is not None and "params.messages[0].content holds a lone surrogate" in found.error
    assert errors(observed, "llm", "check") == 1
    calls = []

    async def model() -> str:
        calls.append(1)
        return "answer"

    for _ in range(2):  # never stored, so computed every time
        result = await cache.llm.get_or_compute(PARAMS, model)
        assert (result.hit, result.response, result.key) == (False, "answer", None) and result.error
    assert len(calls) == 2 and errors(observed, "llm", "get_or_compute") == 2


async def test_a_tool_lookup_is_a_miss_and_get_or_compute_answers_uncached(
    make_cache: MakeCache, observed: Observed
) -> None:
    cache = make_cache()
    await cache.tool.set_policy("search", ToolPolicy(ttl=60))
    found = await cache.tool.check("search", {"q": LONE})
    assert (found.hit, found.key) == (False, None) and "args.q holds a lone surrogate" in (found.error or "")

    async def search() -> str:
        return "results"

    result = await cache.tool.get_or_compute("search", {"q": LONE}, search)
    assert (result.hit, result.response) == (False, "results") and result.error
    assert errors(observed, "tool", "check") == 1 and errors(observed, "tool", "get_or_compute") == 1


async def test_under_on_error_raise_it_is_a_serialization_error_naming_the_path(make_cache: MakeCache) -> None:
    cache = make_cache(reliability={"on_error": "raise"})
    with pytest.raises(UnencodableTextError, match=r"params\.messages\[0\]\.content holds a lone surrogate"):
        await cache.llm.check(PARAMS)
    with pytest.raises(SerializationError, match=r"args\.q"):
        await cache.tool.check("search", {"q": LONE})


async def test_a_store_of_such_a_request_is_refused_loudly(make_cache: MakeCache) -> None:
    """Storing is the caller's decision: it gets the error (the adapters catch it and skip the store)."""
    cache = make_cache()
    with pytest.raises(SerializationError, match="lone surrogate"):
        await cache.llm.store(PARAMS, "answer")


async def test_only_if_cached_never_computes_such_a_request(make_cache: MakeCache) -> None:
    cache = make_cache()

    async def never() -> str:
        raise AssertionError("computed under only_if_cached")

    with cache.control(only_if_cached=True):
        llm = await cache.llm.get_or_compute(PARAMS, never)
        tool = await cache.tool.get_or_compute("search", {"q": LONE}, never)
    assert (llm.hit, llm.response, tool.hit, tool.response) == (False, None, False, None)
    assert llm.error and tool.error
