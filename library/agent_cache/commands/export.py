"""``agent-cache export``: a cache's LLM and tool entries as JSON Lines, to move, seed or back up a cache.

Entries are found through the indexes the tiers keep, never by a SCAN of the entries themselves: the registry of
models (``{name}:__idx:llm_models``) names every per-model index, and the per-tool indexes are the only keys of
their kind (``{name}:__idx:tool:{<tool>}``), found by one SCAN that matches index keys only (on every primary of a
cluster). Each index is read with ZSCAN in pages and each page's entries with one pipeline (GET + PTTL), so memory
stays constant however many entries there are. The format is in ``agent_cache._transfer``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .._backend import Backend, as_text
from .._codec import decode_entry
from .._errors import CorruptEntryError
from .._keys import KeyLayout, decode_segment
from .._transfer import TIERS, Header, Listing, Record, TransferFormatError, is_hash, parse_tiers, trailer_line
from ..tiers.llm import model_registry_key
from ._connection import Session, add_connection_options, add_name_option, run_command
from ._readers import resolve_name, server_time_ms
from ._terminal import EXIT_CODES_HELP, CommandError, ExitCode

ADAPTER = "adapter"
"""The kind of :class:`Source` that lists LLM entries a framework adapter stored (no entries of its own)."""
PAGE = 500
"""Index members read (and entries fetched in one pipeline) at a time."""

_EXAMPLES = f"""\
examples:
  agent-cache export --url valkey://prod:6379 --name support_bot > support_bot.jsonl
      every LLM and tool entry with its remaining TTL (a progress bar when stderr is a terminal)
  agent-cache export --name support_bot --tier tool > tools.jsonl
      only the tool tier
  agent-cache export --name support_bot | agent-cache import -f - --url valkey://staging:6379
      copy a cache from one Valkey to another (see agent-cache import --help)

{EXIT_CODES_HELP} (3: the cache has no entries)
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a cache's LLM and tool entries as JSON Lines (backup, copy to another Valkey)",
        description="Write every LLM and tool entry of a cache to stdout as JSON Lines: the stored bytes, the model "
        "or tool, the remaining TTL. Entries are found through the cache's indexes (no SCAN of the entries), read "
        "in pages: memory stays constant for millions of entries. Session state is not exported.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--tier",
        default=",".join(TIERS),
        metavar="TIERS",
        help="comma-separated tiers to export: llm, tool (default: both), e.g. --tier llm",
    )
    add_name_option(parser)
    add_connection_options(parser)
    parser.set_defaults(run=run)


class NamedKeys:
    """Reads a name back from a key that ``make(name)`` builds (``KeyLayout.tool_index``...), checking the
    answer with ``make`` itself, so no key format is written here."""

    _PROBE = "\x01"  # encoded as %01, which no cache name contains

    def __init__(self, make: Callable[[str], str]) -> None:
        probe = make(self._PROBE)
        encoded = "%01"
        at = probe.index(encoded)
        self.make = make
        self.prefix, self.suffix = probe[:at], probe[at + len(encoded) :]

    def name_of(self, key: str) -> str | None:
        if not (key.startswith(self.prefix) and key.endswith(self.suffix)) or len(key) <= len(
            self.prefix + self.suffix
        ):
            return None
        name = decode_segment(key[len(self.prefix) : len(key) - len(self.suffix)])
        with contextlib.suppress(Exception):
            if self.make(name) == key:
                return name
        return None


def index_scan_pattern(*families: NamedKeys) -> str:
    """One glob matching the index keys of every family: their common prefix (a cache name has no glob
    characters), then ``*``."""
    prefixes = [family.prefix for family in families]
    shortest = min(len(prefix) for prefix in prefixes)
    shared = next((i for i in range(shortest) if len({prefix[i] for prefix in prefixes}) > 1), shortest)
    return prefixes[0][:shared] + "*"


@dataclass
class Source:
    tier: str
    """``llm``, ``tool`` or :data:`ADAPTER`."""
    name: str
    index: str
    entry_key: Callable[[str], str]
    """The entry's key from an index member."""
    digest: Callable[[str], str | None]
    """The hash the file carries, from an index member (None: not one of this cache's entries)."""


@dataclass
class Counts:
    exported: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TIERS, 0))
    listings: int = 0
    """Members of framework adapters' indexes (LangChain's), written after the entries."""
    gone: int = 0
    """Listed in an index, but expired or evicted before it was read."""
    corrupt: int = 0


def _tool_digest(member: str) -> str | None:
    return member if is_hash(member) else None


async def sources(backend: Backend, keys: KeyLayout, tiers: tuple[str, ...]) -> list[Source]:
    """The indexes to read, in order: models' and tools' (entries), then framework adapters' (listings)."""
    found: list[Source] = []
    llm_prefix = keys.llm_prefix

    def llm_digest(member: str) -> str | None:
        digest = member[len(llm_prefix) :]
        return digest if member.startswith(llm_prefix) and is_hash(digest) else None

    if "llm" in tiers:
        for model in sorted(as_text(m) for m in await backend.command("ZRANGE", model_registry_key(keys), 0, -1)):
            found.append(Source("llm", model, keys.model_index(model), lambda member: member, llm_digest))
    tool_indexes, adapter_indexes = NamedKeys(keys.tool_index), NamedKeys(keys.adapter_index)
    tools: set[str] = set()
    adapters: set[str] = set()
    async for key in backend.scan(index_scan_pattern(tool_indexes, adapter_indexes)):
        if (tool := tool_indexes.name_of(key)) is not None:
            tools.add(tool)
        elif (adapter := adapter_indexes.name_of(key)) is not None:
            adapters.add(adapter)
    if "tool" in tiers:
        for tool in sorted(tools):  # a set: SCAN may return a key twice
            prefix = keys.tool_prefix(tool)
            found.append(Source("tool", tool, keys.tool_index(tool), prefix.__add__, _tool_digest))
    if "llm" in tiers:
        for adapter in sorted(adapters):
            found.append(Source(ADAPTER, adapter, keys.adapter_index(adapter), lambda member: member, llm_digest))
    return found


