"""Key derivation and layout: documented test vectors, stability, collision-freedom."""

from __future__ import annotations

import enum
import hashlib
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_cache import _keys
from agent_cache._errors import AgentCacheUsageError, SerializationError
from agent_cache._keys import (
    KeyLayout,
    canonical_bytes,
    canonical_json,
    decode_segment,
    encode_segment,
    llm_hash,
    tool_hash,
    tool_stat_field,
    validate_cache_name,
)

# The vectors documented in the README ("Key derivation"). Changing them invalidates every cache.
VECTOR_PARAMS = {"model": "gpt-4o", "messages": [{"role": "user", "content": "What is Valkey?"}], "temperature": 0}
VECTOR_LLM = "2da6f64ee1a3a119f05a61d7066e8e7626df9c6baf14f6fc63dd82d1d4355927"
VECTOR_TOOL = "27835022152fc7f227fff58223514f5a794f3149a7908e709c9ebc2dc18ad231"


def test_documented_vectors() -> None:
    assert canonical_json(VECTOR_PARAMS) == (
        '{"messages":[{"content":"What is Valkey?","role":"user"}],"model":"gpt-4o","temperature":0}'
    )
    assert llm_hash(VECTOR_PARAMS) == VECTOR_LLM
    assert VECTOR_LLM == hashlib.sha256(canonical_json(VECTOR_PARAMS).encode()).hexdigest()
    assert tool_hash({"city": "Sofia", "units": "metric"}) == VECTOR_TOOL
    assert tool_hash({"units": "metric", "city": "Sofia"}) == VECTOR_TOOL


def test_numbers_and_transport_options_do_not_change_the_key() -> None:
    assert llm_hash({**VECTOR_PARAMS, "temperature": 0.0}) == VECTOR_LLM
    assert llm_hash({**VECTOR_PARAMS, "stream": True, "user": "u", "timeout": 3, "seed": None}) == VECTOR_LLM
    assert canonical_json({"x": -0.0, "y": 2.50, "z": [1.0]}) == '{"x":0,"y":2.5,"z":[1]}'
    assert canonical_json({"b": True, "i": 1}) != canonical_json({"b": 1, "i": 1})
    assert tool_hash(None) == tool_hash({})


@pytest.mark.parametrize(
    "param",
    [
        "max_completion_tokens",
        "reasoning_effort",
        "tool_choice",
        "response_format",
        "seed",
        "stop",
        "frequency_penalty",
        "presence_penalty",
        "n",
        "logit_bias",
        "some_future_param",
    ],
)
def test_every_answer_changing_parameter_is_in_the_key(param: str) -> None:
    assert llm_hash({**VECTOR_PARAMS, param: 1}) != VECTOR_LLM


def test_errors_name_the_path() -> None:
    with pytest.raises(SerializationError, match=r"params\.messages\[0\]\.content is a set"):
        llm_hash({"model": "m", "messages": [{"content": {1}}]})
    with pytest.raises(SerializationError, match=r"args\.a has a int key 1"):
        tool_hash({"a": {1: "x"}})
    with pytest.raises(SerializationError, match=r"args\.x is inf"):
        tool_hash({"x": float("inf")})
    with pytest.raises(AgentCacheUsageError, match="params must be a dict"):
        llm_hash(["model"])  # type: ignore[arg-type]


def test_cache_names_are_validated() -> None:
    for good in ("betterdb_ac", "myapp:prod", "a:b:c-1.x", "llm", "fl:Session", "x" * 128):
        assert validate_cache_name(good) == good
    for bad in ("", "a*", "{x}", "a b", "-lead", "a::b", "a:", ":a", "a:_x", "a:{b}", "x" * 129, None):
        with pytest.raises(AgentCacheUsageError, match="cache name"):
            validate_cache_name(bad)  # type: ignore[arg-type]
    for family in ("llm", "tool", "session", "checkpoint"):  # 'fl:llm' would be inside cache fl's key families
        with pytest.raises(AgentCacheUsageError, match=f"'{family}' after a ':'.*cache 'fl'"):
            validate_cache_name(f"fl:{family}")


