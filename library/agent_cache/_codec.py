"""Encoding of stored entries — pure.

LLM and tool entries are compact JSON envelopes with the reference package's field names (``response``,
``contentBlocks``, ``model``, ``tokens``, ``cost``, ``storedAt``), so entries stay readable with
``valkey-cli`` and BetterDB Monitor. Session values are stored as the plain strings the caller gave.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from ._errors import AgentCacheUsageError, CorruptEntryError


def encode_entry(response: str, **extra: Any) -> str:
    if not isinstance(response, str):
        raise AgentCacheUsageError(f"response must be a string, got {type(response).__name__}")
    entry: dict[str, Any] = {"response": response, "storedAt": int(time.time() * 1000)}
    entry.update((k, v) for k, v in extra.items() if v is not None)
    try:
        return json.dumps(entry, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AgentCacheUsageError(f"entry cannot be stored as JSON: {exc}") from exc


def decode_entry(raw: bytes | str) -> dict[str, Any]:
    try:
        entry = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptEntryError(f"stored entry is not valid JSON: {exc}") from exc
    if not isinstance(entry, dict) or not isinstance(entry.get("response"), str):
        raise CorruptEntryError("stored entry has no string 'response' field")
    return entry


def flatten_text(blocks: Sequence[Any]) -> str:
    """The text of a multi-part response, for callers that only read ``response``."""
    if not isinstance(blocks, Sequence) or isinstance(blocks, str):
        raise AgentCacheUsageError(f"blocks must be a list of content blocks, got {type(blocks).__name__}")
    parts = []
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise AgentCacheUsageError(f"blocks[{i}] must be a dict with a string 'type'")
        if block["type"] == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def token_counts(tokens: dict[str, int] | None) -> tuple[int, int]:
    if tokens is None:
        return 0, 0
    counts = []
    for field in ("input", "output"):
        value = tokens.get(field, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise AgentCacheUsageError(f"tokens[{field!r}] must be a non-negative integer, got {value!r}")
        counts.append(value)
    return counts[0], counts[1]
