"""``agent-cache import``: write the entries of an ``agent-cache export`` file into a cache, indexes included.

Entries go in through the tiers' own index scripts: an LLM entry is SET, then listed in its model's index
(``KEY_INDEX_ADD``) and the registry of models (``MODEL_REGISTRY_ADD``), in the order the LLM tier writes them; a tool
entry goes through the tool tier's ``SET_INDEXED``; the file's adapter listings put the entries a framework adapter
stored back in its index (``KEY_INDEX_ADD``, with the entry's TTL). So ``invalidate_by_model``/``invalidate_by_tool``,
``llm.clear()`` and LangChain's ``clear()`` find imported entries.

An entry whose key already exists is kept (the cache's own answer to the same request wins over the file's) unless
``--overwrite``; importing the same file twice therefore changes nothing the second time. TTLs: each entry gets the
time it had left at export minus the time since the export (the servers' clocks), rounded up to a second for the
index; entries whose time ran out meanwhile are skipped. A regular file is checked whole before anything is written.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from .._backend import Backend
from .._keys import KeyLayout
from .._scripts import MODEL_REGISTRY_ADD, SET_INDEXED, Script
from .._transfer import TIERS, Header, Listing, Reader, Record, TransferFormatError, parse_tiers
from ..tiers.llm import _CLOCK_MARGIN_MS, index_command, model_registry_key
from ._connection import Session, add_connection_options, run_command
from ._readers import server_time_ms
from ._terminal import EXIT_CODES_HELP, CommandError, ExitCode, print_json
from .export import progress_bar

BATCH = 500
"""Entries written per pipeline."""

# The tool tier's own SET_INDEXED, run only when the key is absent (ARGV[5] '1': always). -1: an entry was there.
IMPORT_TOOL_ENTRY = Script(
    "import_tool_entry",
    "if ARGV[5] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then return -1 end\n" + SET_INDEXED.source,
)

_EXAMPLES = f"""\
examples:
  agent-cache import -f support_bot.jsonl --url valkey://staging:6379
      write every entry into the cache the file came from (same name); existing keys are kept
  agent-cache import -f support_bot.jsonl --name support_bot_staging --dry-run
      check the file and count what would be written, kept and skipped (nothing is written)
  agent-cache import -f support_bot.jsonl --overwrite
      replace entries that exist with the file's (e.g. restoring a backup over a bad deploy)
  agent-cache export --name support_bot --url valkey://prod:6379 | agent-cache import -f - --url valkey://staging:6379
      copy a cache between servers without a file

{EXIT_CODES_HELP} (3: the file has no entries)
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "import",
        help="write the entries of an 'agent-cache export' file into a cache, indexes rebuilt",
        description="Write the entries of an 'agent-cache export' file into a cache, with the TTL they had left "
        "(minus the time since the export), listed in the model and tool indexes as the tiers list them. An entry "
        "whose key already exists is kept unless --overwrite, so running an import twice is harmless.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-f", "--file", required=True, metavar="PATH", help="the export file, - for stdin, e.g. -f entries.jsonl"
    )
    parser.add_argument(
        "--name",
        "-n",
        metavar="NAME",
        help="the cache to import into, e.g. --name support_bot_staging (default: the name in the file's header). "
        "Tenants' entries stay apart: the tenant is inside each entry's hash.",
    )
    parser.add_argument(
        "--tier", metavar="TIERS", help="import only these tiers of the file: llm, tool, e.g. --tier tool"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace entries that already exist (default: keep them), e.g. restoring a backup over bad answers",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the file and count what would be written, kept and skipped; write nothing, e.g. --dry-run --json",
    )
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON on stdout, e.g. --json | jq")
    add_connection_options(parser)
    parser.set_defaults(run=run)


@dataclass
class Outcome:
    imported: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TIERS, 0))
    kept: int = 0
    """Already in the cache, left as they were (without --overwrite)."""
    replaced: int = 0
    """Already in the cache and replaced (--overwrite)."""
    expired: int = 0
    """Their TTL ran out since the export."""
    skipped_tier: int = 0
    listed: int = 0
    """Entries listed again in a framework adapter's index (LangChain's)."""


@contextlib.contextmanager
def _lines(path: str) -> Iterator[IO[bytes]]:
    """The file as bytes: each line is decoded on its own, so an encoding error is reported with its line."""
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise CommandError(f"-f {path}: {exc.strerror or exc}", ExitCode.USAGE) from None
    with handle:
        yield handle