name_segments = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,3}", fullmatch=True).filter(
    lambda s: s not in ("llm", "tool", "session", "checkpoint")
)
cache_names = st.lists(name_segments, min_size=1, max_size=3).map(":".join)
key_parts = st.sampled_from(("x", "a:b", "llm", "{t}", "%", "__stats", "*"))


def _some_keys(keys: KeyLayout, part: str) -> list[str]:
    return [
        keys.llm("ab" * 32),
        keys.llm("ab" * 32) + ":lock",
        keys.stats,
        keys.config,
        keys.tool_policies,
        keys.tool_prefix(part) + "ab",
        keys.tool_index(part),
        keys.model_index(part),
        keys.adapter_index(part),
        *keys.session_keys(part),
        *keys.session_keys(part, part),
        keys.checkpoint_prefix(part, part) + "data",
        keys.checkpoint_index(part),
        keys.checkpoint_run_index(part, part),
    ]


@given(cache_names, cache_names, key_parts)
def test_no_two_cache_names_share_or_own_each_others_keys(a: str, b: str, part: str) -> None:
    """``flush`` of ``fl`` scans ``fl:*``, which also matches cache ``fl:x``'s keys: ``owns`` must tell them apart."""
    first, second = KeyLayout(a), KeyLayout(b)
    for key in _some_keys(first, part):
        assert first.owns(key)
        assert second.owns(key) == (a == b), (a, b, key)


@given(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1), st.text(min_size=1))
def test_no_two_tenant_thread_pairs_share_a_key(tenant: str, thread: str, other_tenant: str, other: str) -> None:
    keys = KeyLayout("c")
    assert (keys.session_keys(thread, tenant) == keys.session_keys(other, other_tenant)) == (
        (tenant, thread) == (other_tenant, other)
    )
    assert keys.session_keys(thread, tenant) != keys.session_keys(other)  # never an untenanted thread's
    assert keys.checkpoint_prefix(thread, tenant) != keys.checkpoint_prefix(other)


def test_a_tenant_is_a_segment_of_its_own_in_the_hash_tag() -> None:
    keys = KeyLayout("c")
    assert keys.session_keys("x", "acme") == ("c:session:{acme:x}:", "c:__idx:session:{acme:x}")
    assert keys.session_keys("acme:x") == ("c:session:{acme%3Ax}:", "c:__idx:session:{acme%3Ax}")
    assert keys.checkpoint_index("x", "a:b") == "c:__idx:checkpoint:{a%3Ab:x}"
    assert keys.acl_key_patterns() == ("c:llm:*", "c:tool:*", "c:session:*", "c:checkpoint:*", "c:__*")


@given(st.lists(st.text(min_size=1), max_size=3))
def test_canonical_json_never_holds_a_raw_newline_so_a_tenant_scope_is_unambiguous(texts: list[str]) -> None:
    """``_digest`` hashes ``scope + "\\n" + canonical`` with a tenant, ``canonical`` without: injective as long as
    neither an encoded tenant nor canonical JSON holds a raw newline."""
    value = {"k\n": texts, "n": ["\n", "\r\n", 1.5]}
    assert b"\n" not in canonical_bytes(value)
    assert "\n" not in canonical_json(value)
    assert all("\n" not in encode_segment(text) for text in texts)


@given(st.one_of(st.none(), st.text(min_size=1)), st.text(), st.one_of(st.none(), st.text(min_size=1)), st.text())
def test_no_two_tenant_value_pairs_feed_the_hash_the_same_bytes(
    tenant: str | None, value: str, other_tenant: str | None, other: str
) -> None:
    def material(who: str | None, text: str) -> bytes:
        return _keys.scoped_canonical_bytes(encode_segment(who) if who else "", {"v": text}, "args")

    assert (material(tenant, value) == material(other_tenant, other)) == ((tenant, value) == (other_tenant, other))


