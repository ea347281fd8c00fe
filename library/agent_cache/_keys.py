"""Key derivation and the Valkey key layout — pure functions, no I/O.

Canonical JSON: object keys sorted recursively, compact separators, UTF-8, integral floats written as
integers (``0`` and ``0.0`` give the same key), ``None`` values dropped at the top level of LLM params
(an absent option and an explicit ``None`` are the same request). NaN, infinity, non-string object keys,
lone surrogates and values that are not JSON types are rejected with an error naming their path
(``params.messages[2]``).

Names (cache name aside) are percent-encoded before they go into a key, so any thread id, field or tool
name works and two different names never produce the same key: ``%``, ``:``, ``{``, ``}``, the glob
characters ``* ? [ ] \\``, whitespace and control characters become ``%XX``; everything else, unicode
included, stays readable. Thread and tool names sit inside a cluster hash tag (``{...}``) so one thread's
or one tool's keys share a slot while different threads spread over the cluster.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import AgentCacheUsageError, SerializationError

# Request options that never change the model's answer. Everything else in an LLM request is part of
# the key — including options we have never heard of, so a new provider parameter can't collide.
TRANSPORT_ONLY_PARAMS = frozenset(
    {
        "stream",
        "stream_options",
        "timeout",
        "extra_query",
        "user",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
        "idempotency_key",
    }
)

# ``extra_headers`` is filtered, not dropped: a header can select a model feature (``anthropic-beta``,
# ``anthropic-version``, ``openai-beta``, a gateway's routing header), so every header is part of the key except the
# ones that only carry credentials, tracing, the SDKs' own telemetry or HTTP plumbing. Names are compared in lower
# case. An unknown header costs a hit at worst; dropping one could make two different requests share an answer.
TRANSPORT_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "api-key",
        "x-api-key",
        "openai-organization",
        "openai-project",
        "user-agent",
        "accept",
        "accept-encoding",
        "content-type",
        "content-length",
        "connection",
        "host",
        "idempotency-key",
        "request-id",
        "x-request-id",
        "x-client-request-id",
        "x-correlation-id",
        "traceparent",
        "tracestate",
        "baggage",
        "sentry-trace",
        "x-amzn-trace-id",
        "x-cloud-trace-context",
    }
)
TRANSPORT_HEADER_PREFIXES = ("x-stainless-", "x-b3-", "x-datadog-", "x-amz-", "x-ot-", "uber-trace-")
TRANSPORT_HEADER_SUFFIXES = ("-api-key", "-auth", "-authorization", "-token")


def is_transport_header(name: str) -> bool:
    """Does request header ``name`` only carry credentials, tracing or plumbing (never part of a key)?"""
    lowered = name.strip().lower()
    return (
        lowered in TRANSPORT_HEADERS
        or lowered.startswith(TRANSPORT_HEADER_PREFIXES)
        or lowered.endswith(TRANSPORT_HEADER_SUFFIXES)
    )


def answer_headers(headers: Any) -> Any:
    """The headers of ``extra_headers`` that can change an answer, names in lower case (None when there are none).

    A value that is not a mapping is returned unchanged, for canonical JSON to accept or reject with its path.
    Repeated names (``Anthropic-Beta`` and ``anthropic-beta``) are joined with ``", "`` as HTTP joins them.
    """
    if not isinstance(headers, Mapping):
        return headers
    kept: dict[Any, Any] = {}
    for name in sorted(headers, key=str):
        value = headers[name]
        if value is None or not isinstance(name, str):
            if value is not None:
                kept[name] = value  # a non-string name: canonical JSON names it in its error
            continue
        if is_transport_header(name):
            continue
        lowered = name.strip().lower()
        kept[lowered] = f"{kept[lowered]}, {value}" if lowered in kept else value
    return kept or None


# Parameters we know change the answer (documentation and tests; the key includes them by default).
ANSWER_CHANGING_PARAMS = (
    "model",
    "messages",
    "system",
    "input",
    "instructions",
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "text",
    "seed",
    "stop",
    "stop_sequences",
    "reasoning_effort",
    "reasoning",
    "thinking",
    "frequency_penalty",
    "presence_penalty",
    "n",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "modalities",
    "audio",
    "prediction",
    "verbosity",
    "web_search_options",
    "extra_body",
)

_CACHE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")

_ESCAPED = "%:{}*?[]\\" + "".join(chr(c) for c in range(0x21)) + "\x7f"
_ENCODE_TABLE = {ord(ch): f"%{ord(ch):02X}" for ch in _ESCAPED}
_PERCENT = re.compile(r"%([0-9A-F]{2})")


def validate_cache_name(name: str) -> str:
    """Cache names become the prefix of every key, so they may not contain separators or glob characters."""
    if not isinstance(name, str) or not _CACHE_NAME.fullmatch(name):
        raise AgentCacheUsageError(
            f"cache name {name!r} is invalid: use 1-128 characters from A-Z a-z 0-9 _ . - "
            "starting with a letter or digit"
        )
    return name


def encode_segment(value: str, what: str = "name") -> str:
    """Percent-encode a user-supplied name so it is safe and unambiguous inside a key."""
    if not isinstance(value, str):
        raise AgentCacheUsageError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise AgentCacheUsageError(f"{what} must not be empty")
    return value.translate(_ENCODE_TABLE)


def decode_segment(encoded: str) -> str:
    """Inverse of :func:`encode_segment`."""
    return _PERCENT.sub(lambda m: chr(int(m.group(1), 16)), encoded)


def _normalize(value: Any, path: str) -> Any:
    """The reference implementation of the rules: a normalized copy, with the path of any offending value.

    Hot paths go through :func:`_plain` first and come here only for the values it declines.
    """
    kind = type(value)
    if kind is str:
        return _utf8(value, path)
    if kind is bool or kind is int or value is None:
        return value
    if kind is float:
        if not math.isfinite(value):
            raise SerializationError(f"{path} is {value!r}; NaN and infinity cannot be part of a cache key")
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise SerializationError(f"{path} has a {type(key).__name__} key {key!r}; object keys must be strings")
            out[_utf8(key, f"{path} key {key!r}")] = _normalize(item, f"{path}.{key}")
        return out
    if kind is list or kind is tuple:
        return [_normalize(item, f"{path}[{i}]") for i, item in enumerate(value)]
    # Subclasses of the JSON scalars (str/int enums, numpy.float64) hash like their base value.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return _utf8(str(value), path)
    if isinstance(value, float):
        return _normalize(float(value), path)
    raise SerializationError(
        f"{path} is a {kind.__name__}, which is not JSON-serializable; pass str, int, float, bool, None, list or dict"
    )


def _utf8(text: str, path: str) -> str:
    """``text`` if it can be written as UTF-8; a lone surrogate (``"\\ud800"``) has no UTF-8 form."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            raise SerializationError(
                f"{path} holds a lone surrogate ({text[exc.start]!r} at index {exc.start}), which is not valid "
                "Unicode text and cannot be part of a cache key"
            ) from None
    return text