def _records(handle: IO[bytes], reader: Reader) -> Iterator[Record | Listing]:
    for raw in handle:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            reader.line_number += 1
            raise reader.fail(f"not UTF-8 text ({exc.reason} at byte {exc.start + 1} of the line)") from None
        record = reader.feed(line)
        if record is not None:
            yield record


def _check_whole_file(path: str) -> Reader:
    """Read a regular file once, to refuse a bad one before anything is written (constant memory)."""
    reader = Reader(path)
    with _lines(path) as handle:
        for _ in _records(handle, reader):
            pass
    reader.finish()
    return reader


class Importer:
    def __init__(self, backend: Backend, keys: KeyLayout, header: Header, args: argparse.Namespace) -> None:
        self.backend, self.keys, self.header = backend, keys, header
        self.overwrite: bool = args.overwrite
        self.dry_run: bool = args.dry_run
        self.outcome = Outcome()

    async def write(self, batch: list[Record | Listing]) -> None:
        await self._write_entries([item for item in batch if isinstance(item, Record)])
        await self._write_listings([item for item in batch if isinstance(item, Listing)])

    async def _write_listings(self, listings: list[Listing]) -> None:
        """List entries in their adapter's index, scored by their TTL in the target; a key not there is skipped."""
        if self.dry_run or not listings:
            self.outcome.listed += len(listings)
            return
        keys = [self.keys.llm(listing.hash) for listing in listings]
        ttls = await self.backend.pipeline([("PTTL", (key,)) for key in keys])
        commands = [
            index_command(self.keys.adapter_index(listing.adapter), key, None if ttl == -1 else math.ceil(ttl / 1000))
            for listing, key, ttl in zip(listings, keys, map(int, ttls), strict=True)
            if ttl != -2
        ]
        if commands:
            await self.backend.pipeline(commands)
        self.outcome.listed += len(commands)

    async def _write_entries(self, batch: list[Record]) -> None:
        elapsed = max(0, int(await server_time_ms(self.backend)) - self.header.exported_at_ms)
        live: list[tuple[Record, int | None, str]] = []
        for record in batch:
            ttl_ms = None if record.ttl_ms is None else record.ttl_ms - elapsed
            if ttl_ms is not None and ttl_ms <= 0:
                self.outcome.expired += 1
                continue
            key = (
                self.keys.llm(record.hash) if record.tier == "llm" else self.keys.tool_prefix(record.name) + record.hash
            )
            live.append((record, ttl_ms, key))
        if not live:
            return
        existing: list[Any] = []
        if self.dry_run or self.overwrite:
            existing = await self.backend.pipeline([("EXISTS", (key,)) for _, _, key in live])
        if self.dry_run:
            for (record, _, _), exists in zip(live, existing, strict=True):
                self._count(record, written=not exists or self.overwrite, existed=bool(exists))
            return
        llm = [item for item in live if item[0].tier == "llm"]
        tool = [item for item in live if item[0].tier == "tool"]
        existed = dict(zip((key for _, _, key in live), existing, strict=True)) if existing else {}
        if llm:
            await self._write_llm(llm, existed)
        if tool:
            await self._write_tool(tool, existed)

    def _count(self, record: Record, *, written: bool, existed: bool) -> None:
        if not written:
            self.outcome.kept += 1
            return
        self.outcome.imported[record.tier] += 1
        if existed:
            self.outcome.replaced += 1

    async def _write_llm(self, items: list[tuple[Record, int | None, str]], existed: dict[str, Any]) -> None:
        sets = []
        for record, ttl_ms, key in items:
            args: tuple[Any, ...] = (key, record.value)
            args += ("PX", ttl_ms) if ttl_ms is not None else ()
            sets.append(("SET", args if self.overwrite else (*args, "NX")))
        replies = await self.backend.pipeline(sets)
        listed: list[tuple[str, tuple[Any, ...]]] = []
        for (record, ttl_ms, key), reply in zip(items, replies, strict=True):
            written = reply is not None and reply is not False
            self._count(record, written=written, existed=bool(existed.get(key)))
            if not written:
                continue
            ttl_s = None if ttl_ms is None else math.ceil(ttl_ms / 1000)
            listed.append(index_command(self.keys.model_index(record.name), key, ttl_s))
            registry = (model_registry_key(self.keys),)
            listed.append(
                Backend.script_command(MODEL_REGISTRY_ADD, registry, (record.name, ttl_s or "", _CLOCK_MARGIN_MS))
            )
        if listed:  # after the entries, as the LLM tier orders them: no index lists a key that was never written
            await self.backend.pipeline(listed)

    async def _write_tool(self, items: list[tuple[Record, int | None, str]], existed: dict[str, Any]) -> None:
        calls = []
        for record, ttl_ms, key in items:
            ttl_s = "" if ttl_ms is None else math.ceil(ttl_ms / 1000)
            flag = "1" if self.overwrite else ""
            index = self.keys.tool_index(record.name)
            calls.append(
                Backend.script_command(IMPORT_TOOL_ENTRY, (key, index), (record.hash, record.value, ttl_s, "", flag))
            )
        replies = await self.backend.pipeline(calls)
        for (record, _, key), reply in zip(items, replies, strict=True):
            self._count(record, written=int(reply) != -1, existed=bool(existed.get(key)))