def test_tenant_scope_never_collides_in_llm_and_tool_hashes() -> None:
    """The scope (an encoded tenant, never holding a newline) goes before canonical JSON, which never holds one."""
    params = {"model": "m", "messages": ["x"]}
    assert llm_hash(params, encode_segment("a")) != llm_hash(params)
    assert tool_hash("a\n{}") != tool_hash({}, encode_segment("a"))
    assert tool_hash(True, encode_segment("x")) != tool_hash(True, encode_segment("x\ntrue"))


def test_layout_puts_thread_and_tool_in_hash_tags() -> None:
    keys = KeyLayout("c")
    assert keys.llm("abc") == "c:llm:abc"
    assert keys.tool_prefix("get:weather") == "c:tool:{get%3Aweather}:"
    assert keys.session_prefix("t-1") == "c:session:{t-1}:"
    assert keys.session_index("t-1") == "c:__idx:session:{t-1}"
    assert keys.stats == "c:__stats"
    assert tool_stat_field("a:b", "hits") == "tool:a%3Ab:hits"


@given(st.text(min_size=1))
def test_any_name_round_trips_and_is_key_safe(name: str) -> None:
    encoded = encode_segment(name)
    assert decode_segment(encoded) == name
    assert not set(encoded) & set(":{}*?[]\\ \n\t")


@given(st.text(min_size=1), st.text(min_size=1))
def test_different_names_encode_differently(a: str, b: str) -> None:
    assert (encode_segment(a) == encode_segment(b)) == (a == b)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), json_values))
def test_key_order_never_matters(value: dict[str, object]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert tool_hash(value) == tool_hash(reordered)


def _same(a: object, b: object) -> bool:
    """Equality as the cache key sees it: 1 == 1.0, but True is not 1 and key order never matters."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _respell(value: object) -> object:
    """The same value spelled differently: floats for integers, keys reordered, tuples for lists."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return float(value) if abs(value) < 2**53 else value
    if isinstance(value, dict):
        return {k: _respell(v) for k, v in reversed(list(value.items()))}
    if isinstance(value, list):
        return tuple(_respell(v) for v in value)
    return value


@given(json_values, json_values)
def test_different_values_get_different_keys(a: object, b: object) -> None:
    args_a, args_b = ({} if v is None else v for v in (a, b))  # no arguments and {} are the same call
    assert (tool_hash(a) == tool_hash(b)) == _same(args_a, args_b)


@given(json_values)
def test_equal_values_spelled_differently_get_the_same_key(value: object) -> None:
    assert tool_hash(_respell(value)) == tool_hash(value)


# ── The fast path must derive exactly the keys the reference rules derive ────────────────────────────
#
# ``canonical_bytes`` (what the hot path hashes) skips the path-tracking copy for values that need no
# change and may encode with orjson; ``canonical_json`` is the reference. For every input both must give
# the same bytes, or both the same error — with and without orjson.

wide_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)  # beyond orjson's 64 bits
    | st.floats(allow_nan=False, allow_infinity=False)  # tiny, integral, huge, -0.0
    | st.floats(min_value=-1e-3, max_value=1e-3)  # around the exponent boundary of repr()
    | st.text(),
    lambda children: st.lists(children) | st.lists(children).map(tuple) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@pytest.fixture(params=["orjson", "stdlib"])
def encoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "stdlib":
        monkeypatch.setattr(_keys, "_orjson_dumps", None)
    elif _keys._orjson_dumps is None:
        pytest.skip("orjson is not installed")
    return str(request.param)


def _reference(value: object, path: str = "value") -> bytes:
    return canonical_json(value, path).encode()


def test_documented_vectors_hold_on_every_encoder(encoder: str) -> None:
    assert canonical_bytes(VECTOR_PARAMS) == _reference(VECTOR_PARAMS)
    assert llm_hash(VECTOR_PARAMS) == VECTOR_LLM
    assert llm_hash({**VECTOR_PARAMS, "temperature": 0.0, "stream": True}) == VECTOR_LLM
    assert tool_hash({"units": "metric", "city": "Sofia"}) == VECTOR_TOOL
    assert llm_hash(VECTOR_PARAMS, "acme") == hashlib.sha256(b"acme\n" + _reference(VECTOR_PARAMS)).hexdigest()