# ── the fast path ────────────────────────────────────────────────────────────────────────────────────
#
# Almost every request is already made of exact dicts, lists, strings, ints, bools and None, with a few
# floats. For those, ``_plain`` returns the value itself (nothing to copy) — or a copy of just the
# containers above an integral float — and never formats a path. Anything else (subclasses, non-string
# keys, NaN, tiny floats, absurd nesting) returns ``_SLOW`` and takes ``_normalize``, which applies the
# same rules and names the offending path, so both routes produce the same bytes or the same error.

_SLOW: Any = object()
_LEAVES = frozenset({str, int, bool, type(None)})
# Non-integral floats at least this large print without an exponent, where json and orjson agree digit
# for digit (both print the shortest round-tripping repr); smaller ones take the slow route.
_PLAIN_FLOAT_MIN = 1e-4


def _plain(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        changed: dict[str, Any] | None = None
        for key, item in value.items():
            if type(key) is not str:
                return _SLOW
            if type(item) in _LEAVES:
                continue
            new = _plain(item)
            if new is not item:
                if new is _SLOW:
                    return _SLOW
                if changed is None:
                    changed = {}
                changed[key] = new
        return value if changed is None else {**value, **changed}
    if kind is list or kind is tuple:  # json writes a tuple as an array: no copy needed for that
        copied: list[Any] | None = None
        for index, item in enumerate(value):
            if type(item) in _LEAVES:
                continue
            new = _plain(item)
            if new is not item:
                if new is _SLOW:
                    return _SLOW
                if copied is None:
                    copied = list(value)
                copied[index] = new
        return value if copied is None else copied
    if kind in _LEAVES:
        return value
    if kind is float:
        if not math.isfinite(value):
            return _SLOW
        if value.is_integer():
            return int(value)
        return value if abs(value) >= _PLAIN_FLOAT_MIN else _SLOW
    return _SLOW


def plain_json_value(value: Any) -> bool:
    """Is ``value`` made only of exact JSON types, with finite floats that every encoder writes alike?"""
    try:
        return _plain(value) is not _SLOW
    except RecursionError:
        return False


_stdlib_dumps = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
).encode


def _load_orjson() -> Callable[[Any], bytes] | None:
    """orjson's encoder (``pip install "agent-cache[fast]"``), if installed and byte-identical to json's here.

    It agrees with ``json.dumps(sort_keys=True, ensure_ascii=False)`` on every string (all code points),
    key order, integer and exponent-free float; ``_plain`` keeps everything else away from it, and values
    orjson refuses (ints beyond 64 bits, lone surrogates, nesting over 255) fall back to json.
    """
    try:
        import orjson
    except ImportError:
        return None
    option = orjson.OPT_SORT_KEYS

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value, option=option)

    probe = {"b": [1, 0.5, True, None, '\u00e9"\\\n\x01\x7f\u2028\U0001f600'], "a": {"\u00ff": 1, "z": -3.25}}
    return dumps if dumps(probe) == _stdlib_dumps(probe).encode() else None


_orjson_dumps = _load_orjson()


