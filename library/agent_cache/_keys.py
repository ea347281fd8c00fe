"""Key derivation and the Valkey key layout — pure functions, no I/O.

Canonical JSON: object keys sorted recursively, compact separators, UTF-8, integral floats written as
integers (``0`` and ``0.0`` give the same key), ``None`` values dropped at the top level of LLM params
(an absent option and an explicit ``None`` are the same request). NaN, infinity, non-string object keys,
lone surrogates and values that are not JSON types are rejected with an error naming their path
(``params.messages[2]``).

Names (cache name aside) are percent-encoded before they go into a key, so any thread id, field, tool or
tenant name works and two different names never produce the same key: ``%``, ``:``, ``{``, ``}``, the glob
characters ``* ? [ ] \\``, whitespace and control characters become ``%XX``; everything else, unicode
included, stays readable. Thread and tool names sit inside a cluster hash tag (``{...}``) so one thread's
or one tool's keys share a slot while different threads spread over the cluster. A tenant's thread is the
tag ``{<tenant>:<thread>}``: both parts are encoded (no ``:`` of their own) and an untenanted thread's tag
has no ``:`` at all, so no (tenant, thread) pair shares a key with another. LLM and tool keys take the
encoded tenant into their hash instead (``_digest``: ``tenant + "\\n"`` before canonical JSON, which never
holds a raw newline).

Cache names are used as they are, so ``{name}:`` starts every key (existing keys stay readable): one or more
``:``-separated segments of ``A-Z a-z 0-9 _ . -``, each starting with a letter or digit — ``support_bot``,
``myapp:prod``. Right after ``{name}:`` every key continues with one of :data:`KEY_FAMILIES` (``llm:``,
``tool:``, ``session:``, ``checkpoint:``, ``__``), and a segment after the first may not be one of those
words, so the keys of ``fl`` and of ``fl:x`` can never meet: :meth:`KeyLayout.owns` tells them apart and
``flush`` of ``fl`` leaves ``fl:x`` alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import AgentCacheUsageError, SerializationError, UnencodableTextError

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

_NAME_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"
_CACHE_NAME = re.compile(rf"{_NAME_SEGMENT}(?::{_NAME_SEGMENT})*")
_CACHE_NAME_MAX = 128

KEY_FAMILIES = ("llm:", "tool:", "session:", "checkpoint:", "__")
"""What follows ``{name}:`` in every key of a cache. A name segment after the first may not be one of these
words (nor start with ``_``), so no cache's keys are another cache's: see :meth:`KeyLayout.owns`."""
_RESERVED_SEGMENTS = frozenset(family.rstrip(":") for family in KEY_FAMILIES if family != "__")

_ESCAPED = "%:{}*?[]\\" + "".join(chr(c) for c in range(0x21)) + "\x7f"
_ENCODE_TABLE = {ord(ch): f"%{ord(ch):02X}" for ch in _ESCAPED}
_PERCENT = re.compile(r"%([0-9A-F]{2})")


def validate_cache_name(name: str) -> str:
    """Cache names start every key, so they are ``:``-separated segments of ``A-Z a-z 0-9 _ . -`` (no glob,
    brace or space), each starting with a letter or digit, and no segment after the first is a key family."""
    if not isinstance(name, str) or len(name) > _CACHE_NAME_MAX or not _CACHE_NAME.fullmatch(name):
        raise AgentCacheUsageError(
            f"cache name {name!r} is invalid: use 1-{_CACHE_NAME_MAX} characters from A-Z a-z 0-9 _ . -, "
            "optionally in ':'-separated segments (myapp:prod), each starting with a letter or digit"
        )
    segments = name.split(":")
    for position, segment in enumerate(segments[1:], start=1):
        if segment in _RESERVED_SEGMENTS:
            raise AgentCacheUsageError(
                f"cache name {name!r} is invalid: {segment!r} after a ':' would mix its keys with those of cache "
                f"{':'.join(segments[:position])!r}; {', '.join(sorted(_RESERVED_SEGMENTS))} cannot follow a ':' "
                "in a cache name"
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
            raise UnencodableTextError(
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
    return hashlib.sha256(scoped_canonical_bytes(scope, value, path)).hexdigest()


def llm_key_material(params: Mapping[str, Any]) -> dict[str, Any]:
    """The answer-changing parts of an LLM request, as hashed by :func:`llm_hash`: without ``None`` values,
    transport-only options and transport headers (``agent_cache.explain`` shows what was left out and why)."""
    if type(params) is not dict and not isinstance(params, Mapping):
        raise AgentCacheUsageError(f"params must be a dict, got {type(params).__name__}")
    model = params.get("model")
    if not isinstance(model, str) or not model:
        raise AgentCacheUsageError("params.model must be a non-empty string")
    relevant = {k: v for k, v in params.items() if v is not None and k not in TRANSPORT_ONLY_PARAMS}
    if "extra_headers" in relevant and (headers := answer_headers(relevant.pop("extra_headers"))) is not None:
        relevant["extra_headers"] = headers
    return relevant


def llm_hash(params: Mapping[str, Any], scope: str = "") -> str:
    """Hash of every answer-changing part of an LLM request (and of the tenant scope, if any)."""
    return _digest(scope, llm_key_material(params), "params")


def scoped_canonical_bytes(scope: str, value: Any, path: str) -> bytes:
    """What :func:`llm_hash` and :func:`tool_hash` feed SHA-256: ``scope + "\\n"`` (with a tenant) + canonical JSON."""
    canonical = canonical_bytes(value, path)
    return scope.encode() + b"\n" + canonical if scope else canonical


def tool_hash(args: Any, scope: str = "") -> str:
    """Hash of a tool call's arguments (``None`` and ``{}`` are the same call)."""
    return _digest(scope, {} if args is None else args, "args")