@given(wide_values)
def test_fast_path_matches_the_reference_with_orjson(value: object) -> None:
    assert canonical_bytes(value) == _reference(value)


@given(wide_values)
def test_fast_path_matches_the_reference_without_orjson(value: object) -> None:
    original = _keys._orjson_dumps
    _keys._orjson_dumps = None
    try:
        assert canonical_bytes(value) == _reference(value)
    finally:
        _keys._orjson_dumps = original


class Color(str, enum.Enum):  # noqa: UP042 - a (str, Enum) hashes as str(value), unlike a StrEnum
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Ratio(float):
    pass


class Ordered(dict):  # type: ignore[type-arg]
    pass


@pytest.mark.parametrize(
    "value",
    [
        {"t": 0.0, "u": -0.0, "v": 1e16, "w": [2.0, {"x": 3.0}]},  # integral floats become ints (copied)
        {"small": 1e-05, "edge": 1e-4, "tiny": 5e-324, "big": 1.5e300},
        {"big": 2**64, "neg": -(2**63) - 1, "max": 2**64 - 1},
        {"enum": Color.RED, "int_enum": Level.HIGH, "ratio": Ratio(2.0), "half": Ratio(0.5)},
        {"mapping": Ordered(b=1, a=2), "tuple": (1, (2.0, "x"))},
        {"s": 'é"\\\n\x00\x1f\x7f\u2028\U0001f600', "\U0001f600": 1, "\uffff": 2, "ÿ": 3},
        [[[[[[[[[[1.0]]]]]]]]]],
    ],
)
def test_fast_path_matches_the_reference_on_edge_cases(value: object, encoder: str) -> None:
    assert canonical_bytes(value) == _reference(value)


def test_fast_path_leaves_the_input_alone() -> None:
    value = {"a": [1.0, {"b": 2.0}], "c": "x"}
    snapshot = repr(value)
    canonical_bytes(value)
    assert repr(value) == snapshot


def test_deep_nesting_fails_the_same_way_on_every_encoder(encoder: str) -> None:
    shallow: object = 1
    for _ in range(300):  # deeper than orjson's limit, within Python's
        shallow = [shallow]
    assert canonical_bytes(shallow) == _reference(shallow)
    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(SerializationError, match="nested too deeply"):
        tool_hash(deep)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": {1: "x"}}, r"args\.a has a int key 1"),
        ({"a": [float("nan")]}, r"args\.a\[0\] is nan"),
        ({"a": {"b": float("-inf")}}, r"args\.a\.b is -inf"),
        ({"a": [{"b": {1, 2}}]}, r"args\.a\[0\]\.b is a set"),
        ({"a": b"bytes"}, r"args\.a is a bytes"),
        ({Color.RED: 1}, r"args has a Color key"),
    ],
)
def test_errors_name_the_path_on_every_encoder(value: object, message: str, encoder: str) -> None:
    with pytest.raises(SerializationError, match=message):
        tool_hash(value)


def test_a_lone_surrogate_is_a_serialization_error_naming_its_path(encoder: str) -> None:
    with pytest.raises(SerializationError, match=r"args\.a holds a lone surrogate"):
        tool_hash({"a": "\ud800"})


def test_without_orjson_the_package_works_and_derives_the_same_keys() -> None:
    code = (
        "import sys; sys.modules['orjson'] = None\n"
        "from agent_cache import _keys\n"
        "from agent_cache._codec import decode_entry\n"
        "assert _keys._orjson_dumps is None\n"
        "assert decode_entry(b'{\"response\":\"x\"}')['response'] == 'x'\n"
        f"print(_keys.llm_hash({VECTOR_PARAMS!r}), _keys.tool_hash({{'city': 'Sofia', 'units': 'metric'}}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [VECTOR_LLM, VECTOR_TOOL]
