"""Per-model TTL and storage policies, matched by glob pattern — pure.

``cache.llm.set_model_policy("gpt-4o*", ModelPolicy(ttl=3600))`` stores a policy in the ``{name}:__model_policies``
hash (field = pattern, value = JSON as in the CRD's ``spec.modelPolicies``: ``{"ttl": 3600, "cacheable": false,
"cacheFinishReasons": ["stop"], "cacheEmpty": false}``), like tool policies; a live config's ``modelPolicies`` are
mirrored there and win per pattern, the application's other patterns stay.

Patterns are shell-style globs on the request's ``model`` (``*``, ``?``, ``[abc]``, ``[!abc]``; case-sensitive).
When several match, the most specific wins: an exact name (no wildcard) first, then the pattern with the most
literal characters, then the longer pattern, then the alphabetically first (so the choice never depends on order).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import translate
from typing import Any

from .._errors import AgentCacheUsageError
from .._keys import KeyLayout
from .._ttl import validate_ttl

MAX_PATTERN_LENGTH = 256
_MATCHES_CACHED = 1024


@dataclass(frozen=True)
class ModelPolicy:
    """How the LLM tier treats the answers of the models a pattern matches."""

    ttl: int | None = None
    """TTL of their entries (a per-call TTL still wins; below it, this wins over every tier default)."""
    cacheable: bool = True
    """False: never cached (``check`` is a miss without a round trip, stores do nothing)."""
    cache_finish_reasons: Collection[str] | None = None
    """Store only answers that finished with one of these reasons (None: any). The adapters record a
    provider-neutral reason (``stop``, ``tool_calls``, ``length``, ``stop_sequence``, ``refusal``); a raw
    ``cache.llm.store`` gives it as ``LlmStoreOptions(finish_reason=...)`` or ``metadata["finish"]``, and one
    that gives none counts as ``stop``. ``{"stop", "tool_calls"}`` refuses truncated answers (``length``). Kept as
    a ``frozenset``."""
    cache_empty: bool = True
    """False: an answer with no text and no other content block is not stored."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "ttl", validate_ttl(self.ttl, "ModelPolicy.ttl"))
        if not isinstance(self.cacheable, bool):
            raise AgentCacheUsageError(f"ModelPolicy.cacheable must be True or False, got {self.cacheable!r}")
        if not isinstance(self.cache_empty, bool):
            raise AgentCacheUsageError(f"ModelPolicy.cache_empty must be True or False, got {self.cache_empty!r}")
        reasons = self.cache_finish_reasons
        if reasons is not None:
            object.__setattr__(
                self, "cache_finish_reasons", finish_reasons(reasons, "ModelPolicy.cache_finish_reasons")
            )

    def refusal(self, finish: str | None, empty: bool) -> str | None:
        """Why an answer may not be stored under this policy (a bypass reason), or None to store it."""
        if not self.cacheable:
            return "not_cacheable"
        if self.cache_finish_reasons is not None and (finish or "stop") not in self.cache_finish_reasons:
            return "finish_reason"
        if empty and not self.cache_empty:
            return "empty"
        return None


def finish_reasons(value: object, what: str) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise AgentCacheUsageError(
            f"{what} must be a list of finish reasons (e.g. ['stop', 'tool_calls']), got {value!r}"
        )
    reasons = list(value)
    bad = [reason for reason in reasons if not isinstance(reason, str) or not reason]
    if bad:
        raise AgentCacheUsageError(f"{what} must hold non-empty strings, got {bad!r}")
    return frozenset(reasons)


def validate_pattern(pattern: object, what: str = "model policy pattern") -> str:
    """A glob is a non-empty string whose ``[`` sets are closed (``[]]`` is the set of ``]``, as in fnmatch); the
    error names the pattern."""
    if not isinstance(pattern, str) or not pattern:
        raise AgentCacheUsageError(f"{what} must be a non-empty string, got {pattern!r}")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise AgentCacheUsageError(f"{what} {pattern!r} is longer than {MAX_PATTERN_LENGTH} characters")
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] == "!":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1  # a leading ] belongs to the set
            close = pattern.find("]", j)
            if close == -1:  # fnmatch would match the '[' literally: almost certainly not what was meant
                raise AgentCacheUsageError(f"{what} {pattern!r} is not a valid glob: '[' at {i} is never closed")
            i = close
        i += 1
    return pattern