async def index_pages(backend: Backend, index: str) -> AsyncIterator[list[str]]:
    """The members of a sorted set, a page at a time (ZSCAN: every member present throughout is returned)."""
    cursor: Any = 0
    seen_last: set[str] = set()
    while True:
        cursor, items = await backend.command("ZSCAN", index, cursor, "COUNT", PAGE)
        if items and isinstance(items[0], list | tuple):
            members = [as_text(item[0]) for item in items]
        else:
            members = [as_text(item) for item in items[::2]]
        page = [member for member in dict.fromkeys(members) if member not in seen_last]
        seen_last = set(page)
        if page:
            yield page
        if int(cursor) == 0:
            return


async def export(
    backend: Backend,
    keys: KeyLayout,
    tiers: tuple[str, ...],
    write: Callable[[str], None],
    advance: Callable[[int], None],
    found: list[Source] | None = None,
) -> Counts:
    """Write the header, every live entry of ``tiers``, the adapters' listings and the trailer; ``found``:
    :func:`sources`' answer, if already read."""
    counts = Counts()
    found = found if found is not None else await sources(backend, keys, tiers)
    write(Header(keys.name, tiers, int(await server_time_ms(backend))).line())
    for source in found:
        async for members in index_pages(backend, source.index):
            if source.tier == ADAPTER:  # which entries the adapter stored: its clear() deletes only those
                listed = [Listing(source.name, digest) for member in members if (digest := source.digest(member))]
                for listing in listed:
                    write(listing.line())
                counts.listings += len(listed)
            else:
                await _export_page(backend, source, members, write, counts)
            advance(len(members))
    write(trailer_line(sum(counts.exported.values()), counts.listings))
    return counts


async def _export_page(
    backend: Backend, source: Source, members: list[str], write: Callable[[str], None], counts: Counts
) -> None:
    """One pipeline (GET and PTTL of each entry) for a page of index members."""
    wanted = [(digest, source.entry_key(member)) for member in members if (digest := source.digest(member))]
    commands = [command for _, key in wanted for command in (("GET", (key,)), ("PTTL", (key,)))]
    replies = iter(await backend.pipeline(commands) if commands else [])
    for digest, _ in wanted:
        value, ttl = next(replies), int(next(replies))
        if value is None or ttl == -2:
            counts.gone += 1
            continue
        raw = value if isinstance(value, bytes) else str(value).encode()
        try:
            decode_entry(raw)
        except CorruptEntryError:
            counts.corrupt += 1
            continue
        write(Record(source.tier, source.name, digest, raw, None if ttl < 0 else ttl).line())
        counts.exported[source.tier] += 1


async def total_members(backend: Backend, indexes: list[str]) -> int:
    replies = await backend.pipeline([("ZCARD", (index,)) for index in indexes]) if indexes else []
    return sum(int(reply) for reply in replies)


@contextlib.contextmanager
def progress_bar(session: Session, verb: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """``advance(n)`` for a bar on stderr when it is a terminal (nothing on a pipe or a file)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    show = session.err.is_terminal
    columns = (TextColumn(verb), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=session.err, transient=True, disable=not show) as progress:
        task = progress.add_task(verb, total=total)
        yield lambda n: progress.advance(task, n)


def run(args: argparse.Namespace) -> int:
    try:
        tiers = parse_tiers(args.tier)
    except TransferFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if sys.stdout.isatty():
        print("error: the export goes to stdout: redirect it to a file, e.g. > entries.jsonl", file=sys.stderr)
        return ExitCode.USAGE

    async def body(session: Session) -> int:
        name = await resolve_name(session, args.name)
        keys = KeyLayout(name)
        out = sys.stdout

        def write(line: str) -> None:
            out.write(line + "\n")

        found = await sources(session.backend, keys, tiers)
        total = await total_members(session.backend, [source.index for source in found])
        with progress_bar(session, "exporting", total) as advance:
            counts = await export(session.backend, keys, tiers, write, advance, found)
        try:
            out.flush()
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            raise CommandError(f"cannot write the export: {exc.strerror or exc}") from None
        exported = sum(counts.exported.values())
        by_tier = ", ".join(f"{tier}: {counts.exported[tier]:,}" for tier in tiers)
        notes = [f"{counts.gone:,} expired while exporting"] if counts.gone else []
        if counts.corrupt:
            notes.append(f"{counts.corrupt:,} corrupt entries skipped")
        extra = f" ({'; '.join(notes)})" if notes else ""
        session.note(f"exported {exported:,} entries of cache {name} ({by_tier}){extra}")
        if not exported:
            session.empty_server_note()
            return ExitCode.NOTHING
        return ExitCode.OK

    return run_command(args, body)
