"""Encoding of stored entries — pure.

LLM and tool entries are compact JSON envelopes with the reference package's field names (``response``,
``contentBlocks``, ``model``, ``tokens``, ``cost``, ``storedAt``), so entries stay readable with
``valkey-cli`` and BetterDB Monitor. Session values are stored as the plain strings the caller gave.

An envelope above ``StorageOptions.compress_above_bytes`` (1 KB by default) is stored as a two-byte marker,
``NUL`` + ``z``, then the zlib-compressed envelope: JSON text never starts with NUL, so a reader tells the
two apart by the first byte. The library reads entries as bytes whatever the client's ``decode_responses``
(see ``Backend.get``), so a binary value suits every client; a 2 KB English answer takes ~1 KB this way.
Earlier versions' compressed entries (``NUL`` + ``Z``, then the compressed envelope as base64) still decode.
With ``agent-cache[fast]`` installed, zlib-ng does the (de)compression: the same format, ~1.5x faster to
inflate and ~1.3x to deflate, so processes with and without it share entries.
"""

from __future__ import annotations

import binascii
import json
import time
import zlib
from collections.abc import Sequence
from typing import Any

from ._errors import AgentCacheUsageError, CorruptEntryError
from ._keys import plain_json_value

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is optional (agent-cache[fast])
    orjson = None  # type: ignore[assignment]

_CORRUPT: tuple[type[Exception], ...] = (binascii.Error, zlib.error)  # what a damaged compressed entry raises
try:
    from zlib_ng import zlib_ng

    _compress, _decompress = zlib_ng.compress, zlib_ng.decompress
    _CORRUPT = (binascii.Error, zlib_ng.error)  # type: ignore[assignment]  # its stub declares an instance
except ImportError:  # pragma: no cover - zlib-ng is optional (agent-cache[fast])
    _compress, _decompress = zlib.compress, zlib.decompress

_strict_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _dumps(entry: dict[str, Any]) -> str:
    """orjson (10x faster on a 2 KB answer) when the caller's parts hold nothing it would write differently
    (it writes NaN as null); the standard library otherwise, which also names what is wrong."""
    if orjson is not None and all(plain_json_value(entry[part]) for part in ("contentBlocks", "meta") if part in entry):
        try:
            return orjson.dumps(entry).decode()
        except TypeError:
            pass
    return _strict_dumps(entry)


def encode_entry(response: str, **extra: Any) -> str:
    if not isinstance(response, str):
        raise AgentCacheUsageError(f"response must be a string, got {type(response).__name__}")
    entry: dict[str, Any] = {"response": response, "storedAt": int(time.time() * 1000)}
    entry.update((k, v) for k, v in extra.items() if v is not None)
    try:
        return _dumps(entry)
    except (TypeError, ValueError) as exc:
        raise AgentCacheUsageError(f"entry cannot be stored as JSON: {exc}") from exc


def _json_loads(raw: bytes | str) -> Any:
    return json.loads(raw)


def _fast_loads(raw: bytes | str) -> Any:
    """orjson when it can (3-4x faster); json for anything it refuses (NaN tokens, huge ints...)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


_loads = _json_loads if orjson is None else _fast_loads


COMPRESSED_MARKER = b"\x00z"
BASE64_MARKER = b"\x00Z"
"""Earlier versions' compressed entries (base64 text): read, no longer written."""


def pack_entry(value: str, size: int, compress_above: int | None, level: int = 6) -> tuple[str | bytes, int]:
    """What to write for an envelope of ``size`` UTF-8 bytes, and its size: the JSON itself, or its
    compressed form when it is over ``compress_above`` and compression actually makes it smaller."""
    if compress_above is None or size <= compress_above:
        return value, size
    packed = COMPRESSED_MARKER + _compress(value.encode(), level)
    return (packed, len(packed)) if len(packed) < size else (value, size)


def _unpack(raw: bytes | str) -> bytes:
    data = raw.encode() if isinstance(raw, str) else raw
    marker = data[:2]
    try:
        if marker == COMPRESSED_MARKER:
            return _decompress(memoryview(data)[2:])
        if marker == BASE64_MARKER:
            return _decompress(binascii.a2b_base64(memoryview(data)[2:], strict_mode=True))
    except _CORRUPT as exc:
        raise CorruptEntryError(f"compressed entry does not decompress: {exc}") from exc
    raise CorruptEntryError("stored entry starts with NUL but is not a compressed entry")


def decode_entry(raw: bytes | str) -> dict[str, Any]:
    first = raw[:1]
    if first == b"\x00" or first == "\x00":
        raw = _unpack(raw)
    try:
        entry = _loads(raw)
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
