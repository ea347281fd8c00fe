"""The export file format: every record a valid export can hold reads back unchanged, and a bad tier list is named."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_cache._codec import encode_entry, pack_entry
from agent_cache._transfer import Header, Listing, Reader, Record, TransferFormatError, parse_tiers, trailer_line

_NAMES = st.text(min_size=1, max_size=20)  # any model or tool name, unicode and ':{}%' included
_HASHES = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@st.composite
def records(draw: st.DrawFn) -> Record:
    response = draw(st.text(max_size=3000))
    value = encode_entry(response, model=draw(_NAMES))
    packed, _ = pack_entry(value, len(value.encode()), draw(st.sampled_from([None, 0, 1024])))
    return Record(
        draw(st.sampled_from(["llm", "tool"])),
        draw(_NAMES),
        draw(_HASHES),
        packed if isinstance(packed, bytes) else packed.encode(),
        draw(st.none() | st.integers(1, 10**12)),
    )


_LISTINGS = st.builds(Listing, _NAMES, _HASHES)


@given(st.lists(records(), max_size=5), st.lists(_LISTINGS, max_size=3), st.integers(0, 2**41))
def test_what_export_writes_import_reads_back(written: list[Record], listings: list[Listing], exported_at: int) -> None:
    header = Header("support_bot:prod", ("llm", "tool"), exported_at)
    lines = [
        header.line(),
        *(record.line() for record in [*written, *listings]),
        trailer_line(len(written), len(listings)),
    ]
    assert all(line.isascii() and "\n" not in line for line in lines)
    reader = Reader("e.jsonl")
    read = [record for line in lines if (record := reader.feed(line + "\n")) is not None]
    reader.finish()
    assert read == [*written, *listings] and reader.header == header


def test_entries_come_before_listings() -> None:
    reader = Reader("e.jsonl")
    reader.feed(Header("c", ("llm",), 0).line())
    reader.feed(Listing("langchain", "0" * 64).line())
    entry = Record("llm", "gpt-4o", "1" * 64, encode_entry("x").encode(), None).line()
    with pytest.raises(TransferFormatError, match=r"e\.jsonl:3: an entry after the adapter listings"):
        reader.feed(entry)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("llm", ("llm",)), ("tool,llm", ("llm", "tool")), (" llm , tool ", ("llm", "tool"))],
)
def test_tiers(text: str, expected: tuple[str, ...]) -> None:
    assert parse_tiers(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("llm,sessions", "unknown tier 'sessions'; choose from llm, tool"),
        ("session", "session state is not exported"),
        ("", "unknown tier ''"),
        ("tool,tool", "a tier is named twice"),
    ],
)
def test_bad_tiers_are_named(text: str, message: str) -> None:
    with pytest.raises(TransferFormatError, match=message):
        parse_tiers(text)
