"""The export file of ``agent-cache export`` / ``import`` — pure: records, their JSON lines and their validation.

JSON Lines, UTF-8, one object per line:

* line 1, the header: ``{"format": "agent-cache-export", "version": 1, "cache": "support_bot",
  "tiers": ["llm", "tool"], "exported_at_ms": 1733400000000}`` (``exported_at_ms``: the source server's clock
  when the export started);
* one line per entry: ``{"tier": "llm", "model": "gpt-4o", "hash": "<64 hex>", "ttl_ms": 3599000,
  "value": "<base64>"}`` or ``{"tier": "tool", "tool": "get_weather", "hash": ..., "ttl_ms": ..., "value": ...}``.
  ``value`` is the stored bytes exactly (base64), so compressed entries stay compressed and nothing is re-encoded;
  ``ttl_ms`` is the time the entry had left when it was read (null: no expiry);
* after the entries, one line per member of a framework adapter's index (LangChain's ``clear()`` deletes what its
  index lists): ``{"tier": "llm", "adapter": "langchain", "hash": "<64 hex>"}``;
* last line, the trailer: ``{"end": true, "entries": 2, "listings": 1}``, so a file cut short is told from a
  complete one.

The key itself is not in the file: ``hash`` is the part after the cache's prefix, and the tenant of an entry is
inside that hash, so an import under another name (``--name``) keeps every tenant's entries apart as before.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ._codec import decode_entry
from ._errors import AgentCacheUsageError, CorruptEntryError
from ._keys import validate_cache_name

FORMAT: Final = "agent-cache-export"
VERSION: Final = 1
TIERS: Final = ("llm", "tool")
"""The tiers an export carries (sessions are live conversation state: see docs/export-import.md)."""

_HASH = re.compile(r"[0-9a-f]{64}")


def is_hash(text: str) -> bool:
    """Is ``text`` what an entry's key ends with: a SHA-256 in lowercase hex?"""
    return _HASH.fullmatch(text) is not None


class TransferFormatError(AgentCacheUsageError):
    """A line of an export file that is not what ``export`` writes; the message names the file and line."""


@dataclass(frozen=True)
class Header:
    cache: str
    tiers: tuple[str, ...]
    exported_at_ms: int
    version: int = VERSION

    def line(self) -> str:
        return _dumps(
            {
                "format": FORMAT,
                "version": self.version,
                "cache": self.cache,
                "tiers": list(self.tiers),
                "exported_at_ms": self.exported_at_ms,
            }
        )


@dataclass(frozen=True)
class Record:
    """One entry: ``name`` is the model (LLM) or the tool; ``value`` the stored bytes; ``ttl_ms`` None: no expiry."""

    tier: str
    name: str
    hash: str
    value: bytes
    ttl_ms: int | None

    def line(self) -> str:
        return _dumps(
            {
                "tier": self.tier,
                "model" if self.tier == "llm" else "tool": self.name,
                "hash": self.hash,
                "ttl_ms": self.ttl_ms,
                "value": base64.b64encode(self.value).decode("ascii"),
            }
        )


@dataclass(frozen=True)
class Listing:
    """An LLM entry (its hash) that a framework adapter's index lists, e.g. LangChain's."""

    adapter: str
    hash: str

    @property
    def tier(self) -> str:
        return "llm"

    def line(self) -> str:
        return _dumps({"tier": "llm", "adapter": self.adapter, "hash": self.hash})


def trailer_line(entries: int, listings: int = 0) -> str:
    return _dumps({"end": True, "entries": entries, "listings": listings})


