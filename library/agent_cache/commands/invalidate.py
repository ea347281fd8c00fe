"""``agent-cache invalidate``: drop every cached result of one tool, every LLM answer of one model, or one
session thread — through the same index the library keeps, never a keyspace SCAN.

``--dry-run`` counts the index members whose entry has not expired yet (``{name}:__idx:tool:{…}``,
``{name}:__idx:llm:{…}``, ``{name}:__idx:session:{…}`` plus the thread's LangGraph checkpoint index). The real
run calls the library's own ``invalidate_by_tool`` / ``invalidate_by_model`` / ``destroy_thread`` and reports
the keys it deleted, which can be fewer: Valkey may have evicted some entries under memory pressure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from .._keys import KeyLayout
from ..cache import AgentCache
from ._connection import Session, add_connection_options, add_name_option, quiet_cache, run_command
from ._readers import live_index_members, resolve_name, server_time_ms
from ._terminal import EXIT_CODES_HELP, ExitCode, print_json

PROGRESS_FROM = 1000
"""Entries from which a progress bar is worth drawing."""

_EXAMPLES = f"""\
examples:
  agent-cache invalidate --name support_bot --tool get_weather --dry-run
      count the cached get_weather results (nothing is deleted)
  agent-cache invalidate --name support_bot --tool get_weather
      delete them: the next call of every argument set goes to the real tool
  agent-cache invalidate --name support_bot --model gpt-4o
      delete every cached gpt-4o answer (all tenants), e.g. after a prompt or model change
  agent-cache invalidate --name support_bot --thread user-42 --tenant acme
      delete a session thread (its fields and LangGraph checkpoints) of tenant acme
  agent-cache invalidate --name support_bot --tool search --json
      {{"name": ..., "tool": "search", "dry_run": false, "deleted": 120}}

{EXIT_CODES_HELP} (3: nothing matched)
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "invalidate",
        help="delete one tool's results, one model's answers or one session thread",
        description="Delete every cached result of one tool, every cached answer of one model, or one session "
        "thread, in O(the entries involved) through the cache's indexes (no keyspace SCAN). Other tools, models "
        "and threads, the stats and the config are untouched.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--tool", metavar="TOOL", help="every cached result of this tool, e.g. --tool get_weather")
    what.add_argument("--model", metavar="MODEL", help="every cached LLM answer of this model, e.g. --model gpt-4o")
    what.add_argument(
        "--thread", metavar="ID", help="one session thread: its fields and LangGraph checkpoints, e.g. --thread user-42"
    )
    parser.add_argument(
        "--tenant",
        metavar="TENANT",
        help="with --thread: the tenant the thread belongs to (code that uses cache.tenant(...)), e.g. --tenant acme. "
        "Tool and model invalidation always cover every tenant.",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="only count what would be deleted, e.g. --tool search --dry-run"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the outcome as JSON on stdout, e.g. --json | jq .deleted"
    )
    add_name_option(parser)
    add_connection_options(parser)
    parser.set_defaults(run=run)


def _target(args: argparse.Namespace) -> tuple[str, str, str]:
    """(kind, value, description) of what goes."""
    if args.tool is not None:
        return "tool", args.tool, f"cached results of tool {args.tool!r}"
    if args.model is not None:
        return "model", args.model, f"cached answers of model {args.model!r}"
    owner = f" of tenant {args.tenant!r}" if args.tenant else ""
    return "thread", args.thread, f"keys of session thread {args.thread!r}{owner}"


def _indexes(keys: KeyLayout, kind: str, value: str, tenant: str | None) -> list[tuple[str, str | None]]:
    """The indexes to count, each with the key prefix of its members when reads may outlive their scores."""
    if kind == "tool":
        return [(keys.tool_index(value), None)]
    if kind == "model":
        return [(keys.model_index(value), None)]
    prefix, index = keys.session_keys(value, tenant)  # the tenant is a segment of its own, as cache.tenant() keys it
    return [(index, prefix), (keys.checkpoint_index(value, tenant), None)]


def run(args: argparse.Namespace) -> int:
    if args.tenant is not None and args.thread is None:
        print("error: --tenant goes with --thread (tool and model invalidation cover every tenant)", file=sys.stderr)
        return ExitCode.USAGE

    async def body(session: Session) -> int:
        name = await resolve_name(session, args.name)
        kind, value, description = _target(args)
        indexes = _indexes(KeyLayout(name), kind, value, args.tenant)
        now_ms = await server_time_ms(session.backend)  # index scores are the server's clock
        counts = [await live_index_members(session.backend, index, now_ms, prefix) for index, prefix in indexes]
        expected = sum(counts)
        if args.dry_run:
            report: dict[str, Any] = {"name": name, kind: value, "dry_run": True, "would_delete": expected}
            message = f"would delete {expected:,} {description} from cache {name}"
        else:
            deleted = await _with_progress(
                session,
                name,
                expected,
                [index for index, _ in indexes],
                lambda cache: _invalidate(cache, kind, value, args.tenant),
            )
            report = {"name": name, kind: value, "dry_run": False, "deleted": deleted}
            message = f"deleted {deleted:,} {description} from cache {name}"
            expected = deleted
        if args.json:
            print_json(report)
        else:
            session.out.print(message, markup=False)
        if expected == 0:
            session.empty_server_note()
            return ExitCode.NOTHING
        return ExitCode.OK

    return run_command(args, body)


async def _invalidate(cache: AgentCache, kind: str, value: str, tenant: str | None) -> int:
    if kind == "tool":
        return await cache.tool.invalidate_by_tool(value)
    if kind == "model":
        return await cache.llm.invalidate_by_model(value)
    if tenant:
        with cache.tenant(tenant):
            return await cache.session.destroy_thread(value)
    return await cache.session.destroy_thread(value)


async def _with_progress(
    session: Session, name: str, expected: int, indexes: list[str], work: Callable[[AgentCache], Awaitable[int]]
) -> int:
    """Run ``work`` on a quiet cache; on a terminal, a bar follows the shrinking indexes of a big job."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    async with quiet_cache(session, name) as cache:
        job = asyncio.ensure_future(work(cache))
        show = session.err.is_terminal and expected >= PROGRESS_FROM
        columns = (TextColumn("deleting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=session.err, transient=True, disable=not show) as progress:
            bar = progress.add_task("deleting", total=expected)
            while not job.done():
                finished, _ = await asyncio.wait({job}, timeout=0.2)
                if not finished and show:
                    remaining = sum([int(await session.backend.command("ZCARD", index)) for index in indexes])
                    progress.update(bar, completed=max(0, expected - remaining))
        return await job
