"""Why did this request miss? The LLM key of a request, what entered it, and how two requests differ.

``cache.llm.explain(params)`` and ``agent-cache explain`` use these pure functions: they derive the key with the very
function the LLM tier hashes with (``_keys.llm_key_material``), so an explanation can never disagree with a lookup.

* :func:`explain_llm_request` — the key, the canonical JSON that was hashed, the parameters that entered it and the
  ones left out with the reason (transport-only option, ``None`` value, transport header);
* :func:`diff_requests` — the fields that differ between two requests' key material, as JSON paths
  (``messages[2].content``), after the rules that make ``0`` and ``0.0`` or key order irrelevant.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ._keys import (
    TRANSPORT_ONLY_PARAMS,
    KeyLayout,
    canonical_bytes,
    encode_segment,
    is_transport_header,
    llm_hash,
    llm_key_material,
)

__all__ = [
    "ABSENT",
    "FieldDifference",
    "IgnoredParam",
    "LlmKeyExplanation",
    "diff_requests",
    "explain_llm_request",
]

TRANSPORT_ONLY: Final = "transport-only"
"""Reason: a request option that never changes the answer (``stream``, ``timeout``, ``user``...)."""
NONE_VALUE: Final = "None"
"""Reason: the value is ``None`` — an absent option and an explicit ``None`` are the same request."""
TRANSPORT_HEADER: Final = "transport header"
"""Reason: an ``extra_headers`` entry that only carries credentials, tracing or HTTP plumbing."""


class _Absent:
    """The side of a difference where the field does not exist."""

    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT: Final = _Absent()


@dataclass(frozen=True)
class IgnoredParam:
    """A part of the request that did not enter the key, and why (:data:`TRANSPORT_ONLY`, ...)."""

    path: str
    """``stream``, or ``extra_headers["Authorization"]`` for a header."""
    reason: str


@dataclass(frozen=True)
class LlmKeyExplanation:
    """What an LLM request's cache key is made of."""

    key: str
    """The Valkey key (``{name}:llm:{sha256}``)."""
    digest: str
    """The SHA-256 of ``tenant + "\\n"`` (with a tenant) and :attr:`canonical_json`."""
    canonical_json: str
    """The canonical JSON of the key material: what two requests must share, byte for byte, to share an answer."""
    included: tuple[str, ...]
    """Top-level parameters that entered the key, sorted."""
    ignored: tuple[IgnoredParam, ...]
    """Parameters (and headers) left out, with the reason."""
    tenant: str | None
    """The tenant scope mixed into the hash (``cache.tenant(...)``), None without one."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``agent-cache explain --json``)."""
        return {
            "key": self.key,
            "tenant": self.tenant,
            "included": list(self.included),
            "ignored": [{"path": item.path, "reason": item.reason} for item in self.ignored],
            "canonical_json": self.canonical_json,
        }


@dataclass(frozen=True)
class FieldDifference:
    """One field of the key material whose value differs (:data:`ABSENT` where a side lacks it)."""

    path: str
    left: Any = ABSENT
    right: Any = ABSENT

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"path": self.path}
        if self.left is not ABSENT:
            document["left"] = self.left
        if self.right is not ABSENT:
            document["right"] = self.right
        return document


def _ignored(params: Mapping[str, Any]) -> list[IgnoredParam]:
    """What ``llm_key_material`` leaves out of ``params``, with its reason (the same rules, spelled out)."""
    ignored = []
    for name in sorted(params, key=str):
        value = params[name]
        if name in TRANSPORT_ONLY_PARAMS:
            ignored.append(IgnoredParam(str(name), TRANSPORT_ONLY))
        elif value is None:
            ignored.append(IgnoredParam(str(name), NONE_VALUE))
        elif name == "extra_headers" and isinstance(value, Mapping):
            for header in sorted(value, key=str):
                path = f"extra_headers[{json.dumps(header, ensure_ascii=False)}]"
                if value[header] is None:
                    ignored.append(IgnoredParam(path, NONE_VALUE))
                elif isinstance(header, str) and is_transport_header(header):
                    ignored.append(IgnoredParam(path, TRANSPORT_HEADER))
    return ignored


def explain_llm_request(params: Mapping[str, Any], keys: KeyLayout, tenant: str | None = None) -> LlmKeyExplanation:
    """The key of ``params`` in the cache ``keys`` describes, under ``tenant`` (None: no tenant).

    Raises what a lookup would raise for the same request (``AgentCacheUsageError``, ``SerializationError``).
    """
    scope = encode_segment(tenant, "tenant") if tenant else ""
    material = llm_key_material(params)
    digest = llm_hash(params, scope)
    return LlmKeyExplanation(
        key=keys.llm(digest),
        digest=digest,
        canonical_json=canonical_bytes(material, "params").decode(),
        included=tuple(sorted(material)),
        ignored=tuple(_ignored(params)),
        tenant=tenant or None,
    )


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _child(path: str, name: str) -> str:
    if _IDENTIFIER.fullmatch(name):
        return f"{path}.{name}" if path else name
    return f"{path}[{json.dumps(name, ensure_ascii=False)}]"


def _walk(path: str, left: Any, right: Any, out: list[FieldDifference]) -> None:
    if isinstance(left, dict) and isinstance(right, dict):
        for name in sorted(left.keys() | right.keys()):
            _walk(_child(path, name), left.get(name, ABSENT), right.get(name, ABSENT), out)
    elif isinstance(left, list) and isinstance(right, list):
        for index in range(max(len(left), len(right))):
            _walk(
                f"{path}[{index}]",
                left[index] if index < len(left) else ABSENT,
                right[index] if index < len(right) else ABSENT,
                out,
            )
    elif left is ABSENT or right is ABSENT or type(left) is not type(right) or left != right:
        out.append(FieldDifference(path, left, right))


def diff_requests(left: Mapping[str, Any], right: Mapping[str, Any]) -> list[FieldDifference]:
    """The fields of the key material that differ between two LLM requests, in path order.

    Values are compared as the key sees them (canonical JSON: ``0`` equals ``0.0``, key order and ignored parameters
    do not count; ``true`` differs from ``1``). An empty list means both requests have the same key (same tenant).
    """
    sides = [json.loads(canonical_bytes(llm_key_material(side), "params")) for side in (left, right)]
    differences: list[FieldDifference] = []
    _walk("", sides[0], sides[1], differences)
    return differences