def _dumps(document: Mapping[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"))  # ASCII: the file reads the same in every locale


def parse_tiers(text: str, option: str = "--tier") -> tuple[str, ...]:
    """``llm,tool`` → ``("llm", "tool")``; an unknown or repeated name is an error naming it."""
    names = [part.strip() for part in text.split(",")]
    for name in names:
        if name == "session":
            raise TransferFormatError(
                f"{option} {text}: session state is not exported (live conversations: sliding TTLs, LangGraph "
                "checkpoints); choose from llm, tool"
            )
        if name not in TIERS:
            raise TransferFormatError(f"{option} {text}: unknown tier {name!r}; choose from {', '.join(TIERS)}")
    if len(set(names)) != len(names):
        raise TransferFormatError(f"{option} {text}: a tier is named twice")
    return tuple(name for name in TIERS if name in names)


class Reader:
    """Parses the lines of one export file in order; every error names ``where`` and the line number."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.line_number = 0
        self.header: Header | None = None
        self.entries = 0
        self.listings = 0
        self.ended = False

    def fail(self, message: str) -> TransferFormatError:
        return TransferFormatError(f"{self.where}:{self.line_number}: {message}")

    def feed(self, raw: str) -> Record | Listing | None:
        """The record on this line (None for the header, the trailer or a blank line)."""
        self.line_number += 1
        text = raw.strip()
        if not text:
            return None
        if self.ended:
            raise self.fail("a line after the end line: two exports were joined, or the file was edited")
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise self.fail(f"not JSON ({exc})") from None
        if not isinstance(document, dict):
            raise self.fail(f"expected a JSON object, got {type(document).__name__}")
        if self.header is None:
            self.header = self._header(document)
            return None
        if document.get("end") is True:
            self._trailer(document)
            return None
        if "adapter" in document:
            listing = self._listing(document)
            self.listings += 1
            return listing
        if self.listings:
            raise self.fail("an entry after the adapter listings: entries come first")
        record = self._record(document)
        self.entries += 1
        return record

    def finish(self) -> None:
        """Raise unless the file was whole: a header, and the trailer with the count of the entries read."""
        if self.header is None:
            raise TransferFormatError(f"{self.where}: empty: no header line (is this an agent-cache export?)")
        if not self.ended:
            raise TransferFormatError(
                f"{self.where}:{self.line_number}: the file ends without its end line: it was cut short after "
                f"{self.entries:,} entries"
            )

    def _header(self, document: dict[str, Any]) -> Header:
        if document.get("format") != FORMAT:
            raise self.fail(f'not an agent-cache export: the first line needs "format": "{FORMAT}"')
        version = document.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise self.fail(f"header: version must be a positive integer, got {version!r}")
        if version > VERSION:
            raise self.fail(f"header: version {version} was written by a newer agent-cache (this one reads {VERSION})")
        cache, tiers, exported_at = document.get("cache"), document.get("tiers"), document.get("exported_at_ms")
        if not isinstance(cache, str) or not cache:
            raise self.fail(f"header: cache must be the exported cache's name, got {cache!r}")
        try:
            validate_cache_name(cache)
        except AgentCacheUsageError as exc:
            raise self.fail(f"header: {exc}") from None
        if not isinstance(tiers, list) or not all(isinstance(t, str) and t in TIERS for t in tiers):
            raise self.fail(f"header: tiers must be a list of {', '.join(TIERS)}, got {tiers!r}")
        if not isinstance(exported_at, int) or isinstance(exported_at, bool) or exported_at < 0:
            raise self.fail(f"header: exported_at_ms must be a time in milliseconds, got {exported_at!r}")
        return Header(cache, tuple(tiers), exported_at, version)

    def _trailer(self, document: dict[str, Any]) -> None:
        count, listings = document.get("entries"), document.get("listings", 0)
        if count != self.entries:
            raise self.fail(f"the end line counts {count!r} entries but {self.entries:,} came before it")
        if listings != self.listings:
            raise self.fail(f"the end line counts {listings!r} listings but {self.listings:,} came before it")
        self.ended = True

    def _listing(self, document: dict[str, Any]) -> Listing:
        assert self.header is not None
        adapter, digest = document.get("adapter"), document.get("hash")
        if document.get("tier") != "llm" or "llm" not in self.header.tiers:
            raise self.fail(f"an adapter listing belongs to the llm tier, got tier {document.get('tier')!r}")
        if not isinstance(adapter, str) or not adapter:
            raise self.fail(f"adapter must be a non-empty string, got {adapter!r}")
        if not isinstance(digest, str) or not is_hash(digest):
            raise self.fail(f"hash must be 64 lowercase hex digits, got {digest!r}")
        return Listing(adapter, digest)

    def _record(self, document: dict[str, Any]) -> Record:
        assert self.header is not None
        tier = document.get("tier")
        if tier not in TIERS:
            raise self.fail(f"tier must be one of {', '.join(TIERS)}, got {tier!r}")
        if tier not in self.header.tiers:
            raise self.fail(f"a {tier} entry, but the header lists only {', '.join(self.header.tiers)}")
        name_field = "model" if tier == "llm" else "tool"
        name = document.get(name_field)
        if not isinstance(name, str) or not name:
            raise self.fail(f"{name_field} must be a non-empty string, got {name!r}")
        digest = document.get("hash")
        if not isinstance(digest, str) or not is_hash(digest):
            raise self.fail(f"hash must be 64 lowercase hex digits, got {digest!r}")
        ttl_ms = document.get("ttl_ms")
        if ttl_ms is not None and (not isinstance(ttl_ms, int) or isinstance(ttl_ms, bool) or ttl_ms <= 0):
            raise self.fail(f"ttl_ms must be a positive number of milliseconds or null, got {ttl_ms!r}")
        encoded = document.get("value")
        if not isinstance(encoded, str):
            raise self.fail(f"value must be the stored entry as a base64 string, got {type(encoded).__name__}")
        try:
            value = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise self.fail(f"value is not base64 ({exc})") from None
        try:
            decode_entry(value)
        except CorruptEntryError as exc:
            raise self.fail(f"value is not a cache entry: {exc}") from None
        return Record(tier, name, digest, value, ttl_ms)