def canonical_bytes(value: Any, path: str = "value") -> bytes:
    """:func:`canonical_json` as UTF-8 bytes, ready to hash."""
    try:
        plain = _plain(value)
        if plain is not _SLOW:
            if _orjson_dumps is not None:
                try:
                    return _orjson_dumps(plain)
                except TypeError:  # orjson.JSONEncodeError: let json decide (or raise as it always did)
                    pass
            return _stdlib_dumps(plain).encode()
    except (RecursionError, UnicodeEncodeError):  # the slow route names the path of what went wrong
        pass
    return canonical_json(value, path).encode()


def canonical_json(value: Any, path: str = "value") -> str:
    """Deterministic JSON text for hashing (see the module docstring for the rules)."""
    try:
        normalized = _normalize(value, path)
    except RecursionError:
        raise SerializationError(f"{path} is nested too deeply to be part of a cache key") from None
    return json.dumps(normalized, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(_utf8(text, "text").encode()).hexdigest()


def _digest(scope: str, value: Any, path: str) -> str:
    # A scope is an encoded name (no newline), so "scope\n" can't be the start of canonical JSON.
    canonical = canonical_bytes(value, path)
    if scope:
        canonical = scope.encode() + b"\n" + canonical
    return hashlib.sha256(canonical).hexdigest()


def llm_hash(params: Mapping[str, Any], scope: str = "") -> str:
    """Hash of every answer-changing part of an LLM request (and of the tenant scope, if any)."""
    if type(params) is not dict and not isinstance(params, Mapping):
        raise AgentCacheUsageError(f"params must be a dict, got {type(params).__name__}")
    model = params.get("model")
    if not isinstance(model, str) or not model:
        raise AgentCacheUsageError("params.model must be a non-empty string")
    relevant = {k: v for k, v in params.items() if v is not None and k not in TRANSPORT_ONLY_PARAMS}
    if "extra_headers" in relevant and (headers := answer_headers(relevant.pop("extra_headers"))) is not None:
        relevant["extra_headers"] = headers
    return _digest(scope, relevant, "params")


def tool_hash(args: Any, scope: str = "") -> str:
    """Hash of a tool call's arguments (``None`` and ``{}`` are the same call)."""
    return _digest(scope, {} if args is None else args, "args")


class KeyLayout:
    """Every key of one cache, derived from its name. Documented in the README ("Valkey data model")."""

    __slots__ = ("config", "llm_prefix", "name", "stats", "tool_policies")

    def __init__(self, name: str) -> None:
        self.name = validate_cache_name(name)
        self.llm_prefix = f"{name}:llm:"
        self.stats = f"{name}:__stats"
        self.tool_policies = f"{name}:__tool_policies"
        self.config = f"{name}:__config"

    def llm(self, digest: str) -> str:
        return self.llm_prefix + digest

    def _tagged(self, family: str, encoded: str) -> str:
        """``{name}:{family}:{<encoded>}`` — the braces make the encoded name the cluster hash tag."""
        return f"{self.name}:{family}:{{{encoded}}}"

    def model_index(self, model: str) -> str:
        return self._tagged("__idx:llm", encode_segment(model, "model"))

    def tool_prefix(self, tool: str) -> str:
        return self._tagged("tool", encode_segment(tool, "tool name")) + ":"

    def tool_index(self, tool: str) -> str:
        return self._tagged("__idx:tool", encode_segment(tool, "tool name"))

    def session_prefix(self, thread_id: str) -> str:
        return self.session_keys(thread_id)[0]

    def session_index(self, thread_id: str) -> str:
        return self.session_keys(thread_id)[1]

    def session_keys(self, thread_id: str) -> tuple[str, str]:
        """``(session_prefix, session_index)`` of a thread, encoding its id once."""
        encoded = encode_segment(thread_id, "thread id")
        return self._tagged("session", encoded) + ":", self._tagged("__idx:session", encoded)

    # LangGraph checkpoints (adapters.langgraph) share the session keys' hash tag: one thread, one slot.
    def checkpoint_prefix(self, thread_id: str) -> str:
        return self._tagged("checkpoint", encode_segment(thread_id, "thread id")) + ":"

    def checkpoint_index(self, thread_id: str) -> str:
        """Index of the thread's checkpoint keys (suffixes of ``checkpoint_prefix``), like a session index."""
        return self._tagged("__idx:checkpoint", encode_segment(thread_id, "thread id"))

    def checkpoint_run_index(self, run_id: str) -> str:
        """Set of the threads holding checkpoints of one LangGraph run (for ``delete_for_runs``)."""
        return self._tagged("__idx:checkpoint_run", encode_segment(run_id, "run id"))

    def adapter_index(self, adapter: str) -> str:
        """LLM keys one framework adapter stored (e.g. ``langchain``), so it can clear only its own."""
        return self._tagged("__idx:adapter", encode_segment(adapter, "adapter"))

    def scan_pattern(self) -> str:
        """Matches this cache's keys only: names cannot contain ':' or glob characters."""
        return f"{self.name}:*"


def tool_stat_field(tool: str, counter: str) -> str:
    """Per-tool field of the stats hash, ``tool:{tool}:{counter}`` (BetterDB Monitor reads this)."""
    return f"tool:{encode_segment(tool, 'tool name')}:{counter}"