_WILDCARD = re.compile(r"\[[^\]]*\]|[*?]")


def specificity(pattern: str) -> tuple[int, int, int, str]:
    """Sort key, most specific first: exact names, then most literal characters, then longest."""
    literal = len(_WILDCARD.sub("", pattern))
    exact = _WILDCARD.search(pattern) is None
    return (0 if exact else 1, -literal, -len(pattern), pattern)


class ModelPolicyTable:
    """The policies in force: the application's, with the live config's over them per pattern."""

    def __init__(self, own: Mapping[str, ModelPolicy], live: Mapping[str, ModelPolicy]) -> None:
        merged = {**own, **live}
        self.policies: dict[str, ModelPolicy] = dict(sorted(merged.items()))
        ordered = sorted(merged, key=specificity)
        self._compiled = [(re.compile(translate(p)), merged[p]) for p in ordered]
        self._matches: dict[str, ModelPolicy | None] = {}

    def __bool__(self) -> bool:
        return bool(self._compiled)

    def for_model(self, model: str) -> ModelPolicy | None:
        """The policy of the most specific pattern matching ``model`` (None: no pattern matches)."""
        if not self._compiled:
            return None
        try:
            return self._matches[model]
        except KeyError:
            pass
        found = next((policy for compiled, policy in self._compiled if compiled.match(model)), None)
        if len(self._matches) >= _MATCHES_CACHED:
            self._matches.clear()
        self._matches[model] = found
        return found


EMPTY_TABLE = ModelPolicyTable({}, {})


# ── the stored form ────────────────────────────────────────────────────────────


def model_policies_key(keys: KeyLayout) -> str:
    return f"{keys.name}:__model_policies"


def owned_model_policies_key(keys: KeyLayout) -> str:
    """The patterns the live config owns, with the application's policy of each kept aside ('' for none); hash
    tag: the policies key, so one script updates both on a cluster."""
    policies = model_policies_key(keys)
    return f"{policies}:{{{policies}}}:config_owned"


def model_policy_document(policy: ModelPolicy) -> dict[str, Any]:
    """The JSON form (the CRD's ``spec.modelPolicies`` entry): only what differs from the defaults."""
    document: dict[str, Any] = {}
    if policy.ttl is not None:
        document["ttl"] = policy.ttl
    if not policy.cacheable:
        document["cacheable"] = False
    if policy.cache_finish_reasons is not None:
        document["cacheFinishReasons"] = sorted(policy.cache_finish_reasons)
    if not policy.cache_empty:
        document["cacheEmpty"] = False
    return document


MODEL_POLICY_FIELDS = ("ttl", "cacheable", "cacheFinishReasons", "cacheEmpty")


def parse_model_policy(document: object, where: str) -> ModelPolicy:
    """A policy from its JSON form; an unknown field or a bad value raises, naming ``where``."""
    if not isinstance(document, Mapping):
        raise AgentCacheUsageError(f"{where} must be an object, got {document!r}")
    unknown = sorted(str(key) for key in document if key not in MODEL_POLICY_FIELDS)
    if unknown:
        raise AgentCacheUsageError(f"{where} has unknown field(s) {unknown}; valid: {list(MODEL_POLICY_FIELDS)}")
    reasons = document.get("cacheFinishReasons")
    try:
        return ModelPolicy(
            ttl=validate_ttl(document.get("ttl"), f"{where}.ttl"),
            cacheable=_flag(document.get("cacheable", True), f"{where}.cacheable"),
            cache_finish_reasons=None if reasons is None else finish_reasons(reasons, f"{where}.cacheFinishReasons"),
            cache_empty=_flag(document.get("cacheEmpty", True), f"{where}.cacheEmpty"),
        )
    except AgentCacheUsageError:
        raise
    except ValueError as exc:  # pragma: no cover - every check above raises the usage error
        raise AgentCacheUsageError(f"{where}: {exc}") from None


def _flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise AgentCacheUsageError(f"{where} must be true or false, got {value!r}")
    return value


def parse_stored(pattern: str, raw: bytes | str) -> ModelPolicy:
    """A policy as read from the ``__model_policies`` hash."""
    where = f"model policy {pattern!r}"
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise AgentCacheUsageError(f"{where} is not JSON: {exc}") from None
    validate_pattern(pattern)
    return parse_model_policy(document, where)