def _report(session: Session, args: argparse.Namespace, name: str, outcome: Outcome, entries: int) -> None:
    imported = sum(outcome.imported.values())
    if args.json:
        print_json(
            {
                "name": name,
                "dry_run": args.dry_run,
                "entries": entries,
                "imported": imported,
                "by_tier": outcome.imported,
                "kept_existing": outcome.kept,
                "replaced": outcome.replaced,
                "expired": outcome.expired,
                "skipped_tier": outcome.skipped_tier,
                "adapter_listings": outcome.listed,
            }
        )
        return
    verb = "would import" if args.dry_run else "imported"
    by_tier = ", ".join(f"{tier}: {count:,}" for tier, count in outcome.imported.items())
    parts = [f"{verb} {imported:,} of {entries:,} entries into cache {name} ({by_tier})"]
    if outcome.kept:
        parts.append(f"kept {outcome.kept:,} existing (--overwrite replaces them)")
    if outcome.replaced:
        parts.append(f"replaced {outcome.replaced:,} existing")
    if outcome.expired:
        parts.append(f"skipped {outcome.expired:,} whose TTL ran out since the export")
    if outcome.skipped_tier:
        parts.append(f"skipped {outcome.skipped_tier:,} of tiers not in --tier")
    session.out.print("; ".join(parts), markup=False, highlight=False)


def run(args: argparse.Namespace) -> int:
    path: str = args.file
    try:
        only = parse_tiers(args.tier) if args.tier is not None else TIERS
        checked = _check_whole_file(path) if path != "-" else None
    except (TransferFormatError, CommandError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE

    async def body(session: Session) -> int:
        reader = Reader("stdin" if path == "-" else path)
        outcome: Outcome | None = None
        with _lines(path) as handle:
            records = _records(handle, reader)
            first = next(records, None)  # reads the header (a stdin file's first error surfaces here)
            if reader.header is None:
                raise TransferFormatError(f"{reader.where}: empty: no header line (is this an agent-cache export?)")
            name = args.name or reader.header.cache
            importer = Importer(session.backend, KeyLayout(name), reader.header, args)
            outcome = importer.outcome
            total = checked.entries + checked.listings if checked is not None else None
            try:
                with progress_bar(session, "importing", total) as advance:
                    batch: list[Record | Listing] = [first] if first is not None else []
                    for record in records:
                        batch.append(record)
                        if len(batch) >= BATCH:
                            await _flush(importer, batch, only, advance)
                            batch = []
                    await _flush(importer, batch, only, advance)
                reader.finish()
            except TransferFormatError as exc:
                done = sum(outcome.imported.values())
                raise CommandError(
                    f"{exc} ({done:,} entries were written before it; fix the file and run again: existing keys are "
                    "kept)",
                    ExitCode.USAGE,
                ) from None
        _report(session, args, name, outcome, reader.entries)
        if reader.entries == 0:
            return ExitCode.NOTHING
        return ExitCode.OK

    return run_command(args, body)


async def _flush(importer: Importer, batch: list[Record | Listing], only: tuple[str, ...], advance: Any) -> None:
    wanted = [record for record in batch if record.tier in only]
    importer.outcome.skipped_tier += len(batch) - len(wanted)
    if wanted:
        await importer.write(wanted)
    advance(len(batch))