class KeyLayout:
    """Every key of one cache, derived from its name. Documented in the README ("Valkey data model").

    Thread keys take the tenant (``tenant=``, the name given to ``cache.tenant(...)``; None: no tenant) as a
    segment of their own inside the hash tag: ``{acme:x}`` for thread ``x`` of tenant ``acme``, ``{x}`` without.
    """

    __slots__ = ("config", "llm_prefix", "name", "prefix", "stats", "tool_policies")

    def __init__(self, name: str) -> None:
        self.name = validate_cache_name(name)
        self.prefix = f"{name}:"
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

    @staticmethod
    def _scoped(value: str, what: str, tenant: str | None) -> str:
        """The hash tag of a thread (or run): ``<tenant>:<value>`` for a tenant, each part encoded on its own."""
        encoded = encode_segment(value, what)
        return f"{encode_segment(tenant, 'tenant')}:{encoded}" if tenant else encoded

    def session_prefix(self, thread_id: str, tenant: str | None = None) -> str:
        return self.session_keys(thread_id, tenant)[0]

    def session_index(self, thread_id: str, tenant: str | None = None) -> str:
        return self.session_keys(thread_id, tenant)[1]

    def session_keys(self, thread_id: str, tenant: str | None = None) -> tuple[str, str]:
        """``(session_prefix, session_index)`` of a thread, encoding its id once."""
        tag = self._scoped(thread_id, "thread id", tenant)
        return self._tagged("session", tag) + ":", self._tagged("__idx:session", tag)

    # LangGraph checkpoints (adapters.langgraph) share the session keys' hash tag: one thread, one slot.
    def checkpoint_prefix(self, thread_id: str, tenant: str | None = None) -> str:
        return self._tagged("checkpoint", self._scoped(thread_id, "thread id", tenant)) + ":"

    def checkpoint_index(self, thread_id: str, tenant: str | None = None) -> str:
        """Index of the thread's checkpoint keys (suffixes of ``checkpoint_prefix``), like a session index."""
        return self._tagged("__idx:checkpoint", self._scoped(thread_id, "thread id", tenant))

    def checkpoint_run_index(self, run_id: str, tenant: str | None = None) -> str:
        """Set of the threads (of ``tenant``) holding checkpoints of one LangGraph run (for ``delete_for_runs``)."""
        return self._tagged("__idx:checkpoint_run", self._scoped(run_id, "run id", tenant))

    def adapter_index(self, adapter: str) -> str:
        """LLM keys one framework adapter stored (e.g. ``langchain``), so it can clear only its own."""
        return self._tagged("__idx:adapter", encode_segment(adapter, "adapter"))

    def scan_pattern(self) -> str:
        """Every key of this cache matches; so may keys of ``{name}:...`` caches: keep those :meth:`owns`."""
        return f"{self.name}:*"

    def owns(self, key: str) -> bool:
        """Is ``key`` one of this cache's keys (not those of a cache named ``{name}:<more>``)?"""
        return key.startswith(self.prefix) and key.startswith(KEY_FAMILIES, len(self.prefix))

    def acl_key_patterns(self) -> tuple[str, ...]:
        """ACL key patterns covering exactly this cache's keys (``~{name}:*`` would cover ``{name}:x``'s too)."""
        return tuple(f"{self.prefix}{family}*" for family in KEY_FAMILIES)


def tool_stat_field(tool: str, counter: str) -> str:
    """Per-tool field of the stats hash, ``tool:{tool}:{counter}`` (BetterDB Monitor reads this)."""
    return f"tool:{encode_segment(tool, 'tool name')}:{counter}"
