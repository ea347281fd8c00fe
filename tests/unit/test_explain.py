"""``agent_cache.explain``: the key it shows is the lookup's key; the differences it lists are the ones that count."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_cache import AgentCache
from agent_cache._errors import AgentCacheUsageError, SerializationError
from agent_cache._keys import KeyLayout, llm_hash
from agent_cache.explain import (
    ABSENT,
    FieldDifference,
    IgnoredParam,
    diff_requests,
    explain_llm_request,
)
from tests.unit.test_keys import VECTOR_LLM, VECTOR_PARAMS

KEYS = KeyLayout("support_bot")


def test_the_documented_vector_explained() -> None:
    request = {
        **VECTOR_PARAMS,
        "stream": True,
        "user": "u-1",
        "seed": None,
        "extra_headers": {"Authorization": "Bearer x", "anthropic-beta": "tools-2024", "X-Trace": None},
    }
    explained = explain_llm_request(request, KEYS)
    header_key = llm_hash(request)
    assert explained.key == KEYS.llm(header_key) and explained.digest == header_key
    assert explained.canonical_json == (
        '{"extra_headers":{"anthropic-beta":"tools-2024"},"messages":[{"content":"What is Valkey?","role":"user"}],'
        '"model":"gpt-4o","temperature":0}'
    )
    assert hashlib.sha256(explained.canonical_json.encode()).hexdigest() == explained.digest
    assert explained.included == ("extra_headers", "messages", "model", "temperature")
    assert explained.ignored == (
        IgnoredParam('extra_headers["Authorization"]', "transport header"),
        IgnoredParam('extra_headers["X-Trace"]', "None"),
        IgnoredParam("seed", "None"),
        IgnoredParam("stream", "transport-only"),
        IgnoredParam("user", "transport-only"),
    )
    assert explained.tenant is None
    assert explain_llm_request(VECTOR_PARAMS, KEYS).key == KEYS.llm(VECTOR_LLM)


def test_a_tenant_enters_the_hash_not_the_canonical_json() -> None:
    plain = explain_llm_request(VECTOR_PARAMS, KEYS)
    acme = explain_llm_request(VECTOR_PARAMS, KEYS, "acme")
    assert acme.tenant == "acme" and acme.canonical_json == plain.canonical_json
    assert acme.digest == llm_hash(VECTOR_PARAMS, "acme") != plain.digest
    assert acme.digest == hashlib.sha256(b"acme\n" + acme.canonical_json.encode()).hexdigest()
    odd = explain_llm_request(VECTOR_PARAMS, KEYS, "a:b c")  # encoded as the tier encodes it
    assert odd.digest == llm_hash(VECTOR_PARAMS, "a%3Ab%20c")


async def test_the_tier_explains_with_its_own_key_and_tenant(valkey_client: Any) -> None:
    cache = AgentCache(client=valkey_client, name="support_bot")
    try:
        request = {**VECTOR_PARAMS, "timeout": 30}
        assert cache.llm.explain(request).key == cache.llm.key(request)
        with cache.tenant("acme"):
            explained = cache.llm.explain(request)
            assert explained.key == cache.llm.key(request) and explained.tenant == "acme"
            stored = await cache.llm.store(request, "an answer")
        assert stored == explained.key and await valkey_client.exists(stored) == 1
    finally:
        await cache.close()


def test_differences_are_json_paths_of_what_the_key_sees() -> None:
    left = {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is Valkey?"}],
        "temperature": 0,
        "stream": True,
        "extra_headers": {"anthropic-beta": "a"},
    }
    right = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is valkey?"},
            {"role": "assistant", "content": "x"},
        ],
        "temperature": 0.0,  # the same number to the key
        "user": "someone",  # transport-only: never a difference
        "top_p": True,
        "extra_headers": {"Anthropic-Beta": "b", "Authorization": "Bearer y"},
    }
    assert diff_requests(left, right) == [
        FieldDifference('extra_headers["anthropic-beta"]', "a", "b"),
        FieldDifference("messages[1].content", "What is Valkey?", "What is valkey?"),
        FieldDifference("messages[2]", ABSENT, {"content": "x", "role": "assistant"}),
        FieldDifference("top_p", ABSENT, True),
    ]
    assert diff_requests(left, left) == []
    assert diff_requests({"model": "m", "n": 1}, {"model": "m", "n": True}) == [FieldDifference("n", 1, True)]
    assert FieldDifference("top_p", ABSENT, True).to_dict() == {"path": "top_p", "right": True}


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from([0.5, 1.0, 2.25]) | st.sampled_from("ab"),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["x", "y", "a b"]), inner, max_size=3),
    max_leaves=8,
)
_REQUESTS = st.fixed_dictionaries(
    {"model": st.sampled_from(["gpt-4o", "claude"])},
    optional={
        "messages": _JSON,
        "temperature": _JSON,
        "stream": _JSON,
        "seed": _JSON,
        "tools": _JSON,
        "extra_headers": st.dictionaries(
            st.sampled_from(["Authorization", "anthropic-beta", "Anthropic-Beta", "x-request-id", "x-feature"]),
            st.none() | st.sampled_from(["a", "b"]),
            max_size=3,
        ),
    },
)


@given(_REQUESTS, _REQUESTS)
def test_no_difference_exactly_when_the_keys_are_equal(left: dict[str, Any], right: dict[str, Any]) -> None:
    assert (diff_requests(left, right) == []) == (llm_hash(left) == llm_hash(right))


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"messages": []}, AgentCacheUsageError, "params.model must be a non-empty string"),
        ({"model": "m", "temperature": float("nan")}, SerializationError, "params.temperature is nan"),
        (["model"], AgentCacheUsageError, "params must be a dict"),
    ],
)
def test_bad_requests_fail_as_a_lookup_would(params: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        explain_llm_request(params, KEYS)
    with pytest.raises(error, match=message):
        diff_requests({"model": "m"}, params)
