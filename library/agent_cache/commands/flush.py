"""``agent-cache flush``: delete everything one cache stored, after a confirmation.

It calls the library's ``AgentCache.flush()``: every key of the cache's key families under ``{name}:`` (entries,
indexes, session threads, checkpoints, stats) except the TTL policies and the live config, through SCAN on
``{name}:*`` — never FLUSHDB. Another cache whose name merely starts the same way (``{name}x``, or ``{name}:x``,
whose keys ``KeyLayout.owns`` tells apart) is untouched. Without ``--yes`` it asks on the terminal; with no
terminal to ask on it refuses, so a script cannot flush by accident.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._keys import validate_cache_name
from ._connection import Session, add_connection_options, add_name_option, quiet_cache, run_command
from ._readers import instances
from ._terminal import EXIT_CODES_HELP, CommandError, ExitCode, print_json

_EXAMPLES = f"""\
examples:
  agent-cache flush --url valkey://10.0.0.5:6379 --name support_bot
      asks "Flush cache 'support_bot' ...? [y/N]" first
  agent-cache flush --name support_bot_staging --yes
      no question (scripts, CI); without --yes and without a terminal it refuses

{EXIT_CODES_HELP} (1 also: you answered no; 2 also: no terminal to ask on and no --yes; 3: nothing to flush)
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "flush",
        help="delete every entry, thread, index and counter of one cache (asks first)",
        description="Delete everything one cache stored — LLM answers, tool results, session threads, LangGraph "
        "checkpoints, indexes and stats — keeping its TTL policies and live config. Other caches on the same "
        "Valkey are untouched. Running instances keep working and refill it.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_name_option(parser, required=True)
    parser.add_argument(
        "--yes", "-y", action="store_true", help="do not ask for confirmation (needed without a terminal), e.g. --yes"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"name": ..., "deleted": N} on stdout, e.g. --yes --json | jq .deleted',
    )
    add_connection_options(parser)
    parser.set_defaults(run=run)


def _confirmed(session: Session, name: str, live_instances: int) -> bool:
    running = f" {live_instances} live instance(s) will keep using it." if live_instances else ""
    question = (
        f"Flush cache {name!r} on {session.where}: delete all its cached answers, tool results, session threads, "
        f"indexes and stats? Its TTL policies and live config are kept.{running} [y/N] "
    )
    session.err.print(question, end="", markup=False, highlight=False, soft_wrap=True)
    try:
        answer = input()
    except EOFError:
        answer = ""
    return answer.strip().lower() in {"y", "yes"}


def run(args: argparse.Namespace) -> int:
    if not args.yes and not sys.stdin.isatty():
        print(
            "error: refusing to flush without confirmation: stdin is not a terminal to ask on; "
            "pass --yes if you mean it",
            file=sys.stderr,
        )
        return ExitCode.USAGE

    async def body(session: Session) -> int:
        name = validate_cache_name(args.name)
        if not args.yes and not _confirmed(session, name, len(await instances(session, name))):
            raise CommandError("aborted: nothing was deleted")
        async with quiet_cache(session, name) as cache:
            with session.err.status(f"flushing cache {name}…", spinner="dots"):
                deleted = await cache.flush()
        if args.json:
            print_json({"name": name, "deleted": deleted})
        else:
            session.out.print(f"flushed cache {name}: deleted {deleted:,} keys", markup=False)
        if deleted == 0:
            session.note(f"nothing to flush: cache {name!r} had no keys (policies and live config aside)")
            return ExitCode.NOTHING
        return ExitCode.OK

    return run_command(args, body)
