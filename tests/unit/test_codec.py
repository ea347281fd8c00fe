"""Entry encoding: plain JSON envelopes, the compressed form (zlib behind a marker) and the earlier base64 one."""

from __future__ import annotations

import base64
import json
import zlib

import pytest

from agent_cache._codec import BASE64_MARKER, COMPRESSED_MARKER, decode_entry, encode_entry, pack_entry
from agent_cache._errors import CorruptEntryError

LONG = "The cache answered from Valkey instead of calling the model again. " * 40


def test_entries_at_or_below_the_threshold_stay_readable_json() -> None:
    value = encode_entry("short answer", model="m")
    size = len(value.encode())
    assert pack_entry(value, size, None) == (value, size)  # compression off
    assert pack_entry(value, size, size) == (value, size)  # at the threshold
    assert json.loads(value)["response"] == "short answer"


def test_large_entries_are_compressed_and_decode_to_the_same_entry() -> None:
    value = encode_entry(LONG, model="m", tokens={"input": 1, "output": 2}, cost=0.5)
    size = len(value.encode())
    stored, stored_size = pack_entry(value, size, 1024)
    assert isinstance(stored, bytes) and stored.startswith(COMPRESSED_MARKER)
    assert zlib.decompress(stored[2:]) == value.encode()  # plain zlib (written by zlib-ng when installed)
    assert stored_size == len(stored) < size / 3
    assert decode_entry(stored) == decode_entry(value) == json.loads(value)


def test_entries_compressed_by_the_standard_library_decode_too() -> None:
    # A process without agent-cache[fast] (no zlib-ng) writes what every other process reads.
    value = encode_entry(LONG, model="m")
    for level in (1, 6, 9):
        assert decode_entry(COMPRESSED_MARKER + zlib.compress(value.encode(), level)) == json.loads(value)


def test_entries_compressed_by_earlier_versions_still_decode() -> None:
    value = encode_entry(LONG, model="m", cost=0.5)
    legacy = BASE64_MARKER.decode() + base64.b64encode(zlib.compress(value.encode())).decode()  # base64 text
    assert decode_entry(legacy) == decode_entry(legacy.encode()) == json.loads(value)


def test_compression_is_skipped_when_it_would_not_shrink_the_entry() -> None:
    value = encode_entry("x")  # ~35 bytes: zlib's own header and checksum would make it bigger
    size = len(value.encode())
    assert pack_entry(value, size, 0) == (value, size)


def test_plain_entries_decode_whatever_the_compression_setting() -> None:
    value = encode_entry("x")
    assert decode_entry(value.encode())["response"] == "x"  # what a bytes client returns
    assert decode_entry(value)["response"] == "x"  # what a decode_responses client returns


def _legacy(data: bytes) -> str:
    return BASE64_MARKER.decode() + base64.b64encode(zlib.compress(data)).decode()


@pytest.mark.parametrize(
    "raw",
    [
        COMPRESSED_MARKER + b"not zlib",
        (COMPRESSED_MARKER + zlib.compress(b'{"response":"x"}'))[:-3],  # truncated
        COMPRESSED_MARKER + zlib.compress(b'{"response":"x"}')[:-1] + b"!",  # checksum mismatch
        COMPRESSED_MARKER + zlib.compress(b"[1, 2]"),  # decompresses, but is no entry
        BASE64_MARKER.decode() + "not base64!",
        _legacy(b'{"response":"x"}')[:-8],  # truncated
        BASE64_MARKER.decode() + base64.b64encode(b"not zlib").decode(),
        _legacy(b"[1, 2]"),
        b"\x00q" + zlib.compress(b'{"response":"x"}'),  # an unknown codec
        b"\x00",
        b"not json",
    ],
)
def test_damaged_entries_are_reported_as_corrupt(raw: bytes | str) -> None:
    with pytest.raises(CorruptEntryError):
        decode_entry(raw)


def test_entries_orjson_refuses_still_decode_like_json() -> None:
    # NaN and huge integers are valid for json.loads; the fast decoder must fall back, not fail.
    raw = b'{"response":"x","cost":NaN,"storedAt":123456789012345678901234567890}'
    entry = decode_entry(raw)
    assert entry["storedAt"] == 123456789012345678901234567890
    assert entry["cost"] != entry["cost"]
