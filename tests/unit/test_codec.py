"""Entry encoding: plain JSON envelopes, and the compressed form (base64 text behind a marker)."""

from __future__ import annotations

import base64
import json
import zlib

import pytest

from agent_cache._codec import COMPRESSED_MARKER, decode_entry, encode_entry, pack_entry
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
    assert stored.startswith(COMPRESSED_MARKER) and stored.isascii()  # text every client reads
    assert stored_size == len(stored) < size / 3
    assert decode_entry(stored) == decode_entry(stored.encode()) == decode_entry(value) == json.loads(value)


def test_compression_is_skipped_when_it_would_not_shrink_the_entry() -> None:
    value = encode_entry("x")  # ~35 bytes: zlib's own header and checksum would make it bigger
    size = len(value.encode())
    assert pack_entry(value, size, 0) == (value, size)


def test_plain_entries_decode_whatever_the_compression_setting() -> None:
    value = encode_entry("x")
    assert decode_entry(value.encode())["response"] == "x"  # what a bytes client returns
    assert decode_entry(value)["response"] == "x"  # what a decode_responses client returns


def _compressed(data: bytes) -> str:
    return COMPRESSED_MARKER + base64.b64encode(zlib.compress(data)).decode()


@pytest.mark.parametrize(
    "raw",
    [
        COMPRESSED_MARKER + "not base64!",
        _compressed(b'{"response":"x"}')[:-8],  # truncated
        COMPRESSED_MARKER + base64.b64encode(b"not zlib").decode(),
        b"\x00q" + zlib.compress(b'{"response":"x"}'),  # an unknown codec
        _compressed(b"[1, 2]"),  # decompresses, but is no entry
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
